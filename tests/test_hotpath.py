"""Issue 13's hot path: answers to requests read together go out in one send (on the fused
path and on the general one), their order survives the gathering, and a new connection
costs no more system calls than it needs (TCP_NODELAY from the listener, no epoll_ctl
for a connection answered and closed on its first read, none to take a closed one out)."""

from __future__ import annotations

import _socket
import os
import select
import socket
import struct

import pytest

from conftest import APPS, read_response
from prefork.apps.response import FileBody, Response, StreamBody
from prefork.apps.static import StaticFiles
from prefork.config import Config, parse_bind
from prefork.http import parser as parser_choice
from prefork.proxy import TrustedProxies
from prefork.sockets import open_listeners
from prefork.workers.connection import CLOSED, CORK_MAX
from prefork.workers.epoll import EPOLLEXCLUSIVE, Worker
from test_connection import FakeWorker

pytestmark = pytest.mark.timeout(30)

GET = b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n"


class CountingSocket:
    """A socket whose send() calls are counted (one list item per call, the bytes given)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sends: list = []

    def send(self, data, flags=0):
        self.sends.append(bytes(data))
        return self._sock.send(data, flags)

    def __getattr__(self, name):
        return getattr(self._sock, name)


@pytest.fixture
def counted(parser_name, conn_class):
    """counted(handler, fused=True) → (worker, conn, client, sock): a Connection over a
    socketpair whose sends are counted."""
    module = parser_choice.load(parser_name)
    made = []

    def make(handler, fused=True):
        server, client = socket.socketpair()
        server.setblocking(False)
        client.settimeout(5)
        made.extend((server, client))
        sock = CountingSocket(server)
        worker = FakeWorker(module, handler)
        conn = conn_class(worker, sock, ("127.0.0.1", 1234))
        conn.fused = conn.fused and fused
        return worker, conn, client, sock

    yield make
    for s in made:
        s.close()


def hello(req):
    return Response(200, [("Content-Type", "text/plain")], b"hello " + req.path.encode())


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "general"])
def test_ten_pipelined_answers_read_together_go_out_in_one_send(counted, fused):
    worker, conn, client, sock = counted(hello, fused)
    client.sendall(b"".join(GET % i for i in range(10)))
    conn.on_readable()
    assert len(sock.sends) == 1, f"{len(sock.sends)} sends for one read of 10 requests"
    buf = bytearray()
    for i in range(10):
        status, _, body = read_response(client, buf=buf)
        assert (status, body) == (200, b"hello /%d" % i)
    assert not buf and worker.requests == 10 and worker.by_status[2] == 10


def test_one_request_is_one_send_and_a_keep_alive_connection_reads_on(counted):
    worker, conn, client, sock = counted(hello)
    for i in range(3):
        client.sendall(GET % i)
        conn.on_readable()
        assert read_response(client)[::2] == (200, b"hello /%d" % i)
    assert len(sock.sends) == 3 and conn.state != CLOSED and not conn.out


def test_pipelined_static_files_go_out_in_one_send(counted, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"small file\n")
    files = StaticFiles(str(tmp_path))
    try:
        worker, conn, client, sock = counted(files)
        client.sendall(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n" * 10)
        conn.on_readable()
        assert len(sock.sends) == 1
        buf = bytearray()
        for _ in range(10):
            assert read_response(client, buf=buf)[::2] == (200, b"small file\n")
    finally:
        files.close()


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "general"])
def test_gathered_answers_keep_their_order_around_streams_and_files(counted, tmp_path, fused):
    """Bytes answers are gathered; a stream or a file body sends what was gathered first,
    so the wire order is the request order."""
    data = tmp_path / "data.bin"
    data.write_bytes(b"F" * 3000)

    def handler(req):
        if req.path == "/stream":
            return Response(200, [], StreamBody([b"s1", b"s2"]))
        if req.path == "/file":
            fd = os.open(str(data), os.O_RDONLY)
            return Response(200, [], FileBody(fd, 0, 3000))
        return hello(req)

    worker, conn, client, sock = counted(handler, fused)
    paths = [b"/1", b"/stream", b"/2", b"/3", b"/file", b"/4"]
    client.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % p for p in paths))
    conn.on_readable()
    buf = bytearray()
    got = []
    for _ in paths:
        status, headers, body = read_response(client, buf=buf)
        if headers.get("transfer-encoding") == "chunked":
            body = read_chunks(client, buf)
        got.append(body)
    assert got == [b"hello /1", b"s1s2", b"hello /2", b"hello /3", b"F" * 3000, b"hello /4"]
    # /1 alone; the stream's head, its chunks; /2 /3 and the file's head together (the
    # file by sendfile); /4
    assert len(sock.sends) <= 6


def read_chunks(sock: socket.socket, buf: bytearray) -> bytes:
    body = bytearray()
    while True:
        while b"\r\n" not in buf:
            buf += sock.recv(65536)
        line, _, rest = bytes(buf).partition(b"\r\n")
        size = int(line, 16)
        while len(rest) < size + 2:
            rest += sock.recv(65536)
        body += rest[:size]
        buf[:] = rest[size + 2:]
        if size == 0:
            return bytes(body)


def test_gathering_stops_at_cork_max_and_a_client_that_does_not_read_stops_the_answers(counted):
    """What is gathered is bounded: past CORK_MAX it is sent; a socket that takes no more
    leaves the rest of the requests waiting their turn, not answered into memory."""
    big = b"x" * (CORK_MAX // 4)
    worker, conn, client, sock = counted(lambda req: Response(200, [], big))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    n = 200
    client.sendall(GET % 0 * n)
    conn.on_readable()
    assert conn.pending and len(conn.pending) < n  # it stopped: the client reads nothing
    assert worker.requests == n - len(conn.pending)
    assert all(len(s) <= CORK_MAX for s in sock.sends)
    queued = sum(len(x) for x in conn.out)
    assert queued <= CORK_MAX + len(big) + 200


def test_ten_pipelined_requests_in_one_write_come_back_in_one_segment(start_server):
    """End to end: the client writes ten requests at once and receives the ten answers as
    one TCP data segment (tcpi_data_segs_in, Linux 4.6+), where one send per answer made
    ten."""
    srv = start_server(app="demo_app:app", pythonpath=[APPS])
    s = srv.connect()
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
        s.sendall(request)  # a first exchange: the connection is taken and warm
        read_response(s)
        before = data_segs_in(s)
        s.sendall(request * 10)
        buf = bytearray()
        for _ in range(10):
            assert read_response(s, buf=buf)[0] == 200
        assert data_segs_in(s) - before == 1
    finally:
        s.close()


def data_segs_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < 156:
        pytest.skip("this kernel's tcp_info has no tcpi_data_segs_in")
    return struct.unpack_from("I", info, 152)[0]


# ---------------------------------------------------------------------- new connections

class RecordingEpoll:
    """select.epoll, with the calls that change the interest list recorded."""

    def __init__(self) -> None:
        self.ep = select.epoll()
        self.calls: list = []  # (call, fd) for the connections' descriptors
        self.listening: set = set()

    def register(self, fd, mask=select.EPOLLIN | select.EPOLLOUT):
        if mask & EPOLLEXCLUSIVE:  # a listener (Worker._set_accepting, _rotate)
            self.listening.add(fd)
        else:
            self.calls.append(("register", fd))
        self.ep.register(fd, mask)

    def modify(self, fd, mask):
        self.calls.append(("modify", fd))
        self.ep.modify(fd, mask)

    def unregister(self, fd):
        if fd not in self.listening:
            self.calls.append(("unregister", fd))
        self.ep.unregister(fd)

    def poll(self, timeout=-1):
        return self.ep.poll(timeout)

    def close(self):
        self.ep.close()


@pytest.fixture
def worker(parser_name):
    """A real epoll Worker in this process, set up only as far as its accept path needs
    (its _boot would take over signals): a listener on 127.0.0.1, epoll recorded."""
    listeners = open_listeners([parse_bind("127.0.0.1:0")], 16)
    w = Worker(Config(), listeners, -1, 0, hello)
    module = parser_choice.load(parser_name)
    w._parser_cls = module.RequestParser
    w._limits = {}
    w.header_block, w.status_line = module.header_block, module.status_line
    w.trusted = TrustedProxies([])
    w.proxy_protocol = False
    w._update_date(0.0)
    w._boot_accept()
    w.ep = RecordingEpoll()
    w._set_accepting(True)
    yield w
    for conn in list(w.conns.values()):
        conn.close()
    w.ep.close()
    for listener in listeners:
        listener.close()


def test_accepted_sockets_have_tcp_nodelay(worker):
    lsock = worker.listeners[0].sock
    client = socket.create_connection(lsock.getsockname())
    try:
        worker._accept(lsock)
        (conn,) = worker.conns.values()
        assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["tcp", "inherited", "unix"])
def test_the_asyncio_worker_gets_tcp_nodelay_from_its_listeners(kind, tmp_path, caplog):
    """The asyncio worker sets nothing per connection: every TCP listener it accepts from
    carries TCP_NODELAY (its _boot_accept, shared with the epoll worker), also one bound by
    someone else (fd://N: systemd socket activation, the old master's on USR2), and the
    socket it hands to asyncio has it already (uvloop's transport does not set it). A UNIX
    listener has no Nagle to turn off and boots without a warning."""
    from prefork.workers.aio import AsyncioWorker

    if kind == "tcp":
        spec = parse_bind("127.0.0.1:0")
    elif kind == "unix":
        spec = parse_bind(f"unix:{tmp_path / 's.sock'}")
    else:  # bound and listening elsewhere, Nagle on, as systemd hands it over
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.bind(("127.0.0.1", 0))
        raw.listen(16)
        assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        spec = parse_bind(f"fd://{raw.detach()}")
    (listener,) = listeners = open_listeners([spec], 16)
    w = AsyncioWorker(Config(), listeners, -1, 0, None)
    w.conns = {}
    taken = []
    w._take = lambda sock, addr, tls=None: taken.append(sock)
    lsock = listener.sock
    client = socket.socket(lsock.family, socket.SOCK_STREAM)
    try:
        w._boot_accept()
        client.connect(lsock.getsockname())
        w._accept(lsock)
        (sock,) = taken
        assert not [r for r in caplog.records if "TCP_NODELAY" in r.getMessage()]
        if kind == "unix":
            assert sock.family == socket.AF_UNIX
        else:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        client.close()
        for sock in taken:
            sock.close()
        listener.close()


def test_a_connection_answered_and_closed_on_its_first_read_costs_no_epoll_ctl(worker):
    lsock = worker.listeners[0].sock
    client = socket.create_connection(lsock.getsockname())
    try:
        client.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        worker._accept(lsock)
        assert not worker.conns and worker.ep.calls == []
        client.settimeout(5)
        assert read_response(client)[::2] == (200, b"hello /x")
        assert client.recv(100) == b""
    finally:
        client.close()


def test_a_kept_alive_connection_is_registered_once_and_closed_without_epoll_ctl_del(worker):
    lsock = worker.listeners[0].sock
    client = socket.create_connection(lsock.getsockname())
    try:
        client.sendall(b"GET /y HTTP/1.1\r\nHost: t\r\n\r\n")
        worker._accept(lsock)
        (conn,) = worker.conns.values()
        assert worker.ep.calls == [("register", conn.fd)]
        client.settimeout(5)
        assert read_response(client)[::2] == (200, b"hello /y")
        fd = conn.fd
        conn.close()
        assert worker.ep.calls == [("register", fd)] and not worker.conns
        # ...and the closed descriptor is out of the epoll set: a new socket may reuse it.
        again = socket.create_connection(lsock.getsockname())
        try:
            again.sendall(b"GET /z HTTP/1.1\r\nHost: t\r\n\r\n")
            worker._accept(lsock)
            (conn,) = worker.conns.values()
            again.settimeout(5)
            assert read_response(again)[::2] == (200, b"hello /z")
        finally:
            again.close()
    finally:
        client.close()


def test_a_batch_of_accepts_ends_without_an_accept_that_finds_the_queue_empty(worker, monkeypatch):
    """The kernel sets up a socket before it looks at the queue: an accept() that finds
    it empty costs about ten times a poll(). The worker looks first."""
    calls = []

    def counting(self):
        try:
            got = _socket.socket._accept(self)
        except BlockingIOError:
            calls.append("EAGAIN")
            raise
        calls.append("client")
        return got

    monkeypatch.setattr(socket.socket, "_accept", counting)
    lsock = worker.listeners[0].sock
    clients = [socket.create_connection(lsock.getsockname()) for _ in range(3)]
    try:
        worker._accept(lsock)
        assert calls == ["client"] * 3 and len(worker.conns) == 3
    finally:
        for c in clients:
            c.close()
