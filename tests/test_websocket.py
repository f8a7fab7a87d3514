"""WebSockets end to end: the `websockets` client against a Starlette echo app on the
real server, both parser twins."""

import asyncio
import os
import signal
import time
import urllib.request

import pytest

from conftest import APPS, read_response

pytest.importorskip("websockets")
pytest.importorskip("starlette")
import websockets.exceptions  # noqa: E402  (websockets 14+ no longer imports it on `import websockets`)


@pytest.fixture
def ws_server(start_server, tmp_path):
    def start(*extra, workers=1):
        return start_server(*extra, app="starlette_app:app", pythonpath=[APPS], workers=workers,
                            env={"TEST_MARKERS": str(tmp_path)})
    return start


def url(srv, path="/ws"):
    host, port = srv.address
    return f"ws://{host}:{port}{path}"


def test_echo_text_binary_subprotocol_deflate(ws_server):
    srv = ws_server()

    async def main():
        async with websockets.connect(url(srv), subprotocols=["chat"], compression="deflate") as ws:
            assert ws.subprotocol == "chat"
            assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00" * 200_000)
            assert await ws.recv() == b"\x00" * 200_000
            await ws.ping()
    asyncio.run(main())


def test_close_before_accept_is_403_and_bad_handshake(ws_server):
    srv = ws_server()

    async def main():
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            async with websockets.connect(url(srv, "/deny")):
                pass
        assert info.value.response.status_code == 403
    asyncio.run(main())
    s = srv.connect()
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
    data = s.recv(4096)
    s.close()
    assert data.startswith(b"HTTP/1.1 426") and b"Sec-WebSocket-Version: 13" in data


def test_max_size_closes_1009(ws_server):
    srv = ws_server("--ws-max-size", "1000")

    async def main():
        async with websockets.connect(url(srv), max_size=None) as ws:
            await ws.send(b"x" * 5000)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1009
    asyncio.run(main())


def test_graceful_stop_sends_1001_and_metrics(start_server, tmp_path):
    srv = start_server("--metrics-bind", "127.0.0.1:0", app="starlette_app:app", pythonpath=[APPS],
                       env={"TEST_MARKERS": str(tmp_path)})
    import re
    metrics_url = [m.group(1) for m in (re.search(r"Metrics at (\S+)/metrics", l) for l in srv.log) if m]
    assert metrics_url

    async def main():
        socks = [await websockets.connect(url(srv)) for _ in range(3)]
        for ws in socks:
            await ws.send("x")
            assert await ws.recv() == "x"
        deadline = time.monotonic() + 10
        while True:  # the next heartbeat carries the count
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(metrics_url[0] + "/metrics", timeout=5).read().decode())
            if "prefork_websockets_open 3" in text or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert "prefork_websockets_open 3" in text
        srv.proc.send_signal(signal.SIGTERM)
        for ws in socks:
            with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 20)
            assert info.value.rcvd.code == 1001
    asyncio.run(main())
    assert srv.proc.wait(20) == 0
    assert os.path.exists(tmp_path / "ws-closed-1001")


def test_hup_with_websockets_open(ws_server):
    srv = ws_server(workers=2)

    async def main():
        socks = [await websockets.connect(url(srv)) for _ in range(10)]
        os.kill(srv.pid, signal.SIGHUP)
        codes = []
        for ws in socks:
            try:
                await asyncio.wait_for(ws.recv(), 30)
            except websockets.exceptions.ConnectionClosed as exc:
                codes.append(exc.rcvd.code if exc.rcvd else None)
        assert codes == [1001] * 10
        srv.wait_for(r"Booted worker", count=2, timeout=30)
        async with websockets.connect(url(srv)) as ws:  # the new workers serve
            await ws.send("after")
            assert await ws.recv() == "after"
    asyncio.run(main())


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_many_idle_websockets_rss(start_server, capsys):
    """1,000 idle WebSockets on one worker cost a descriptor and a little memory each,
    never a worker (raw clients doing the handshake, in batches)."""
    import resource
    n = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 200  # the server inherits it
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        srv = start_server("--max-connections", str(n + 50), app="asgi_apps:raw", pythonpath=[APPS])
        worker = srv.children()[0]
        before = rss_kb(worker)
        socks = []
        try:
            for start in range(0, n, 100):
                batch = [srv.connect(timeout=20) for _ in range(100)]
                for s in batch:
                    s.sendall(handshake())
                for s in batch:
                    buf = bytearray()
                    assert read_head(s, buf).startswith(b"HTTP/1.1 101 ")
                    assert not buf
                socks += batch
            last = socks[-1]
            last.sendall(frame(0x1, b"alive"))
            assert read_frame(last, bytearray()) == (0x1, b"alive")
            after = rss_kb(worker)
            assert srv.children() == [worker]  # the same single worker holds them all
        finally:
            for s in socks:
                s.close()
        with capsys.disabled():
            print(f"\n{n} idle WebSockets: worker RSS {before} kB -> {after} kB "
                  f"({(after - before) / n:.1f} kB each)")
        assert after - before < n * 100  # generous: well under 100 kB per WebSocket
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------------- raw clients

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def handshake(path: bytes = b"/ws-echo") -> bytes:
    return (b"GET " + path + b" HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")


def frame(opcode: int, payload: bytes, mask: bytes = b"\x37\xfa\x21\x3d") -> bytes:
    """One final, masked client frame (payload under 126 bytes)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


def read_head(sock, buf: bytearray) -> bytes:
    while b"\r\n\r\n" not in buf:
        piece = sock.recv(65536)
        assert piece, bytes(buf)
        buf += piece
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    return head


def read_frame(sock, buf: bytearray):
    """(opcode, payload) of the next unmasked server frame."""
    while True:
        if len(buf) >= 2:
            n, off = buf[1] & 0x7F, 2
            if n == 126 and len(buf) >= 4:
                n, off = int.from_bytes(buf[2:4], "big"), 4
            if n != 126 and len(buf) >= off + n:
                opcode, payload = buf[0] & 0x0F, bytes(buf[off:off + n])
                del buf[:off + n]
                return opcode, payload
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"closed; got {bytes(buf)!r}")
        buf += piece


@pytest.fixture
def raw_asgi(start_server):
    def start(*extra):
        return start_server(*extra, app="asgi_apps:raw", pythonpath=[APPS])
    return start


def test_frames_sent_with_the_handshake_reach_the_application(raw_asgi):
    """A client that does not wait for our 101: the bytes after the upgrade head are
    WebSocket frames, not the next HTTP request."""
    srv = raw_asgi()
    for payload in (b"early", b"with\nnewline\r\n\r\n"):  # the second would be a bad HTTP head
        s = srv.connect()
        s.sendall(handshake() + frame(0x1, payload) + frame(0x2, b"\x00\x01"))
        buf = bytearray()
        assert read_head(s, buf).startswith(b"HTTP/1.1 101 ")
        assert read_frame(s, buf) == (0x1, payload)
        assert read_frame(s, buf) == (0x2, b"\x00\x01")
        s.sendall(frame(0x8, b"\x03\xe8"))
        assert read_frame(s, buf)[0] == 0x8
        s.close()


def long_frame(opcode: int, payload: bytes, mask: bytes = b"\x37\xfa\x21\x3d", fin: bool = True) -> bytes:
    """One masked client frame of any length (16- or 64-bit lengths past 125 bytes)."""
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else (bytes([0x80 | 126]) + n.to_bytes(2, "big") if n < 65536
                                                 else bytes([0x80 | 127]) + n.to_bytes(8, "big"))
    return bytes([(0x80 if fin else 0) | opcode]) + length + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


def open_raw(srv):
    s = srv.connect()
    s.sendall(handshake())
    buf = bytearray()
    assert read_head(s, buf).startswith(b"HTTP/1.1 101 ")
    return s, buf


@pytest.mark.parametrize("split", [False, True], ids=["whole", "in-pieces"])
def test_frames_of_every_length_echoed_and_pings_answered(raw_asgi, split):
    """Frames of every length (7-, 16- and 64-bit) and a fragmented message, in one stream, whole or in
    997-byte pieces: every message comes back in order, the ping is answered (at once:
    before the echoes the application sends)."""
    srv = raw_asgi()
    s, buf = open_raw(srv)
    text = "h\u00e9llo \u2603"
    stream = [long_frame(0x2, b""), long_frame(0x2, bytes(range(125))), long_frame(0x1, text.encode()),
              long_frame(0x9, b"ping!"), long_frame(0x2, b"x" * 126), long_frame(0x2, b"y" * 65535),
              long_frame(0x2, b"z" * 70000), long_frame(0x1, b"frag", fin=False), long_frame(0x0, b"ment"),
              long_frame(0x2, b"after")]
    data = b"".join(stream)
    if split:
        for i in range(0, len(data), 997):
            s.sendall(data[i:i + 997])
    else:
        s.sendall(data)
    expect = [(0x2, b""), (0x2, bytes(range(125))), (0x1, text.encode()), (0x2, b"x" * 126),
              (0x2, b"y" * 65535), (0x2, b"z" * 70000), (0x1, b"fragment"), (0x2, b"after")]
    got = [read_frame_any(s, buf) for _ in range(len(expect) + 1)]
    assert got.count((0xA, b"ping!")) == 1
    assert [f for f in got if f[0] != 0xA] == expect
    s.sendall(long_frame(0x8, b"\x03\xe8"))
    assert read_frame_any(s, buf)[0] == 0x8
    s.close()


def test_small_frames_split_anywhere(raw_asgi):
    srv = raw_asgi()
    s, buf = open_raw(srv)
    data = long_frame(0x1, b"abc") + long_frame(0x2, b"q" * 300) + long_frame(0x1, b"end")
    for i in range(len(data)):
        s.sendall(data[i:i + 1])
    assert [read_frame_any(s, buf) for _ in range(3)] == [(0x1, b"abc"), (0x2, b"q" * 300), (0x1, b"end")]
    s.close()


@pytest.mark.parametrize("bad, code", [
    (long_frame(0x1, b"\xff\xfe"), 1007),  # text that is not UTF-8
    (bytes([0x82, 0x03]) + b"abc", 1002),  # not masked
    (bytes([0xC2, 0x83, 1, 2, 3, 4]) + b"abc", 1002),  # an RSV bit without an extension
    (bytes([0x83, 0x83, 1, 2, 3, 4]) + b"abc", 1002),  # a reserved opcode
    (long_frame(0x9, b"p" * 126), 1002),  # a control frame over 125 bytes
    (long_frame(0x9, b"ping", fin=False), 1002),  # a fragmented control frame
    (long_frame(0x0, b"cont"), 1002),  # a continuation without a message to continue
])
def test_bad_frames_after_good_ones_close_with_the_right_code(raw_asgi, bad, code):
    srv = raw_asgi()
    s, buf = open_raw(srv)
    s.sendall(long_frame(0x1, b"fine"))
    assert read_frame_any(s, buf) == (0x1, b"fine")
    s.sendall(bad)
    opcode, payload = read_frame_any(s, buf)
    s.close()
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == code


def test_message_over_max_size_in_one_frame_closes_1009(raw_asgi):
    srv = raw_asgi("--ws-max-size", "1000")
    s, buf = open_raw(srv)
    s.sendall(long_frame(0x2, b"a" * 1000))
    assert read_frame_any(s, buf) == (0x2, b"a" * 1000)
    s.sendall(long_frame(0x2, b"b" * 1001))
    opcode, payload = read_frame_any(s, buf)
    s.close()
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1009


def test_fragmented_message_checked_whole_1007_and_1009(raw_asgi):
    """A text message whose fragments are not UTF-8 once joined: 1007 (the worker decodes,
    the protocol does not); fragments that together pass --ws-max-size: 1009."""
    srv = raw_asgi("--ws-max-size", "1000")
    s, buf = open_raw(srv)
    s.sendall(long_frame(0x1, "\u2603".encode()[:2], fin=False) + long_frame(0x0, "\u2603".encode()[2:]))
    assert read_frame_any(s, buf) == (0x1, "\u2603".encode())
    s.sendall(long_frame(0x1, b"ok", fin=False) + long_frame(0x0, b"\xff"))
    opcode, payload = read_frame_any(s, buf)
    s.close()
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1007
    s, buf = open_raw(srv)
    s.sendall(long_frame(0x2, b"a" * 600, fin=False) + long_frame(0x0, b"b" * 600))
    opcode, payload = read_frame_any(s, buf)
    s.close()
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1009


def read_frame_any(sock, buf: bytearray):
    """(opcode, payload) of the next unmasked server frame, any length."""
    while True:
        if len(buf) >= 2:
            n, off = buf[1] & 0x7F, 2
            if n == 126:
                n, off = (int.from_bytes(buf[2:4], "big"), 4) if len(buf) >= 4 else (None, 0)
            elif n == 127:
                n, off = (int.from_bytes(buf[2:10], "big"), 10) if len(buf) >= 10 else (None, 0)
            if n is not None and len(buf) >= off + n:
                opcode, payload = buf[0] & 0x0F, bytes(buf[off:off + n])
                del buf[:off + n]
                return opcode, payload
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"closed; got {bytes(buf[:100])!r}")
        buf += piece


def test_unanswered_ping_closes_1011(raw_asgi):
    interval, timeout = 1.0, 1.0
    srv = raw_asgi("--ws-ping-interval", str(interval), "--ws-ping-timeout", str(timeout))
    s = srv.connect(timeout=20)
    s.sendall(handshake())
    buf = bytearray()
    assert read_head(s, buf).startswith(b"HTTP/1.1 101 ")
    t0 = time.monotonic()
    assert read_frame(s, buf)[0] == 0x9  # a ping, which this client never answers
    opcode, payload = read_frame(s, buf)
    waited = time.monotonic() - t0
    s.close()
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1011
    # The worker checks once a second: allow two ticks of slack and a loaded machine.
    assert waited < interval + timeout + 6, waited
    srv.wait_for(r"did not answer a ping")


def test_handshake_denied_with_an_http_response(raw_asgi):
    srv = raw_asgi()
    s = srv.connect()
    s.sendall(handshake(b"/ws-deny"))
    status, headers, body = read_response(s)
    assert status == 401 and body == b"no token"
    assert headers["www-authenticate"] == "Bearer" and headers["connection"] == "close"
    assert "upgrade" not in headers and "sec-websocket-accept" not in headers
    assert s.recv(100) == b""  # then the connection closes
    s.close()
