"""End-to-end: an App served by the real server, over real sockets, for both parsers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from conftest import APPS, ROOT, read_response, recv_until_closed

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def serve(start_server):
    """serve(*extra_args, app="demo_app:app") → a started server for a test app."""
    def start(*extra, app="demo_app:app", **kw):
        return start_server(*extra, app=app, pythonpath=[APPS], **kw)
    return start


def request(sock, method, path, body=b"", headers=b"", version=b"HTTP/1.1"):
    head = method + b" " + path + b" " + version + b"\r\nHost: t\r\n" + headers
    if body:
        head += b"Content-Length: %d\r\n" % len(body)
    sock.sendall(head + b"\r\n" + body)


def read_head(sock, buf: bytearray):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a head; got {bytes(buf)!r}")
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[:end + 4]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers


def read_chunked(sock, buf: bytearray) -> bytes:
    body = bytearray()
    while True:
        while b"\r\n" not in buf:
            buf += sock.recv(65536)
        line, _, rest = bytes(buf).partition(b"\r\n")
        size = int(line, 16)
        buf[:] = rest
        while len(buf) < size + 2:
            buf += sock.recv(65536)
        body += buf[:size]
        assert buf[size:size + 2] == b"\r\n"
        del buf[:size + 2]
        if size == 0:
            return bytes(body)


# ---------------------------------------------------------------------- routing

def test_routes_params_404_405_head_options_and_500(serve):
    srv = serve()
    with srv.connect() as s:
        request(s, b"GET", b"/hello")
        status, headers, body = read_response(s)
        assert (status, body, headers["content-type"]) == (200, b"Hello, World!", "text/plain")
        request(s, b"HEAD", b"/hello")  # automatic for GET routes: same head, no body
        status, headers, body = read_response(s, head_only=True)
        assert (status, headers["content-length"], body) == (200, "13", b"")
        request(s, b"GET", b"/users/7")
        status, _, body = read_response(s)
        assert status == 200 and json.loads(body) == {"id": 7, "client": ["127.0.0.1", s.getsockname()[1]]}
        request(s, b"GET", b"/users/x")  # int converter refuses: 404 through the error handler
        assert read_response(s)[::2] == (404, b"nothing at /users/x\n")
        request(s, b"DELETE", b"/hello")
        status, headers, _ = read_response(s)
        assert (status, headers["allow"]) == (405, "GET, HEAD, OPTIONS")
        request(s, b"OPTIONS", b"/digest")
        status, headers, _ = read_response(s, head_only=True)
        assert (status, headers["allow"]) == (204, "POST, PUT, OPTIONS")
        request(s, b"GET", b"/boom")
        status, _, body = read_response(s)
        assert status == 500 and b"secret" not in body
        request(s, b"GET", b"/hello")  # the connection survived all of that
        assert read_response(s)[0] == 200
    srv.stop()
    log = "".join(srv.log)
    assert "secret-detail-in-traceback" in log and "Traceback" in log


def test_static_mount_cookies_and_file_response(serve):
    srv = serve()
    with srv.connect() as s:
        request(s, b"GET", b"/assets/a.txt")
        status, headers, body = read_response(s)
        assert (status, body) == (200, b"asset body\n")
        assert headers["content-type"] == "text/plain; charset=utf-8"
        request(s, b"GET", b"/assets/dir")  # the static redirect keeps the mount's prefix
        status, headers, _ = read_response(s)
        assert (status, headers["location"]) == (301, "/assets/dir/")
        request(s, b"POST", b"/assets/a.txt", body=b"x")
        assert read_response(s)[0] == 405
        request(s, b"GET", b"/cookies", headers=b"Cookie: a=1; b=\"two\"\r\n")
        status, headers, body = read_response(s)
        assert json.loads(body) == {"a": "1", "b": "two"}
        assert headers["set-cookie"] == 'session="a b\\073c"; HttpOnly; Max-Age=60; Path=/; SameSite=Lax'
        request(s, b"GET", b"/download")
        status, headers, body = read_response(s)
        assert (status, body) == (200, b"asset body\n")
        assert headers["content-disposition"].startswith('attachment; filename="a file.txt"')


# ---------------------------------------------------------------------- request bodies

def test_bodies_by_content_length_and_chunked(serve):
    srv = serve()
    with srv.connect() as s:
        request(s, b"POST", b"/echo", body=b"hello body", headers=b"Content-Type: text/plain\r\n")
        status, headers, body = read_response(s)
        assert (status, body, headers["x-length"]) == (200, b"hello body", "10")
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n")
        assert read_response(s)[::2] == (200, b"hello world")
        # A body that arrives in pieces, split inside the head and the chunks.
        payload = os.urandom(300_000)
        raw = b"PUT /digest HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
        for i in range(0, len(raw), 70_001):
            s.sendall(raw[i:i + 70_001])
        status, _, body = read_response(s)
        got = json.loads(body)
        assert got == {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload), "spooled": False}


def test_large_bodies_are_spooled_to_a_file(serve):
    srv = serve("--spool-threshold", "64K")
    payload = os.urandom(3 << 20)
    want = {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload), "spooled": True}
    with srv.connect(timeout=20) as s:
        request(s, b"POST", b"/digest", body=payload)
        assert json.loads(read_response(s)[2]) == want
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 50_000]), payload[i:i + 50_000])
                          for i in range(0, len(payload), 50_000))
        s.sendall(b"POST /digest HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
        assert json.loads(read_response(s)[2]) == want
        request(s, b"POST", b"/digest", body=b"small")  # under the threshold: memory
        assert json.loads(read_response(s)[2])["spooled"] is False


def test_body_over_max_body_size_is_413_and_the_connection_closes(serve):
    srv = serve("--max-body-size", "1K")
    with srv.connect() as s:
        request(s, b"POST", b"/echo", body=b"x" * 2000)
        data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in data
    with srv.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"300\r\n" + b"y" * 0x300 + b"\r\n300\r\n" + b"y" * 0x300 + b"\r\n0\r\n\r\n")
        data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in data


def test_expect_100_continue_accepted(serve):
    srv = serve()
    with srv.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        buf = bytearray()
        assert read_head(s, buf) == (100, {})
        s.sendall(b"hello")
        assert read_response(s, buf=buf)[::2] == (200, b"hello")
        # chunked, and the connection goes on
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        assert read_head(s, buf)[0] == 100
        s.sendall(b"3\r\nabc\r\n0\r\n\r\n")
        assert read_response(s, buf=buf)[::2] == (200, b"abc")


def test_expect_100_continue_refused(serve):
    srv = serve("--max-body-size", "1K")
    with srv.connect() as s:  # too large: 413 before any body, then close
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in data
    with srv.connect() as s:  # a path the App does not route: its 404, no 100, close
        s.sendall(b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 404 ") and b"Connection: close" in data and b"100 Continue" not in data
    with srv.connect() as s:  # a method the route does not take: 405
        s.sendall(b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 405 ") and b"Allow: POST, OPTIONS" in data
    with srv.connect() as s:  # an expectation the server does not know
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: magic\r\n\r\n")
        assert recv_until_closed(s).startswith(b"HTTP/1.1 417 ")


def test_form_urlencoded_and_multipart(serve):
    srv = serve()
    with srv.connect() as s:
        request(s, b"POST", b"/form", body=b"a=1&b=caf%C3%A9&a=2",
                headers=b"Content-Type: application/x-www-form-urlencoded\r\n")
        assert json.loads(read_response(s)[2]) == {"fields": {"a": "1", "b": "caf\u00e9"}, "files": {}}
        body = (b"--BND\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhi\r\n"
                b"--BND\r\nContent-Disposition: form-data; name=\"up\"; filename=\"x.txt\"\r\n"
                b"Content-Type: text/plain\r\n\r\nfile data\r\n--BND--\r\n")
        request(s, b"POST", b"/form", body=body, headers=b"Content-Type: multipart/form-data; boundary=BND\r\n")
        assert json.loads(read_response(s)[2]) == {
            "fields": {"title": "hi"}, "files": {"up": {"filename": "x.txt", "size": 9, "content": "file data"}}}
        request(s, b"POST", b"/form", body=b"--BND\r\ngarbage",
                headers=b"Content-Type: multipart/form-data; boundary=BND\r\n")
        assert read_response(s)[0] == 400


# ---------------------------------------------------------------------- streaming responses

def test_streamed_response_is_chunked_on_http11(serve):
    srv = serve()
    with srv.connect() as s:
        request(s, b"GET", b"/stream?n=3")
        buf = bytearray()
        status, headers = read_head(s, buf)
        assert status == 200 and headers["transfer-encoding"] == "chunked" and "content-length" not in headers
        assert read_chunked(s, buf) == b"part 0\npart 1\npart 2\n"
        request(s, b"HEAD", b"/stream")
        status, headers = read_head(s, buf)
        assert status == 200 and not buf
        request(s, b"GET", b"/hello")  # the connection is still in step
        assert read_response(s, buf=buf)[::2] == (200, b"Hello, World!")


def test_streamed_response_is_close_delimited_on_http10(serve):
    srv = serve()
    with srv.connect() as s:
        s.sendall(b"GET /stream?n=4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = recv_until_closed(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and b"Content-Length" not in head and b"chunked" not in head
    assert body == b"part 0\npart 1\npart 2\npart 3\n"


def test_big_stream_to_a_slow_reader_does_not_block_other_clients(serve):
    srv = serve()
    with srv.connect() as slow, srv.connect() as other:
        request(slow, b"GET", b"/stream?n=400000")  # ~3 MB, the client reads nothing yet
        request(other, b"GET", b"/hello")
        assert read_response(other)[::2] == (200, b"Hello, World!")
        buf = bytearray()
        read_head(slow, buf)
        body = read_chunked(slow, buf)
    assert body.count(b"\n") == 400000 and body.endswith(b"part 399999\n")


# ---------------------------------------------------------------------- threads, loading, logs

def test_threads_a_blocking_handler_does_not_block_other_clients(serve):
    srv = serve("--threads", "4")
    with srv.connect(timeout=15) as blocked, srv.connect() as other:
        request(blocked, b"GET", b"/block")
        request(other, b"GET", b"/hello")  # answered while /block still waits
        assert read_response(other)[::2] == (200, b"Hello, World!")
        # Pipelined requests on one connection come back in order, each after the last.
        other.sendall(b"GET /users/1 HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        buf = bytearray()
        assert json.loads(read_response(other, buf=buf)[2])["id"] == 1
        assert read_response(other, buf=buf)[2] == b"Hello, World!"
        request(other, b"GET", b"/release")
        assert read_response(other)[2] == b"ok"
        assert read_response(blocked)[::2] == (200, b"released")


def test_factory_root_path_and_chdir(start_server, tmp_path):
    srv = start_server("--root-path", "/api", "--chdir", APPS, app="demo_factory:create_app()", workers=2)
    with srv.connect() as s:
        request(s, b"GET", b"/api/")
        status, _, body = read_response(s)
        assert status == 200 and body.startswith(b"made in ")
        assert int(body.split()[-1]) in srv.children()  # built in the worker, after the fork
        request(s, b"GET", b"/api/script")
        assert read_response(s)[2] == b"/api/script"  # req.path is the path as sent
        request(s, b"GET", b"/script")  # outside the prefix
        assert read_response(s)[0] == 404


@pytest.mark.parametrize("spec, message", [
    ("nosuchmodule:app", "cannot load 'nosuchmodule:app': no module named 'nosuchmodule'"),
    ("demo_factory:nothing", "module 'demo_factory' has no attribute 'nothing'"),
    ("demo_factory:not_callable", "the application is not callable (it is int)"),
    ("broken_import:app", "ValueError: this module fails on import"),
])
def test_app_that_cannot_load_is_one_line_and_exit_4(spec, message):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([APPS, ROOT]))
    proc = subprocess.run([sys.executable, "-m", "prefork", "--bind", "127.0.0.1:0", spec],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefork-http: error: ") and message in lines[0], lines


def test_bad_chdir_and_bad_app_spec_are_usage_errors():
    for args in (["--chdir", "/nonexistent/folder", "demo_app:app"], ["not a spec"]):
        proc = subprocess.run([sys.executable, "-m", "prefork", "--bind", "127.0.0.1:0", *args],
                              env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("prefork-http: error: "), proc.stderr


def test_factory_that_raises_in_the_worker_stops_the_master(start_server):
    from conftest import Server
    srv = Server(["--bind", "127.0.0.1:0", "--workers", "1", "demo_factory:broken()"],
                 env={"PYTHONPATH": os.pathsep.join([APPS, ROOT])})
    assert srv.proc.wait(20) == 3
    assert "factory failed" in "".join(srv.log)


def test_access_log_json_with_request_time(serve):
    srv = serve("--access-log", "-", "--access-log-format", "json")
    with srv.connect() as s:
        request(s, b"GET", b"/users/5?q=\"x\"", headers=b"User-Agent: ag\"ent\r\n")
        read_response(s)
        request(s, b"GET", b"/stream")
        read_head(s, bytearray())
    srv.stop()
    entries = [json.loads(line) for line in srv.stdout if line.startswith("{")]
    first = entries[0]
    assert first["target"] == '/users/5?q="x"' and first["user_agent"] == 'ag"ent'
    assert first["status"] == 200 and first["bytes"] > 0 and 0 <= first["request_time"] < 5
    assert entries[1]["bytes"] is None  # streamed: length unknown when logged


def test_combined_access_log_ends_with_request_time(serve):
    srv = serve("--access-log", "-")
    with srv.connect() as s:
        request(s, b"GET", b"/hello")
        read_response(s)
    srv.stop()
    line = next(l for l in srv.stdout if "/hello" in l)
    assert '"GET /hello HTTP/1.1" 200 13 "-" "-" ' in line
    assert float(line.split()[-1]) >= 0
