"""The access log and the error log, built so that logging never costs a request or a worker.

The rule this file keeps: a log line that cannot be written (a full disk, a closed pipe, an
I/O error) is dropped and counted, never raised. The counts reach the metrics
(`prefork_log_lines_dropped_total`), the access log says so in the error log at most once
per LOG_ERROR_INTERVAL, and writing resumes by itself when the target takes bytes again.
Lines that a client can trigger at will (a rejected request, a timeout) are aggregated in
the workers: FLOOD_BURST of a kind per second, then one "suppressed N similar lines" line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from time import monotonic as _monotonic, time as _time
from typing import Dict, List, Optional, Tuple

from prefork.proxy import FORWARDING_FIELDS
from prefork.workers.connection import clf_time

log = logging.getLogger("prefork.error")

LOG_ERROR_INTERVAL = 10.0  # seconds between two "cannot write the access log" lines
ACCESS_BATCH = 256  # access lines kept in memory before a write (the loop writes them when idle)
FLOOD_BURST = 10  # client-triggered lines of one kind logged per second, per worker


class AccessLog:
    """Combined log format plus the request time in seconds, or one JSON object per line.

    Lines are kept in a list and written with one os.write once the worker's loop has
    been idle for 50 ms (worker.ACCESS_IDLE), or ACCESS_BATCH lines are waiting, or once a
    second: `tail -f` sees a request as it is answered, and a busy worker writes in batches.

    The server calls `log(conn, req, status, length, t0)`: the host is the client's (see
    Connection.client), the request time runs from `t0` (a time.monotonic() reading) to
    the call. The epoll worker's t0 is the time of the loop pass in which it took the
    request up (worker.now: no clock read per request): the pass that read the request's
    last bytes, or for a pipelined request that waited for the socket, the pass in which
    the socket took the answers before it; with --threads, when the handler starts in its
    thread. Close to nginx's $request_time, which starts at the request's first bytes: a
    head or body that arrives in several reads counts from the last of them here. `__call__(addr, req, status, length, duration)` is
    the line for a host and a duration already known (the asyncio worker's)."""

    def __init__(self, target: str, fmt: str = "combined") -> None:
        self.target = target
        self.fd = self._open()
        self.lines: List[str] = []
        self.dropped = 0  # lines lost to failed writes, for the metrics
        self._failing = 0  # lines lost since writing last worked
        self._next_report = 0.0
        self._torn = False  # a partial write left half a line in the file
        self._next_second = 0.0  # when _stamp, the time of the current second, is due again
        self._stamp = ""
        self.json = fmt == "json"

    def log(self, conn, req, status: int, length: Optional[int], t0: float = 0.0) -> None:
        """The line of `req` answered on `conn` (a Connection: its addr, trusted, client()),
        timed from `t0` (0.0: untimed)."""
        self(conn.client(req)[0] if conn.trusted else conn.addr, req, status, length,
             _monotonic() - t0 if t0 else 0.0)

    @property
    def waiting(self) -> int:
        """Lines waiting to be written."""
        return len(self.lines)

    def __call__(self, addr, req, status: int, length: Optional[int], duration: float = 0.0) -> None:
        # Runs once per request in the loop: lookups are local, quoting only when needed.
        wall = _time()
        if wall >= self._next_second or wall < self._next_second - 1.0:  # (or the clock went back)
            second = int(wall)
            self._next_second = second + 1
            self._stamp = clf_time(second)
        host = addr[0] if type(addr) is tuple else (addr or "-")
        if self.json:
            line = json.dumps({
                "remote_addr": host, "time": self._stamp, "method": req.method,
                "target": req.target, "version": req.version, "status": status,
                "bytes": length, "referer": req.header("referer"),
                "user_agent": req.header("user-agent"), "request_time": round(duration, 6),
            }) + "\n"
        else:
            header = req.header
            target = req.target
            referer = header("referer", "-")
            agent = header("user-agent", "-")
            if '"' in target or "\\" in target:
                target = _q(target)
            if '"' in referer or "\\" in referer:
                referer = _q(referer)
            if '"' in agent or "\\" in agent:
                agent = _q(agent)
            # "%.6f" of a float costs half the line; under a second, whole microseconds say the same.
            us = int(duration * 1000000.0 + 0.5)
            took = "0." + str(1000000 + us)[1:] if us < 1000000 else f"{duration:.6f}"
            line = (f'{host} - - [{self._stamp}] "{req.method} {target} {req.version}" {status} '
                    f'{"-" if length is None else length} "{referer}" "{agent}" {took}\n')
        lines = self.lines
        lines.append(line)
        if len(lines) >= ACCESS_BATCH:
            self.flush()

    def _open(self) -> int:
        if self.target == "-":
            return sys.stdout.fileno()
        return os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)

    def pending(self) -> bytes:
        """The bytes waiting to be written (what flush() writes next)."""
        return "".join(self.lines).encode("utf-8", "backslashreplace")

    def take(self) -> bytes:
        """The bytes waiting, and forget them."""
        data = self.pending()
        self.lines = []
        return data

    def flush(self) -> None:
        """Write what is waiting; on failure drop it and count it."""
        if not self.waiting:
            return
        data = self.take()
        if self._torn:  # end the half line a failed write left, so this batch starts clean
            data = b"\n" + data
        whole = data
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as exc:  # ENOSPC, EPIPE, EIO, EAGAIN on a non-blocking pipe...
            done = len(whole) - len(data)
            lost = data.count(b"\n") - (1 if self._torn and not done else 0)
            if done:
                self._torn = whole[done - 1] != 0x0A
            self._lost(lost, exc)
            return
        self._torn = False
        if self._failing:
            log.warning("access log %s: writing again after %d lines were dropped",
                        self.target, self._failing)
            self._failing = 0

    def _lost(self, lines: int, exc: OSError) -> None:
        self.dropped += lines
        self._failing += lines
        now = time.monotonic()
        if now >= self._next_report:
            self._next_report = now + LOG_ERROR_INTERVAL
            log.error("cannot write the access log %s: %s; dropping lines (%d so far, "
                      "next report in %.0fs)", self.target, exc.strerror or exc, self._failing,
                      LOG_ERROR_INTERVAL)

    def reopen(self) -> None:
        """After USR1: logrotate has moved the file; write to a new one at the same path."""
        if self.target == "-":
            return
        self.flush()
        try:
            fd = self._open()
        except OSError as exc:
            log.error("cannot reopen the access log %s: %s; still writing to the old file",
                      self.target, exc)
            return
        old, self.fd = self.fd, fd
        os.close(old)


def _q(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


try:  # the combined line in Cython (prefork/_accesslog.pyx); the pure AccessLog is its twin
    from prefork import _accesslog
except ImportError:
    _accesslog = None
    CAccessLog = None
else:
    _accesslog.configure(clf_time, ACCESS_BATCH, FORWARDING_FIELDS)

    class CAccessLog(_accesslog.Combined, AccessLog):
        """AccessLog with the combined line built in C (the same bytes as the pure twin's),
        kept as bytes until the pure twin's flush writes them."""


def open_access_log(target: str, fmt: str = "combined") -> AccessLog:
    """The access log for `target`: the Cython line when it is built (combined format),
    the pure AccessLog otherwise (and for JSON)."""
    if CAccessLog is not None and fmt != "json":
        return CAccessLog(target, fmt)
    return AccessLog(target, fmt)


class ErrorLogHandler(logging.StreamHandler):
    """The error log: one os.write per line to the stream's descriptor. A line that cannot
    be written is dropped and counted (logging's default prints a traceback about it to
    stderr, which is usually the very stream that failed). The next line that gets through
    is preceded by one saying how many were lost."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        try:
            self.fd: Optional[int] = stream.fileno()
        except (AttributeError, OSError, ValueError):  # e.g. a StringIO under test
            self.fd = None
        self.dropped = 0
        self._failing = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
        except Exception:  # noqa: BLE001 - a bad format string is the caller's bug: report it
            self.handleError(record)
            return
        if self._failing:
            text = f"[error log: {self._failing} lines were dropped: writing failed]\n" + text
        try:
            if self.fd is None:
                self.stream.write(text)
                self.stream.flush()
            else:
                data = text.encode("utf-8", "backslashreplace")
                while data:
                    data = data[os.write(self.fd, data):]
        except (OSError, ValueError):
            self.dropped += 1
            self._failing += 1
            return
        self._failing = 0


def setup_logging(level: str) -> ErrorLogHandler:
    handler = ErrorLogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S %z"))
    root = logging.getLogger("prefork")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    return handler


def error_log_dropped() -> int:
    """Error-log lines this process dropped (0 when the handler is not ours)."""
    for handler in logging.getLogger("prefork").handlers:
        if isinstance(handler, ErrorLogHandler):
            return handler.dropped
    return 0


def reset_error_log_count() -> None:
    """In a new worker: count from zero (the master's count came along with the fork)."""
    for handler in logging.getLogger("prefork").handlers:
        if isinstance(handler, ErrorLogHandler):
            handler.dropped = 0


class FloodFilter(logging.Filter):
    """In a worker, on the error log's handler: lines at WARNING and below (what a client
    can cause: rejected requests, timeouts, bad PROXY headers) pass FLOOD_BURST per second
    per kind (the format string); the rest are counted, and once the second is over one
    line per kind says how many were suppressed. Errors always pass. The request counters
    in the metrics are not touched: they stay exact."""

    def __init__(self, burst: int = FLOOD_BURST) -> None:
        super().__init__()
        self.burst = burst
        self.second = 0
        self.seen: Dict[object, int] = {}
        self.suppressed: Dict[object, Tuple[int, logging.LogRecord]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING or getattr(record, "flood_summary", False):
            return True
        second = int(record.created)
        if second != self.second:
            self.report(second)
        key = record.msg
        n = self.seen.get(key, 0) + 1
        self.seen[key] = n
        if n <= self.burst:
            return True
        self.suppressed[key] = (self.suppressed.get(key, (0, None))[0] + 1, record)
        return False

    def report(self, second: Optional[int] = None) -> None:
        """Start a new second: one summary line per kind that was cut in the last one.
        The worker calls it once a second, so a summary never waits for the next line."""
        if second is None:
            second = int(time.time())
            if second == self.second:
                return
        self.second = second
        self.seen = {}
        suppressed, self.suppressed = self.suppressed, {}
        for count, last in suppressed.values():
            log.log(last.levelno, "suppressed %d similar lines (the last: %s)", count,
                    last.getMessage(), extra={"flood_summary": True})
