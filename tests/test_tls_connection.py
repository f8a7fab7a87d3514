"""TLSConnection's I/O rules with a scripted TLS socket (no OpenSSL): what the epoll
worker does when TLS wants the other direction (WANT_READ during a write, WANT_WRITE
during a read: a KeyUpdate or a refused renegotiation in real life, hard to provoke from a
client), and decrypted bytes OpenSSL holds (pending()), which raise no epoll event."""

from __future__ import annotations

import socket
from collections import deque

import pytest

from prefork.apps.response import FileBody
from prefork.http import _pyparser
from prefork.proxy import TrustedProxies, parse_networks
from prefork.workers.connection import WorkerState
from prefork.workers.tls import READY, TLSConnection

pytestmark = pytest.mark.timeout(30)

REQ = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class ScriptedTLS:
    """Stands for TLSSocket once the handshake is done: recv/send follow a script."""

    def __init__(self, reads=(), sends=()) -> None:
        self.reads = deque(reads)  # bytes, or "want_read" / "want_write"
        self.sends = deque(sends)  # "ok", "want_read", "want_write", or a byte count
        self.sent = bytearray()
        self.want_read = self.want_write = False
        self.held = b""  # decrypted bytes "inside OpenSSL": pending()
        self._sslobj = object()

    def fileno(self) -> int:
        return -1

    def recv(self, size, flags=0):
        if self.held:
            data, self.held = self.held[:size], self.held[size:]
            return data
        step = self.reads.popleft() if self.reads else "want_read"
        if step == "want_read":
            raise BlockingIOError
        if step == "want_write":
            self.want_write = True
            raise BlockingIOError
        data, self.held = step[:size], step[size:]
        return data

    def pending(self) -> int:
        return len(self.held)

    def send(self, data, flags=0):
        step = self.sends.popleft() if self.sends else "ok"
        if step == "want_read":
            self.want_read = True
            raise BlockingIOError
        if step == "want_write":
            raise BlockingIOError
        n = len(data) if step == "ok" else min(step, len(data))
        self.sent += bytes(data[:n])
        return n

    def close(self) -> None:
        pass


class Worker(WorkerState):
    server_name = "prefork-http/test"
    date_block = "Server: t\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
    header_block = staticmethod(_pyparser.header_block)
    status_line = staticmethod(_pyparser.status_line)
    proxy_protocol = False
    tls_server_cert = None

    def __init__(self, handler) -> None:
        self.access = None
        self.stopping = False
        self.handler = handler
        self.trusted = TrustedProxies(parse_networks("127.0.0.1"))
        self.now = 0.0
        self.requests = 0
        self.by_status = [0] * 10
        self.busy_since = 0.0
        self.current = None
        self.interest = "read"
        self.tls_handshakes = self.tls_failures = 0

    def new_parser(self):
        return _pyparser.RequestParser()

    def watch_write(self, conn):
        self.interest = "write"

    def watch_read(self, conn):
        self.interest = "read"

    def forget(self, conn):
        self.interest = "closed"


def hello(req):
    from prefork.apps.response import Response
    return Response(200, [("Content-Type", "text/plain")], b"hi")


@pytest.fixture
def conn_with():
    made = []

    def make(tls: ScriptedTLS, handler=hello):
        a, b = socket.socketpair()
        made.extend((a, b))
        worker = Worker(handler)
        conn = TLSConnection(worker, a, ("127.0.0.1", 5000), context=None)
        conn.phase = READY
        conn.handshake_started = 0.0
        conn.sock = tls
        return conn, worker

    yield make
    for s in made:
        s.close()


def test_want_read_during_a_write_waits_for_readable(conn_with):
    tls = ScriptedTLS(reads=[REQ], sends=["want_read"])
    conn, worker = conn_with(tls)
    conn.on_readable()
    assert tls.sent == b"" and conn.out  # the answer waits
    assert worker.interest == "read"  # for what TLS wants: the socket to be readable
    conn.on_readable()  # readable: the write is tried again
    assert tls.sent.startswith(b"HTTP/1.1 200 ") and tls.sent.endswith(b"hi")
    assert not conn.out and worker.interest == "read"


def test_want_write_during_a_read_waits_for_writable(conn_with):
    tls = ScriptedTLS(reads=["want_write", REQ])
    conn, worker = conn_with(tls)
    conn.on_readable()
    assert worker.interest == "write" and tls.sent == b""
    conn.on_writable()  # writable: the read is tried again, and the request answered
    assert tls.sent.startswith(b"HTTP/1.1 200 ")
    assert worker.interest == "read"


def test_pending_decrypted_bytes_are_read_without_an_epoll_event(conn_with):
    tls = ScriptedTLS(reads=[REQ * 3])
    conn, worker = conn_with(tls)
    tls.held = b""
    # recv hands out at most RECV_SIZE; make the record bigger than one read
    from prefork.workers import connection
    old = connection.RECV_SIZE
    connection.RECV_SIZE = len(REQ)
    try:
        conn.on_readable()
    finally:
        connection.RECV_SIZE = old
    assert tls.sent.count(b"HTTP/1.1 200 ") == 3 and tls.pending() == 0


def test_a_file_goes_through_tls_in_chunks_with_back_pressure(conn_with, tmp_path):
    blob = bytes(range(256)) * 1024  # 256 KiB
    path = tmp_path / "f.bin"
    path.write_bytes(blob)
    import os

    def handler(req):
        from prefork.apps.response import Response
        fd = os.open(path, os.O_RDONLY)
        return Response(200, [("Content-Type", "application/octet-stream")], FileBody(fd, 0, len(blob)))

    tls = ScriptedTLS(reads=[REQ], sends=["ok", 1000, "want_write"])
    conn, worker = conn_with(tls, handler)
    conn.on_readable()
    assert worker.interest == "write" and len(conn.out) >= 1
    head_end = tls.sent.index(b"\r\n\r\n") + 4
    assert len(tls.sent) - head_end == 1000  # one partial chunk out; the rest waits
    for _ in range(100):
        if not conn.out:
            break
        conn.on_writable()
    assert bytes(tls.sent[head_end:]) == blob and worker.interest == "read"
