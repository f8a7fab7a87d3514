"""The asyncio worker: ASGI 3 applications and WebSockets on one event loop per worker.

What it shares with the epoll worker (prefork.workers.epoll.Worker, its base class): the status
record and heartbeat (sent from the loop itself, every second, so that a blocked loop goes
silent and the master treats it as hung), the hang dump, the request budget, the parser
twins and their limits, the access log, trusted proxies and the PROXY protocol. The rules
of an HTTP/1.1 connection come from prefork.http.core; this module only does the I/O.

Per connection: prefork.workers.protocol.HttpProtocol (HTTP/1.1 and the ASGI messages),
which hands an upgraded connection to prefork.workers.ws.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

from prefork.apps.asgi import Lifespan, LifespanFailed
from prefork.workers.protocol import HttpProtocol
from prefork.workers.epoll import EXIT_BOOT_ERROR, Worker, log


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class AsyncioWorker(Worker):
    """`handler` is the ASGI application."""

    # ------------------------------------------------------------------ set-up (child)

    def run(self) -> int:
        self.app = self.handler
        try:
            self._boot_common()
            self.loop = loop = new_event_loop(self.cfg.loop)
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
        self._accepting = False
        self._listen = {l.sock.fileno(): l.sock for l in self.listeners}
        self._set_accepting(True)
        self._beat()
        self._tick_handle = loop.call_later(1.0, self._on_tick)
        await self._stopped
        # Graceful (or quick) stop: connections are closed by now, or the deadline passed.
        self._tick_handle.cancel()
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

    def _set_accepting(self, on: bool) -> None:
        if on == self._accepting or (on and self.stopping):
            return
        self._accepting = on
        for fd, sock in self._listen.items():
            if on:
                self.loop.add_reader(fd, self._accept, sock)
            else:
                self.loop.remove_reader(fd)

    def _accept(self, lsock: socket.socket, drain: bool = False) -> None:
        limit = self.cfg.max_connections
        for _ in range(64 if not drain else limit):
            if len(self.conns) >= limit:
                self._set_accepting(False)
                return
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            proto = HttpProtocol(self, addr)
            self.conns[proto] = None
            self.loop.create_task(self._connect(sock, proto))

    async def _connect(self, sock, proto) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: proto, sock)
        except OSError:
            self.forget(proto)
            sock.close()

    def forget(self, conn) -> None:
        self.closed += 1
        if self.conns.pop(conn, 0) is None:
            if not self._accepting and not self.stopping and len(self.conns) < self.cfg.max_connections:
                self._set_accepting(True)
        if self.stopping and not self.conns and not self._stopped.done():
            self._stopped.set_result(None)

    # ------------------------------------------------------------------ once a second

    def _on_tick(self, rearm: bool = True) -> None:
        self.now = now = time.monotonic()
        if rearm:
            self._tick_handle = self.loop.call_later(1.0, self._on_tick)
        self._update_date(time.time())
        self._beat()
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
                for lsock in self._listen.values():
                    self._accept(lsock, drain=True)
            self._set_accepting(False)
            for sock in self._listen.values():
                sock.close()
            self._listen.clear()
            for conn in list(self.conns):
                conn.going_away()
        if not self.conns or now >= self._stop_deadline:
            self._stopped.set_result(None)

    def count_answer(self, status: int) -> None:
        self.requests += 1
        self.by_status[status // 100] += 1
