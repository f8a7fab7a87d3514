"""systemd integration and socket hand-over, without libsystemd.

- Socket activation: systemd passes listening sockets as fds 3, 4, ... and says how many
  in LISTEN_FDS, for the process LISTEN_PID (sd_listen_fds(3)).
- Notification: READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1 are datagrams to the unix
  socket named by NOTIFY_SOCKET (sd_notify(3)); a name starting with "@" is abstract.
- Upgrade (USR2): the old master execs a new one and passes its sockets the same way,
  with PREFORK_FDS="3,4" (fd numbers, in --bind order).
"""

from __future__ import annotations

import os
import socket
from typing import List, Optional, Tuple

from prefork.config import BindSpec

SD_LISTEN_FDS_START = 3
INHERIT_ENV = "PREFORK_FDS"
INHERIT_METRICS_ENV = "PREFORK_METRICS_FD"
# Of the PREFORK_FDS, the plain listeners beside TLS ones (--bind-plain), for an upgrade.
INHERIT_PLAIN_ENV = "PREFORK_PLAIN_FDS"


def inherited_metrics_bind() -> Optional[BindSpec]:
    fd = os.environ.pop(INHERIT_METRICS_ENV, "")
    return BindSpec("fd", fd=int(fd)) if fd.isdigit() else None


def inherited_plain_fds() -> set:
    """Which inherited descriptors were plain listeners beside TLS ones (--bind-plain)."""
    return {int(fd) for fd in os.environ.pop(INHERIT_PLAIN_ENV, "").split(",") if fd.isdigit()}


def inherited_binds() -> Tuple[Optional[List[BindSpec]], str]:
    """Listening sockets handed to this process: (binds or None, where they came from)."""
    fds = os.environ.pop(INHERIT_ENV, "")
    if fds:
        return [BindSpec("fd", fd=int(fd)) for fd in fds.split(",") if fd.isdigit()], "upgrade"
    count = os.environ.get("LISTEN_FDS", "")
    pid = os.environ.get("LISTEN_PID", "")
    if count.isdigit() and int(count) > 0 and pid == str(os.getpid()):
        for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)  # not for the workers or a re-exec
        return [BindSpec("fd", fd=SD_LISTEN_FDS_START + i) for i in range(int(count))], "systemd"
    return None, ""


def notify(message: str) -> bool:
    """Send `message` to systemd if NOTIFY_SOCKET is set; True if it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
        return True
    except OSError:
        return False


def watchdog_interval() -> Optional[float]:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", str(os.getpid()))
    if usec.isdigit() and int(usec) > 0 and pid == str(os.getpid()):
        return int(usec) / 2e6
    return None
