"""A worker process: post-fork set-up, the epoll loop, heartbeats, graceful exit.

`Worker.__init__` runs in the master before fork and only stores what it is given;
`run()` runs in the child. One thread, one epoll: the listeners are registered with
EPOLLEXCLUSIVE so that a new connection wakes one worker, not all of them.
"""

from __future__ import annotations

import email.utils
import faulthandler
import json
import logging
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from typing import Callable, Dict, List, Optional

from prefork import __version__
from prefork import parser as parser_choice
from prefork.config import Config
from prefork.connection import LINGER, LINGER_SECONDS, OPEN, Connection, _peer, clf_time
from prefork.proxy import TrustedProxies, parse_networks
from prefork.pool import HandlerPool
from prefork.sockets import Listener
from prefork.static import StaticFiles

log = logging.getLogger("prefork.error")

# The status record a worker writes to its pipe at least once a second (and at once when
# it wants to retire): magic, requests answered, answers by status class 1xx..5xx, open
# connections, flags, and since when (time.monotonic, shared by all processes) the request
# in progress has been running, 0 when none; then the WebSockets open (asyncio worker).
# Smaller than PIPE_BUF, so writes are atomic.
STATUS = struct.Struct("<4sQ5QIIdI")
STATUS_MAGIC = b"PFw3"
FLAG_RETIRING = 1  # reached --max-requests: start my replacement, then stop me
# Exit code of a worker that could not boot: the master stops instead of fork-looping.
EXIT_BOOT_ERROR = 3

ACCEPT_BATCH = 64
EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 1 << 28)
READ = select.EPOLLIN | select.EPOLLRDHUP
WRITE = select.EPOLLOUT


class Worker:
    def __init__(self, cfg: Config, listeners: List[Listener], status_fd: int, index: int,
                 handler: Optional[Callable] = None) -> None:
        self.cfg = cfg
        self.listeners = listeners
        self.status_fd = status_fd
        self.index = index
        self.handler = handler
        self.server_name = f"prefork-http/{__version__}"
        self.requests = 0
        self.by_status = [0] * 10  # answers by status // 100
        self.busy_since = 0.0  # when the request in progress started; 0.0 when idle
        self.current = None  # the request in progress, for the hang dump
        self.retiring = False
        self.max_requests = 0  # 0: no limit
        self._reopen_logs = False
        self.stopping = False
        self.quick_exit = False
        self.now = time.monotonic()
        self.date = ""
        self.date_block = ""  # "Server: ...\r\nDate: ...\r\n", rebuilt once a second
        self._date_second = -1
        self.conns: Dict[int, Connection] = {}
        self.closed = 0  # connections closed since the allocator was last trimmed
        self.access = None
        self.pool: Optional[HandlerPool] = None  # --threads N > 1
        self.spool_threshold = cfg.spool_threshold
        self.websockets = 0  # open WebSockets (only the asyncio worker has any)

    # ------------------------------------------------------------------ set-up (child)

    def run(self) -> int:
        if self.handler is None and self.cfg.app is not None:
            # The application decides the driver: an ASGI one gets the asyncio worker.
            try:
                from prefork.loader import load_app

                interface, app = load_app(self.cfg)
            except Exception:
                log.exception("worker %d failed to boot", os.getpid())
                return EXIT_BOOT_ERROR
            if interface == "asgi":
                from prefork.workers.aio import AsyncioWorker

                return AsyncioWorker(self.cfg, self.listeners, self.status_fd, self.index, app).run()
            self.handler = app
        try:
            self._boot()
        except Exception:
            log.exception("worker %d failed to boot", os.getpid())
            return EXIT_BOOT_ERROR
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _boot(self) -> None:
        cfg = self.cfg
        self._wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        self._boot_common()
        if self.handler is None:
            if cfg.app is not None:
                from prefork.loader import make_handler

                self.handler = make_handler(cfg)
            else:
                self.handler = StaticFiles(cfg.root, listing=cfg.listing, serve_dotfiles=cfg.serve_dotfiles,
                                           follow_symlinks=cfg.follow_symlinks, max_age=cfg.static_max_age)
        self.ep = select.epoll()
        self.ep.register(self._wake_r, select.EPOLLIN)
        if cfg.threads > 1:
            self.pool = HandlerPool(cfg.threads)
            self.ep.register(self.pool.fd, select.EPOLLIN)
        self._accepting = False
        self._listen_fds = {l.fileno(): l.sock for l in self.listeners}
        self._set_accepting(True)
        self._update_date(time.time())
        self._beat()

    def _boot_common(self) -> None:
        """What every driver needs after the fork (the epoll and the asyncio worker): the
        hang dump, the process title, the request budget, the parser, logs, proxies."""
        cfg = self.cfg
        for sig in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        # The master sends USR2 to a hung worker: faulthandler dumps every thread's stack
        # from C at once (it works whatever Python is stuck in), then chains to a Python
        # handler that logs the request in progress when the main thread next runs.
        signal.signal(signal.SIGUSR2, self._on_hang_signal)
        faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True, chain=True)
        set_process_title(f"worker {self.index} [{' '.join(l.url for l in self.listeners)}]")
        if cfg.max_requests:
            self.max_requests = cfg.max_requests + random.randint(0, cfg.max_requests_jitter)
        module = parser_choice.load(cfg.parser)
        self._parser_cls = module.RequestParser
        self._limits = dict(
            max_request_line=cfg.limit_request_line,
            max_fields=cfg.limit_request_fields,
            max_field_size=cfg.limit_request_field_size,
            max_body_size=cfg.max_body_size,
        )
        self.header_block = module.header_block
        self.status_line = module.status_line
        if cfg.access_log:
            self.access = AccessLog(cfg.access_log, cfg.access_log_format)
        self.trusted = TrustedProxies(parse_networks(cfg.forwarded_allow_ips))
        self.proxy_protocol = cfg.proxy_protocol

    def new_parser(self):
        return self._parser_cls(**self._limits)

    def _on_signal(self, signum, frame) -> None:
        # Only record; the loop acts (it is woken through the wakeup fd).
        if signum == signal.SIGUSR1:
            self._reopen_logs = True
            return
        if signum in (signal.SIGINT, signal.SIGQUIT):
            self.quick_exit = True
        self.stopping = True

    def _on_hang_signal(self, signum, frame) -> None:
        req = self.current
        if self.pool is not None:
            now = time.monotonic()
            for running, start in list(self.pool.running.values()):
                log.error("worker %d hung in %s %s %s for %.1fs (stacks above)", os.getpid(),
                          running.method, running.target, running.version, now - start)
        elif req is not None:
            log.error("worker %d hung in %s %s %s for %.1fs (stacks above)", os.getpid(),
                      req.method, req.target, req.version, time.monotonic() - self.busy_since)
        else:
            log.error("worker %d hung outside any request (stacks above)", os.getpid())

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        ep = self.ep
        conns = self.conns
        listen_fds = self._listen_fds
        wake_r = self._wake_r
        pool = self.pool
        pool_fd = pool.fd if pool is not None else -1
        next_tick = self.now + 1.0
        stop_deadline = None
        while True:
            events = ep.poll(1.0)
            self.now = now = time.monotonic()
            for fd, ev in events:
                conn = conns.get(fd)
                if conn is not None:
                    if ev & WRITE or conn.writing and ev & (select.EPOLLERR | select.EPOLLHUP):
                        conn.on_writable()
                    else:
                        conn.on_readable()
                elif fd == pool_fd:
                    pool.drain()
                elif fd in listen_fds:
                    self._accept(listen_fds[fd])
                elif fd == wake_r:
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        pass
            if self.stopping:
                if self.quick_exit:
                    return
                if stop_deadline is None:
                    stop_deadline = now + self.cfg.graceful_timeout
                    self._begin_graceful_stop()
                if not conns or now >= stop_deadline:
                    return
            if now >= next_tick:
                next_tick = now + 1.0
                self._tick(now)
            if self.max_requests and self.requests >= self.max_requests and not self.retiring:
                self.retiring = True
                log.info("worker %d served %d requests; asking for its replacement",
                         os.getpid(), self.requests)
                self._beat()

    def _accept(self, lsock: socket.socket, drain: bool = False) -> None:
        conns = self.conns
        limit = self.cfg.max_connections
        for _ in range(ACCEPT_BATCH if not drain else limit):
            if len(conns) >= limit:
                self._set_accepting(False)  # the kernel queue hands clients to other workers
                return
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENOBUFS, ECONNABORTED...
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock, addr)
            conns[conn.fd] = conn
            self.ep.register(conn.fd, READ)
            # Most clients send their request right after connecting: try it now and
            # save a trip through epoll.
            conn.on_readable()

    def _set_accepting(self, on: bool) -> None:
        if on == self._accepting or (on and self.stopping):
            return
        self._accepting = on
        for fd in self._listen_fds:
            if on:
                self.ep.register(fd, select.EPOLLIN | EPOLLEXCLUSIVE)
            else:
                self.ep.unregister(fd)

    # ------------------------------------------------------------------ called by Connection

    def watch_write(self, conn: Connection) -> None:
        self.ep.modify(conn.fd, WRITE)

    def watch_read(self, conn: Connection) -> None:
        self.ep.modify(conn.fd, READ)

    def pause(self, conn: Connection) -> None:
        """Out of epoll while its request is in the pool: nothing to read or write."""
        self.ep.unregister(conn.fd)

    def resume(self, conn: Connection) -> None:
        self.ep.register(conn.fd, READ)

    def forget(self, conn: Connection) -> None:
        self.closed += 1
        if self.conns.pop(conn.fd, None) is not None:
            try:
                self.ep.unregister(conn.fd)
            except OSError:
                pass
        if not self._accepting and not self.stopping and len(self.conns) < self.cfg.max_connections:
            self._set_accepting(True)

    # ------------------------------------------------------------------ once a second

    def _tick(self, now: float) -> None:
        self._update_date(time.time())
        self._beat()
        if self._reopen_logs:
            self._reopen_logs = False
            if self.access is not None:
                self.access.reopen()
        cfg = self.cfg
        for conn in list(self.conns.values()):
            if conn.busy:  # its handler is running; a slow handler is not a stalled client
                continue
            idle = now - conn.last_active
            state = conn.state
            if state == LINGER:
                if idle > LINGER_SECONDS:
                    conn.close()
            elif conn.out or state != OPEN:
                if idle > cfg.write_timeout:  # a client that stopped reading its answer
                    log.info("closing a connection from %s: not reading for %.0fs",
                             _peer(conn.addr), idle)
                    conn.close()
            elif conn.parser.pending is not None:
                if idle > cfg.body_timeout:
                    conn.time_out(f"no body bytes for {idle:.0f}s")
            elif conn.head_started:
                if now - conn.head_started > cfg.header_timeout:
                    conn.time_out(f"request head not complete after {cfg.header_timeout:g}s")
            elif conn.proxy is not None and conn.proxy and idle > cfg.header_timeout:
                conn.close()  # a PROXY header that never completes
            elif idle > cfg.keepalive:
                conn.close()  # idle between requests (or before the first)
        if self.access is not None:
            self.access.flush()
        if self.closed >= TRIM_AFTER_CLOSES:
            # After a flood of connections (say, a thousand slow clients timed out), give
            # the allocator's free memory back to the system: without this, glibc keeps
            # the high-water mark of many small buffers, freed but fragmented.
            self.closed = 0
            malloc_trim()

    def _update_date(self, wall: float) -> None:
        second = int(wall)
        if second != self._date_second:
            self._date_second = second
            self.date = email.utils.formatdate(second, usegmt=True)
            self.date_block = f"Server: {self.server_name}\r\nDate: {self.date}\r\n"

    def _beat(self) -> None:
        try:
            c = self.by_status
            os.write(self.status_fd, STATUS.pack(
                STATUS_MAGIC, self.requests, c[1], c[2], c[3], c[4], c[5], len(self.conns),
                FLAG_RETIRING if self.retiring else 0,
                self.pool.oldest() if self.pool is not None else self.busy_since, self.websockets))
        except BlockingIOError:
            pass  # the master is busy; the next beat will do
        except OSError:
            self.stopping = self.quick_exit = True  # the master is gone

    # ------------------------------------------------------------------ stopping

    def _begin_graceful_stop(self) -> None:
        """Stop accepting; close idle connections; busy ones close after their answer.

        Before letting go of the listeners, take what the kernel has already queued for
        them: those clients have connected, and closing would reset them."""
        if self._accepting:
            for lsock in self._listen_fds.values():
                self._accept(lsock, drain=True)
        self._set_accepting(False)
        for fd in list(self._listen_fds):
            self._listen_fds[fd].close()
        self._listen_fds.clear()
        for conn in list(self.conns.values()):
            # Idle between keep-alive requests: close. A connection that has not sent its
            # first request yet (just drained from the queue) gets to send it.
            if conn.state == OPEN and conn.served and conn.is_idle():
                conn.close()

    def _shutdown(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        for conn in list(self.conns.values()):
            conn.close()
        if self.access is not None:
            self.access.flush()
        try:
            self._beat()
        except Exception:
            pass


TRIM_AFTER_CLOSES = 256


def malloc_trim() -> None:
    """glibc's malloc_trim(0), where there is one (not on musl)."""
    global _libc_trim
    if _libc_trim is None:
        try:
            import ctypes
            _libc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _libc_trim = False
    if _libc_trim:
        _libc_trim(0)


_libc_trim = None


def set_process_title(title: str) -> None:
    """`prefork-http: <title>` in ps, when setproctitle is installed."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(f"prefork-http: {title}")


class AccessLog:
    """Combined log format plus the request time in seconds, or one JSON object per line;
    one buffered write per line, flushed once a second. The request time runs from the
    handler's call to its answer being queued."""

    def __init__(self, target: str, fmt: str = "combined") -> None:
        self.target = target
        self.stream = self._open()
        self._second = -1
        self._stamp = ""
        self.json = fmt == "json"

    def __call__(self, addr, req, status: int, length: Optional[int], duration: float = 0.0) -> None:
        wall = time.time()
        if int(wall) != self._second:
            self._second = int(wall)
            self._stamp = clf_time(wall)
        host = addr[0] if isinstance(addr, tuple) else (addr or "-")
        if self.json:
            line = json.dumps({
                "remote_addr": host, "time": self._stamp, "method": req.method,
                "target": req.target, "version": req.version, "status": status,
                "bytes": length, "referer": req.header("referer"),
                "user_agent": req.header("user-agent"), "request_time": round(duration, 6),
            }) + "\n"
        else:
            referer = req.header("referer", "-")
            agent = req.header("user-agent", "-")
            line = (f'{host} - - [{self._stamp}] "{req.method} {_q(req.target)} {req.version}" {status} '
                    f'{"-" if length is None else length} "{_q(referer)}" "{_q(agent)}" {duration:.6f}\n')
        self.stream.write(line)

    def _open(self):
        if self.target == "-":
            return sys.stdout
        return open(self.target, "a", buffering=65536, encoding="utf-8", errors="backslashreplace")

    def reopen(self) -> None:
        """After USR1: logrotate has moved the file; write to a new one at the same path."""
        if self.target == "-":
            return
        self.flush()
        old, self.stream = self.stream, self._open()
        old.close()

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass


def _q(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
