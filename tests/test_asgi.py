"""ASGI 3 end to end: the real server, both parser twins, raw ASGI, Starlette and FastAPI
applications, over real sockets (raw bytes, http.client)."""

import http.client
import json
import os
import socket
import time

import pytest

from conftest import APPS, read_response, recv_until_closed

pytest.importorskip("starlette")


@pytest.fixture
def asgi(start_server, tmp_path):
    def start(app, *extra, env=None, workers=1):
        env = dict(env or {})
        env.setdefault("TEST_MARKERS", str(tmp_path))
        return start_server(*extra, app=app, pythonpath=[APPS], env=env, workers=workers)
    return start


def get(srv, path, method="GET", body=None, headers=None):
    c = http.client.HTTPConnection(*srv.address, timeout=10)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def wait_file(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    with open(path) as f:
        return f.read()


def test_raw_scope(asgi):
    srv = asgi("asgi_apps:raw", "--root-path", "/api")
    r, data = get(srv, "/api/scope%20x/caf%C3%A9?a=1&b=%20", headers={"X-Dup": "1"})
    assert r.status == 200
    scope = json.loads(data)
    assert scope["type"] == "http" and scope["method"] == "GET" and scope["http_version"] == "1.1"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["path"] == "/api/scope x/café" and scope["raw_path"] == "/api/scope%20x/caf%C3%A9"
    assert scope["root_path"] == "/api" and scope["query_string"] == "a=1&b=%20"
    assert scope["scheme"] == "http" and scope["client"][0] == "127.0.0.1"
    assert scope["server"] == [srv.address[0], srv.address[1]]
    assert ["x-dup", "1"] in scope["headers"]
    assert all(n == n.lower() for n, _ in scope["headers"])
    assert scope["extensions"] == ["http.response.pathsend", "http.response.trailers"]
    assert scope["state"]["booted"] > 0  # copied from the lifespan state
    r, _ = get(srv, "/elsewhere")
    assert r.status == 404  # outside --root-path


def test_headers_order_and_repeats_and_forwarded_scheme(asgi):
    srv = asgi("asgi_apps:raw")
    s = srv.connect()
    s.sendall(b"GET /scope HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\nX-A: 3\r\n"
              b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n")
    status, _, body = read_response(s)
    s.close()
    scope = json.loads(body)
    names = [n for n, _ in scope["headers"]]
    assert names[:4] == ["host", "x-a", "x-b", "x-a"] and scope["headers"][3] == ["x-a", "3"]
    assert scope["scheme"] == "https" and scope["client"] == ["203.0.113.9", 0]


def test_streaming_chunked_and_content_length_chosen_by_server(asgi):
    srv = asgi("asgi_apps:raw")
    s = srv.connect()
    s.sendall(b"GET /stream?3 HTTP/1.1\r\nHost: h\r\n\r\nGET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
    data = b""
    while b"hello /hello" not in data:
        chunk = s.recv(65536)
        assert chunk
        data += chunk
    s.close()
    first, _, rest = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in first
    assert rest.startswith(b"7\r\npart 0\n\r\n7\r\npart 1\n\r\n7\r\npart 2\n\r\n0\r\n\r\nHTTP/1.1 200")
    assert b"Content-Length: 12\r\n" in rest  # one body message: the server knows its length


def test_server_alone_frames_the_response(asgi):
    srv = asgi("asgi_apps:raw")
    s = srv.connect()
    s.sendall(b"GET /framing HTTP/1.1\r\nHost: h\r\n\r\n")
    status, headers, body = read_response(s)
    assert status == 200 and body == b"hello" and headers["x-ok"] == "1"
    assert "transfer-encoding" not in headers and headers.get("connection") is None
    s.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")  # still kept alive
    assert read_response(s)[2] == b"hello /x"
    s.close()


def test_head_has_no_body_http10_close(asgi):
    srv = asgi("asgi_apps:raw")
    s = srv.connect()
    s.sendall(b"HEAD /hi HTTP/1.1\r\nHost: h\r\n\r\nGET /stream?1 HTTP/1.0\r\n\r\n")
    buf = bytearray()  # the second answer may arrive in the same recv as the first
    status, headers, body = read_response(s, head_only=True, buf=buf)
    assert status == 200 and headers["content-length"] == "9" and body == b""
    rest = bytes(buf) + recv_until_closed(s)
    s.close()
    assert rest.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding" not in rest
    assert rest.endswith(b"\r\n\r\npart 0\n") and b"Connection: close" in rest


def test_request_body_streams_in_pieces_with_100_continue(asgi):
    srv = asgi("asgi_apps:raw")
    s = srv.connect()
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
    assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.sendall(b"12345")
    time.sleep(0.2)
    s.sendall(b"67890")
    status, headers, body = read_response(s)
    assert status == 200 and body == b"10" and int(headers["x-chunks"]) >= 1
    # chunked upload
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert read_response(s)[2] == b"5"
    s.close()


def test_protocol_errors_and_limits(asgi):
    srv = asgi("asgi_apps:raw", "--max-body-size", "100")
    s = srv.connect()
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n")
    status, headers, _ = read_response(s)
    assert status == 413 and headers["connection"] == "close"
    s.close()
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")
    assert read_response(s)[0] == 400
    s.close()
    assert get(srv, "/still-serving")[1] == b"hello /still-serving"


def test_app_exceptions(asgi):
    srv = asgi("asgi_apps:raw")
    r, data = get(srv, "/raise-before")
    assert r.status == 500
    srv.wait_for(r"RuntimeError: boom before start")
    r, _ = get(srv, "/nothing")
    assert r.status == 500
    r, _ = get(srv, "/bad-header")
    assert r.status == 500
    s = srv.connect()
    s.sendall(b"GET /raise-after HTTP/1.1\r\nHost: h\r\n\r\n")
    data = recv_until_closed(s)  # the connection is closed mid-body
    s.close()
    assert data.startswith(b"HTTP/1.1 200") and b"partial" in data and not data.endswith(b"0\r\n\r\n")
    assert get(srv, "/ok")[1] == b"hello /ok"


def test_pipelined_answers_in_order_whatever_each_application_does(asgi):
    """Answers that need no wait, one that suspends first, one that fails before its
    start: each in turn, on one connection, sent in one write."""
    srv = asgi("asgi_apps:raw")
    s = srv.connect()
    paths = ["/a", "/sleep", "/b", "/raise-before", "/c", "/in-task", "/d"]
    s.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % p.encode() for p in paths))
    buf = bytearray()
    answers = [read_response(s, buf=buf) for _ in paths]
    s.close()
    assert [a[0] for a in answers] == [200, 200, 200, 500, 200, 200, 200]
    assert [a[2] for a in answers if a[0] == 200] == [b"hello /a", b"slept", b"hello /b", b"hello /c", b"task",
                                                       b"hello /d"]


def test_response_heads_kept_per_status_and_fields(asgi):
    """The same fields under another status get their own head; fields from a generator
    or as lists work; a bad field is still a 500 after good ones were kept."""
    srv = asgi("asgi_apps:raw")
    s = srv.connect()
    buf = bytearray()
    for target in (b"/status?201", b"/status?200", b"/status?201", b"/list-fields", b"/list-fields",
                   b"/bad-header", b"/status?200"):
        s.sendall(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % target)
        status, headers, body = read_response(s, buf=buf)
        if target.startswith(b"/status"):
            assert (status, headers["x-same"], headers["content-type"], body) == \
                (int(target[-3:]), "1", "text/plain", b"status")
        elif target == b"/list-fields":
            assert (status, headers["x-list"], body) == (200, "1", b"listed")
        else:
            assert status == 500 and "x-evil" not in headers and "set-cookie" not in headers
    s.close()


def test_application_runs_in_a_task_from_its_first_step(asgi):
    """asyncio.current_task() is the request's task before its first await: asyncio.timeout
    and anyio cancel scopes (Starlette's BaseHTTPMiddleware) depend on it; running the
    first step by hand, outside a task, broke both."""
    srv = asgi("starlette_app:with_middleware")
    r, data = get(srv, "/")
    assert (r.status, data, r.getheader("x-middleware")) == (200, b"starlette home", "1")
    srv = asgi("asgi_apps:raw")
    assert get(srv, "/in-task")[1] == b"task"


def test_client_disconnect_mid_stream(asgi, tmp_path):
    srv = asgi("asgi_apps:raw")
    marker = tmp_path / "gone"
    s = srv.connect()
    s.sendall(b"GET /forever?" + str(marker).encode() + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    s.close()
    assert wait_file(str(marker)) == "disconnected"
    marker2 = tmp_path / "gone2"
    s = srv.connect()
    s.sendall(b"GET /wait-disconnect?" + str(marker2).encode() + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    time.sleep(0.2)
    s.close()
    assert wait_file(str(marker2)) == "http.disconnect"


def test_back_pressure_slow_reader(asgi):
    """A client that does not read: the worker holds a bounded amount, keeps serving others,
    and the whole body arrives when the client reads."""
    srv = asgi("asgi_apps:raw")
    s = srv.connect()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
    time.sleep(0.5)
    assert get(srv, "/other")[1] == b"hello /other"  # the loop is free
    status, headers, body = read_response(s)
    s.close()
    assert status == 200 and len(body) == 128 * 65536


def test_pathsend_and_trailers(asgi, tmp_path):
    f = tmp_path / "f.txt"
    f.write_bytes(b"abc" * 50000)
    srv = asgi("asgi_apps:raw")
    r, data = get(srv, "/pathsend?" + str(f))
    assert r.status == 200 and data == f.read_bytes() and r.getheader("content-length") == "150000"
    s = srv.connect()
    s.sendall(b"GET /trailers HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n")
    data = b""
    while not data.endswith(b"x-checksum: abc\r\n\r\n"):
        piece = s.recv(4096)
        assert piece, data
        data += piece
    s.close()
    assert data.endswith(b"\r\n4\r\ndata\r\n0\r\nx-checksum: abc\r\n\r\n")


def test_pathsend_small_files_go_with_their_head(asgi, tmp_path):
    """A small file is read and sent with its head; HEAD, an empty file and the next
    request on the connection are as with sendfile."""
    small, empty = tmp_path / "small.bin", tmp_path / "empty.bin"
    small.write_bytes(os.urandom(1024))
    empty.write_bytes(b"")
    srv = asgi("asgi_apps:raw")
    s = srv.connect()
    buf = bytearray()
    for method, f in (("GET", small), ("HEAD", small), ("GET", empty), ("GET", small)):
        s.sendall(f"{method} /pathsend?{f} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        status, headers, body = read_response(s, head_only=method == "HEAD", buf=buf)
        assert (status, headers["content-length"]) == (200, str(f.stat().st_size))
        assert body == (b"" if method == "HEAD" else f.read_bytes())
    s.sendall(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n")
    assert read_response(s, buf=buf)[2] == b"hello /ok" and not buf
    s.close()


def test_lifespan_failed_startup_is_a_boot_failure(parser_name):
    from conftest import Server
    srv = Server(["--bind", "127.0.0.1:0", "--workers", "1", "--parser", parser_name, "asgi_apps:failing_startup"],
                 env={"PYTHONPATH": APPS + os.pathsep + os.path.dirname(APPS) + "/.."})
    assert srv.proc.wait(30) == 3
    assert "no database" in "".join(srv.log)


def test_lifespan_auto_tolerates_and_on_refuses(asgi, parser_name):
    srv = asgi("asgi_apps:no_lifespan")
    assert get(srv, "/")[1] == b"plain"
    from conftest import Server
    bad = Server(["--bind", "127.0.0.1:0", "--workers", "1", "--parser", parser_name, "--lifespan", "on",
                  "asgi_apps:no_lifespan"], env={"PYTHONPATH": APPS})
    assert bad.proc.wait(30) == 3


def test_interface_forced_and_bad_options(asgi):
    srv = asgi("asgi_apps:raw", "--interface", "asgi", "--loop", "asyncio", "--lifespan", "off")
    r, data = get(srv, "/scope")
    assert "state" not in json.loads(data) or json.loads(data)["state"] == {}
    from conftest import Server
    bad = Server(["--interface", "nope", "x:y"])
    assert bad.proc.wait(10) == 2 and "--interface" in bad.log[-1]


def test_blocked_loop_is_a_hung_worker(asgi):
    srv = asgi("asgi_apps:raw", "--timeout", "2")
    s = srv.connect()
    s.sendall(b"GET /block?30 HTTP/1.1\r\nHost: h\r\n\r\n")
    srv.wait_for(r"silent for \d+s: dumping its stacks", timeout=20)
    srv.wait_for(r"hung in GET /block\?30 HTTP/1.1, its loop blocked for", timeout=10)  # names the request
    srv.wait_for(r"Booted worker", timeout=20)
    s.close()
    assert get(srv, "/after")[1] == b"hello /after"


def test_metrics_access_log_and_max_requests(asgi, tmp_path):
    log = tmp_path / "access.log"
    srv = asgi("asgi_apps:raw", "--access-log", str(log), "--max-requests", "5")
    pids = set(srv.children())
    for i in range(12):
        assert get(srv, f"/n{i}")[0].status == 200
    srv.wait_for(r"reached --max-requests", timeout=20)
    srv.stop()
    lines = log.read_text().splitlines()
    assert any('"GET /n0 HTTP/1.1" 200 9 ' in l for l in lines), lines[:3]
    assert pids


# ---------------------------------------------------------------------- Starlette, FastAPI

def test_starlette(asgi, tmp_path):
    srv = asgi("starlette_app:app", env={"TEST_FILE": str(tmp_path / "file.bin")})
    (tmp_path / "file.bin").write_bytes(os.urandom(3000))
    assert get(srv, "/")[1] == b"starlette home"
    r, data = get(srv, "/users/7?q=z")
    assert json.loads(data) == {"id": 7, "q": "z"}
    r, data = get(srv, "/state")
    st = json.loads(data)
    assert st["started_by"] == st["pid"]  # lifespan state reached the request
    r, data = get(srv, "/stream")
    assert data == b"0\n1\n2\n3\n4\n" and r.getheader("transfer-encoding") == "chunked"
    r, data = get(srv, "/upload", "POST", body=b"x" * 3_000_000)
    assert json.loads(data) == {"size": 3_000_000}
    r, data = get(srv, "/file")
    assert r.status == 200 and data == (tmp_path / "file.bin").read_bytes()
    r, data = get(srv, "/background?name=bg")
    assert data == b"queued"
    assert wait_file(str(tmp_path / "bg")) == "done"
    assert get(srv, "/missing")[0].status == 404


def test_fastapi(asgi):
    pytest.importorskip("fastapi")
    srv = asgi("fastapi_app:app")
    r, data = get(srv, "/items/3?q=a")
    assert r.status == 200 and json.loads(data) == {"item_id": 3, "q": "a"}
    r, data = get(srv, "/items", "POST", body=json.dumps({"name": "n", "price": 10}),
                  headers={"Content-Type": "application/json"})
    assert json.loads(data) == {"name": "n", "price": 10.0, "taxed": 12.0}
    r, data = get(srv, "/items", "POST", body=b'{"name": 1}', headers={"Content-Type": "application/json"})
    assert r.status == 422 and json.loads(data)["detail"]
    assert get(srv, "/private", headers={"X-Token": "wrong"})[0].status == 401
    assert get(srv, "/private", headers={"X-Token": "secret"})[1] == b'{"ok":true}'
    assert get(srv, "/items/notanint")[0].status == 422


# ---------------------------------------------------------------------- trailers, slow clients, half-close

def test_trailers_only_when_the_client_asked(asgi):
    """Trailers go out chunked to a client that sent `TE: trailers`; to any other (or on
    HTTP/1.0, which has no chunked coding) they are dropped and the body framed as usual."""
    srv = asgi("asgi_apps:raw")
    s = srv.connect()
    s.sendall(b"GET /trailers HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n")
    buf = bytearray()
    status, headers, body = read_response(s, buf=buf)
    assert status == 200 and body == b"data" and headers.get("content-length") == "4"
    assert "transfer-encoding" not in headers and b"x-checksum" not in bytes(buf)
    assert read_response(s, buf=buf)[2] == b"hello /after"  # the stream is still in step
    s.close()
    s = srv.connect()
    s.sendall(b"GET /trailers HTTP/1.0\r\nTE: trailers\r\n\r\n")
    data = recv_until_closed(s)
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding" not in head
    assert body == b"data" and b"x-checksum" not in data


def test_slow_sender_body_arrives_in_pieces_then_body_timeout(asgi):
    srv = asgi("asgi_apps:raw", "--body-timeout", "1")
    s = srv.connect(timeout=15)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\n\r\n")
    for _ in range(8):  # trickled: the application hears each piece with more_body
        time.sleep(0.1)
        s.sendall(b"abcde")
    status, headers, body = read_response(s)
    assert status == 200 and body == b"40" and int(headers["x-chunks"]) > 1
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\n\r\n12345")
    status, headers, _ = read_response(s)  # then nothing: 408 after the body timeout
    assert status == 408 and headers["connection"] == "close"
    assert s.recv(100) == b""
    s.close()
    srv.wait_for(r"408 from .*no body bytes")
    assert get(srv, "/still")[1] == b"hello /still"


def test_half_close_after_pipelined_requests(asgi, tmp_path):
    """A client may shut its side after sending: what it sent whole is answered, then the
    connection closes; a request whose body never came whole hears http.disconnect."""
    srv = asgi("asgi_apps:raw")
    s = srv.connect()
    s.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz"
              b"GET /stream?2 HTTP/1.1\r\nHost: h\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    data = recv_until_closed(s)
    s.close()
    assert data.count(b"HTTP/1.1 200") == 3, data
    assert b"hello /a" in data and data.endswith(b"part 1\n\r\n0\r\n\r\n")
    marker = tmp_path / "half"
    s = srv.connect()
    s.sendall(b"POST /wait-disconnect?" + str(marker).encode() + b" HTTP/1.1\r\nHost: h\r\n"
              b"Content-Length: 10\r\n\r\n12345")
    s.shutdown(socket.SHUT_WR)
    assert recv_until_closed(s) == b""
    s.close()
    assert wait_file(str(marker)) == "http.disconnect"


# ---------------------------------------------------------------------- timeouts from the core

def test_silent_connection_is_closed_after_the_first_byte_timeout(asgi):
    """The epoll worker's rule, from the same core (prefork.http.core.expired): a connection
    that sends nothing goes after min(5 s, --header-timeout), not after --keepalive; one
    kept alive after a request stays."""
    srv = asgi("asgi_apps:raw", "--keepalive", "60", "--header-timeout", "2")
    kept = srv.connect(timeout=10)
    kept.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(kept)[0] == 200
    silent = srv.connect(timeout=10)
    t0 = time.monotonic()
    assert silent.recv(1) == b""
    assert time.monotonic() - t0 < 8
    kept.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(kept)[0] == 200
    kept.close()
    silent.close()


def test_unfinished_proxy_header_is_closed_after_the_head_timeout(asgi):
    srv = asgi("asgi_apps:raw", "--proxy-protocol", "--keepalive", "60", "--header-timeout", "2")
    s = srv.connect(timeout=10)
    s.sendall(b"PROXY TCP4 10.1.2.3 ")
    t0 = time.monotonic()
    assert s.recv(1) == b""
    assert time.monotonic() - t0 < 8
    s.close()


def test_upgrade_without_websockets_is_served_as_http(start_server, tmp_path):
    """Without the websockets package (an optional dependency), an upgrade request is an
    ordinary request to the application (an "http" scope), as uvicorn serves it; the
    worker says so once in the log, and the connection stays HTTP/1.1."""
    site = tmp_path / "no-websockets"
    site.mkdir()
    (site / "sitecustomize.py").write_text('import sys\nsys.modules["websockets"] = None  # import fails\n')
    srv = start_server("--interface", "asgi", app="asgi_apps:raw", pythonpath=[site, APPS])
    upgrade = (b"GET /scope HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with srv.connect() as s:
        buf = bytearray()
        for _ in range(2):  # the second on the same connection: it stayed HTTP
            s.sendall(upgrade)
            status, headers, body = read_response(s, buf=buf)
            assert status == 200, (status, body)
            scope = json.loads(body)
            assert scope["type"] == "http" and ["upgrade", "websocket"] in scope["headers"]
    srv.wait_for(r"WARNING.*[Uu]nsupported upgrade request.*websockets")
    assert sum("upgrade request" in line for line in srv.log) == 1, "".join(srv.log)
