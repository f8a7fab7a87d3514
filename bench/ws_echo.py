"""WebSocket echo load: N connections, each sends one message and awaits its echo, in a
loop, for D seconds; prints one JSON line with messages/s and the client's own CPU use.

    python bench/ws_echo.py ws://127.0.0.1:8000/ws --connections 32 --duration 10
    taskset -c 1 python bench/ws_echo.py URL ...     # as bench/run_all.py runs it

A raw-socket client on asyncio (uvloop when installed): the handshake is checked (101 and
Sec-WebSocket-Accept), the masked frame is built once, and every echo is compared with
what was sent, so a wrong answer is an error, not a message. No extensions are offered
(no permessage-deflate), so every server sends plain frames. It answers the server's pings.
The `websockets` library's client is far slower per message than the servers under test
and would measure itself; bench/run_all.py checks each server's echo with it once instead.

`client_cpu` is the CPU time this process used per second of the measured window (1.0 is
its core busy): from 0.9 up the client, not the server, set the pace.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import resource
import sys
import time
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MASK = b"\x5a\xa5\x3c\xc3"


def masked_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


class Echo(asyncio.Protocol):
    def __init__(self, host: str, path: str, message: bytes, frame: bytes, state: dict) -> None:
        self.host, self.path, self.message, self.frame, self.state = host, path, message, frame, state
        self.buf = bytearray()
        self.upgraded = False
        self.count = 0
        self.key = base64.b64encode(os.urandom(16))
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        % (self.path.encode(), self.host.encode(), self.key))

    def fail(self, why: str) -> None:
        self.state["errors"].append(why)
        self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            if not self.state["stop"]:
                self.state["errors"].append(f"connection lost: {exc}")
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[:end + 4]
            accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()
            lines = head.split("\r\n")
            fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            if lines[0].split(" ")[1:2] != ["101"] or fields.get("sec-websocket-accept") != accept:
                return self.fail(f"bad handshake: {lines[0]!r}")
            self.upgraded = True
            self.state["ready"] += 1
            self.transport.write(self.frame)
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, hdr = b1 & 0x7F, 2
            if b1 & 0x80:
                return self.fail("the server masked a frame")
            if length == 126:
                if n - pos < 4:
                    break
                length, hdr = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, hdr = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if n - pos < hdr + length:
                break
            opcode = b0 & 0x0F
            payload = bytes(buf[pos + hdr:pos + hdr + length])
            pos += hdr + length
            if opcode in (1, 2):
                if not b0 & 0x80 or payload != self.message:
                    return self.fail(f"wrong echo: {payload[:40]!r}")
                self.count += 1
                if not self.state["stop"]:
                    self.transport.write(self.frame)
                elif not self.done.done():
                    self.done.set_result(None)
            elif opcode == 9:  # ping → pong
                self.transport.write(masked_frame(10, payload))
            elif opcode == 8:
                return self.fail(f"closed by the server: {payload[:40]!r}")
        del buf[:pos]


async def run(url: str, connections: int, duration: float, size: int) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    message = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    frame = masked_frame(2, message)
    state = {"stop": False, "errors": [], "ready": 0}
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(connections):
        _, proto = await loop.create_connection(
            lambda: Echo(f"{host}:{port}", parts.path or "/", message, frame, state), host, port)
        clients.append(proto)
    # the window opens when every connection is upgraded (or has failed)
    deadline = time.monotonic() + 10
    while state["ready"] + len(state["errors"]) < connections and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    start_counts = sum(c.count for c in clients)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    await asyncio.sleep(duration)
    counted = sum(c.count for c in clients) - start_counts
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    state["stop"] = True
    await asyncio.wait([c.done for c in clients], timeout=5)
    for c in clients:
        if not c.transport.is_closing():
            c.transport.write(masked_frame(8, (1000).to_bytes(2, "big")))
            c.transport.close()
    window = t1 - t0
    return {"messages": counted, "mps": counted / window, "seconds": window, "connections": connections,
            "ready": state["ready"], "errors": state["errors"][:5], "n_errors": len(state["errors"]),
            "client_cpu": (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / window}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", help="ws://127.0.0.1:PORT/path")
    ap.add_argument("--connections", "-c", type=int, default=32)
    ap.add_argument("--duration", "-d", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=32, help="message size in bytes (binary frames; default 32)")
    ap.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    args = ap.parse_args()
    if args.loop != "asyncio":
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            if args.loop == "uvloop":
                print("uvloop is not installed", file=sys.stderr)
                return 2
    result = asyncio.run(run(args.url, args.connections, args.duration, args.size))
    print(json.dumps(result))
    return 1 if result["n_errors"] or not result["messages"] else 0


if __name__ == "__main__":
    sys.exit(main())
