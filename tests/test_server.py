"""End-to-end: the real server in a subprocess, real sockets, both parsers."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, Server, read_response, recv_until_closed

pytestmark = pytest.mark.timeout(60)


def get(sock, path, extra=b"", method=b"GET"):
    sock.sendall(method + b" " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n")
    return read_response(sock, head_only=(method == b"HEAD"))


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------- start and basics

def test_startup_line_and_worker_processes(start_server, parser_name):
    srv = start_server(workers=3)
    assert srv.urls and srv.urls[0].startswith("http://127.0.0.1:")
    assert srv.address[1] > 0
    text = "".join(srv.log)
    assert f"parser {parser_name}" in text
    assert f"master pid {srv.pid}" in text
    assert "with 3 workers" in text
    children = srv.children()
    assert len(children) == 3, children


def test_small_file_byte_exact_with_standard_headers(start_server, docroot):
    srv = start_server()
    with srv.connect() as s:
        status, headers, body = get(s, "/data.bin")
    assert status == 200
    assert body == (docroot / "data.bin").read_bytes()
    assert headers["content-length"] == "5000"
    assert headers["content-type"] == "application/octet-stream"
    assert headers["server"].startswith("prefork-http/")
    assert headers["date"].endswith(" GMT")
    assert "last-modified" in headers


def test_types_index_and_directory_redirect(start_server):
    srv = start_server()
    with srv.connect() as s:
        status, headers, body = get(s, "/")
        assert (status, body) == (200, b"<h1>home</h1>\n")
        assert headers["content-type"] == "text/html; charset=utf-8"
        status, headers, body = get(s, "/sub/a.txt")
        assert (status, headers["content-type"]) == (200, "text/plain; charset=utf-8")
        status, headers, _ = get(s, "/sub?x=1")
        assert (status, headers["location"]) == (301, "/sub/?x=1")
        status, _, body = get(s, "/sub/")
        assert (status, body) == (200, b"sub index\n")
        status, _, _ = get(s, "/empty/")  # no index.html, listings off
        assert status == 403
        status, _, _ = get(s, "/missing.txt")
        assert status == 404


def test_other_methods_get_405_with_allow(start_server):
    srv = start_server()
    with srv.connect() as s:
        for method in (b"POST", b"PUT", b"DELETE", b"OPTIONS"):
            extra = b"Content-Length: 3\r\n\r\nabc" if method in (b"POST", b"PUT") else b""
            s.sendall(method + b" /index.html HTTP/1.1\r\nHost: t\r\n" + (extra or b"\r\n"))
            status, headers, _ = read_response(s)
            assert status == 405
            assert headers["allow"] == "GET, HEAD"


def test_head_has_headers_and_no_body(start_server, docroot):
    srv = start_server()
    with srv.connect() as s:
        s.sendall(b"HEAD /data.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        buf = bytearray()
        status, headers, body = read_response(s, head_only=True, buf=buf)
        assert (status, headers["content-length"], body) == (200, "5000", b"")
        # If HEAD had leaked a body, the next response would not parse.
        status, _, body = read_response(s, buf=buf)
        assert (status, body) == (200, b"file a\n")


def test_keepalive_reuses_one_connection_for_100_requests(start_server):
    srv = start_server()
    host, port = srv.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.connect()
    first_sock = conn.sock
    local = first_sock.getsockname()
    for i in range(100):
        conn.request("GET", "/sub/a.txt")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read() == b"file a\n"
        assert conn.sock is first_sock, f"reconnected at request {i}"
    assert conn.sock.getsockname() == local
    conn.close()


def test_three_pipelined_requests_answered_in_order(start_server):
    srv = start_server()
    with srv.connect() as s:
        s.sendall(b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n")
        buf = bytearray()
        answers = [read_response(s, buf=buf) for _ in range(3)]
    assert [(a[0], a[2]) for a in answers[:2]] == [(200, b"file a\n"), (200, b"<h1>home</h1>\n")]
    assert answers[2][0] == 404


def test_http10_closes_unless_keepalive_asked(start_server):
    srv = start_server()
    with srv.connect() as s:
        s.sendall(b"GET /sub/a.txt HTTP/1.0\r\n\r\n")
        data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in data
    assert data.endswith(b"\r\n\r\nfile a\n")
    with srv.connect() as s:
        for _ in range(2):
            s.sendall(b"GET /sub/a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body = read_response(s)
            assert (status, headers["connection"], body) == (200, "keep-alive", b"file a\n")


def test_connection_close_is_honoured(start_server):
    srv = start_server()
    with srv.connect() as s:
        s.sendall(b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                  b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = recv_until_closed(s)
    assert data.count(b"HTTP/1.1 ") == 1  # the pipelined second request is not answered
    assert b"Connection: close\r\n" in data


# ---------------------------------------------------------------------- big files, slow readers

@pytest.mark.timeout(120)
def test_100mib_file_to_slow_reader_while_others_are_served(start_server, docroot):
    big = docroot / "big.bin"
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(big, "wb") as f:
        for i in range(100):
            chunk = block[i:] + block[:i]
            f.write(chunk)
            digest.update(chunk)
    srv = start_server(workers=1)  # one worker: the other client must be served by it too
    slow = srv.connect(timeout=30)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    slow.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    result = {}

    def slow_reader():
        got = hashlib.sha256()
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += slow.recv(4096)
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        result["head"] = head
        total = len(rest)
        got.update(rest)
        n = 0
        while total < 100 << 20:
            chunk = slow.recv(256 * 1024)
            if not chunk:
                break
            got.update(chunk)
            total += len(chunk)
            n += 1
            if n < 40:
                time.sleep(0.02)  # a deliberately slow start: the server's socket fills
        result["total"] = total
        result["sha"] = got.hexdigest()

    t = threading.Thread(target=slow_reader)
    t.start()
    # While the slow reader is being fed, the same worker answers others promptly.
    latencies = []
    for _ in range(20):
        with srv.connect() as s:
            t0 = time.monotonic()
            status, _, body = get(s, "/sub/a.txt")
            latencies.append(time.monotonic() - t0)
            assert (status, body) == (200, b"file a\n")
    assert t.is_alive(), "the slow reader finished before the other client was tested"
    t.join(90)
    slow.close()
    assert b"Content-Length: 104857600" in result["head"]
    assert result["total"] == 100 << 20
    assert result["sha"] == digest.hexdigest()
    assert max(latencies) < 2.0


# ---------------------------------------------------------------------- safety

def test_traversal_never_leaves_the_root(start_server, tmp_path, docroot):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("TOP SECRET\n")
    os.symlink(secret, docroot / "link-out.txt")
    os.symlink(outside, docroot / "dir-out")
    os.symlink(docroot / "sub" / "a.txt", docroot / "link-in.txt")  # inside: allowed
    srv = start_server()
    attempts = [
        "/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt", "/..%2Fsecret.txt", "/..\\secret.txt", "/..%5csecret.txt",
        "/%252e%252e/secret.txt", "/./../secret.txt", "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt", "/%00/../secret.txt", "/secret.txt%00.html",
        "/link-out.txt", "/dir-out/x.txt", "/.%2e/secret.txt", "/%c0%ae%c0%ae/secret.txt",
        "http://t/../secret.txt", "//../secret.txt",
    ]
    with srv.connect() as s:
        buf = bytearray()
        for path in attempts:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            status, _, body = read_response(s, buf=buf)
            assert status in (400, 404), (path, status)
            assert b"SECRET" not in body, path
        s.sendall(b"GET /link-in.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s, buf=buf)[::2] == (200, b"file a\n")


def test_fifo_under_root_is_refused_without_hanging(start_server, docroot):
    os.mkfifo(docroot / "pipe")
    srv = start_server()
    with srv.connect() as s:
        assert get(s, "/pipe")[0] == 404
        assert get(s, "/sub/a.txt")[0] == 200


def test_malformed_request_gets_400_and_close_and_worker_keeps_serving(start_server):
    srv = start_server(workers=1)
    cases = [
        b"GET / HTTP/1.1\nHost: t\r\n\r\n",  # bare LF
        b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n",  # two spaces
        b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",  # space before colon
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # TLS hello
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ]
    for raw in cases:
        with srv.connect() as s:
            s.sendall(raw)
            data = recv_until_closed(s)
        assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), (raw, data)
        assert b"Connection: close\r\n" in data
    with srv.connect() as s:
        s.sendall(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n")
        assert recv_until_closed(s).startswith(b"HTTP/1.1 505 ")
    with srv.connect() as s:
        s.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert recv_until_closed(s).startswith(b"HTTP/1.1 414 ")
    with srv.connect() as s:
        assert get(s, "/sub/a.txt")[::2] == (200, b"file a\n")
    srv.wait_for("400 from", count=len(cases))  # the log arrives through a pipe: wait for it


def test_error_after_good_pipelined_request_answers_both(start_server):
    srv = start_server()
    with srv.connect() as s:
        s.sendall(b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\nGARBAGE\r\n\r\n")
        buf = bytearray()
        assert read_response(s, buf=buf)[::2] == (200, b"file a\n")
        status, headers, _ = read_response(s, buf=buf)
        assert (status, headers["connection"]) == (400, "close")


# ---------------------------------------------------------------------- timeouts and limits

def test_idle_keepalive_connection_is_closed(start_server):
    srv = start_server("--keepalive", "1")
    with srv.connect(timeout=10) as s:
        assert get(s, "/sub/a.txt")[0] == 200
        t0 = time.monotonic()
        assert s.recv(1) == b""  # the server closes it
        assert time.monotonic() - t0 < 5


def test_max_connections_stops_accepting_until_one_closes(start_server):
    srv = start_server("--max-connections", "2", workers=1)
    a, b = srv.connect(), srv.connect()
    assert get(a, "/sub/a.txt")[0] == 200
    assert get(b, "/sub/a.txt")[0] == 200
    # Both in the middle of a request head: not idle, so the full worker has none to
    # close for room (idle ones it would: tests/test_accept.py).
    a.sendall(b"GET /sub/a.txt HTTP/1.1\r\n")
    b.sendall(b"GET /sub/a.txt HTTP/1.1\r\n")
    c = srv.connect()
    c.sendall(b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    c.settimeout(0.5)
    with pytest.raises(socket.timeout):
        c.recv(1)  # queued in the kernel: the full worker does not accept it
    a.close()
    c.settimeout(5)
    assert read_response(c)[::2] == (200, b"file a\n")
    b.close()
    c.close()


# ---------------------------------------------------------------------- processes and signals

def test_killed_worker_is_replaced_and_service_continues(start_server):
    srv = start_server(workers=2)
    before = set(srv.children())
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    srv.wait_for(rf"\(pid {victim}\) was killed by signal 9")
    srv.wait_for(r"Booted worker")
    after = set(srv.children())
    assert victim not in after and len(after) == 2
    for _ in range(20):
        with srv.connect() as s:
            assert get(s, "/sub/a.txt")[0] == 200


def test_sigterm_exits_0_and_leaves_no_child(start_server):
    srv = start_server(workers=2)
    children = srv.children()
    assert len(children) == 2
    with srv.connect() as s:
        assert get(s, "/")[0] == 200
    assert srv.stop(signal.SIGTERM) == 0
    assert not any(pid_alive(p) for p in children)
    assert any("Shutting down" in line for line in srv.log)


def test_sigterm_finishes_in_flight_response(start_server, docroot):
    (docroot / "mid.bin").write_bytes(os.urandom(8 << 20))
    srv = start_server(workers=1)
    s = srv.connect(timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    s.sendall(b"GET /mid.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    first = s.recv(1024)
    assert first.startswith(b"HTTP/1.1 200")
    srv.proc.send_signal(signal.SIGTERM)
    data = first + recv_until_closed(s, limit=16 << 20)
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == (docroot / "mid.bin").read_bytes()
    assert srv.proc.wait(15) == 0


def test_sigint_stops_quickly(start_server):
    srv = start_server(workers=2)
    children = srv.children()
    t0 = time.monotonic()
    assert srv.stop(signal.SIGINT) == 0
    assert time.monotonic() - t0 < 5
    assert not any(pid_alive(p) for p in children)


def test_pid_file_and_access_log(start_server, tmp_path):
    pid_file = tmp_path / "server.pid"
    srv = start_server("--pid", str(pid_file), "--access-log", "-")
    assert int(pid_file.read_text()) == srv.pid
    with srv.connect() as s:
        get(s, "/sub/a.txt", extra=b"User-Agent: tester/1\r\nReferer: http://r/\r\n")
    srv.stop()
    assert not pid_file.exists()
    lines = [l for l in srv.stdout if "/sub/a.txt" in l]
    assert lines, srv.stdout
    assert '"GET /sub/a.txt HTTP/1.1" 200 7 "http://r/" "tester/1"' in lines[0]
    assert lines[0].startswith("127.0.0.1 - - [")


def test_unix_socket_bind(parser_name, docroot, tmp_path):
    from conftest import require_parser
    require_parser(parser_name)
    path = str(tmp_path / "s.sock")
    srv = Server(["--bind", f"unix:{path}", "--workers", "1", "--root", str(docroot), "--parser", parser_name])
    try:
        srv.start(1)
        assert srv.urls == [f"unix:{path}"]
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            assert get(s, "/sub/a.txt")[::2] == (200, b"file a\n")
    finally:
        assert srv.stop() == 0
    assert not os.path.exists(path)


def test_ipv6_and_two_binds(parser_name, docroot):
    from conftest import require_parser
    require_parser(parser_name)
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    srv = Server(["--bind", "[::1]:0", "--bind", "127.0.0.1:0", "--workers", "1",
                  "--root", str(docroot), "--parser", parser_name])
    try:
        srv.start(1)
        assert len(srv.urls) == 2 and srv.urls[0].startswith("http://[::1]:")
        for url in srv.urls:
            host, _, port = url[7:].rpartition(":")
            family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
            with socket.socket(family) as s:
                s.settimeout(5)
                s.connect((host.strip("[]"), int(port)))
                assert get(s, "/sub/a.txt")[0] == 200
    finally:
        assert srv.stop() == 0


def test_port_in_use_is_a_clear_error(parser_name, docroot):
    from conftest import require_parser
    require_parser(parser_name)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "prefork", "--bind", f"127.0.0.1:{port}",
                               "--root", str(docroot), "--parser", parser_name],
                              cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 1
    assert "cannot listen on 127.0.0.1:" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------- the command line

@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers"),
    (["--workers", "many"], "--workers"),
    (["--bind", "nope"], "--bind"),
    (["--bind", "127.0.0.1:99999"], "port"),
    (["--bind", "::1:80"], "IPv6"),
    (["--root", "/nonexistent/folder"], "--root"),
    (["--timeout", "-1"], "--timeout"),
    (["--keepalive", "nan"], "--keepalive"),
    (["--parser", "rust"], "--parser"),
    (["--max-body-size", "12X"], "--max-body-size"),
    (["--log-level", "loud"], "--log-level"),
    (["--pid", "/nonexistent/dir/x.pid"], "--pid"),
    (["--no-such-option"], "unrecognized"),
])
def test_bad_command_line_exits_2_with_one_clear_line(args, message, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "prefork", "--bind", "127.0.0.1:0", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    # The whole of stderr is one line: no usage block, no traceback, no startup line.
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith(" (see --help)\n"), proc.stderr
    assert proc.stderr.startswith("prefork-http: error: ") and message in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_bad_command_line_message_is_exactly_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "prefork", "--workers", "0"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=20)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "prefork-http: error: --workers: '0' must be at least 1 (see --help)\n"


def test_version_and_help():
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "prefork", "--version"], env=env,
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and out.stdout.startswith("prefork-http ")
    out = subprocess.run([sys.executable, "-m", "prefork", "--help"], env=env,
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and "examples:" in out.stdout and "--max-connections" in out.stdout
