"""--user, --group, --umask: the master binds as root, workers serve as someone else.

check() runs at startup (a bad name is one line and exit 2, before anything binds); drop()
runs in each worker right after the fork, before the application is imported, so that
nothing the application does, opens or leaks happens with the master's privileges.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import NamedTuple, Optional

from prefork.config import Config, ConfigError


class Identity(NamedTuple):
    uid: int
    gid: int
    name: Optional[str]  # the user name, for initgroups(); None for a bare uid


def resolve(cfg: Config) -> Optional[Identity]:
    """The workers' identity, or None when neither --user nor --group is given."""
    if cfg.user is None and cfg.group is None:
        return None
    uid, gid, name = os.geteuid(), os.getegid(), None
    if cfg.user is not None:
        try:
            entry = pwd.getpwuid(int(cfg.user)) if cfg.user.isdigit() else pwd.getpwnam(cfg.user)
            uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
        except KeyError:
            if not cfg.user.isdigit():
                raise ConfigError(f"--user {cfg.user!r}: no such user") from None
            uid = int(cfg.user)  # a uid without a passwd entry (containers): group = --group
    if cfg.group is not None:
        try:
            gid = int(cfg.group) if cfg.group.isdigit() else grp.getgrnam(cfg.group).gr_gid
        except KeyError:
            raise ConfigError(f"--group {cfg.group!r}: no such group") from None
    return Identity(uid, gid, name)


def check(cfg: Config) -> Optional[Identity]:
    ident = resolve(cfg)
    if ident is None:
        return None
    if ident.uid == 0 and not cfg.allow_root:
        raise ConfigError(f"--user {cfg.user}: workers would run as root, so a flaw in the application "
                          "or the server would own the machine; give an unprivileged user, or "
                          "--allow-root if you mean it")
    if os.geteuid() != 0 and (ident.uid != os.geteuid() or ident.gid != os.getegid()):
        raise ConfigError(f"--{'user' if cfg.user else 'group'}: switching user needs the server "
                          f"to start as root (it runs as uid {os.geteuid()})")
    return ident


def drop(cfg: Config) -> None:
    """In a new worker: become --user/--group, with the user's supplementary groups.
    Raises OSError when the kernel refuses; the worker must then not go on."""
    ident = resolve(cfg)
    if ident is None or os.geteuid() != 0:
        return
    if ident.name is not None and cfg.group is None:
        os.initgroups(ident.name, ident.gid)
    else:
        os.setgroups([ident.gid])
    os.setgid(ident.gid)  # sets real, effective and saved ids as root
    os.setuid(ident.uid)
    if ident.uid != 0 and (os.getuid() == 0 or os.geteuid() == 0):  # pragma: no cover
        raise OSError("setuid() left the worker with root privileges")


def owner_for_sockets(cfg: Config):
    """(uid, gid) to chown unix sockets to, -1 for 'leave'; None when nothing to change."""
    ident = resolve(cfg)
    if ident is None or os.geteuid() != 0:
        return None
    return (ident.uid if cfg.user is not None else -1, ident.gid)
