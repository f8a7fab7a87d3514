"""The connection state machine in-process, over a socketpair, with both parsers."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from conftest import read_response
from prefork import parser as parser_choice
from prefork.connection import CLOSED, Connection
from prefork.proxy import TrustedProxies
from prefork.response import FileBody, Parts, Response, SharedFd

pytestmark = pytest.mark.timeout(20)


class FakeWorker:
    """The part of Worker a Connection uses; epoll registration is recorded, not done."""

    server_name = "prefork-http/test"
    date = "Thu, 01 Jan 2026 00:00:00 GMT"
    access = None

    def __init__(self, module, handler):
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

    def new_parser(self):
        return self.module.RequestParser()

    def watch_write(self, conn):
        self.modes.append("write")

    def watch_read(self, conn):
        self.modes.append("read")

    def forget(self, conn):
        self.forgotten.append(conn)


@pytest.fixture
def pair(parser_name):
    module = parser_choice.load(parser_name)
    server_sock, client = socket.socketpair()
    server_sock.setblocking(False)
    client.settimeout(5)

    def make(handler):
        worker = FakeWorker(module, handler)
        return worker, Connection(worker, server_sock, ("127.0.0.1", 1234)), client

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
