"""One HTTP/1.1 connection on the asyncio worker: an asyncio.Protocol that feeds the parser
twins and runs the ASGI application for each request (`Cycle`), one at a time per connection
(pipelined requests wait their turn). The rules of the connection (framing, keep-alive,
error answers, timeouts) come from prefork.http.core; this module does the I/O and the ASGI
messages. A WebSocket upgrade hands the connection over to prefork.workers.ws, which needs
the optional `websockets` package; without it an upgrade request is served as an ordinary
request (an "http" scope), as uvicorn does, and the worker logs a warning once.

Body bytes are handed to the application as they arrive, and reading pauses while more than
READ_AHEAD bytes wait for it (back-pressure); writing waits while the transport's buffer is
over its high-water mark.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from time import perf_counter
from typing import Optional

from prefork.apps.asgi import request_scope
from prefork.workers.connection import _peer
from prefork.http.errors import RequestTimeout, ResponseHeadError
from prefork.http.core import (
    CHUNKED, CLOSE_DELIMITED, CONTINUE, EXACT, HEAD_ONLY, KEEP, LAST_CHUNK, LINGER as AFTER_LINGER,
    accepts_trailers, after_response, chunk, clean_headers, error_answer, expired, fit_length, last_chunk,
    refuse_head,
    response_head,
)
from prefork.proxy import ProxyProtocolError, forwarded_client, parse_proxy_header
from prefork.apps.response import error_response
from prefork.workers.epoll import ACCESS_IDLE, log

READ_AHEAD = 256 * 1024  # request body bytes read before the application asks for them
HEADS_KEPT = 256  # response heads (status, application fields) kept serialized, per worker
ONE_PIECE = 64 * 1024  # a whole body up to this size goes out joined to its head (one send)
FORWARDING = frozenset(("forwarded", "x-forwarded-for", "x-forwarded-proto"))  # what forwarded_client reads
MAX_PIPELINED = 16  # requests parsed ahead of the one being answered
WRITE_HIGH = 256 * 1024  # transport write buffer high-water mark

access_log_clock = perf_counter



_start_websocket = None  # prefork.workers.ws.start_websocket once imported; False: it cannot be


def websocket_driver():
    """start_websocket, imported at the first upgrade request (the websockets package costs
    its import time only to the workers that see one); None when websockets is missing."""
    global _start_websocket
    if _start_websocket is None:
        try:
            from prefork.workers.ws import start_websocket
        except ImportError as exc:
            log.warning("Unsupported upgrade request: no WebSocket library (%s); upgrade requests are "
                        "served as plain HTTP. Install websockets: pip install 'prefork-http[asgi]'", exc)
            start_websocket = False
        _start_websocket = start_websocket
    return _start_websocket or None


class ClientDisconnected(OSError):
    """send() on a connection the client has closed (ASGI HTTP spec 2.4)."""


# Connection states.
# UPGRADING: a WebSocket upgrade request is queued; what the client sends from then on is
# WebSocket frames (kept in `early` for the WebSocket protocol), never HTTP.
OPEN, CLOSING, LINGER, CLOSED, UPGRADING = range(5)


class Cycle:
    """One request: its body as it arrives, and its response as the application sends it."""

    __slots__ = ("req", "body", "buffered", "done", "waiter", "started", "complete", "mode",
                 "left", "head", "status", "keep", "continued", "t0", "sent", "trailers", "task",
                 "disconnected", "length", "received_all", "trailer_fields", "upgrade", "proto")

    def __init__(self, proto, req, body: bytes, done: bool) -> None:
        self.proto = proto
        self.req = req
        self.body = deque((body,)) if body else deque()
        self.buffered = len(body)
        self.done = done  # the whole body has arrived
        self.waiter = None  # a future receive() waits on
        self.started = False  # http.response.start seen
        self.complete = False  # the response has gone out whole
        self.head = None  # (status, header block, length) until the first body message
        self.mode = HEAD_ONLY
        self.left = 0
        self.status = 0
        self.keep = False
        self.continued = False
        self.t0 = 0.0
        self.sent = 0
        self.trailers = False
        self.task = None
        self.disconnected = False
        self.length = None
        self.received_all = False  # receive() has returned the last body bytes
        self.trailer_fields = []
        self.upgrade = False  # a WebSocket handshake

    # The application's receive and send: plain functions that return the protocol's
    # coroutine (no closure, no extra coroutine frame per message).
    def receive(self):
        return self.proto.receive(self)

    def send(self, message):
        return self.proto.send(self, message)

    def wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)


class HttpProtocol(asyncio.Protocol):
    def __init__(self, worker, addr) -> None:
        self.worker = worker
        self.addr = addr
        self.transport = None
        self.parser = worker.new_parser()
        self.state = OPEN
        self.cycles: deque = deque()  # requests in order; the first is being answered
        self.current: Optional[Cycle] = None  # the cycle the application runs
        self.streaming: Optional[Cycle] = None  # the cycle whose body the parser still reads
        self.last_active = worker.now
        self.head_started = 0.0
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter = None
        self.local = None
        self.served = 0
        self.trusted = worker.trusted.trusts(addr)
        self.proxy = b"" if worker.proxy_protocol and self.trusted else None
        self.ws = None  # the WebSocket, after an upgrade
        self.early = None  # bytes received after an upgrade head, before the WebSocket starts
        self.scheme = "http"
        self.tls = None  # prefork.tls.TLSInfo on a TLS connection
        self.tls_extension = None  # its scope["extensions"]["tls"]
        heads = getattr(worker, "asgi_heads", None)
        if heads is None:
            heads = worker.asgi_heads = {}
        self.heads = heads  # (status, tuple(headers)) -> (header block, Content-Length or None)

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport) -> None:
        self.transport = transport
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            from prefork.tls import TLSInfo

            self.tls = TLSInfo(sslobj, self.worker.tls_server_cert)
            self.tls_extension = self.tls.asgi()
            self.scheme = "https"
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        if self.worker.stopping:  # drained from the queue at a graceful stop: serve it
            pass

    def data_received(self, data: bytes) -> None:
        self.last_active = self.worker.now
        if self.ws is not None:
            self.ws.data_received(data)
            return
        if self.state != OPEN:
            if self.state == UPGRADING:
                self.early += data
                if len(self.early) > READ_AHEAD and not self.read_paused:
                    self.read_paused = True
                    self.transport.pause_reading()
            return
        if self.proxy is not None:
            data = self.proxy_header(data)
            if not data:
                return
        parser = self.parser
        reqs = parser.feed(data)
        if parser.buffered and parser.pending is None:
            if not self.head_started:
                self.head_started = self.worker.now
        else:
            self.head_started = 0.0
        streaming = self.streaming
        for i, req in enumerate(reqs):
            if streaming is not None and req is streaming.req:  # its last bytes arrived
                if req.body:
                    streaming.body.append(req.body)
                    streaming.buffered += len(req.body)
                streaming.done = True
                streaming.wake()
                self.streaming = streaming = None
            else:
                cycle = Cycle(self, req, req.body, True)
                self.cycles.append(cycle)
                if req.method == "GET" and req.header("upgrade") is not None and self.is_websocket(req) \
                        and websocket_driver() is not None:
                    cycle.upgrade = True
                    self.state = UPGRADING
                    self.early = bytearray(self.bytes_after_upgrade(data, reqs, i))
                    self.head_started = 0.0
                    if self.current is None:
                        self.next_cycle()
                    return
        p = parser.pending
        if p is not None:
            if streaming is None:
                self.streaming = streaming = Cycle(self, p, b"", False)
                self.cycles.append(streaming)
            data = parser.take_body()
            if data:
                streaming.body.append(data)
                streaming.buffered += len(data)
                streaming.wake()
        if self.current is None:
            self.next_cycle()
        self.read_flow()

    def eof_received(self):
        """The client shut its side, which it may do once it has sent its requests: answer
        those that arrived whole, in order, then close (as the epoll worker does). A request
        whose body can no longer arrive whole hears http.disconnect: when it is the one the
        application runs, the connection closes now."""
        if self.state != OPEN or self.ws is not None:
            return None
        self.state = CLOSING
        streaming = self.streaming
        if streaming is not None:
            self.streaming = None
            streaming.disconnected = True
            streaming.wake()
            if streaming is self.current:
                return None
            self.cycles.remove(streaming)
        if self.current is not None:
            self.current.wake()  # an application waiting for http.disconnect hears it
        return True if self.cycles else None

    def connection_lost(self, exc) -> None:
        self.state = CLOSED
        for cycle in self.cycles:
            cycle.disconnected = True
            cycle.wake()
        cur = self.current
        if cur is not None:
            cur.disconnected = True
            cur.wake()
        self.cycles.clear()
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)
        if self.ws is not None:
            self.ws.connection_lost()
        self.worker.forget(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.last_active = self.worker.now
        w = self.drain_waiter
        if w is not None:
            self.drain_waiter = None
            if not w.done():
                w.set_result(None)

    async def drain(self) -> None:
        if self.write_paused and self.state != CLOSED:
            w = self.drain_waiter
            if w is None:
                self.drain_waiter = w = self.worker.loop.create_future()
            await w

    # ------------------------------------------------------------------ flow control

    def read_flow(self) -> None:
        """Pause reading while the application is behind: too many body bytes waiting
        for receive(), or too many pipelined requests waiting for their turn."""
        if self.state != OPEN or self.ws is not None:
            return
        cycles = self.cycles
        if not self.read_paused and len(cycles) <= 1 and (not cycles or cycles[0].buffered <= READ_AHEAD):
            return  # the common case: one request at a time, reading on
        ahead = sum(c.buffered for c in cycles)
        over = ahead > READ_AHEAD or len(self.cycles) > MAX_PIPELINED
        if over and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        elif not over and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    # ------------------------------------------------------------------ requests

    def next_cycle(self) -> None:
        """Start the application on the next request, or answer a protocol error."""
        if self.state == CLOSED:
            return
        if self.cycles:
            cycle = self.cycles[0]
            self.current = cycle
            if cycle.upgrade:
                self.cycles.clear()
                self.current = None
                early, self.early = self.early, None
                _start_websocket(self, cycle.req, bytes(early or b""))
                return
            cycle.t0 = access_log_clock() if self.worker.access is not None else 0.0
            cycle.task = self.worker.loop.create_task(self.run_asgi(cycle))
            return
        self.current = None
        if self.parser is not None and self.parser.error is not None and self.state == OPEN:
            self.reject(self.parser.error)
        elif self.state == CLOSING:
            self.close()

    @staticmethod
    def is_websocket(req) -> bool:
        for name, value in req.headers:
            if name == "upgrade" and "websocket" in value.lower():
                return True
        return False

    def bytes_after_upgrade(self, data: bytes, reqs, i: int) -> bytes:
        """What `data` holds past the head of the upgrade request `reqs[i]`: WebSocket
        frames from a client that did not wait for our 101. The parser twins have no call
        that hands back the bytes past a completed head, so they are found here: when the
        parser stopped right after the upgrade request, they are the `buffered` tail it
        keeps for a head in progress; when it went on and failed on them (a frame is not an
        HTTP head), the upgrade head's end is found in `data`, which works when this read
        began at a request line and the requests up to the upgrade carried no body."""
        parser = self.parser
        if i == len(reqs) - 1 and parser.error is None and parser.pending is None:
            n = parser.buffered
            return data[len(data) - n:] if n else b""
        first = reqs[0]
        if (data.lstrip(b"\r\n").startswith(first.method.encode("ascii") + b" ")
                and not any(r.body or r.content_length or r.chunked for r in reqs[:i + 1])):
            pos = 0
            for _ in range(i + 1):
                pos = data.find(b"\r\n\r\n", pos)
                if pos < 0:
                    break
                pos += 4
            else:
                return data[pos:]
        log.info("dropped the bytes %s sent after its WebSocket upgrade request", _peer(self.addr))
        return b""

    def client(self, req):
        """(client (host, port), scheme) for the scope."""
        addr = self.addr
        if isinstance(addr, tuple):
            host, port = addr[0], addr[1]
        else:
            host, port = "", 0
        scheme = self.scheme
        if self.trusted and self.worker.trusted:
            headers = req.headers
            for name, _ in headers:
                if name in FORWARDING:  # (forwarded_client finds nothing else to go on)
                    fhost, scheme = forwarded_client(headers, host, self.worker.trusted, scheme)
                    if fhost != host:
                        host, port = fhost, 0
                    break
        return ((host, port) if isinstance(addr, tuple) else None), scheme

    def server_address(self):
        local = self.local
        if local is None:
            sock = self.transport.get_extra_info("sockname")
            if isinstance(sock, tuple):
                local = (sock[0], sock[1])
            else:
                local = (sock or "", None)
            self.local = local
        return local

    def scope_for(self, req, kind: str):
        client, scheme = self.client(req)
        if kind == "websocket":
            scheme = "wss" if scheme == "https" else "ws"
        scope = request_scope(req, kind, scheme, client, self.server_address(), self.worker.cfg.root_path,
                              self.worker.state)
        if self.tls_extension is not None:  # the ASGI TLS extension
            scope["extensions"] = dict(scope["extensions"], tls=self.tls_extension)
        return scope

    async def run_asgi(self, cycle: Cycle) -> None:
        req = cycle.req
        worker = self.worker
        root = worker.cfg.root_path
        if root and not (req.path == root or req.path.startswith(root + "/")):
            self.simple_answer(cycle, 404, "Not Found")
            return
        scope = self.scope_for(req, "http")
        try:
            await worker.app(scope, cycle.receive, cycle.send)
        except BaseException as exc:  # noqa: BLE001 - an application error is logged, never raised
            if isinstance(exc, ClientDisconnected) and cycle.disconnected:
                if self.state == CLOSING:  # it heard the client's half-close
                    self.close()
                return
            log.exception("error in ASGI application for %s %s", req.method, req.target)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if not cycle.started:
                self.simple_answer(cycle, 500, "Internal Server Error")
            elif not cycle.complete:
                self.abort()
            return
        if not cycle.complete and not cycle.disconnected:
            if not cycle.started:
                log.error("ASGI application returned without a response for %s %s", req.method, req.target)
                self.simple_answer(cycle, 500, "Internal Server Error")
            else:
                log.error("ASGI application returned before its response body ended (%s %s); closing",
                          req.method, req.target)
                self.abort()
        elif cycle.disconnected and self.state == CLOSING:  # it heard the client's half-close
            self.close()

    def simple_answer(self, cycle: Cycle, status: int, reason: str) -> None:
        """A server-made answer (404 outside --root-path, 500 for a broken application)."""
        if self.state == CLOSED or cycle.complete:
            return
        resp = error_response(status, reason)
        cycle.started = True
        cycle.head = (status, self.worker.header_block(resp.headers), len(resp.body))
        self.start_body(cycle, resp.body, False)

    # ------------------------------------------------------------------ receive

    async def receive(self, cycle: Cycle):
        if cycle.disconnected:
            return {"type": "http.disconnect"}
        if cycle.received_all:
            # The body has been handed over: the next event is the end of the connection
            # (or of the response, after which this request has nothing more to hear).
            while not cycle.disconnected and not cycle.complete:
                if self.state == CLOSING:
                    # The client has shut its side and the application waits for its
                    # disconnect (a long poll, a stream): tell it; it answers no more.
                    cycle.disconnected = True
                    break
                cycle.waiter = w = self.worker.loop.create_future()
                await w
            return {"type": "http.disconnect"}
        if not cycle.body and not cycle.done:
            if cycle.req.expect_continue and not cycle.continued and not cycle.started:
                cycle.continued = True
                self.transport.write(CONTINUE)
            while not cycle.body and not cycle.done and not cycle.disconnected:
                cycle.waiter = w = self.worker.loop.create_future()
                self.read_flow()
                await w
            if cycle.disconnected and not cycle.body:
                return {"type": "http.disconnect"}
        body = cycle.body
        if len(body) == 1:
            data = body.popleft()
        else:
            data = b"".join(body)
            body.clear()
        cycle.buffered = 0
        more = not cycle.done
        if not more:
            cycle.received_all = True
        if self.read_paused:
            self.read_flow()
        return {"type": "http.request", "body": data, "more_body": more}

    # ------------------------------------------------------------------ send

    async def send(self, cycle: Cycle, message) -> None:
        kind = message["type"]
        if cycle.disconnected or self.state == CLOSED:
            raise ClientDisconnected("the client has gone")
        if kind == "http.response.body" and cycle.started:  # the most common message first
            if cycle.complete or cycle.mode == -1:
                raise RuntimeError("http.response.body after the response ended")
            if cycle.head is not None:
                self.start_body(cycle, message.get("body", b""), message.get("more_body", False))
            else:
                self.write_body(cycle, message.get("body", b""), message.get("more_body", False))
            if self.write_paused:
                await self.drain()
            return
        if kind == "http.response.start":
            if cycle.started:
                raise RuntimeError("http.response.start sent twice")
            cycle.started = True
            status = message["status"]
            headers = message.get("headers", ())
            heads = self.heads
            try:
                headers = tuple(headers)
                block, length = heads[status, headers]
            except (KeyError, TypeError):  # not seen yet (or not hashable: not kept)
                try:
                    fields = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
                    fields, length = clean_headers(fields)
                    block = self.worker.header_block(fields)  # checks now, so that a bad field is a 500
                    self.worker.status_line(status)
                except (ResponseHeadError, AttributeError, TypeError, ValueError) as exc:
                    resp = error_response(*refuse_head(cycle.req.method, cycle.req.target, exc))
                    cycle.head = (resp.status, self.worker.header_block(resp.headers), len(resp.body))
                    self.start_body(cycle, resp.body, False)
                    return
                if len(heads) >= HEADS_KEPT:
                    heads.clear()
                try:
                    heads[status, headers] = (block, length)
                except TypeError:  # fields given as lists: fine, but not kept
                    pass
            cycle.trailers = bool(message.get("trailers", False))
            if cycle.trailers:
                if accepts_trailers(cycle.req.version, cycle.req.headers):
                    length = None  # trailers need the chunked coding
                else:
                    cycle.trailer_fields = None  # the client did not ask: dropped
            cycle.head = (status, block, length)
            return
        if not cycle.started:
            raise RuntimeError(f"{kind} before http.response.start")
        if kind == "http.response.pathsend":
            await self.pathsend(cycle, message["path"])
        elif kind == "http.response.trailers":
            if not cycle.trailers or cycle.head is not None or cycle.complete:
                raise RuntimeError("http.response.trailers without trailers=True, or not after the body")
            if cycle.trailer_fields is not None:
                fields = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message.get("headers", ())]
                cycle.trailer_fields += clean_headers(fields)[0]
            if not message.get("more_trailers", False):
                if cycle.mode == CHUNKED:
                    self.transport.write(last_chunk(cycle.trailer_fields or (), self.worker.header_block))
                self.response_done(cycle)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def start_body(self, cycle: Cycle, body: bytes, more: bool) -> None:
        """The head goes out with the first body bytes: when they are the whole body, the
        server knows its length and sends Content-Length instead of chunking."""
        status, block, length = cycle.head
        cycle.head = None
        worker = self.worker
        req = cycle.req
        if length is None and not more and (not cycle.trailers or cycle.trailer_fields is None):
            length = len(body)
        data, mode, keep = response_head(req.method, req.version, req.keep_alive and not worker.stopping,
                                         worker.status_line(status), worker.date_block, block, status, length)
        cycle.status = status
        cycle.mode = mode
        cycle.keep = keep
        cycle.length = length
        cycle.left = length if length is not None else 0
        worker.count_answer(status)
        if mode == HEAD_ONLY:
            self.transport.write(data)
            cycle.mode = -1  # body messages are dropped until the last
            if not more and not cycle.trailers:
                self.response_done(cycle)
            return
        if mode == EXACT and not more and len(body) == length and length <= ONE_PIECE and not cycle.trailers:
            # The common answer, its whole body in one message: head and body in one piece.
            cycle.left = 0
            cycle.sent = length
            self.transport.write(data + body)
            self.response_done(cycle)
            return
        self.transport.write(data)
        self.write_body(cycle, body, more)

    def write_body(self, cycle: Cycle, body: bytes, more: bool) -> None:
        mode = cycle.mode
        t = self.transport
        if mode == -1:  # HEAD, 204, 304: nothing goes out
            if not more and not cycle.trailers:
                self.response_done(cycle)
            return
        if mode == EXACT:
            if body:
                if len(body) > cycle.left:  # (the label is built only then)
                    body = fit_length(body, cycle.left, f"the ASGI response body for {cycle.req.method} "
                                      f"{cycle.req.target}")
                cycle.left -= len(body)
                cycle.sent += len(body)
                t.write(body)
            if not more:
                if cycle.left:
                    log.error("an ASGI response body ended %d bytes short of its Content-Length; closing",
                              cycle.left)
                    cycle.keep = False
                    self.response_done(cycle)
                    self.abort()
                    return
                if not cycle.trailers:  # else the trailers message ends it
                    self.response_done(cycle)
        elif mode == CHUNKED:
            if body:
                cycle.sent += len(body)
                t.write(chunk(body))
            if not more:
                if cycle.trailers:
                    cycle.head = None
                    return  # the trailers message ends it
                t.write(LAST_CHUNK)
                self.response_done(cycle)
        elif mode == CLOSE_DELIMITED:
            if body:
                cycle.sent += len(body)
                t.write(body)
            if not more and not cycle.trailers:
                self.response_done(cycle)

    async def pathsend(self, cycle: Cycle, path: str) -> None:
        """http.response.pathsend: the file goes out with sendfile (loop.sendfile, which
        falls back to reads and writes where the loop cannot)."""
        if cycle.head is None:
            raise RuntimeError("http.response.pathsend after the body started")
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            status, block, length = cycle.head
            cycle.head = (status, block, size)
            if size <= ONE_PIECE and not cycle.trailers:
                # A small file: read, then one send with its head (sendfile would cost a
                # send for the head, a sendfile, and a pass of the loop in between).
                data = os.pread(f.fileno(), size, 0)
                if len(data) != size:
                    raise OSError("the file ended early while sending")
                self.start_body(cycle, data, False)
                return
            self.start_body(cycle, b"", True)
            if cycle.mode == -1:
                self.response_done(cycle)
                return
            if size:
                await self.drain()
                await self.sendfile(f, size)
            cycle.sent = size
            cycle.left = 0
            self.response_done(cycle)

    async def sendfile(self, f, size: int) -> None:
        """`size` bytes of `f` to the client: loop.sendfile (os.sendfile on the stdlib loop);
        where the loop has none (uvloop), os.sendfile on the socket whenever the transport
        has nothing queued, else reads handed to the transport."""
        try:
            await self.worker.loop.sendfile(self.transport, f, 0, size)
            return
        except NotImplementedError:
            pass
        # Over TLS the bytes must go through the transport (sendfile would bypass it).
        sock = self.transport.get_extra_info("socket") if self.tls is None else None
        fd = f.fileno()
        offset = 0
        while offset < size:
            if self.state == CLOSED:
                raise ClientDisconnected("the client has gone")
            if sock is not None and not self.transport.get_write_buffer_size():
                try:
                    sent = os.sendfile(sock.fileno(), fd, offset, size - offset)
                except BlockingIOError:
                    sent = -1
                if sent == 0:
                    raise OSError("the file ended early while sending")
                if sent > 0:
                    offset += sent
                    continue
            piece = os.pread(fd, min(WRITE_HIGH, size - offset), offset)
            if not piece:
                raise OSError("the file ended early while sending")
            self.transport.write(piece)
            offset += len(piece)
            await self.drain()

    def response_done(self, cycle: Cycle) -> None:
        """The response went out whole: log it, then the next request, or close."""
        if cycle.complete:
            return
        cycle.complete = True
        cycle.mode = -1
        worker = self.worker
        self.served += 1
        self.last_active = worker.now
        if worker.access is not None:
            if worker.access_flush is None:  # the first line of a batch: written ACCESS_IDLE from now
                worker.access_flush = worker.loop.call_later(ACCESS_IDLE, worker.flush_access)
            worker.access(self.client(cycle.req)[0] if self.trusted else self.addr, cycle.req, cycle.status,
                          cycle.sent if cycle.req.method != "HEAD" else 0,
                          access_log_clock() - cycle.t0 if cycle.t0 else 0.0)
        cycle.wake()
        if self.cycles and self.cycles[0] is cycle:
            self.cycles.popleft()
        if self.current is cycle:
            self.current = None
        then = after_response(cycle.keep, cycle.done, bool(self.cycles))
        if then != KEEP:
            self.cycles.clear()
            self.streaming = None
            if then == AFTER_LINGER:
                self.linger()
            else:
                self.state = CLOSING
                self.close()
            return
        if self.state == CLOSING and not self.cycles:
            self.close()
            return
        self.next_cycle()
        self.read_flow()

    # ------------------------------------------------------------------ errors, closing

    def reject(self, error) -> None:
        worker = self.worker
        log.info("%s from %s: %s", error.status, _peer(self.addr), error.detail)
        resp = error_response(error.status, error.reason)
        self.transport.write(error_answer(worker.status_line(error.status), worker.date_block,
                                          worker.header_block(resp.headers), resp.body))
        worker.count_answer(error.status)
        self.parser = None
        self.linger()

    def linger(self) -> None:
        """Shut our side once the answer is out; read and drop what the client still sends
        for a moment, so that the close does not reset the answer away."""
        if self.state == CLOSED:
            return
        if self.state == CLOSING:  # the client has shut its side: nothing left to read
            self.close()
            return
        self.state = LINGER
        self.last_active = self.worker.now
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
            else:
                self.transport.close()
        except OSError:
            self.abort()

    def going_away(self) -> None:
        """Graceful stop: WebSockets get 1001. An HTTP connection answers its next request
        with `Connection: close` (start_body reads worker.stopping), and the worker closes
        it once idle for DRAIN_GRACE (close_idle): closing it now could reset a request
        on its way."""
        if self.ws is not None:
            self.ws.going_away()

    def is_idle(self) -> bool:
        """Between requests (or before the first): nothing half-received, nothing to answer
        or send, no WebSocket, no PROXY header in progress."""
        parser = self.parser
        return self.state == OPEN and self.ws is None and self.current is None and not self.cycles \
            and self.transport is not None and parser is not None and parser.pending is None \
            and not parser.buffered and not self.proxy and not self.transport.get_write_buffer_size()

    def close_idle(self) -> bool:
        """Close a connection that looks idle, unless request bytes wait in the kernel: the
        loop reads and answers them next (with `Connection: close` when draining); closing
        with unread input would reset the connection under the client's request."""
        sock = self.transport.get_extra_info("socket")
        waiting = b""
        if sock is not None:
            peek = socket.socket(fileno=sock.fileno())  # borrowed (uvloop's is a stand-in)
            try:
                waiting = peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except OSError:  # nothing waiting (EAGAIN), or the connection is already broken
                pass
            finally:
                peek.detach()
        if not waiting:
            self.close()
        return not waiting

    def close(self) -> None:
        if self.state != CLOSED and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def tick(self, now: float, cfg) -> None:
        if self.state == CLOSED or self.transport is None:
            return
        if self.ws is not None:
            self.ws.tick(now, cfg)
            return
        writing = self.write_paused or self.transport.get_write_buffer_size() > 0
        cur = self.current
        body_pending = self.parser is not None and self.parser.pending is not None
        if cur is not None and not writing and self.state != LINGER:
            # The application is running; only a client that stops sending the body it
            # is waiting for is timed out.
            if not (body_pending and cur.waiter is not None):
                return
        why = expired(now, self.last_active, self.head_started, writing, body_pending, cfg,
                      self.state == LINGER, self.served, bool(self.proxy))
        if why is None:
            return
        if why == "linger":
            self.abort()
            return
        if why == "keepalive" and cur is None:
            self.close_idle()  # idle between requests, or nothing sent since it connected
            return
        if why in ("keepalive", "write", "proxy") or cur is not None and cur.started:
            if why == "write":
                log.info("closing a connection from %s: not reading for %.0fs", _peer(self.addr),
                         now - self.last_active)
            self.abort() if why == "write" else self.close()
            return
        if cur is not None:
            cur.disconnected = True
            cur.wake()
            self.cycles.clear()
            self.current = None
        self.reject(RequestTimeout("no body bytes for %.0fs" % (now - self.last_active) if why == "body"
                                   else f"request head not complete after {cfg.header_timeout:g}s"))

    # ------------------------------------------------------------------ PROXY protocol

    def proxy_header(self, data: bytes) -> bytes:
        buf = self.proxy + data
        try:
            found = parse_proxy_header(buf)
        except ProxyProtocolError as exc:
            log.warning("closing a connection from %s: %s", _peer(self.addr), exc)
            self.abort()
            return b""
        if found is None:
            self.proxy = buf
            return b""
        used, client = found
        self.proxy = None
        if client is not None:
            self.addr = client
        return buf[used:]

