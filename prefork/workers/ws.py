"""WebSockets (RFC 6455, permessage-deflate RFC 7692) for ASGI applications.

The upgrade request comes from the same parser as every request; the handshake answer is
built here (it is a few fields). Every frame, read or written, goes through the `websockets`
package's sans-I/O protocol (`websockets.protocol.Protocol`, server side, opened at our
101; its C speedup unmasks): it parses and checks frames, answers pings, runs the closing
handshake and permessage-deflate, and fails the connection with the RFC's close code (1002
for a protocol error, 1009 for a message over --ws-max-size). It does not check that text
is UTF-8: the worker decodes text messages and fails the connection with 1007 through it.
The connection stays on the worker's event loop: an open WebSocket costs a descriptor and
a few kilobytes, never a worker.

Close codes: 1000 when the application returns after accepting, 1001 to every open
WebSocket on a graceful stop or reload, 1002 for a protocol error, 1007 for text that is
not UTF-8, 1009 for a message over --ws-max-size, 1011 when the application fails or a ping
goes unanswered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections import deque

from websockets.exceptions import InvalidHeader, NegotiationError
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.headers import build_extension, parse_extension
from websockets.protocol import SEND_EOF, Protocol, Side, State

from prefork.http.errors import ResponseHeadError
from prefork.http.core import clean_headers, error_answer, upgrade_head
from prefork.apps.response import error_response

log = logging.getLogger("prefork.error")

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_QUEUED = 64  # messages waiting for the application before reading pauses
CLOSE_WAIT = 5.0  # seconds the client has to answer our close frame
MAX_EARLY = 256 * 1024  # bytes read before the application accepts, then reading pauses

CONNECTING, ACCEPTED, CLOSING, CLOSED = range(4)

TEXT, BINARY, CONT, PING, PONG, CLOSE = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING,
                                         Opcode.PONG, Opcode.CLOSE)
_OPEN = State.OPEN
_SERVER = Side.SERVER
_DEFLATE = ServerPerMessageDeflateFactory()  # the parameters the client offers, no limit of ours
# The protocol logs "connection closed" at INFO for every connection, and its own failures
# (with a traceback) at ERROR: only those reach the error log.
_PROTO_LOG = logging.getLogger("prefork.error.websockets")
_PROTO_LOG.setLevel(logging.WARNING)


def start_websocket(proto, req, early: bytes = b"") -> None:
    """The request `req` asks for an upgrade: check the handshake, then run the app.
    `early` is what the client sent after the request head (frames it did not wait for
    our 101 to send); the protocol reads it once the application accepts."""
    worker = proto.worker
    problem = None
    key = None
    if req.version != "HTTP/1.1":
        problem = (400, "WebSocket needs HTTP/1.1")
    else:
        tokens = ",".join(v for n, v in req.headers if n == "connection").lower()
        version = req.header("sec-websocket-version")
        key = req.header("sec-websocket-key")
        if "upgrade" not in [t.strip() for t in tokens.split(",")]:
            problem = (400, "Connection: upgrade missing")
        elif version != "13":
            problem = (426, "Sec-WebSocket-Version must be 13")
        else:
            try:
                if key is None or len(base64.b64decode(key, validate=True)) != 16:
                    raise ValueError
            except (ValueError, binascii.Error):
                problem = (400, "malformed Sec-WebSocket-Key")
    if problem is not None:
        status, detail = problem
        log.info("%d from %s: %s", status, proto.addr, detail)
        resp = error_response(status, "Upgrade Required" if status == 426 else "Bad Request",
                              [("Sec-WebSocket-Version", "13")] if status == 426 else None)
        proto.transport.write(error_answer(worker.status_line(status), worker.date_block,
                                           worker.header_block(resp.headers), resp.body))
        worker.count_answer(status)
        proto.parser = None
        proto.linger()
        return
    ws = WebSocket(proto, req, key)
    ws.early = early
    proto.ws = ws
    proto.parser = None
    worker.websockets += 1
    if proto.read_paused:
        proto.read_paused = False
        proto.transport.resume_reading()
    ws.task = worker.loop.create_task(ws.run())


class WebSocket:
    def __init__(self, proto, req, key: str) -> None:
        self.proto = proto
        self.worker = proto.worker
        self.req = req
        self.key = key
        self.state = CONNECTING
        self.conn = None  # the websockets Protocol, once accepted
        self.inbox: deque = deque([{"type": "websocket.connect"}])
        self.waiter = None
        self.parts: list = []  # fragments of the message arriving
        self.kind = TEXT  # its opcode
        self.ping_sent = 0.0  # when the unanswered ping went out; 0.0: none
        self.last_ping = self.worker.now
        self.close_sent = 0.0
        self.disconnected = False
        self.responded = False  # an HTTP answer instead of the upgrade (or 403)
        self.http_head = None
        self.task = None
        self.early = b""  # bytes received before the accept

    # ------------------------------------------------------------------ the application

    async def run(self) -> None:
        proto = self.proto
        scope = proto.scope_for(self.req, "websocket")
        try:
            await self.worker.app(scope, self.receive, self.send)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, OSError) and self.disconnected:
                return
            log.exception("error in ASGI WebSocket application for %s", self.req.target)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if self.state == CONNECTING and not self.responded:
                self.http_answer(500, [], b"500 Internal Server Error\n")
            elif self.state == ACCEPTED:
                self.close(1011, "")
            return
        if self.state == CONNECTING and not self.responded:
            log.error("ASGI WebSocket application returned without accepting or closing")
            self.http_answer(500, [], b"500 Internal Server Error\n")
        elif self.state == ACCEPTED:
            self.close(1000, "")

    async def receive(self):
        while not self.inbox:
            if self.disconnected:
                return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
            self.waiter = w = self.worker.loop.create_future()
            await w
        event = self.inbox.popleft()
        if len(self.inbox) < MAX_QUEUED // 2 and self.proto.read_paused and not self.disconnected:
            self.proto.read_paused = False
            self.proto.transport.resume_reading()
        return event

    async def send(self, message) -> None:
        kind = message["type"]
        if self.disconnected or self.state == CLOSED:
            raise WebSocketClosed("the WebSocket is closed")
        if kind == "websocket.accept":
            if self.state != CONNECTING or self.responded:
                raise RuntimeError("websocket.accept twice, or after a response")
            self.accept(message.get("subprotocol"), message.get("headers", ()))
        elif kind == "websocket.send":
            if self.state != ACCEPTED:
                raise RuntimeError("websocket.send before websocket.accept, or after close")
            text = message.get("text")
            conn = self.conn
            if text is not None:
                conn.send_text(text.encode())
            else:
                conn.send_binary(message.get("bytes") or b"")
            write = self.proto.transport.write
            for data in conn.data_to_send():
                write(data)
            if self.proto.write_paused:
                await self.proto.drain()
        elif kind == "websocket.close":
            if self.state == CONNECTING and not self.responded:
                self.http_answer(403, [], b"")  # closing before accepting: 403 (ASGI spec)
            elif self.state == ACCEPTED:
                self.close(message.get("code", 1000), message.get("reason") or "")
        elif kind == "websocket.http.response.start":
            if self.state != CONNECTING or self.responded:
                raise RuntimeError("websocket.http.response.start after accept")
            self.responded = True
            self.http_head = (message["status"], message.get("headers", ()))
        elif kind == "websocket.http.response.body":
            if self.http_head is None:
                raise RuntimeError("websocket.http.response.body before its start")
            self.parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                status, headers = self.http_head
                self.http_head = None
                self.responded = False
                self.http_answer(status, headers, b"".join(self.parts))
                self.parts = []
        else:
            raise RuntimeError(f"unexpected ASGI WebSocket message {kind!r}")

    # ------------------------------------------------------------------ handshake

    def accept(self, subprotocol, headers) -> None:
        worker = self.worker
        accept = base64.b64encode(hashlib.sha1(self.key.encode("ascii") + GUID).digest()).decode("ascii")
        fields = [("Sec-WebSocket-Accept", accept)]  # Upgrade, Connection: upgrade_head
        if subprotocol:
            fields.append(("Sec-WebSocket-Protocol", subprotocol))
        extensions = []
        offered = ",".join(v for n, v in self.req.headers if n == "sec-websocket-extensions")
        if offered:
            try:
                offers = parse_extension(offered)
            except InvalidHeader as exc:
                log.info("ignored Sec-WebSocket-Extensions from %s: %s", self.proto.addr, exc)
                offers = []
            for name, params in offers:
                if name == _DEFLATE.name:
                    try:
                        answer, deflate = _DEFLATE.process_request_params(params, [])
                    except NegotiationError:
                        continue  # parameters we cannot accept: the client may offer others
                    extensions.append(deflate)
                    fields.append(("Sec-WebSocket-Extensions", build_extension([(name, answer)])))
                    break
        try:
            app_fields = clean_headers([(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers])[0]
            app_fields = [(n, v) for n, v in app_fields if not n.lower().startswith("sec-websocket-")]
            block = worker.header_block(fields + app_fields)
        except (ResponseHeadError, AttributeError, TypeError, ValueError) as exc:
            log.error("refused the WebSocket accept headers: %s", exc)
            block = worker.header_block(fields)
        self.proto.transport.write(upgrade_head(worker.status_line(101), worker.date_block, block, "websocket"))
        worker.count_answer(101)
        self.conn = conn = Protocol(_SERVER, state=_OPEN, max_size=worker.cfg.ws_max_size, logger=_PROTO_LOG)
        conn.extensions = extensions
        self.state = ACCEPTED
        self.last_ping = worker.now
        if worker.stopping:
            self.going_away()
        if self.early:
            early, self.early = self.early, b""
            if self.proto.read_paused and not self.disconnected:
                self.proto.read_paused = False
                self.proto.transport.resume_reading()
            self.data_received(early)

    def http_answer(self, status: int, headers, body: bytes) -> None:
        """An HTTP response instead of the upgrade (websocket.http.response, 403 for a close
        before accept, 500 for a failure); then the connection closes."""
        worker = self.worker
        try:
            fields = clean_headers([(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers])[0]
            block = worker.header_block(fields)
            line = worker.status_line(status)
        except (ResponseHeadError, AttributeError, TypeError, ValueError) as exc:
            log.error("refused the WebSocket denial response: %s", exc)
            status, block, line, body = 500, "", worker.status_line(500), b"500 Internal Server Error\n"
        self.responded = True
        self.state = CLOSED
        self.proto.transport.write(error_answer(line, worker.date_block, block, body))
        worker.count_answer(status)
        self.proto.transport.close()

    # ------------------------------------------------------------------ frames

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:  # frames before our 101 (RFC 6455 §4.1 says wait; some clients do not)
            if self.state == CONNECTING:
                self.early += data
                if len(self.early) > MAX_EARLY and not self.proto.read_paused:
                    self.proto.read_paused = True
                    self.proto.transport.pause_reading()
            return
        conn.receive_data(data)
        frames = conn.events_received()
        out = conn.data_to_send()  # pongs, the closing handshake, a failure's close frame
        if out:
            self.flush(out)
        for frame in frames:
            op = frame.opcode
            if op is TEXT or op is BINARY:
                if not frame.fin:
                    self.kind = op
                    self.parts = [frame.data]
                    continue
                data = frame.data
            elif op is CONT:
                self.parts.append(frame.data)
                if not frame.fin:
                    continue
                op = self.kind
                data = b"".join(self.parts)
                self.parts = []
            else:
                if op is PONG:
                    self.ping_sent = 0.0
                continue  # pings are answered, closes are handled below, by the protocol
            if op is TEXT:
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    self.fail(1007, "invalid UTF-8 in a text message")
                    return
                self.deliver({"type": "websocket.receive", "text": text})
            else:
                self.deliver({"type": "websocket.receive", "bytes": data if type(data) is bytes else bytes(data)})
        if conn.state is not _OPEN and not self.disconnected and (
                conn.close_rcvd is not None or conn.parser_exc is not None):
            self.remote_closed(conn)
            return
        if len(self.inbox) >= MAX_QUEUED and not self.proto.read_paused:
            self.proto.read_paused = True
            self.proto.transport.pause_reading()

    def remote_closed(self, conn) -> None:
        """The client's close frame (answered by the protocol), or a frame the protocol could
        not take (it sent the close frame with the code: 1002, 1009): the application hears
        the code, the connection closes."""
        if conn.parser_exc is not None:
            log.info("WebSocket protocol error from %s: %s", self.proto.addr, conn.parser_exc)
            close = conn.close_sent
        else:
            close = conn.close_rcvd
        self.deliver({"type": "websocket.disconnect", "code": close.code if close is not None else 1006,
                      "reason": close.reason if close is not None else ""})
        self.state = CLOSED
        self.disconnected = True
        self.proto.transport.close()

    def flush(self, out) -> None:
        transport = self.proto.transport
        for data in out:
            if data is SEND_EOF or not data:
                transport.close()  # the protocol is done: after its close frame, if any
                return
            transport.write(data)

    def deliver(self, msg) -> None:
        self.inbox.append(msg)
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    def close(self, code: int, reason: str) -> None:
        """Our close frame; the connection closes when the client answers (or soon)."""
        if self.state != ACCEPTED:
            return
        self.state = CLOSING
        self.close_sent = self.worker.now
        try:
            self.conn.send_close(code, reason or "")
        except Exception:  # noqa: BLE001 - a code the RFC does not allow, or not open any more
            self.proto.abort()
            return
        self.flush(self.conn.data_to_send())

    def fail(self, code: int, reason: str) -> None:
        """Text that is not UTF-8, or an unanswered ping: close frame (through the protocol),
        the application hears the code, close."""
        if self.state == ACCEPTED:
            self.state = CLOSING
            self.close_sent = self.worker.now
            self.conn.fail(code, reason)
            self.flush(self.conn.data_to_send())
        self.deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.disconnected = True
        self.proto.transport.close()

    def going_away(self) -> None:
        """Graceful stop or reload: 1001 to the client; not yet accepted: close."""
        if self.state == ACCEPTED:
            self.close(1001, "server shutting down")
        elif self.state == CONNECTING and not self.responded:
            pass  # the application is deciding; the accept sends 1001 at once

    def tick(self, now: float, cfg) -> None:
        if self.state == CLOSING:
            if now - self.close_sent > CLOSE_WAIT:
                self.proto.abort()
            return
        if self.state != ACCEPTED:
            return
        if self.ping_sent:
            if now - self.ping_sent > cfg.ws_ping_timeout:
                log.info("WebSocket from %s did not answer a ping in %.0fs; closing", self.proto.addr,
                         cfg.ws_ping_timeout)
                self.fail(1011, "keepalive ping timeout")
        elif cfg.ws_ping_interval and now - self.last_ping >= cfg.ws_ping_interval:
            self.last_ping = self.ping_sent = now
            self.conn.send_ping(b"prefork")
            self.flush(self.conn.data_to_send())

    def connection_lost(self) -> None:
        if not self.disconnected:
            self.disconnected = True
            self.deliver({"type": "websocket.disconnect", "code": 1006 if self.state != CLOSING else 1000,
                          "reason": ""})
        self.state = CLOSED
        self.worker.websockets -= 1


class WebSocketClosed(OSError):
    """send() on a WebSocket that is closed (ASGI WebSocket spec 2.4)."""
