"""End-to-end: no response can carry two framings (issue 11, item 11).

Handlers (App, WSGI, error handlers) that set Content-Length, Transfer-Encoding, Connection
or another hop-by-hop field themselves: over raw sockets, every answer has exactly one
framing of the server's (one Content-Length, or one Transfer-Encoding: chunked, or none
for 204 and HEAD of a stream), at most one Connection, and none of the handler's
hop-by-hop fields. The rule itself lives in the parser module's header_block (both twins,
tests/test_parser.py); this proves that every path goes through it.
"""

from __future__ import annotations


import pytest

from conftest import APPS

pytestmark = pytest.mark.timeout(60)

HOP_NAMES = {"keep-alive", "te", "trailer", "upgrade", "proxy-connection"}


@pytest.fixture
def serve(start_server):
    def start(app):
        return start_server(app=f"framing_app:{app}", pythonpath=[APPS])
    return start


def exchange(sock, buf: bytearray, method: str, path: str, version: str = "HTTP/1.1", extra: str = ""):
    """Send one request; read one response. Returns (status, [(name lower, value)], body, closed)
    where the body is read by the framing the head declares."""
    sock.sendall(f"{method} {path} {version}\r\nHost: t\r\n{extra}\r\n".encode("latin-1"))
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a head; got {bytes(buf)!r}")
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[:end + 4]
    status = int(lines[0].split(" ")[1])
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append((name.lower(), value.strip()))
    check_framing(fields)
    names = [n for n, _ in fields]
    body = bytearray()
    if method == "HEAD" or status in (204, 304):
        pass
    elif "content-length" in names:
        size = int(dict(fields)["content-length"])
        while len(buf) < size:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside a body")
            buf += chunk
        body += buf[:size]
        del buf[:size]
    elif "transfer-encoding" in names:
        while True:
            while b"\r\n" not in buf:
                buf += sock.recv(65536)
            line, _, rest = bytes(buf).partition(b"\r\n")
            size = int(line, 16)
            buf[:] = rest
            while len(buf) < size + 2:
                buf += sock.recv(65536)
            body += buf[:size]
            del buf[:size + 2]
            if size == 0:
                break
    closed = False
    if dict(fields).get("connection") == "close":
        sock.settimeout(5)
        closed = sock.recv(1) == b""
    return status, fields, bytes(body), closed


def check_framing(fields) -> None:
    names = [n for n, _ in fields]
    assert names.count("content-length") <= 1, fields
    assert names.count("transfer-encoding") <= 1, fields
    assert not ("content-length" in names and "transfer-encoding" in names), fields
    if "transfer-encoding" in names:
        assert dict(fields)["transfer-encoding"] == "chunked", fields
    assert names.count("connection") <= 1, fields
    assert not HOP_NAMES & set(names), fields


def one(fields, name):
    values = [v for n, v in fields if n == name]
    assert len(values) == 1, (name, fields)
    return values[0]


def test_app_framing(serve):
    srv = serve("app")
    with srv.connect() as sock:
        buf = bytearray()
        status, fields, body, _ = exchange(sock, buf, "GET", "/cl-te")
        assert (status, body, one(fields, "content-length")) == (200, b"hello", "5")
        status, fields, body, _ = exchange(sock, buf, "HEAD", "/cl-te")
        assert (status, body, one(fields, "content-length")) == (200, b"", "5")
        status, fields, body, _ = exchange(sock, buf, "GET", "/tuple")
        assert (status, body, one(fields, "content-length")) == (200, b"hello", "5")
        status, fields, body, _ = exchange(sock, buf, "GET", "/tuple-list")
        assert (status, body, one(fields, "content-length"), one(fields, "x-kept")) == (201, b"hello", "5", "yes")
        # A stream of unknown length is chunked on HTTP/1.1, whatever length the handler claimed.
        status, fields, body, _ = exchange(sock, buf, "GET", "/stream-cl")
        assert (status, body, one(fields, "transfer-encoding")) == (200, b"abcd", "chunked")
        status, fields, body, _ = exchange(sock, buf, "GET", "/stream-te")
        assert (status, body, one(fields, "transfer-encoding")) == (200, b"abcd", "chunked")
        status, fields, body, _ = exchange(sock, buf, "HEAD", "/stream-te")
        assert (status, body) == (200, b"")
        status, fields, body, _ = exchange(sock, buf, "GET", "/nocontent")
        names = [n for n, _ in fields]
        assert status == 204 and "content-length" not in names and "transfer-encoding" not in names
        status, fields, body, _ = exchange(sock, buf, "GET", "/teapot")
        assert (status, one(fields, "content-length"), one(fields, "x-tea")) == (418, str(len(body)), "1")
        # The handler's Connection: close does not close; keep-alive goes on.
        status, fields, body, closed = exchange(sock, buf, "GET", "/hop")
        assert (status, body, closed) == (200, b"hop", False)
        assert "connection" not in [n for n, _ in fields]
        # The handler's Connection: keep-alive does not keep a connection the client closes.
        status, fields, body, closed = exchange(sock, buf, "GET", "/keep", extra="Connection: close\r\n")
        assert (status, body, one(fields, "connection"), closed) == (200, b"keep", "close", True)
    with srv.connect() as sock:  # HTTP/1.0: the server's keep-alive answer, once
        buf = bytearray()
        status, fields, body, _ = exchange(sock, buf, "GET", "/hop", "HTTP/1.0", "Connection: keep-alive\r\n")
        assert (status, body, one(fields, "connection"), one(fields, "content-length")) == (200, b"hop", "keep-alive", "3")
        status, fields, body, closed = exchange(sock, buf, "GET", "/cl-te", "HTTP/1.0")
        assert (body, one(fields, "connection"), closed) == (b"hello", "close", True)


def test_wsgi_framing(serve):
    srv = serve("wsgi")
    with srv.connect() as sock:
        buf = bytearray()
        status, fields, body, _ = exchange(sock, buf, "GET", "/te")
        assert (status, body, one(fields, "content-length")) == (200, b"hello", "5")
        status, fields, body, closed = exchange(sock, buf, "GET", "/cl-gen")
        assert (status, body, one(fields, "content-length"), closed) == (200, b"abc", "3", False)
        status, fields, body, closed = exchange(sock, buf, "HEAD", "/cl-gen")
        assert (status, body, one(fields, "content-length"), closed) == (200, b"", "3", False)
        status, fields, body, closed = exchange(sock, buf, "GET", "/hop")
        assert (status, body, one(fields, "content-length"), closed) == (200, b"hop", "3", False)
        assert "connection" not in [n for n, _ in fields]
