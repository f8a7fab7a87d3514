"""The accept policy both workers follow (the epoll worker and the asyncio worker): when to
stop taking clients, for how long, how many idle connections to close to make room, and
how failed accepts are logged. It holds state and decisions only, no socket and no loop;
each worker does its own I/O (prefork.workers.epoll.Worker._accept and the hooks the
asyncio worker overrides).

The rules (README, "How connections are shared out"):
- A full worker (--max-connections) stops polling the listeners for FULL_GRACE so that
  other workers take the queued clients; if some still wait after that, it closes its
  longest-idle connections to take them, as nginx does (ngx_drain_connections).
- Out of descriptors or memory at accept (EMFILE, ENFILE, ENOBUFS, ENOMEM), it frees idle
  connections and stops polling the listeners for a back-off that grows from BACKOFF_MIN
  to BACKOFF_MAX: the listener stays readable, and polling it again at once would spin.
- Failed accepts are counted and logged as one summary line a second at most.
"""

from __future__ import annotations

import errno
import heapq
import logging

log = logging.getLogger("prefork.error")

ACCEPT_BATCH = 64  # clients taken per wake-up, so that one busy listener cannot starve the rest
# accept() failures that mean "no resources now": pause the listeners instead of spinning
# on a level-triggered listener that stays readable.
ACCEPT_EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
# accept() failures that concern one client only (it left before we took it): go on.
ACCEPT_CLIENT_GONE = frozenset((errno.ECONNABORTED, errno.EPROTO, errno.EPERM))
BACKOFF_MIN = 0.1  # seconds without accepting after the first exhausted accept
BACKOFF_MAX = 1.0  # ...doubling on each one that follows, up to this
FULL_GRACE = 0.1  # a full worker lets other workers take queued clients this long first
RECLAIM_BATCH = 32  # at most this many idle connections closed at once to make room
from prefork.http.core import FIRST_BYTE_TIMEOUT  # noqa: F401,E402 - defined once, in the core


class AcceptPolicy:
    """The accept path's state: the pause in force, the back-off, failures not yet logged."""

    def __init__(self, max_connections: int) -> None:
        self.limit = max_connections
        self.resume_at = 0.0  # when to poll the listeners again after a pause; 0.0: none
        self.backoff = 0.0  # the current pause after exhausted accepts; 0.0: none
        self.errors = 0  # failed accepts not yet logged
        self.error = ""  # the last one's reason
        self.logged = 0.0  # when failed accepts were last logged
        self.reclaimed = 0  # idle connections closed to make room, not yet logged

    def batch(self, drain: bool, make_room: bool) -> int:
        """How many clients to try to take now: all that fit at a graceful stop or when
        making room, else one batch."""
        return self.limit if drain or make_room else ACCEPT_BATCH

    def full(self, open_connections: int) -> bool:
        return open_connections >= self.limit

    def pause(self, now: float, seconds: float) -> None:
        self.resume_at = now + seconds

    def due(self, now: float) -> bool:
        """Is a pause over? (Clears it when it is.)"""
        if self.resume_at and now >= self.resume_at:
            self.resume_at = 0.0
            return True
        return False

    def wait(self, now: float, timeout: float) -> float:
        """The poll timeout, shortened to the end of the pause in force."""
        return min(timeout, self.resume_at - now) if self.resume_at else timeout

    def failed(self, exc: OSError, now: float) -> bool:
        """An accept failed. False: one client's trouble, go on with the next. True: stop
        accepting for `self.backoff` seconds (already set as the pause); when the error is
        an exhausted resource, the caller also frees idle connections (`exhausted`)."""
        if exc.errno in ACCEPT_CLIENT_GONE:
            return False
        self.backoff = min(BACKOFF_MAX, self.backoff * 2 or BACKOFF_MIN)
        self.resume_at = now + self.backoff
        self.errors += 1
        self.error = (exc.strerror or str(exc)).lower()
        if now - self.logged >= 1.0:
            self.log_errors(now)
        return True

    @staticmethod
    def exhausted(exc: OSError) -> bool:
        return exc.errno in ACCEPT_EXHAUSTED

    def accepted(self) -> None:
        """A client was taken: the resources are back, the back-off starts over."""
        self.backoff = 0.0

    def pick_idle(self, idle: list, last_active) -> list:
        """Of the idle connections, those to close to make room: the longest-idle, up to an
        eighth of them, at least one and at most RECLAIM_BATCH."""
        if not idle:
            return []
        count = max(1, min(RECLAIM_BATCH, len(idle) // 8))
        self.reclaimed += count
        return heapq.nsmallest(count, idle, key=last_active)

    def log_errors(self, now: float) -> None:
        span = min(now - self.logged, 1.0) if self.logged else 0.0
        count = self.errors
        log.warning("accept: %s, %d time%s in the last %.1fs; pausing accepts for %.1fs at a time, "
                    "open connections are still served", self.error, count,
                    "" if count == 1 else "s", span, self.backoff or BACKOFF_MIN)
        self.errors = 0
        self.logged = now

    def report(self, now: float) -> None:
        """Once a second: the summary lines owed."""
        if self.errors and now - self.logged >= 1.0:
            self.log_errors(now)
        if self.reclaimed:
            log.info("closed %d idle connections to make room for new clients", self.reclaimed)
            self.reclaimed = 0
