"""Protocol edges (issue 11, items 14-20) end to end and in the layers above the parser.

Raw bytes over real sockets to the real server, both parsers: bytes that cannot start a
request are answered at once; an invalid Host port, a fragment in the target and
userinfo in an absolute-form target are 400; the authority of an absolute-form target
is the host the application sees; chunk extensions follow their grammar; empty list
elements are ignored. In process, for both twins: WSGI HTTP_HOST and App Request.host.
And the command line refuses size limits the parsers would clamp.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import APPS, ROOT, read_response, recv_until_closed, require_cython
from conftest import CPARSER as _cparser
from prefork import Request
from prefork.http import _pyparser
from prefork.config import SIZE_LIMIT, Config, ConfigError
from prefork.apps.wsgi import WSGIHandler

pytestmark = pytest.mark.timeout(60)

# Far beyond any wait in these tests: an answer that comes is not the header timeout's.
HEADER_TIMEOUT = "600"


def _twin(name):
    if name == "py-parser":
        return _pyparser
    require_cython()
    return _cparser


@pytest.fixture(params=["py-parser", "c-parser"])
def twin(request):
    return _twin(request.param)


def _assert_400_and_closed(data: bytes) -> None:
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\nConnection: close\r\n" in head + b"\r\n"
    assert b"\r\nContent-Type: text/plain" in head
    assert body == b"400 Bad Request\n"
    assert data.count(b"HTTP/1.1 ") == 1


# ---------------------------------------------------------------------- 20: not HTTP at all

@pytest.mark.parametrize("first", [
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(32), id="tls-client-hello"),
    pytest.param(b"\x00", id="nul"),
    pytest.param(b"\x01\x02", id="control-bytes"),
    pytest.param(b"\r\n\r\n\x16\x03", id="empty-lines-then-tls"),
    pytest.param(b" GET / HTTP/1.1", id="leading-space"),
])
def test_bytes_that_cannot_start_a_request_are_answered_at_once(start_server, first):
    """Before, such bytes sat in the buffer until the header timeout (20 s by default)
    because the parser waited for a line end. Now the first impossible byte is a 400 with
    Connection: close, with no line end and the socket still open on the client side."""
    srv = start_server("--header-timeout", HEADER_TIMEOUT, workers=1)
    with srv.connect(timeout=30) as s:
        s.sendall(first)
        data = recv_until_closed(s)  # the server closes: no timeout involved
    _assert_400_and_closed(data)
    with srv.connect() as s:  # the worker keeps serving
        s.sendall(b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[::2] == (200, b"file a\n")
    srv.wait_for("400 from .*: not an HTTP request")


def test_empty_lines_before_a_request_are_still_skipped(start_server):
    srv = start_server(workers=1)
    with srv.connect() as s:
        s.sendall(b"\r\n\r\n\r\nGET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[::2] == (200, b"file a\n")


def test_proxy_v2_header_sent_in_pieces_still_comes_before_the_parser(start_server):
    """The PROXY v2 signature starts with CR LF CR LF NUL: the proxy layer takes it before
    the parser sees a byte, even when it arrives a few bytes at a time."""
    from test_hardening import proxy_v2

    srv = start_server("--proxy-protocol", app="wsgi_apps:app", pythonpath=[APPS], workers=1)
    with srv.connect() as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = proxy_v2("203.0.113.9", 40000) + b"GET /remote HTTP/1.1\r\nHost: t\r\n\r\n"
        for i in range(0, len(data), 5):
            s.sendall(data[i:i + 5])
        assert read_response(s)[::2] == (200, b"203.0.113.9 http")


# ---------------------------------------------------------------------- 15, 16, 17: 400s

@pytest.mark.parametrize("raw", [
    pytest.param(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8x0\r\n\r\n", id="host-port-not-digits"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", id="host-junk-after-ipv6"),
    pytest.param(b"GET /sub/a.txt#frag HTTP/1.1\r\nHost: t\r\n\r\n", id="fragment"),
    pytest.param(b"GET /sub/a.txt?x#frag HTTP/1.1\r\nHost: t\r\n\r\n", id="fragment-after-query"),
    pytest.param(b"GET http://user:pw@t/sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n", id="userinfo"),
    pytest.param(b"GET http://t:8x/sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n", id="authority-bad-port"),
    pytest.param(b"GET http://t/sub/a.txt HTTP/1.1\r\n\r\n", id="absolute-form-without-host"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2;\r\nhi\r\n0\r\n\r\n",
                 id="chunk-ext-empty-name"),
    pytest.param(b'POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2;a="b\r\nhi\r\n0\r\n\r\n',
                 id="chunk-ext-unbalanced-quote"),
])
def test_invalid_targets_hosts_and_chunk_extensions_are_400(start_server, raw):
    srv = start_server(workers=1)
    with srv.connect() as s:
        s.sendall(raw + b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        data = recv_until_closed(s)
    _assert_400_and_closed(data)
    assert b"file a" not in data


# ---------------------------------------------------------------------- 17: absolute-form host

def test_absolute_form_authority_is_the_host_the_wsgi_app_sees(start_server):
    srv = start_server(app="wsgi_apps:app", pythonpath=[APPS], workers=1)
    with srv.connect() as s:
        buf = bytearray()
        s.sendall(b"GET http://a.example:8080/env?x=1 HTTP/1.1\r\nHost: b.example\r\n\r\n"
                  b"GET /env HTTP/1.1\r\nHost: b.example\r\n\r\n")
        status, _, body = read_response(s, buf=buf)
        env = json.loads(body)
        assert status == 200 and env["headers"]["HTTP_HOST"] == "a.example:8080"
        assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/env", "x=1")
        status, _, body = read_response(s, buf=buf)  # origin-form: the Host field
        assert status == 200 and json.loads(body)["headers"]["HTTP_HOST"] == "b.example"


def _parse(mod, raw: bytes):
    parser = mod.RequestParser()
    [req] = parser.feed(raw)
    return req


class _Conn:
    body = None
    addr = ("127.0.0.1", 4000)
    trusted = False

    def __init__(self, local=("127.0.0.1", 8000)):
        self._local = local

    def local_address(self):
        return self._local


@pytest.mark.parametrize("raw, want", [
    (b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n", "a.example"),
    (b"GET HTTPS://a.example:8443 HTTP/1.1\r\nHost: b.example\r\n\r\n", "a.example:8443"),
    (b"GET http://[::1]:81/ HTTP/1.0\r\n\r\n", "[::1]:81"),
    (b"GET /x HTTP/1.1\r\nHost: b.example:80\r\n\r\n", "b.example:80"),
    (b"OPTIONS * HTTP/1.1\r\nHost: b.example\r\n\r\n", "b.example"),
    (b"GET / HTTP/1.0\r\n\r\n", None),
])
def test_effective_host_for_wsgi_and_app(twin, raw, want):
    """One place decides the host: the parser's `host` (the authority of an absolute-form
    target, else the Host field); WSGI HTTP_HOST and App Request.host both read it."""
    req = _parse(twin, raw)
    assert req.host == want
    assert Request(req).host == want
    env = WSGIHandler(lambda e, s: []).environ(req, _Conn())
    assert env.get("HTTP_HOST") == want
    # Over a unix socket SERVER_NAME/SERVER_PORT come from the same host.
    env = WSGIHandler(lambda e, s: []).environ(req, _Conn(local="/run/x.sock"))
    if want is None:
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("localhost", "80")
    else:
        name, _, port = want.rpartition(":") if want.rfind(":") > want.rfind("]") else (want, "", "")
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (name or want, port or "80")


# ---------------------------------------------------------------------- 18, 19: accepted now

def test_chunk_extension_bws_and_list_empty_elements_are_accepted(start_server):
    srv = start_server(app="wsgi_apps:app", pythonpath=[APPS], workers=1)
    with srv.connect() as s:
        buf = bytearray()
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: , chunked\r\n\r\n"
                  b'5 ;a=b ; c = "d \\" e"\r\nhello\r\n0 ;z\r\n\r\n')
        assert read_response(s, buf=buf)[::2] == (200, b"hello")
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nworld")
        assert read_response(s, buf=buf)[::2] == (200, b"world")
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nworld!")
        assert read_response(s, buf=buf)[0] == 400


# ---------------------------------------------------------------------- 14: the size bound

def test_size_bound_is_the_parsers_clamp():
    assert SIZE_LIMIT == _pyparser.LIMIT_MAX
    Config(max_body_size=SIZE_LIMIT, limit_request_line=SIZE_LIMIT, limit_request_fields=SIZE_LIMIT,
           limit_request_field_size=SIZE_LIMIT, spool_threshold=SIZE_LIMIT).validate()
    for name in ("max_body_size", "limit_request_line", "limit_request_fields",
                 "limit_request_field_size", "spool_threshold"):
        with pytest.raises(ConfigError, match="at most"):
            Config(**{name: SIZE_LIMIT + 1}).validate()


@pytest.mark.parametrize("args, option", [
    (["--max-body-size", "1000000000G"], "--max-body-size"),
    (["--max-body-size", str(SIZE_LIMIT + 1)], "--max-body-size"),
    (["--limit-request-line", str(10 ** 20)], "--limit-request-line"),
    (["--spool-threshold", "1048577G"], "--spool-threshold"),
])
def test_command_line_refuses_sizes_beyond_the_bound(args, option, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "prefork", "--bind", "127.0.0.1:0", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Listening" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("prefork-http: error:") and option in last and "at most" in last, proc.stderr


def test_wsgi_content_length_is_the_parsed_number(twin):
    """CONTENT_LENGTH is the parsed number, not the field text: "5, 5" is 5 (a WSGI
    application doing int(CONTENT_LENGTH) failed with a 500 once lists were accepted)."""
    req = _parse(twin, b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello")
    env = WSGIHandler(lambda e, s: []).environ(req, _Conn())
    assert env["CONTENT_LENGTH"] == "5" and env["wsgi.input"].read() == b"hello"
