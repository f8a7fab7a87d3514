"""The connection state machine in-process, over a socketpair, with both parsers and both
cores of the connection (py-conn / c-conn)."""

from __future__ import annotations

import logging
import os
import select
import socket

import pytest

from conftest import read_response
from prefork.http import parser as parser_choice
from prefork.workers.connection import CLOSED, WorkerState
from prefork.proxy import TrustedProxies
from prefork.apps.response import FileBody, Parts, Response, SharedFd, StreamBody

pytestmark = pytest.mark.timeout(20)


class FakeWorker(WorkerState):
    """The part of Worker a Connection uses; epoll registration is recorded, not done."""

    server_name = "prefork-http/test"
    date = "Thu, 01 Jan 2026 00:00:00 GMT"

    def __init__(self, module, handler):
        self.access = None
        self.module = module
        self.header_block = module.header_block
        self.status_line = module.status_line
        self.date_block = f"Server: {self.server_name}\r\nDate: {self.date}\r\n"
        self.handler = handler
        self.now = 0.0
        self.stopping = False
        self.requests = 0
        self.by_status = [0] * 10
        self.trusted = TrustedProxies([])
        self.proxy_protocol = False
        self.busy_since = 0.0
        self.current = None
        self.modes = []
        self.forgotten = []
        self.heads = {}  # the fused path's memo of response heads (Worker.heads)

    def new_parser(self):
        return self.module.RequestParser()

    def watch_write(self, conn):
        self.modes.append("write")

    def watch_read(self, conn):
        self.modes.append("read")

    def forget(self, conn):
        self.forgotten.append(conn)


@pytest.fixture
def pair(parser_name, conn_class):
    module = parser_choice.load(parser_name)
    server_sock, client = socket.socketpair()
    server_sock.setblocking(False)
    client.settimeout(5)

    def make(handler):
        worker = FakeWorker(module, handler)
        return worker, conn_class(worker, server_sock, ("127.0.0.1", 1234)), client

    yield make
    client.close()
    server_sock.close()


def test_a_crashing_handler_gets_500_and_a_log_line_and_the_connection_lives(pair, caplog):
    calls = []

    def handler(req):
        calls.append(req.path)
        if req.path == "/boom":
            raise RuntimeError("kaboom")
        return Response(200, [("Content-Type", "text/plain")], b"fine")

    worker, conn, client = pair(handler)
    with caplog.at_level(logging.ERROR, logger="prefork.error"):
        client.sendall(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n")
        conn.on_readable()
        status, _, body = read_response(client)
    assert status == 500 and body == b"500 Internal Server Error\n"
    assert b"kaboom" not in body  # the traceback goes to the log, never to the client
    assert any("kaboom" in r.exc_text for r in caplog.records if r.exc_text)
    client.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
    conn.on_readable()
    assert read_response(client)[::2] == (200, b"fine")
    assert calls == ["/boom", "/ok"] and conn.state != CLOSED


def test_header_with_newline_from_handler_is_refused_not_split(pair, caplog):
    def handler(req):
        return Response(200, [("X-Evil", "a\r\nSet-Cookie: owned=1")], b"body")

    worker, conn, client = pair(handler)
    with caplog.at_level(logging.ERROR, logger="prefork.error"):
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        conn.on_readable()
        status, headers, _ = read_response(client)
    assert status == 500 and "set-cookie" not in headers
    assert any("refused the response head" in r.getMessage() for r in caplog.records)


def test_output_the_socket_refuses_is_queued_and_reading_pauses(pair):
    big = b"x" * (4 << 20)
    worker, conn, client = pair(lambda req: Response(200, [], big))
    client.sendall(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n")
    conn.on_readable()
    assert conn.out and worker.modes == ["write"]  # waiting for EPOLLOUT, not reading
    assert conn.pending is not None and len(conn.pending) == 1  # the second waits its turn
    got = bytearray()
    while len(got) < 2 * len(big):
        got += client.recv(1 << 20)
        conn.on_writable()
    assert got.count(b"HTTP/1.1 200 OK") == 2
    assert worker.modes[-1] == "read" and not conn.out and conn.pending is None


def test_parts_body_sends_bytes_and_file_pieces_in_order_and_releases_the_shared_fd(pair, tmp_path):
    data = bytes(range(256)) * 16384  # 4 MiB, more than the socket takes at once
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    shared = SharedFd(os.open(path, os.O_RDONLY))  # the "cache" holds one reference

    def handler(req):
        pieces = [b"<a>", FileBody(shared.acquire(), 10, 1000, shared), b"<b>",
                  FileBody(shared.acquire(), 100_000, 3_000_000, shared), b"<end>"]
        return Response(206, [("Content-Type", "x/y")], Parts(pieces))

    worker, conn, client = pair(handler)
    client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    conn.on_readable()
    assert shared.refs >= 2  # a piece still in flight holds the descriptor open
    buf = bytearray()
    expected = b"<a>" + data[10:1010] + b"<b>" + data[100_000:3_100_000] + b"<end>"
    while b"\r\n\r\n" not in buf or len(buf) - buf.index(b"\r\n\r\n") - 4 < len(expected):
        chunk = client.recv(1 << 16)
        assert chunk
        buf += chunk
        if conn.out:
            conn.on_writable()
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    assert f"Content-Length: {len(expected)}".encode() in head
    assert body == expected
    assert not conn.out and shared.refs == 1 and shared.fd >= 0
    shared.release()
    assert shared.fd == -1


def test_parts_pieces_are_released_when_the_connection_closes_midway(pair, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(1 << 20))
    shared = SharedFd(os.open(path, os.O_RDONLY))
    pieces = [b"x", FileBody(shared.acquire(), 0, 1 << 20, shared), b"y",
              FileBody(shared.acquire(), 0, 1 << 20, shared)]
    worker, conn, client = pair(lambda req: Response(206, [], Parts(pieces)))
    client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    conn.on_readable()
    assert conn.out  # the socket is full: pieces wait
    conn.close()
    assert shared.refs == 1  # every in-flight piece gave its reference back
    shared.release()


def test_a_file_send_cut_short_waits_for_epollout_without_a_call_that_fails(pair, tmp_path, monkeypatch):
    """A sendfile that moves less than it was asked means the socket is full: the file waits
    for EPOLLOUT at once, not after one more call that fails with EAGAIN (nginx's sendfile
    chain does the same). The file arrives whole, in as many waits as the socket needs, and
    the connection answers the next request."""
    data = os.urandom(3 << 20)  # more than a socketpair takes at once
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    calls = []
    real = os.sendfile

    def sendfile(out_fd, in_fd, offset, count):
        try:
            sent = real(out_fd, in_fd, offset, count)
        except BlockingIOError:
            calls.append("EAGAIN")
            raise
        calls.append((count, sent))
        return sent

    monkeypatch.setattr(os, "sendfile", sendfile)

    def handler(req):
        if req.path == "/file":
            return Response(200, [], FileBody(os.open(path, os.O_RDONLY), 0, len(data)))
        return Response(200, [], b"next")

    worker, conn, client = pair(handler)
    client.sendall(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
    conn.on_readable()
    assert conn.out and worker.modes == ["write"]
    assert len(calls) == 1 and calls[0][1] < calls[0][0]  # one short send, then the wait
    buf = bytearray()
    while conn.out:  # the loop's part: on_writable only when epoll would say EPOLLOUT
        if select.select([], [conn.sock], [], 0)[1]:
            conn.on_writable()
        else:
            buf += client.recv(1 << 16)
    assert "EAGAIN" not in calls and len(calls) > 1
    assert worker.modes[-1] == "read"
    status, _, body = read_response(client, buf=buf)
    assert status == 200 and body == data
    client.sendall(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
    conn.on_readable()
    assert read_response(client, buf=buf)[::2] == (200, b"next")
    assert conn.state != CLOSED


def test_a_file_that_shrinks_while_it_is_sent_closes_the_connection(pair, tmp_path, caplog):
    """Fewer bytes on disk than the head promised: what there is goes out, then the connection
    is closed with a log line (the client sees a short body, never a wrong one)."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    worker, conn, client = pair(lambda req: Response(200, [], FileBody(os.open(path, os.O_RDONLY), 0, 5000)))
    with caplog.at_level(logging.ERROR, logger="prefork.error"):
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        conn.on_readable()
        if conn.state != CLOSED:  # the short send waits for EPOLLOUT; the next one finds the end
            assert select.select([], [conn.sock], [], 5)[1]
            conn.on_writable()
    assert conn.state == CLOSED
    assert any("file ended early" in r.getMessage() for r in caplog.records)
    got = bytearray()
    while chunk := client.recv(65536):
        got += chunk
    assert got.endswith(b"\r\n\r\n" + b"x" * 1000)


HANDLER_OWNED = [("Content-Length", "999"), ("transfer-encoding", "chunked"), ("CONNECTION", "close"),
                 ("Keep-Alive", "timeout=9"), ("TE", "trailers"), ("Trailer", "X"), ("upgrade", "h2c"),
                 ("Proxy-Connection", "keep-alive"), ("content-length", "0")]


def test_no_response_carries_two_framings(parser_name, conn_class, tmp_path):
    """Every body kind × status × method × version, with a handler that sets every framing
    and hop-by-hop field: the head has at most one Content-Length, at most one
    Transfer-Encoding (chunked), never both, one Connection at most (the server's), and
    none of the handler's hop-by-hop fields; the framing is the body's real one."""
    module = parser_choice.load(parser_name)
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")

    def bodies():
        yield "bytes", b"hello", 5
        yield "empty", b"", 0
        yield "stream", StreamBody(iter([b"ab", b"c"])), None
        yield "stream-length", StreamBody(iter([b"ab", b"c"]), 3), 3
        yield "file", FileBody(os.open(path, os.O_RDONLY), 2, 4), 4
        yield "parts", Parts([b"ab", FileBody(os.open(path, os.O_RDONLY), 0, 3)]), 5

    checked = 0
    for status in (200, 204, 304, 404):
        for method in ("GET", "HEAD"):
            for request_line, extra in (("HTTP/1.1", ""), ("HTTP/1.1", "Connection: close\r\n"),
                                        ("HTTP/1.0", ""), ("HTTP/1.0", "Connection: keep-alive\r\n")):
                for kind, body, length in bodies():
                    server_sock, client = socket.socketpair()
                    server_sock.setblocking(False)
                    client.settimeout(5)
                    resp = Response(status, [("X-Ok", "1")] + HANDLER_OWNED, body)
                    conn = conn_class(FakeWorker(module, lambda req, resp=resp: resp), server_sock, ("127.0.0.1", 1))
                    client.sendall(f"{method} / {request_line}\r\nHost: t\r\n{extra}\r\n".encode())
                    conn.on_readable()
                    head = bytearray()
                    while b"\r\n\r\n" not in head:
                        head += client.recv(65536)
                    conn.close()
                    client.close()
                    server_sock.close()
                    lines = bytes(head[:head.index(b"\r\n\r\n")]).decode("latin-1").split("\r\n")[1:]
                    fields = [(n.lower(), v.strip()) for n, _, v in (line.partition(":") for line in lines)]
                    names = [n for n, _ in fields]
                    case = (status, method, request_line, extra, kind, fields)
                    assert ("x-ok", "1") in fields, case
                    assert names.count("connection") <= 1, case
                    assert not {"keep-alive", "te", "trailer", "upgrade", "proxy-connection"} & set(names), case
                    framing = [(n, v) for n, v in fields if n in ("content-length", "transfer-encoding")]
                    if status in (204, 304):
                        assert framing == [], case
                    elif length is not None:
                        assert framing == [("content-length", str(length))], case
                    elif request_line == "HTTP/1.1":
                        assert framing == [("transfer-encoding", "chunked")], case
                    else:  # HTTP/1.0, unknown length: a body is delimited by the close
                        assert framing == [], case
                        if method == "GET":
                            assert dict(fields)["connection"] == "close", case
                    checked += 1
    assert checked == 4 * 2 * 4 * 6


def test_answers_are_counted_by_status_class(pair):
    """The status record's counts (by status // 100) see every answer: handler answers,
    the 500 for a refused head, and protocol errors."""
    def handler(req):
        if req.path == "/bad":
            return Response(200, [("X-Evil", "a\r\nb")], b"x")
        return Response(404 if req.path == "/missing" else 200, [], b"ok")

    worker, conn, client = pair(handler)
    buf = bytearray()
    for path in ("/", "/missing", "/bad", "/"):
        client.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        conn.on_readable()
        read_response(client, buf=buf)
    client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nBad Field: 1\r\n\r\n")
    conn.on_readable()
    assert read_response(client, buf=buf)[0] == 400
    assert worker.by_status[2] == 2 and worker.by_status[4] == 2 and worker.by_status[5] == 1
    assert worker.requests == 5


def test_stream_longer_than_its_length_is_cut_and_the_connection_lives(pair, caplog):
    """The core's fit_length: bytes past a declared length would be read as the next
    response; they are cut (logged) and the next request is answered normally."""
    def handler(req):
        if req.path == "/long":
            return Response(200, [], StreamBody(iter([b"ab", b"cdef", b"gh"]), 3))
        return Response(200, [], b"next")

    worker, conn, client = pair(handler)
    buf = bytearray()
    with caplog.at_level(logging.ERROR, logger="prefork.error"):
        client.sendall(b"GET /long HTTP/1.1\r\nHost: t\r\n\r\nGET /n HTTP/1.1\r\nHost: t\r\n\r\n")
        conn.on_readable()
        while conn.out:
            conn.on_writable()
        assert read_response(client, buf=buf)[::2] == (200, b"abc")
        assert read_response(client, buf=buf)[::2] == (200, b"next")
    assert "longer than its Content-Length; cut" in caplog.text and conn.state != CLOSED
