"""The twins of the connection's hot path: PyCore (prefork/workers/connection.py, the
reference) and ConnectionCore (prefork/workers/_conn.pyx, Cython). Their answers are
compared over fuzzed scenarios in tests/test_fuzz_connection.py
(test_the_connection_twins_answer_alike), and every connection test runs on both (ids
py-conn / c-conn); here: the two hold the same state, the workers make the Cython one
unless PREFORK_CONN=python, and the paths only the Cython core has (recv(2) and
sendmsg(2) on the socket's descriptor) behave as the socket methods do."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys

import pytest

from conftest import CCONN, C_CONN_IMPORT_ERROR, ROOT, read_response, require_built
from prefork.apps.response import Response
from prefork.http import parser as parser_choice
from prefork.workers import connection
from prefork.workers.connection import CLOSED, CORE_SLOTS, OPEN, SLOTS, WORKER_SLOTS
from test_connection import FakeWorker

pytestmark = pytest.mark.timeout(30)


def require_twin():
    require_built(CCONN, "prefork.workers._conn", C_CONN_IMPORT_ERROR)
    return CCONN


def test_the_twins_hold_the_same_state():
    c = require_twin()
    assert connection.PyCore.__slots__ == CORE_SLOTS == c.CORE_SLOTS
    for name in CORE_SLOTS:  # a C field with a Python attribute, on the Cython core
        assert type(getattr(c.ConnectionCore, name)).__name__ == "getset_descriptor", name
    for name in WORKER_SLOTS:
        assert type(getattr(c.WorkerState, name)).__name__ == "getset_descriptor", name
    assert c.WORKER_SLOTS == WORKER_SLOTS
    assert connection.PyConnection.__slots__ == connection.CConnection.__slots__ == SLOTS
    assert not set(CORE_SLOTS) & set(SLOTS)


def test_every_attribute_a_connection_sets_has_its_place(parser_name, conn_class):
    """A connection over either core has every attribute of the other, and no __dict__
    (an attribute missing from CORE_SLOTS/SLOTS would be an AttributeError, not a silent
    per-instance dict)."""
    a, b = socket.socketpair()
    try:
        worker = FakeWorker(parser_choice.load(parser_name), lambda req: Response(200, [], b"x"))
        conn = conn_class(worker, a, ("127.0.0.1", 1))
        assert not hasattr(conn, "__dict__")
        for name in CORE_SLOTS + SLOTS:
            getattr(conn, name)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("env, expected", [({}, "CConnection"), ({"PREFORK_CONN": "python"}, "PyConnection")])
def test_the_workers_make_the_cython_core_unless_asked_not_to(env, expected):
    require_twin()
    code = ("from prefork.workers import connection, epoll; "
            "assert issubclass(epoll.Worker, connection.WorkerState); "
            "print(connection.Connection.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=20,
                         env={**os.environ, "PREFORK_CONN": "auto", **env})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_the_cython_core_needs_a_worker_state():
    c = require_twin()
    a, b = socket.socketpair()
    try:
        class Plain:  # every attribute a worker has, but not a WorkerState
            def __init__(self):
                fake = FakeWorker(parser_choice.load("python"), lambda req: None)
                for name in ("trusted", "proxy_protocol", "handler", "now"):
                    setattr(self, name, getattr(fake, name))
                self.new_parser = fake.new_parser

        with pytest.raises(TypeError):
            connection.CConnection(Plain(), a, ("127.0.0.1", 1))
        assert isinstance(FakeWorker(parser_choice.load("python"), None), c.WorkerState)
    finally:
        a.close()
        b.close()


def connect(conn_class, parser_name: str, sock, body: bytes = b"x"):
    """(worker, connection) over `sock`, whose handler answers 200 with `body`."""
    worker = FakeWorker(parser_choice.load(parser_name), lambda req: Response(200, [], body))
    return worker, conn_class(worker, sock, ("127.0.0.1", 1))


def tcp_pair():
    """A connected TCP pair over 127.0.0.1 (a reset needs TCP; a socketpair has none)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    client = socket.create_connection(lsock.getsockname(), timeout=5)
    server, _ = lsock.accept()
    lsock.close()
    server.setblocking(False)
    return server, client


def test_nothing_to_read_leaves_the_connection_as_it_was(parser_name, conn_class):
    """EAGAIN from recv: on_readable returns, the connection stays open and unchanged."""
    server, client = tcp_pair()
    try:
        worker, conn = connect(conn_class, parser_name, server)
        worker.now = 5.0
        conn.on_readable()
        assert conn.state == OPEN and conn.last_active == 0.0 and worker.forgotten == []
    finally:
        server.close()
        client.close()


def test_a_reset_while_reading_closes_the_connection(parser_name, conn_class):
    """recv fails with ECONNRESET: the connection is closed (and forgotten), nothing raised."""
    server, client = tcp_pair()
    try:
        worker, conn = connect(conn_class, parser_name, server)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST
        conn.on_readable()
        assert conn.state == CLOSED and worker.forgotten == [conn]
    finally:
        server.close()


def test_an_answer_the_socket_takes_in_part_goes_out_whole(parser_name, conn_class):
    """A send cut short (a small send buffer, a client not reading yet): the rest is
    queued and goes out on EPOLLOUT, head then body, byte for byte."""
    server, client = socket.socketpair()
    try:
        server.setblocking(False)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.settimeout(5)
        body = bytes(range(256)) * 4096  # 1 MiB
        worker, conn = connect(conn_class, parser_name, server, body)
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        conn.on_readable()
        assert conn.out and worker.modes == ["write"]
        got = bytearray()
        while conn.out:
            got += client.recv(1 << 20)
            conn.on_writable()
        status, _, got_body = read_response(client, buf=got)
        assert status == 200 and got_body == body
        assert conn.state == OPEN and worker.requests == 1 and conn.served == 1
    finally:
        server.close()
        client.close()


def test_a_closed_connection_never_touches_the_descriptor_it_had(parser_name, conn_class):
    """Closed, a connection's descriptor number may be a new connection's: reading or
    answering through the old one must not reach the new one (the socket methods say
    EBADF; the Cython core's recv(2)/sendmsg(2) on the number would not)."""
    old, old_peer = socket.socketpair()
    _, conn = connect(conn_class, parser_name, old)
    req = conn.parser.feed(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0]
    fd = conn.fd
    conn.close()
    old_peer.close()
    new, new_peer = socket.socketpair()
    try:
        if new.fileno() != fd:
            pytest.skip("the new socket did not get the old descriptor number")
        new.setblocking(False)
        new_peer.setblocking(False)
        new_peer.sendall(b"GET /theirs HTTP/1.1\r\nHost: t\r\n\r\n")
        conn.on_readable()
        assert new.recv(4096, socket.MSG_PEEK).startswith(b"GET /theirs")  # still theirs
        conn.deliver(req, Response(200, [], b"not yours"), 0.0, False)
        with pytest.raises(BlockingIOError):
            new_peer.recv(4096)  # nothing was written to them
        assert conn.state == CLOSED
    finally:
        new.close()
        new_peer.close()
