"""The asyncio worker: ASGI 3 applications and WebSockets on one event loop per worker.

What it shares with the epoll worker (prefork.workers.epoll.Worker, its base class): the status
record and heartbeat (sent from the loop itself, every second, so that a blocked loop goes
silent and the master treats it as hung), the hang dump, the request budget, the parser
twins and their limits, the access log, trusted proxies and the PROXY protocol, and the
accept path (Worker._accept with prefork.workers.accept.AcceptPolicy; this module supplies
the loop's side: _set_accepting, _rotate, _take, _reclaim). A graceful stop drains as the
epoll worker does: `Connection: close` on the next answer, idle connections closed after
DRAIN_GRACE (_drain_check). The rules
of an HTTP/1.1 connection come from prefork.http.core; this module only does the I/O.

Per connection: prefork.workers.protocol.HttpProtocol (HTTP/1.1 and the ASGI messages),
which hands an upgraded connection to prefork.workers.ws.
"""

from __future__ import annotations

import asyncio
import os
import select
import selectors
import signal
import socket
import time

from prefork.apps.asgi import Lifespan, LifespanFailed
from prefork.proxy import ProxyProtocolError
from prefork.workers.connection import _peer
from prefork.workers.protocol import HttpProtocol
from prefork.workers.tls import TLS_HANDSHAKE, PlainHTTPOnTLSPort, take_proxy_header
from prefork.workers.epoll import (
    DRAIN_CHECK, DRAIN_GRACE, EPOLLEXCLUSIVE, EXIT_BOOT_ERROR, Worker, _last_active, log,
)


class ListenerSelector(selectors.EpollSelector):
    """The stdlib loop's epoll selector, registering the listeners (`exclusive`) with
    EPOLLEXCLUSIVE as the epoll worker does: a new connection wakes one worker, not all.
    asyncio registers a reader with plain EPOLLIN and offers no flag; uvloop (libuv) has
    none either, so under uvloop every worker wakes for each connection and the first to
    accept() wins."""

    def __init__(self, exclusive=()) -> None:
        super().__init__()
        self.exclusive = set(exclusive)

    def register(self, fileobj, events, data=None):
        key = super().register(fileobj, events, data)
        if key.fd in self.exclusive and events == selectors.EVENT_READ:
            # EPOLLEXCLUSIVE is only taken at EPOLL_CTL_ADD: add the listener again with it.
            self._selector.unregister(key.fd)
            self._selector.register(key.fd, select.EPOLLIN | EPOLLEXCLUSIVE)
        return key


def new_event_loop(choice: str, listen_fds=()) -> asyncio.AbstractEventLoop:
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.SelectorEventLoop(ListenerSelector(listen_fds))


class AsyncioWorker(Worker):
    """`handler` is the ASGI application."""

    # ------------------------------------------------------------------ set-up (child)

    def run(self) -> int:
        self.app = self.handler
        try:
            self._boot_common()
            self.loop = loop = new_event_loop(self.cfg.loop, [l.fileno() for l in self.listeners])
            asyncio.set_event_loop(loop)
        except Exception:
            log.exception("worker %d failed to boot", os.getpid())
            return EXIT_BOOT_ERROR
        try:
            return loop.run_until_complete(self._main())
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:
                pass
            loop.close()

    async def _main(self) -> int:
        loop = self.loop
        cfg = self.cfg
        self.conns = {}  # HttpProtocol → None (ordered)
        self._stopped = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1):
            loop.add_signal_handler(sig, self._on_signal, sig, None)
        self.lifespan = None
        self.state = None
        if cfg.lifespan != "off":
            lifespan = Lifespan(self.app, cfg.lifespan)
            try:
                await lifespan.startup()
            except LifespanFailed as exc:
                log.error("worker %d failed to boot: %s", os.getpid(), exc)
                return EXIT_BOOT_ERROR
            if lifespan.supported:
                self.lifespan = lifespan
                self.state = lifespan.state
        self.now = time.monotonic()
        self._update_date(time.time())
        self._boot_accept()
        self._resume_handle = None
        self.access_flush = None  # the pending write of waiting access lines (HttpProtocol.response_done)
        self._drain_handle = None
        self._set_accepting(True)
        self._beat()
        self._tick_handle = loop.call_later(1.0, self._on_tick)
        await self._stopped
        # Graceful (or quick) stop: connections are closed by now, or the deadline passed.
        self._tick_handle.cancel()
        for handle in (self._resume_handle, self._drain_handle, self.access_flush):
            if handle is not None:
                handle.cancel()
        for conn in list(self.conns):
            conn.abort()
        if self.lifespan is not None and not self.quick_exit:
            await self.lifespan.shutdown(self.cfg.graceful_timeout)
        if self.access is not None:
            self.access.flush()
        try:
            self._beat()
        except Exception:
            pass
        return 0

    def _on_signal(self, signum, frame) -> None:
        super()._on_signal(signum, frame)
        if self.stopping:
            self._on_tick(rearm=False)

    def _on_hang_signal(self, signum, frame) -> None:
        """The master found the loop silent (a blocked loop is a hung worker) and sent USR2:
        faulthandler has dumped the stacks; name the request whose task holds the loop.
        Python runs this handler between two bytecodes of that very task, so the running
        task is the culprit; nothing is recorded per request for it. (busy_since stays 0:
        a long request that awaits is not a hung worker on an event loop.)"""
        try:
            task = asyncio.current_task(self.loop)
        except RuntimeError:
            task = None
        blocked = time.monotonic() - self.now  # self.now moves once a second, on the loop
        if task is not None:
            for conn in list(self.conns):
                cycle = conn.current
                if cycle is not None and cycle.task is task:
                    req = cycle.req
                    break
                ws = conn.ws
                if ws is not None and ws.task is task:
                    req = ws.req
                    break
            else:
                req = None
            if req is not None:
                log.error("worker %d hung in %s %s %s, its loop blocked for %.1fs (stacks above)", os.getpid(),
                          req.method, req.target, req.version, blocked)
                return
        log.error("worker %d hung outside any request, its loop blocked for %.1fs (stacks above)",
                  os.getpid(), blocked)

    # ------------------------------------------------------------------ accepting
    # Worker._accept and _resume decide (prefork.workers.accept.AcceptPolicy); these hooks
    # do the asyncio side.

    def _set_accepting(self, on: bool) -> None:
        if on == self._accepting or (on and self.stopping):
            return
        self._accepting = on
        for fd, sock in self._listen_fds.items():
            if on:
                self.loop.add_reader(fd, self._on_listener, sock)
            else:
                self.loop.remove_reader(fd)

    def _on_listener(self, lsock: socket.socket) -> None:
        self.now = time.monotonic()
        self._accept(lsock)

    def _rotate(self, fd: int) -> None:
        """Re-register the listener after an accept: it goes to the back of the kernel's
        wait queue, so that the next connection wakes another idle worker."""
        loop = self.loop
        loop.remove_reader(fd)
        loop.add_reader(fd, self._on_listener, self._listen_fds[fd])

    def _pause_accepting(self, seconds: float) -> None:
        super()._pause_accepting(seconds)
        if self._resume_handle is not None:
            self._resume_handle.cancel()
        self._resume_handle = self.loop.call_later(seconds, self._on_resume)

    def _on_resume(self) -> None:
        self._resume_handle = None
        self.now = time.monotonic()
        if self.accept_policy.due(self.now + 0.001):  # call_later may fire a hair early
            self._resume()

    def _take(self, sock: socket.socket, addr, tls=None) -> None:
        """TCP_NODELAY came with the socket, from the listener (Worker._boot_accept)."""
        sock.setblocking(False)
        proto = HttpProtocol(self, addr)
        self.conns[proto] = None
        if tls is None:
            self.loop.create_task(self._connect(sock, proto))
        else:
            self.loop.create_task(self._connect_tls(sock, proto, tls))

    def _idle_connections(self) -> list:
        return [c for c in self.conns if c.is_idle()]

    def _reclaim(self) -> int:
        chosen = self.accept_policy.pick_idle(self._idle_connections(), _last_active)
        closed = 0
        for conn in chosen:
            # A connection accepted a moment ago may not have had its first read yet: it
            # looks idle with its request waiting in the kernel. Peek before closing, or the
            # close would reset that request (close_idle).
            if conn.close_idle():
                self.forget(conn)  # its place is free now; connection_lost comes later
                closed += 1
        return closed

    async def _connect(self, sock, proto) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: proto, sock)
        except OSError:
            self.forget(proto)
            sock.close()

    async def _connect_tls(self, sock, proto, context) -> None:
        """A TLS listener's connection: its PROXY header (when expected), a look at the
        first byte (plain HTTP gets a plain-text 400), then asyncio's TLS transport does
        the handshake; all of it within --tls-handshake-timeout."""
        loop = self.loop
        started = time.monotonic()
        limit = self.cfg.tls_handshake_timeout
        try:
            try:
                first = await asyncio.wait_for(self._hello(sock, proto), limit)
            except asyncio.TimeoutError:
                raise TimeoutError(f"not finished after {limit:g}s") from None
            if first == -1:  # closed without a word (a port check)
                self.forget(proto)
                sock.close()
                return
            if first != TLS_HANDSHAKE:
                await self._plain_on_tls_port(sock, proto)
                return
            left = max(limit - (time.monotonic() - started), 0.001)
            await loop.connect_accepted_socket(lambda: proto, sock, ssl=context, ssl_handshake_timeout=left)
        except ProxyProtocolError as exc:
            log.warning("closing a connection from %s: %s", _peer(proto.addr), exc)
        except (OSError, asyncio.TimeoutError, EOFError) as exc:
            self.tls_failures += 1
            why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            log.info("TLS handshake with %s failed: %s", _peer(proto.addr), why)
        else:
            self.tls_handshakes += 1
            return
        self.forget(proto)
        sock.close()

    async def _hello(self, sock, proto) -> int:
        """The PROXY header, taken; then the first byte, peeked (-1: closed)."""
        while True:
            try:
                if proto.proxy is not None:
                    proto.proxy, client = take_proxy_header(sock, proto.proxy)
                    if proto.proxy is None:
                        if client is not None:
                            proto.addr = client
                    continue
                first = sock.recv(1, socket.MSG_PEEK)
                return first[0] if first else -1
            except (BlockingIOError, InterruptedError):
                await self._readable(sock.fileno())

    async def _readable(self, fd: int) -> None:
        loop = self.loop
        ready = loop.create_future()
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    async def _plain_on_tls_port(self, sock, proto) -> None:
        """Plain HTTP on a TLS port: a plain-text 400 and close (nginx's 497), after a short
        lingering read so that the close does not reset the answer away."""
        from prefork.http.core import LINGER_SECONDS, error_answer
        from prefork.apps.response import error_response

        log.info("400 from %s: plain HTTP sent to a TLS port", _peer(proto.addr))
        resp = error_response(400, PlainHTTPOnTLSPort.reason)
        answer = error_answer(self.status_line(400), self.date_block, self.header_block(resp.headers), resp.body)
        self.count_answer(400)
        try:
            sock.send(answer)
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            while time.monotonic() < deadline:
                try:
                    if not sock.recv(65536):
                        break
                except (BlockingIOError, InterruptedError):
                    try:
                        await asyncio.wait_for(self._readable(sock.fileno()), deadline - time.monotonic())
                    except asyncio.TimeoutError:
                        break
        except OSError:
            pass
        finally:
            self.forget(proto)
            sock.close()

    def forget(self, conn) -> None:
        if self.conns.pop(conn, 0) is None:
            self.closed += 1
            if not self._accepting and not self.accept_policy.backoff and not self.stopping \
                    and len(self.conns) < self.cfg.max_connections:
                self._set_accepting(True)
        if self.stopping and not self.conns and not self._stopped.done():
            self._stopped.set_result(None)

    def flush_access(self) -> None:
        self.access_flush = None
        self.access.flush()

    # ------------------------------------------------------------------ once a second

    def _on_tick(self, rearm: bool = True) -> None:
        self.now = now = time.monotonic()
        if rearm:
            self._tick_handle = self.loop.call_later(1.0, self._on_tick)
        self._update_date(time.time())
        self._beat()
        if self.flood is not None:  # the count of log lines suppressed in the last second
            self.flood.report()
        if self._reopen_logs:
            self._reopen_logs = False
            if self.access is not None:
                self.access.reopen()
        if self.stopping:
            self._stopping(now)
        cfg = self.cfg
        for conn in list(self.conns):
            conn.tick(now, cfg)
        if self.access is not None:
            self.access.flush()
        self.accept_policy.report(now)
        if self.max_requests and self.requests >= self.max_requests and not self.retiring:
            self.retiring = True
            log.info("worker %d served %d requests; asking for its replacement", os.getpid(), self.requests)
            self._beat()

    def _stopping(self, now: float) -> None:
        if self._stopped.done():
            return
        if self.quick_exit:
            self._stopped.set_result(None)
            return
        if getattr(self, "_stop_deadline", None) is None:
            self._stop_deadline = now + self.cfg.graceful_timeout
            if self._accepting:
                for lsock in self._listen_fds.values():
                    self._accept(lsock, drain=True)
            self._set_accepting(False)
            if self._resume_handle is not None:
                self._resume_handle.cancel()
                self._resume_handle = None
            for sock in self._listen_fds.values():
                sock.close()
            self._listen_fds.clear()
            for conn in list(self.conns):
                conn.going_away()
            self._drain_handle = self.loop.call_later(DRAIN_CHECK, self._drain_check)
        if not self.conns or now >= self._stop_deadline:
            self._stopped.set_result(None)

    def _drain_check(self) -> None:
        """While stopping, every DRAIN_CHECK: close the connections idle for DRAIN_GRACE
        (as the epoll worker's _close_idle_while_draining), then see whether we are done."""
        self.now = now = time.monotonic()
        for conn in list(self.conns):
            if now - conn.last_active > DRAIN_GRACE and conn.is_idle():
                conn.close_idle()
        self._drain_handle = self.loop.call_later(DRAIN_CHECK, self._drain_check)
        self._stopping(now)

    def count_answer(self, status: int) -> None:
        self.requests += 1
        self.by_status[status // 100] += 1
