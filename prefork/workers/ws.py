"""WebSockets (RFC 6455, permessage-deflate RFC 7692) for ASGI applications.

The upgrade request comes from the same parser as every request; the handshake answer is
built here (it is a few fields), and the frames are wsproto's sans-I/O `Connection`, but
for the hot path of a connection without an extension: whole, final text and binary frames
(and pings, pongs) are read and written here (plain_frames, plain_frame), which costs a
fraction of wsproto's objects per message; anything else (a fragment, a close, a 64-bit
length, a protocol error) goes to wsproto, which then reads the rest of the connection.
The connection stays on the worker's event loop: an open WebSocket costs a descriptor and
a few kilobytes, never a worker.

Close codes: 1000 when the application returns after accepting, 1001 to every open
WebSocket on a graceful stop or reload, 1002 for a protocol error, 1009 for a message over
--ws-max-size, 1011 when the application fails or a ping goes unanswered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import struct
from collections import deque

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import RemoteProtocolError

from prefork.http.errors import ResponseHeadError
from prefork.http.core import clean_headers, error_answer, upgrade_head
from prefork.apps.response import error_response

log = logging.getLogger("prefork.error")

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_QUEUED = 64  # messages waiting for the application before reading pauses
CLOSE_WAIT = 5.0  # seconds the client has to answer our close frame
MAX_EARLY = 256 * 1024  # bytes read before the application accepts, then reading pauses

CONNECTING, ACCEPTED, CLOSING, CLOSED = range(4)

# Frames without an extension, written and read here instead of through wsproto's objects
# (a frame object, a message object and a generator per message): the hot path of an
# open WebSocket. wsproto still does the handshake's extension negotiation, the closing
# handshake, fragmented messages, and every frame these functions do not take.
_OPEN = ConnectionState.OPEN
TEXT, BINARY, PING, PONG = 1, 2, 9, 10


def plain_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (server to client), as wsproto would build it."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def unmask(mask: bytes, payload: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    key = int.from_bytes((mask * ((n + 3) // 4))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


def start_websocket(proto, req, early: bytes = b"") -> None:
    """The request `req` asks for an upgrade: check the handshake, then run the app.
    `early` is what the client sent after the request head (frames it did not wait for
    our 101 to send); wsproto reads it once the application accepts."""
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
        self.conn = None  # wsproto Connection, once accepted
        self.inbox: deque = deque([{"type": "websocket.connect"}])
        self.waiter = None
        self.parts: list = []  # fragments of the message arriving
        self.size = 0
        self.ping_sent = 0.0  # when the unanswered ping went out; 0.0: none
        self.last_ping = self.worker.now
        self.close_sent = 0.0
        self.disconnected = False
        self.responded = False  # an HTTP answer instead of the upgrade (or 403)
        self.http_head = None
        self.task = None
        self.early = b""  # bytes received before the accept
        self.plain = False  # frames read by plain_frames (no extension; wsproto not fed yet)
        self.partial = b""  # the start of a frame plain_frames waits to see whole

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
            if self.plain and conn.state is _OPEN:
                if text is not None:
                    data = plain_frame(TEXT, text.encode("utf-8"))
                else:
                    data = plain_frame(BINARY, message.get("bytes") or b"")
            elif text is not None:
                data = conn.send(TextMessage(data=text))
            else:
                data = conn.send(BytesMessage(data=message.get("bytes") or b""))
            self.proto.transport.write(data)
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
            deflate = PerMessageDeflate()
            for offer in offered.split(","):
                if offer.split(";", 1)[0].strip() == deflate.name:
                    answer = deflate.accept(offer.strip())
                    if answer:
                        extensions.append(deflate)
                        fields.append(("Sec-WebSocket-Extensions", deflate.name if answer is True
                                       else f"{deflate.name}; {answer}"))
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
        self.conn = Connection(ConnectionType.SERVER, extensions=extensions)
        self.plain = not extensions
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
        if self.plain:
            data = self.plain_frames(data)
            if not data:
                self.inbox_flow()
                return
        try:
            conn.receive_data(data)
            events = list(conn.events())
        except RemoteProtocolError as exc:
            log.info("WebSocket protocol error from %s: %s", self.proto.addr, exc)
            self.fail(1002, "protocol error")
            return
        write = self.proto.transport.write
        max_size = self.worker.cfg.ws_max_size
        for event in events:
            t = type(event)
            if t is TextMessage or t is BytesMessage:
                self.size += len(event.data)
                if self.size > max_size:
                    self.fail(1009, "message too big")
                    return
                self.parts.append(event.data)
                if event.message_finished:
                    parts = self.parts
                    self.parts = []
                    self.size = 0
                    if t is TextMessage:
                        msg = {"type": "websocket.receive", "text": parts[0] if len(parts) == 1 else "".join(parts)}
                    else:
                        msg = {"type": "websocket.receive", "bytes": parts[0] if len(parts) == 1 else b"".join(parts)}
                    self.deliver(msg)
            elif t is Ping:
                write(conn.send(event.response()))
            elif t is Pong:
                self.ping_sent = 0.0
            elif t is CloseConnection:
                if conn.state == ConnectionState.REMOTE_CLOSING:
                    write(conn.send(event.response()))
                elif conn.state == _OPEN:
                    # wsproto's own close for a frame it could not parse (1002, 1007): it
                    # sends nothing itself; the client hears the code in our close frame.
                    log.info("WebSocket protocol error from %s: %s", self.proto.addr, event.reason)
                    write(conn.send(CloseConnection(code=event.code)))
                self.deliver({"type": "websocket.disconnect", "code": event.code, "reason": event.reason or ""})
                self.state = CLOSED
                self.disconnected = True
                self.proto.transport.close()
                return
        self.inbox_flow()

    def inbox_flow(self) -> None:
        if len(self.inbox) >= MAX_QUEUED and not self.proto.read_paused:
            self.proto.read_paused = True
            self.proto.transport.pause_reading()

    def plain_frames(self, data: bytes) -> bytes:
        """Read the whole, final, masked text and binary frames (7- or 16-bit lengths, no
        RSV bit, within --ws-max-size, valid UTF-8 for text), pings and pongs at the front
        of `data`; keep a frame that has not arrived whole. Returns what is left from the
        first frame of any other kind: wsproto reads from there on (a close, a fragment, a
        protocol error), and this connection's frames all go to wsproto from then on."""
        if self.partial:
            data = self.partial + data
            self.partial = b""
        end = len(data)
        pos = 0
        max_size = self.worker.cfg.ws_max_size
        while pos < end:
            if end - pos < 2:
                self.partial = data[pos:]
                return b""
            b0 = data[pos]
            b1 = data[pos + 1]
            opcode = b0 & 0x0F
            n = b1 & 0x7F
            if b0 & 0xF0 != 0x80 or not b1 & 0x80:  # not final, an RSV bit, or not masked
                break
            if n == 126:
                if opcode != TEXT and opcode != BINARY:
                    break  # (a control frame's length is 125 at most)
                if end - pos < 4:
                    self.partial = data[pos:]
                    return b""
                n = (data[pos + 2] << 8) | data[pos + 3]
                if n < 126:
                    break  # not the shortest length: wsproto's protocol error
                start = pos + 8
            elif n == 127:
                break
            else:
                start = pos + 6
            if n > max_size:
                break
            if end < start + n:
                self.partial = data[pos:]
                return b""
            payload = unmask(data[start - 4:start], data[start:start + n])
            if opcode == BINARY:
                self.deliver({"type": "websocket.receive", "bytes": payload})
            elif opcode == TEXT:
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    break  # wsproto closes with 1007
                self.deliver({"type": "websocket.receive", "text": text})
            elif opcode == PING:
                self.proto.transport.write(plain_frame(PONG, payload))
            elif opcode == PONG:
                self.ping_sent = 0.0
            else:
                break
            pos = start + n
        else:
            return b""
        self.plain = False
        return data[pos:]

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
            self.proto.transport.write(self.conn.send(CloseConnection(code=code, reason=reason or None)))
        except Exception:  # noqa: BLE001 - wsproto refuses a close in a closing state
            self.proto.abort()

    def fail(self, code: int, reason: str) -> None:
        """A protocol or size error: close frame, the application hears the code, close."""
        if self.state == ACCEPTED:
            self.close(code, reason)
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
            self.proto.transport.write(plain_frame(PING, b"prefork") if self.plain
                                       else self.conn.send(Ping(payload=b"prefork")))

    def connection_lost(self) -> None:
        if not self.disconnected:
            self.disconnected = True
            self.deliver({"type": "websocket.disconnect", "code": 1006 if self.state != CLOSING else 1000,
                          "reason": ""})
        self.state = CLOSED
        self.worker.websockets -= 1


class WebSocketClosed(OSError):
    """send() on a WebSocket that is closed (ASGI WebSocket spec 2.4)."""
