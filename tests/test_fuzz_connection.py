"""Fuzzing the whole connection state machine: a real Connection, a real epoll, a socketpair.

A scenario is plain data (so that hypothesis prints a failing one as a Python literal that
pastes into a regular test, see fuzz/README.md): which parser twin, PROXY protocol off /
on from a trusted peer / on from an untrusted one, parser limits, spool threshold, the
server socket's send buffer, the byte pieces the client sends, how much the client reads
after each piece, whether it then shuts its write side, whether the head/body timeout
fires, and whether the client finally reads everything.

`run_scenario` drives it the way Worker._loop does (level-triggered epoll, the same
dispatch) and checks, after every event:
- nothing raises out of on_readable / on_writable / close / time_out, nothing is logged
  with a traceback except the handler that raises on purpose (/boom), and epoll settles
  (no busy loop: a bounded number of events per pump);
- the parser keeps at most a head's worth of bytes (its limits), the output queue holds
  at most one response, requests waiting for their turn come from one recv at most;
and at the end:
- every byte the client read is a sequence of well-formed HTTP/1.1 responses (status line,
  header fields, body framed by Content-Length, chunked, or the close);
- after a response with `Connection: close` (every protocol error is one) nothing more is
  sent and the server side is shut (lingering or closed) once the client has read it;
- every descriptor the handler or the connection opened (files, temporary spool files)
  is closed once the connection and the handler's cache are closed, and no file object
  is left for the garbage collector (ResourceWarning).
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import re
import select
import socket
import struct
import warnings
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import connection_class
from prefork import App, Response
from prefork.http import parser as parser_choice
from prefork.workers.connection import CLOSED, CORK_MAX, LINGER, RECV_SIZE, Connection, WorkerState
from prefork.proxy import TrustedProxies, parse_networks
from prefork.apps.static import StaticFiles

EXAMPLES = int(os.environ.get("PREFORK_FUZZ_EXAMPLES", "500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
READ = select.EPOLLIN | select.EPOLLRDHUP
WRITE = select.EPOLLOUT
PUMP_LIMIT = 5000  # events one pump may take before it counts as a busy loop
BIG = 300_000  # a static file larger than any socket buffer here: sendfile resumes
MAX_BODY = 1 << 20  # the largest in-memory response body the app below makes


# ---------------------------------------------------------------------- the server side

def make_site(folder: str) -> None:
    os.makedirs(os.path.join(folder, "sub"), exist_ok=True)
    files = {
        "small.txt": b"small file\n",
        "sub/index.html": b"<p>index</p>\n",
        "big.bin": bytes(range(256)) * (BIG // 256),
        "page.css": b"body{}\n" * 50,
        "page.css.gz": b"\x1f\x8b fake gzip",
    }
    for name, data in files.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)


def make_app(folder: str) -> App:
    app = App()
    app.static("/s", folder)

    @app.get("/hello")
    def hello(req):
        return "hello"

    @app.route("/echo", methods=["POST", "PUT"])
    def echo(req):
        return req.body  # bytes, read from memory or the spool file

    @app.get("/stream")
    def stream(req):
        return Response.stream([b"a" * 1000, b"", "b" * 70_000, b"end"])

    @app.get("/sized")
    def sized(req):
        return Response.stream(iter([b"x" * 5000, b"y" * 5000]), length=10_000)

    @app.get("/file")
    def file(req):
        return Response.file(os.path.join(folder, "big.bin"))

    @app.get("/json")
    def json_(req):
        return Response.json({"q": req.query.getall("a"), "client": req.client[0]})

    @app.get("/boom")
    def boom(req):
        raise RuntimeError("the handler fails on purpose")

    @app.get("/large")
    def large(req):
        return b"L" * MAX_BODY

    return app


class Recording:
    """The app, noting the method of every request answered by the handler or refused by
    check_expect, in order: the client needs it to frame the answers (HEAD has no body)."""

    wants_connection = True

    def __init__(self, app) -> None:
        self.app = app
        self.methods: deque = deque()

    def __call__(self, req, conn=None):
        self.methods.append(req.method)
        return self.app(req, conn)

    def check_expect(self, req):
        resp = self.app.check_expect(req)
        if resp is not None:
            self.methods.append(req.method)
        return resp


class StaticRecording(Recording):
    """StaticFiles alone (what `prefork-http --root` runs)."""

    wants_connection = False

    def __call__(self, req):
        self.methods.append(req.method)
        return self.app(req)

    def check_expect(self, req):
        return None


class FuzzWorker(WorkerState):
    """The part of Worker a Connection uses, with a real epoll."""

    server_name = "prefork-http/fuzz"

    def __init__(self, module, handler, limits, spool_threshold, proxy_protocol, trusted):
        self.access = None
        self.module = module
        self.header_block = module.header_block
        self.status_line = module.status_line
        self.date_block = f"Server: {self.server_name}\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
        self.handler = handler
        self.limits = limits
        self.spool_threshold = spool_threshold
        self.proxy_protocol = proxy_protocol
        self.trusted = trusted
        self.now = 0.0
        self.stopping = False
        self.requests = 0
        self.by_status = [0] * 10
        self.busy_since = 0.0
        self.current = None
        self.ep = select.epoll()
        self.conns = {}
        self.heads = {}  # the fused path's memo of response heads (Worker.heads)

    def new_parser(self):
        return self.module.RequestParser(**self.limits)

    def add(self, conn) -> None:
        self.conns[conn.fd] = conn
        self.ep.register(conn.fd, READ)

    def watch_write(self, conn):
        self.ep.modify(conn.fd, WRITE)

    def watch_read(self, conn):
        self.ep.modify(conn.fd, READ)

    def pause(self, conn):
        self.ep.unregister(conn.fd)

    def resume(self, conn):
        self.ep.register(conn.fd, READ)

    def forget(self, conn):
        if self.conns.pop(conn.fd, None) is not None:
            try:
                self.ep.unregister(conn.fd)
            except OSError:
                pass

    def pump(self) -> int:
        """Dispatch events as Worker._loop does until none is ready; the number taken."""
        taken = 0
        while True:
            events = self.ep.poll(0)
            if not events:
                return taken
            for fd, ev in events:
                conn = self.conns.get(fd)
                if conn is None:
                    continue
                taken += 1
                if ev & WRITE or conn.writing and ev & (select.EPOLLERR | select.EPOLLHUP):
                    conn.on_writable()
                else:
                    conn.on_readable()
            assert taken < PUMP_LIMIT, "epoll keeps reporting events: a busy loop"



class Transcribed:
    """An access log that writes its calls into the transcript: the host as AccessLog.log
    finds it, and what the line says of the request."""

    def __init__(self, transcript: list) -> None:
        self.transcript = transcript

    def log(self, conn, req, status, size, t0=0.0) -> None:
        addr = conn.client(req)[0] if conn.trusted else conn.addr
        self.transcript.append(("access", addr, req.method, req.target, status, size))

# ---------------------------------------------------------------------- the client side

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [^\r\n]*")


class ResponseReader:
    """Parses what the client reads as HTTP/1.1 responses; fails on anything else."""

    def __init__(self, methods: deque) -> None:
        self.methods = methods
        self.buf = bytearray()
        self.responses = []  # (status, headers dict)
        self.eof = False
        self.after_close = False  # a Connection: close answer was complete
        self._until_close = None  # the head of a response delimited by the close

    def feed(self, data: bytes) -> None:
        if not data:
            self.eof = True
        assert not (data and self.after_close), f"bytes after a Connection: close answer: {data[:80]!r}"
        self.buf += data
        while self._one():
            pass
        if self.eof and self._until_close is not None:
            self.responses.append(self._until_close)
            self._until_close = None
            self.buf.clear()

    def _one(self) -> bool:
        buf = self.buf
        if self._until_close is not None or not buf:
            return False
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            assert len(buf) < 65536, "a response head without end"
            assert b"HTTP/1.1 "[:len(buf)] == bytes(buf[:9]), f"not a response: {bytes(buf[:80])!r}"
            return False
        lines = bytes(buf[:end]).split(b"\r\n")
        m = STATUS_LINE.fullmatch(lines[0])
        assert m, f"bad status line {lines[0]!r}"
        status = int(m.group(1))
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            assert sep and TOKEN.fullmatch(name), f"bad header line {line!r}"
            assert b"\n" not in value and b"\r" not in value
            headers.setdefault(name.lower().decode(), value.strip().decode("latin-1"))
        pos = end + 4
        if 100 <= status < 200:
            assert status == 100 and len(lines) == 1, lines
            del buf[:pos]
            return True
        method = self.methods.popleft() if self.methods else None  # None: a protocol error
        close = "close" in headers.get("connection", "").lower()
        if method is None:
            assert close and 400 <= status <= 599, (status, headers)
        if status in (204, 304) or method == "HEAD":
            length = 0
        elif "content-length" in headers:
            assert "transfer-encoding" not in headers
            length = int(headers["content-length"])
        elif headers.get("transfer-encoding") == "chunked":
            length = self._chunked(pos)
            if length is None:  # not all here yet: read this head again next time
                if method is not None:
                    self.methods.appendleft(method)
                return False
            length -= pos
        else:
            assert close, f"a body neither sized nor chunked on a kept-alive connection: {headers}"
            self._until_close = (status, headers)
            return False
        if len(buf) - pos < length:
            if method is not None:
                self.methods.appendleft(method)
            return False
        del buf[:pos + length]
        self.responses.append((status, headers))
        if close:
            self.after_close = True
            assert not buf, f"bytes after a Connection: close answer: {bytes(buf[:80])!r}"
        return True

    def _chunked(self, pos: int):
        """End of the chunked body starting at `pos`, or None: not all here yet."""
        buf = self.buf
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]), 16)  # the server sends bare hex sizes
            pos = eol + 2
            if size == 0:
                if len(buf) < pos + 2:
                    return None
                assert buf[pos:pos + 2] == b"\r\n", "trailers or garbage after the last chunk"
                return pos + 2
            if len(buf) < pos + size + 2:
                return None
            assert buf[pos + size:pos + size + 2] == b"\r\n", "chunk data not followed by CRLF"
            pos += size + 2


# ---------------------------------------------------------------------- one scenario

def open_fds() -> set:
    return set(os.listdir("/proc/self/fd"))


def check_bounds(conn: Connection, limits: dict) -> None:
    parser = conn.parser
    if parser is not None and conn.state != CLOSED:
        head = limits.get("max_head_size", 65536)
        line = max(limits.get("max_request_line", 8190), limits.get("max_field_size", 8190)) + 2
        assert parser.buffered <= max(head, line), (parser.buffered, limits)
    items = len(conn.out)
    assert items <= 140, f"{items} items queued"  # a multipart range answer is the most
    queued = sum(len(x) for x in conn.out if type(x) in (bytes, memoryview))
    # At most one answer, behind what was left of the answers gathered before it.
    assert queued <= MAX_BODY + CORK_MAX + 4096, f"{queued} bytes queued"
    if conn.pending is not None:
        assert len(conn.pending) <= RECV_SIZE // 16, len(conn.pending)  # one recv's worth


def run_scenario(parser: str, proxy: int, limits: dict, spool: int, sndbuf: int, static: bool,
                 pieces: list, reads: list, shut: bool, timeout: bool, drain: bool, folder: str,
                 fused: bool = True, transcript: list | None = None, conn_class=Connection) -> None:
    """Drive one Connection through the scenario; fails (AssertionError) on a broken
    invariant, and lets any exception from the connection propagate. `fused` False keeps
    the connection off its fused path (serve); `transcript`, when given, receives what
    can be told from outside: the bytes the client read, the access-log calls, the
    worker's counters and the connection's final state."""
    make_site(folder)
    module = parser_choice.load(parser)
    before = open_fds()
    errors = []

    class Catch(logging.Handler):
        def emit(self, record):
            if record.exc_info and "/boom" not in record.getMessage():
                errors.append(self.format(record))

    catch = Catch()
    logger = logging.getLogger("prefork.error")
    logger.addHandler(catch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            files = StaticFiles(folder)
            handler = StaticRecording(files) if static else Recording(make_app(folder))
            trusted = TrustedProxies(parse_networks("10.0.0.0/8" if proxy == 2 else "127.0.0.1"))
            worker = FuzzWorker(module, handler, limits, spool, proxy > 0, trusted)
            server, client = socket.socketpair()
            try:
                server.setblocking(False)
                client.setblocking(False)
                if sndbuf:
                    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
                conn = conn_class(worker, server, ("127.0.0.1", 40000))
                conn.fused = conn.fused and fused
                if transcript is not None:
                    worker.access = Transcribed(transcript)
                worker.add(conn)
                received = drive(worker, conn, client, handler, limits, pieces, reads, shut, timeout, drain)
                if transcript is not None:
                    transcript += [("received", received), ("requests", worker.requests),
                                   ("by_status", tuple(worker.by_status)), ("state", conn.state)]
            finally:
                if conn.state != CLOSED:
                    conn.close()
                assert conn.state == CLOSED
                client.close()
                worker.ep.close()
                files.close()
                if not static:
                    for _, mounted in handler.app._mounts:
                        mounted.close()
        finally:
            logger.removeHandler(catch)
        del conn, worker, handler, files
        opened = open_fds() - before
        if opened:  # only a leak if the garbage collector does not find it either
            gc.collect()
            opened = open_fds() - before
    # Warnings are process-wide: a text pipe another test's thread dropped meanwhile is not
    # ours (the connection opens no text files), and made this test fail now and then.
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)
              and "TextIOWrapper" not in str(w.message)]
    assert not leaked, leaked
    assert not errors, errors[0]
    assert not opened, {fd: _target(fd) for fd in opened}


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def drive(worker, conn, client, handler, limits, pieces, reads, shut, timeout, drain) -> bytes:
    """The client's side of a scenario; returns every byte it read."""
    reader = ResponseReader(handler.methods)
    outbox = bytearray()
    received = bytearray()

    def client_read(budget: int) -> None:
        while budget != 0:
            try:
                data = client.recv(65536 if budget < 0 else min(budget, 65536))
            except BlockingIOError:
                return
            except ConnectionResetError:
                data = b""
            reader.feed(data)
            received.extend(data)
            if not data:
                return
            if budget > 0:
                budget -= len(data)

    def client_send() -> None:
        while outbox:
            try:
                sent = client.send(outbox)
            except BlockingIOError:
                return
            except (BrokenPipeError, ConnectionResetError):
                outbox.clear()  # the server has closed: what is left is lost, as it would be
                return
            del outbox[:sent]

    for i, piece in enumerate(pieces):
        outbox += piece
        client_send()
        worker.pump()
        check_bounds(conn, limits)
        client_read(reads[i % len(reads)] if reads else 0)
        worker.pump()
        check_bounds(conn, limits)
    if shut and not outbox:
        client.shutdown(socket.SHUT_WR)
        worker.pump()
        check_bounds(conn, limits)
    if timeout and conn.state == 0 and conn.parser is not None and not conn.out and \
            (conn.parser.buffered or conn.parser.pending is not None):
        conn.time_out("fuzz: the head or body did not arrive in time")  # what _tick does
        worker.pump()
    if not drain:
        return bytes(received)
    # The client reads everything: the server must finish what it owes, then go quiet.
    for _ in range(10_000):
        client_send()
        before = (len(reader.buf), len(reader.responses), conn.state, len(conn.out))
        client_read(-1)
        taken = worker.pump()
        check_bounds(conn, limits)
        if reader.eof or (not taken and before == (len(reader.buf), len(reader.responses), conn.state,
                                                      len(conn.out))):
            break
    else:
        raise AssertionError("the connection never settled")
    if conn.state != CLOSED:
        assert not conn.out, "output left while the client reads everything"
    if reader.after_close:  # a Connection: close answer has been read: the server is done
        assert conn.state in (LINGER, CLOSED), conn.state
        client_read(-1)
        assert reader.eof and not reader.buf, "the server side is not shut after Connection: close"
    if reader.eof:
        assert not reader.buf, f"a truncated response: {bytes(reader.buf[:120])!r}"
    return bytes(received)


# ---------------------------------------------------------------------- strategies

def proxy_v1(src="203.0.113.9"):
    return f"PROXY TCP4 {src} 127.0.0.1 40000 80\r\n".encode()


def proxy_v2(src="203.0.113.9", cmd=1):
    addr = ipaddress.ip_address(src)
    block = addr.packed + ipaddress.ip_address("127.0.0.1").packed + struct.pack("!HH", 40000, 80)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20 | cmd, 0x11]) + struct.pack("!H", len(block)) + block


TARGETS = ["/hello", "/s/small.txt", "/s/big.bin", "/s/sub/", "/s/sub", "/s/page.css", "/stream", "/sized",
           "/file", "/json?a=1&a=2", "/boom", "/nope", "/large", "/echo", "/s/../etc/passwd", "/s/%2e%2e/x",
           "/small.txt", "/big.bin", "/sub/", "/", "*"]
EXTRA = [b"Connection: close", b"Connection: keep-alive", b"Range: bytes=0-4", b"Range: bytes=1-2,5-9,-3",
         b"Range: bytes=999999-", b"If-None-Match: *", b"Accept-Encoding: gzip", b"Expect: 100-continue",
         b"X-Forwarded-For: 198.51.100.7", b"Forwarded: for=198.51.100.8;proto=https",
         b"X-Forwarded-Proto: https", b"Content-Type: text/plain", b"Cookie: a=1"]
METHODS = ["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]


@st.composite
def request(draw) -> bytes:
    method = draw(st.sampled_from(METHODS))
    target = draw(st.sampled_from(TARGETS))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    lines = [f"{method} {target} {version}".encode()]
    if version == "HTTP/1.1" or draw(st.booleans()):
        lines.append(b"Host: fuzz")
    lines += draw(st.lists(st.sampled_from(EXTRA), max_size=3))
    body = b""
    if method in ("POST", "PUT") or draw(st.integers(0, 9)) == 0:
        body = draw(st.binary(max_size=300)) if draw(st.booleans()) else b"z" * draw(st.integers(0, 5000))
        if draw(st.booleans()):
            lines.append(b"Content-Length: %d" % len(body))
        else:
            lines.append(b"Transfer-Encoding: chunked")
            cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
            chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)]) if body[a:b]]
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


INTERESTING = b"\r\n \t:;,=\x00\x7f\x80\xff0159afxX-/?*%"


@st.composite
def stream(draw, proxy: int) -> bytes:
    """Pipelined requests (maybe after a PROXY header), mutated a little; or random bytes."""
    kind = draw(st.integers(0, 9))  # 1 in 10 random bytes, 3 in 10 mutated, the rest valid
    if kind == 0:
        return draw(st.binary(max_size=400))
    data = bytearray()
    if proxy and draw(st.integers(0, 4)):
        data += draw(st.sampled_from([proxy_v1(), proxy_v2(), proxy_v2(cmd=0), b"PROXY UNKNOWN\r\n",
                                      proxy_v1("2001:db8::1"), b"PROXY TCP4 1.2.3.4\r\n"]))
    for req in draw(st.lists(request(), min_size=1, max_size=5)):
        data += req
    for _ in range(draw(st.integers(1, 3)) if kind < 4 else 0):
        at = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 3))
        if op == 0:
            data[at:at] = bytes([draw(st.sampled_from(INTERESTING))])
        elif op == 1:
            del data[at:at + draw(st.integers(1, 8))]
        elif op == 2 and at < len(data):
            data[at] = draw(st.sampled_from(INTERESTING))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
    return bytes(data)


def split(data: bytes, points: list) -> list:
    points = sorted({p % (len(data) + 1) for p in points})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if data[a:b]] or [b""]


LIMITS = st.one_of(
    st.just({}), st.just({}), st.just({}),
    st.fixed_dictionaries({
        "max_request_line": st.integers(10, 80),
        "max_fields": st.integers(1, 8),
        "max_field_size": st.integers(10, 80),
        "max_head_size": st.integers(40, 400),
        "max_body_size": st.integers(0, 6000),
    }),
)


@st.composite
def scenario(draw, parser: str) -> dict:
    proxy = draw(st.sampled_from([0, 0, 0, 1, 1, 2]))
    data = draw(stream(proxy))
    client = draw(st.sampled_from(["reads", "reads", "never", "sometimes"]))
    pieces = split(data, draw(st.lists(st.integers(0, 1 << 16), max_size=10)))
    if client == "reads":
        reads = [-1]
    elif client == "never":
        reads = [0]
    else:
        reads = draw(st.lists(st.sampled_from([0, 0, 1, 100, 5000, -1]), min_size=1, max_size=6))
    return dict(
        parser=parser, proxy=proxy, limits=draw(LIMITS), spool=draw(st.sampled_from([64, 4096, 1 << 20])),
        sndbuf=draw(st.sampled_from([0, 0, 4096])), static=draw(st.integers(0, 4)) == 0,
        pieces=pieces, reads=reads, shut=draw(st.booleans()), timeout=draw(st.booleans()),
        drain=client != "never" or draw(st.booleans()),
    )


# ---------------------------------------------------------------------- the tests

@pytest.fixture
def site(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("site"))
    make_site(folder)
    return folder


@pytest.mark.timeout(int(os.environ.get("PREFORK_FUZZ_TIMEOUT", "60")))
def test_connection_state_machine(parser_name, conn_class, site):
    @FUZZ
    @given(sc=scenario(parser_name))
    def prop(sc):
        run_scenario(folder=site, conn_class=conn_class, **sc)

    prop()


@pytest.mark.timeout(int(os.environ.get("PREFORK_FUZZ_TIMEOUT", "60")))
def test_fused_path_answers_as_the_general_path_does(parser_name, conn_class, site):
    """The fused path (Connection.serve) is a shortcut, not a second set of rules: for any
    scenario, the client reads the same bytes, the access log gets the same calls, the
    worker counts the same answers and the connection ends in the same state as through
    handle()/answered()/respond()."""
    @FUZZ
    @given(sc=scenario(parser_name))
    def prop(sc):
        fused, general = [], []
        run_scenario(folder=site, fused=True, transcript=fused, conn_class=conn_class, **sc)
        run_scenario(folder=site, fused=False, transcript=general, conn_class=conn_class, **sc)
        assert fused == general

    prop()


@pytest.mark.timeout(int(os.environ.get("PREFORK_FUZZ_TIMEOUT", "60")))
def test_the_connection_twins_answer_alike(parser_name, site):
    """The Cython core of the connection (prefork/workers/_conn.pyx) is the pure one's twin:
    for any scenario, on the fused path and off it, the client reads the same bytes, the
    access log gets the same calls, the worker counts the same answers and the connection
    ends in the same state."""
    py, c = connection_class("python"), connection_class("cython")

    @FUZZ
    @given(sc=scenario(parser_name), fused=st.booleans())
    def prop(sc, fused):
        pure, twin = [], []
        run_scenario(folder=site, fused=fused, transcript=pure, conn_class=py, **sc)
        run_scenario(folder=site, fused=fused, transcript=twin, conn_class=c, **sc)
        assert pure == twin

    prop()


def test_scenarios_reach_the_interesting_states(parser_name, conn_class, site):
    """A few fixed scenarios, so that the property is known to see what it is about:
    a pipelined burst to a client that never reads, spooled chunked bodies, a PROXY
    header, a refused Expect, a protocol error after pipelined requests, a timeout."""
    base = dict(parser=parser_name, proxy=0, limits={}, spool=64, sndbuf=4096, static=False,
                reads=[-1], shut=False, timeout=False, drain=True, folder=site, conn_class=conn_class)
    get = b"GET /s/big.bin HTTP/1.1\r\nHost: a\r\n\r\n"
    run_scenario(**dict(base, pieces=[get * 200], reads=[0], drain=False))
    run_scenario(**dict(base, pieces=[get * 3, b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n"], reads=[0]))
    chunked = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" \
              + b"1000\r\n" + b"q" * 4096 + b"\r\n0\r\n\r\n"
    run_scenario(**dict(base, pieces=[chunked[:50], chunked[50:3000], chunked[3000:]] * 2))
    run_scenario(**dict(base, proxy=1, pieces=[proxy_v2()[:7], proxy_v2()[7:] + b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n"]))
    run_scenario(**dict(base, pieces=[b"POST /nope HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                                      b"Content-Length: 5\r\n\r\n", b"hello"]))
    run_scenario(**dict(base, pieces=[b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n" * 2 + b"GET / HTTP/1.1\r\n\r\n"]))
    run_scenario(**dict(base, pieces=[b"GET /hello HTTP/1.1\r\nHost: a\r\n"], timeout=True))
    run_scenario(**dict(base, static=True, pieces=[b"GET /big.bin HTTP/1.0\r\n\r\n"], shut=True))
