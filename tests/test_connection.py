"""The connection state machine in-process, over a socketpair, with both parsers."""

from __future__ import annotations

import logging
import socket

import pytest

from conftest import read_response
from prefork import parser as parser_choice
from prefork.connection import CLOSED, Connection
from prefork.response import Response

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
