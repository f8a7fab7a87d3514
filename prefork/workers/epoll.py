"""A worker process: post-fork set-up, the epoll loop, heartbeats, graceful exit.

`Worker.__init__` runs in the master before fork and only stores what it is given;
`run()` runs in the child. One thread, one epoll: the listeners are registered with
EPOLLEXCLUSIVE so that a new connection wakes one worker, not all of them.

How connections are shared out, and what a worker does when it cannot take more:
- The kernel wakes the first worker in the listener's wait queue that sits in epoll_wait,
  and that order is the order of registration: left alone, the same idle worker would win
  every accept. So a worker that has accepted re-registers the listener, which moves it
  to the back of the queue: idle workers take connections in turn (`_accept`, `_rotate`).
- A full worker (`--max-connections`) stops polling the listeners so that others take
  the queued clients; if some are still queued FULL_GRACE later, it closes its
  longest-idle connections (between keep-alive requests, or before their first byte) to
  make room for them, as nginx does when it runs out of connections (`_resume`,
  `_reclaim`).
- Out of descriptors or memory at accept (EMFILE, ENFILE, ENOBUFS, ENOMEM), it frees idle
  connections, stops polling the listeners for a back-off that grows from 0.1 s to 1 s,
  keeps serving what it holds, and logs one summary line a second at most.
"""

from __future__ import annotations

import email.utils
import faulthandler
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
from prefork.http import parser as parser_choice
from prefork.config import Config
from prefork.http.core import expired
from prefork.workers.connection import CLOSED, LINGER, OPEN, Connection, WorkerState, _peer
from prefork.logs import AccessLog, FloodFilter, error_log_dropped, open_access_log, reset_error_log_count
from prefork.proxy import TrustedProxies, parse_networks
from prefork.workers.accept import (  # noqa: F401 - the constants are re-exported
    ACCEPT_BATCH, ACCEPT_CLIENT_GONE, ACCEPT_EXHAUSTED, BACKOFF_MAX, BACKOFF_MIN,
    FULL_GRACE, RECLAIM_BATCH, AcceptPolicy,
)
from prefork.workers.pool import HandlerPool
from prefork.sockets import Listener
from prefork.apps.static import StaticFiles

log = logging.getLogger("prefork.error")

# The status record a worker writes to its pipe at least once a second (and at once when
# it wants to retire): magic, requests answered, answers by status class 1xx..5xx, open
# connections, flags, and since when (time.monotonic, shared by all processes) the request
# in progress has been running, 0 when none; then access-log and error-log lines dropped
# because writing failed, the WebSockets open (asyncio worker), and TLS handshakes
# finished and failed. Smaller than PIPE_BUF, so writes are atomic.
STATUS = struct.Struct("<4sQ5QIIdQQIQQ")
STATUS_MAGIC = b"PFw5"
FLAG_RETIRING = 1  # reached --max-requests: start my replacement, then stop me
# Exit code of a worker that could not boot: the master stops instead of fork-looping.
EXIT_BOOT_ERROR = 3

# A draining worker closes a keep-alive connection only once it has been idle this long:
# a client busy on it gets its next answer with `Connection: close` instead, which is the
# only close it cannot race. Checked this often while draining.
DRAIN_GRACE = 1.0
DRAIN_CHECK = 0.25
STOP_MARGIN = 0.5  # seconds a stopping worker keeps in hand before the master's deadline
ACCESS_IDLE = 0.05  # seconds without events after which waiting access-log lines are written
EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 1 << 28)
READ = select.EPOLLIN | select.EPOLLRDHUP
WRITE = select.EPOLLOUT
BROKEN = select.EPOLLERR | select.EPOLLHUP  # for a connection that waits to write: its on_writable finds out


class Worker(WorkerState):
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
        self.heads: dict = {}  # the fused path's memo of response heads (they hold the Date)
        self._date_second = -1
        self.conns: Dict[int, Connection] = {}
        self.closed = 0  # connections closed since the allocator was last trimmed
        self.access: Optional[AccessLog] = None
        self.flood: Optional[FloodFilter] = None
        self.pool: Optional[HandlerPool] = None  # --threads N > 1
        self.spool_threshold = cfg.spool_threshold
        self.websockets = 0  # open WebSockets (only the asyncio worker has any)
        self.tls_context = None  # ssl.SSLContext for the TLS listeners; set by the master
        self.tls_handshakes = 0  # handshakes finished / failed (closed before finishing)
        self.tls_failures = 0
        self.tls_server_cert = None  # its certificate in PEM, for the ASGI TLS extension; set by the master
        self._accept_as: dict = {}  # listener → (family, type, proto) of what it accepts

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

                worker = AsyncioWorker(self.cfg, self.listeners, self.status_fd, self.index, app)
                worker.tls_context, worker.tls_server_cert = self.tls_context, self.tls_server_cert
                return worker.run()
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
        if self.tls_context is not None:
            from prefork.workers.tls import TLSSocket

            self.tls_context.sslsocket_class = TLSSocket  # this process's copy of the context
        self.ep = select.epoll()
        self.ep.register(self._wake_r, select.EPOLLIN)
        if cfg.threads > 1:
            self.pool = HandlerPool(cfg.threads)
            self.ep.register(self.pool.fd, select.EPOLLIN)
        self._boot_accept()
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
        # Lines a client can cause at will are aggregated; the master's count of dropped
        # error-log lines came along with the fork.
        reset_error_log_count()
        self.flood = FloodFilter()
        for handler in logging.getLogger("prefork").handlers:
            handler.addFilter(self.flood)
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
            self.access = open_access_log(cfg.access_log, cfg.access_log_format)
        self.trusted = TrustedProxies(parse_networks(cfg.forwarded_allow_ips))
        self.proxy_protocol = cfg.proxy_protocol

    def _boot_accept(self) -> None:
        """The accept path's state, for either driver (the listeners are not polled yet).
        TCP listeners get TCP_NODELAY here, whoever bound them (the master, systemd, a
        parent's fd://): the sockets accepted from them inherit it, at no syscall each."""
        self._accepting = False
        self._listen_fds = {l.fileno(): l.sock for l in self.listeners}
        # The SSLContext of each TLS listener (plain ones are absent).
        self._tls_of = {l.fileno(): self.tls_context for l in self.listeners if l.tls}
        for lsock in self._listen_fds.values():
            if lsock.family in (socket.AF_INET, socket.AF_INET6) and lsock.type == socket.SOCK_STREAM:
                try:
                    lsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError as exc:
                    log.warning("cannot set TCP_NODELAY on %s: %s", lsock, exc)
        self.accept_policy = AcceptPolicy(self.cfg.max_connections)
        self._listen_poll = select.poll()  # "is a client queued?" while not polling them
        for fd in self._listen_fds:
            self._listen_poll.register(fd, select.POLLIN)
        self._queued = {}  # listener → a poll of it alone: "is another client queued?"
        for fd, lsock in self._listen_fds.items():
            self._queued[lsock] = queued = select.poll()
            queued.register(fd, select.POLLIN)

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
        access = self.access
        next_tick = self.now + 1.0
        stop_deadline = None
        timeout = 1.0
        while True:
            # Access lines wait only until the loop has had nothing to do for a moment
            # (ACCESS_IDLE): tail -f sees a request as it is answered, and a busy worker
            # writes in batches (ACCESS_BATCH lines, or once a second) at no extra syscall.
            if pool is not None and pool.jobs:
                pool.kick()
            pending = access is not None and access.waiting
            events = ep.poll(min(timeout, ACCESS_IDLE) if pending else timeout)
            if pending and not events:
                access.flush()
            self.now = now = time.monotonic()
            for fd, ev in events:
                conn = conns.get(fd)
                if conn is not None:
                    if ev & WRITE or ev & BROKEN and conn.writing:
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
                    # End a little before the master's deadline (counted from before the
                    # TERM reached us, then SIGKILL): _shutdown must still run, closing
                    # every connection and its response body.
                    grace = self.cfg.graceful_timeout
                    stop_deadline = now + grace - min(STOP_MARGIN, grace / 4)
                    self._begin_graceful_stop()
                if not conns or now >= stop_deadline:
                    return
                self._close_idle_while_draining(now)
            if now >= next_tick:
                next_tick = now + 1.0
                self._tick(now)
            timeout = DRAIN_CHECK if stop_deadline is not None else 1.0
            policy = self.accept_policy
            if policy.resume_at:  # the listeners are paused (full, or out of descriptors)
                if policy.due(now):
                    self._resume()
                timeout = policy.wait(now, timeout)
            if self.max_requests and self.requests >= self.max_requests and not self.retiring:
                self.retiring = True
                log.info("worker %d served %d requests; asking for its replacement",
                         os.getpid(), self.requests)
                self._beat()

    def _accept(self, lsock: socket.socket, drain: bool = False, make_room: bool = False) -> None:
        """Take queued clients. `drain`: all of them (a graceful stop). `make_room`: this
        worker is full and they have waited FULL_GRACE, so other workers are full too:
        close idle connections to take them. The asyncio worker runs this too, through
        its own _take, _set_accepting, _rotate and _idle_connections."""
        conns = self.conns
        policy = self.accept_policy
        limit = policy.limit
        accepted = False
        tls = self._tls_of.get(lsock.fileno()) if self._tls_of else None
        # socket.accept(), without what it costs per client beyond the system call: it
        # converts the listener's family and type to enums (twice a client), and checks
        # default timeouts that do not apply here (the listener is non-blocking).
        family, kind, proto = self._accept_as.get(lsock) or self._socket_args(lsock)
        # After the first client, look before taking the next: an accept() that finds the
        # queue empty costs about ten times a poll() (the kernel sets up the new socket
        # before it looks), and the one that ends a batch always finds it empty.
        queued = self._queued.get(lsock)
        for i in range(policy.batch(drain, make_room)):
            if len(conns) >= limit and not (make_room and self._reclaim()):
                # Let the kernel queue hand clients to other workers meanwhile.
                self._pause_accepting(FULL_GRACE)
                break
            if i and queued is not None and not queued.poll(0):
                break
            try:
                fd, addr = lsock._accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # Out of descriptors or memory (or worse): the listener stays readable, so
                # polling it again at once would spin. Pause, growing the pause while
                # it lasts; free idle connections for the clients still queued.
                if policy.exhausted(exc):
                    self._reclaim()
                if policy.failed(exc, self.now):
                    self._pause_accepting(policy.backoff)
                    return
                continue
            accepted = True
            self._take(socket.socket(family, kind, proto, fd), addr, tls)
        if accepted:
            policy.accepted()
            if self._accepting and not drain:
                if policy.full(len(conns)):  # full now: let the next client wake another worker
                    self._pause_accepting(FULL_GRACE)
                else:
                    self._rotate(lsock.fileno())

    def _socket_args(self, lsock: socket.socket) -> tuple:
        """(family, type, proto) of the sockets accepted from `lsock`, as plain ints."""
        args = self._accept_as[lsock] = (int(lsock.family), int(lsock.type), lsock.proto)
        return args

    def _take(self, sock: socket.socket, addr, tls=None) -> None:
        """`tls`: the SSLContext when it came from a TLS listener. TCP_NODELAY came with
        the socket, from the listener (_boot_accept)."""
        sock.setblocking(False)
        if tls is None:
            conn = Connection(self, sock, addr)
        else:
            from prefork.workers.tls import TLSConnection

            conn = TLSConnection(self, sock, addr, tls)
        self.conns[conn.fd] = conn
        # Most clients send their request right after connecting: try it now and save a
        # trip through epoll. Registered only after: a connection answered and closed by
        # this first read (Connection: close) never costs an epoll_ctl. One that waits for
        # EPOLLOUT was registered on the way (watch_write). One whose request went to the
        # pool is registered too: it stays in epoll while its handler runs (Connection.hold).
        conn.on_readable()
        if conn.state != CLOSED and not conn.writing:
            try:
                self.ep.register(conn.fd, READ)
            except FileExistsError:  # watch_read registered it on the way
                pass

    def _resume(self) -> None:
        """The pause is over: poll the listeners again, unless still full; then take the
        clients no other worker has taken meanwhile, and look again in FULL_GRACE."""
        policy = self.accept_policy
        if not policy.full(len(self.conns)) or self.stopping:
            self._set_accepting(True)
            return
        for fd, _ in self._listen_poll.poll(0):
            lsock = self._listen_fds.get(fd)
            if lsock is not None:
                self._accept(lsock, make_room=True)
        if not self._accepting and not policy.resume_at:
            self._pause_accepting(FULL_GRACE)

    def _rotate(self, fd: int) -> None:
        """Go to the back of the listener's wait queue: the next connection wakes another
        idle worker (EPOLLEXCLUSIVE wakes the first waiter in registration order)."""
        ep = self.ep
        ep.unregister(fd)
        ep.register(fd, select.EPOLLIN | EPOLLEXCLUSIVE)

    def _set_accepting(self, on: bool) -> None:
        if on == self._accepting or (on and self.stopping):
            return
        self._accepting = on
        for fd in self._listen_fds:
            if on:
                self.ep.register(fd, select.EPOLLIN | EPOLLEXCLUSIVE)
            else:
                self.ep.unregister(fd)

    def _pause_accepting(self, seconds: float) -> None:
        self._set_accepting(False)
        self.accept_policy.pause(self.now, seconds)

    def _reclaim(self) -> int:
        """Close the longest-idle connections (between keep-alive requests, or not one
        byte received yet) to make room (AcceptPolicy.pick_idle says how many). Returns
        how many were closed."""
        chosen = self.accept_policy.pick_idle(self._idle_connections(), _last_active)
        for conn in chosen:
            conn.close()
        return len(chosen)

    def _idle_connections(self) -> list:
        return [c for c in self.conns.values() if c.state == OPEN and not c.proxy and c.is_idle()]

    # ------------------------------------------------------------------ called by Connection

    def watch_write(self, conn: Connection) -> None:
        try:
            self.ep.modify(conn.fd, WRITE)
        except FileNotFoundError:  # during its first read, before _take registers it
            self.ep.register(conn.fd, WRITE)

    def watch_read(self, conn: Connection) -> None:
        try:
            self.ep.modify(conn.fd, READ)
        except FileNotFoundError:
            self.ep.register(conn.fd, READ)

    def pause(self, conn: Connection) -> None:
        """Out of epoll while its request is in the pool (Connection.hold)."""
        try:
            self.ep.unregister(conn.fd)
        except FileNotFoundError:  # its first read, before _take registers it
            pass

    def resume(self, conn: Connection) -> None:
        self.ep.register(conn.fd, READ)

    def forget(self, conn: Connection) -> None:
        """`conn` is closing. No epoll_ctl DEL: closing its socket, the last reference to
        the file, takes it out of the epoll set."""
        self.closed += 1
        self.conns.pop(conn.fd, None)
        if not self._accepting and not self.accept_policy.backoff and not self.stopping \
                and len(self.conns) < self.cfg.max_connections:
            self._set_accepting(True)

    # ------------------------------------------------------------------ once a second

    def _tick(self, now: float) -> None:
        self._update_date(time.time())
        self._beat()
        if self.flood is not None:
            self.flood.report()
        if self._reopen_logs:
            self._reopen_logs = False
            if self.access is not None:
                self.access.reopen()
        cfg = self.cfg
        # Which timeout applies is the core's rule (prefork.http.core.expired); what to do
        # about it is ours.
        for conn in list(self.conns.values()):
            if conn.busy:  # its handler is running; a slow handler is not a stalled client
                continue
            state = conn.state
            writing = bool(conn.out) or state != OPEN
            why = expired(now, conn.last_active, conn.head_started, writing,
                          not writing and conn.parser is not None and conn.parser.pending is not None,
                          cfg, state == LINGER, conn.served, bool(conn.proxy),
                          getattr(conn, "handshake_started", 0.0))
            if why is None:
                continue
            idle = now - conn.last_active
            if why == "write":  # a client that stopped reading its answer
                log.info("closing a connection from %s: not reading for %.0fs", _peer(conn.addr), idle)
                conn.close()
            elif why == "body":
                conn.time_out(f"no body bytes for {idle:.0f}s")
            elif why == "header":
                conn.time_out(f"request head not complete after {cfg.header_timeout:g}s")
            elif why == "keepalive":
                conn.close_idle()  # idle between requests, or nothing sent since it connected
            elif why == "handshake":
                conn.handshake_failed(f"not finished after {cfg.tls_handshake_timeout:g}s")
            else:  # "linger" over, or a PROXY header that never completes
                conn.close()
        if self.access is not None:
            self.access.flush()
        self.accept_policy.report(now)
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
            self.heads.clear()

    def _beat(self) -> None:
        try:
            c = self.by_status
            os.write(self.status_fd, STATUS.pack(
                STATUS_MAGIC, self.requests, c[1], c[2], c[3], c[4], c[5], len(self.conns),
                FLAG_RETIRING if self.retiring else 0,
                self.pool.oldest() if self.pool is not None else self.busy_since,
                self.access.dropped if self.access is not None else 0, error_log_dropped(), self.websockets,
                self.tls_handshakes, self.tls_failures))
        except BlockingIOError:
            pass  # the master is busy; the next beat will do
        except OSError:
            self.stopping = self.quick_exit = True  # the master is gone

    # ------------------------------------------------------------------ stopping

    def _begin_graceful_stop(self) -> None:
        """Stop accepting. Requests already received or pipelined are answered; the next
        request on each connection is answered with `Connection: close` (Connection.answered
        reads `stopping`); idle connections are closed by _close_idle_while_draining.

        Before letting go of the listeners, take what the kernel has already queued for
        them: those clients have connected, and closing would reset them."""
        if self._accepting:
            for lsock in self._listen_fds.values():
                self._accept(lsock, drain=True)
        self._set_accepting(False)
        for fd in list(self._listen_fds):
            self._listen_fds[fd].close()
        self._listen_fds.clear()

    def _close_idle_while_draining(self, now: float) -> None:
        """Close connections idle for DRAIN_GRACE. Closing one at once would reset a
        request the client is sending at that moment (or that the kernel holds unread);
        a client still using its connection gets an answer with `Connection: close` first,
        and close_idle() reads and answers any bytes that did arrive."""
        for conn in list(self.conns.values()):
            if conn.state == OPEN and now - conn.last_active > DRAIN_GRACE and conn.is_idle():
                conn.close_idle()

    def _shutdown(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        for conn in list(self.conns.values()):
            conn.close()
        if self.pool is not None:
            # Answers the pool finished meanwhile belong to closed connections: finish()
            # closes their bodies (a stream's close() is owed, PEP 3333).
            self.pool.drain()
        if self.access is not None:
            self.access.flush()
        try:
            self._beat()
        except Exception:
            pass


TRIM_AFTER_CLOSES = 256


def _last_active(conn: Connection) -> float:
    return conn.last_active


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
