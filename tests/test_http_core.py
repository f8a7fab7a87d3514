"""The sans-I/O HTTP/1.1 core (prefork/http/core.py): bytes in → requests, response start
→ head bytes, with both parser twins."""

import pytest

from prefork.http import _pyparser
from prefork.http.errors import ResponseHeadError
from prefork.http import core
from conftest import PARSERS, require_parser

DATE = "Server: t\r\nDate: d\r\n"


@pytest.fixture(params=PARSERS)
def mod(request):
    require_parser(request.param)
    if request.param == "python":
        return _pyparser
    from prefork.http import _parser
    return _parser


class Head:
    """core.response_head's (data, mode, keep), named for the assertions."""

    def __init__(self, data, mode, keep):
        self.data, self.mode, self.keep = data, mode, keep


def head(mod, method="GET", version="HTTP/1.1", keep=True, status=200, fields=(), length=None):
    result = core.response_head(method, version, keep, mod.status_line(status), DATE,
                                mod.header_block(list(fields)), status, length)
    assert type(result) is tuple  # no object per response on the epoll worker's hot path
    return Head(*result)


def test_request_bytes_in_events_out(mod):
    p = mod.RequestParser()
    reqs = p.feed(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    assert [r.path for r in reqs] == ["/a"]
    assert p.pending is not None and p.pending.path == "/p"
    assert p.take_body() == b"12345"
    reqs = p.feed(b"67890")
    assert reqs[0].body == b"67890" and p.pending is None


@pytest.mark.parametrize("length,mode,field", [(5, core.EXACT, b"Content-Length: 5\r\n"),
                                               (None, core.CHUNKED, b"Transfer-Encoding: chunked\r\n")])
def test_head_framing_http11(mod, length, mode, field):
    h = head(mod, fields=[("X-A", "1")], length=length)
    assert h.mode == mode and h.keep
    assert h.data == b"HTTP/1.1 200 OK\r\n" + DATE.encode() + b"X-A: 1\r\n" + field + b"\r\n"


def test_head_http10_unknown_length_is_close_delimited(mod):
    h = head(mod, version="HTTP/1.0", keep=True)
    assert h.mode == core.CLOSE_DELIMITED and not h.keep
    assert h.data.endswith(b"Connection: close\r\n\r\n") and b"Transfer-Encoding" not in h.data


def test_head_http10_keep_alive(mod):
    h = head(mod, version="HTTP/1.0", keep=True, length=3)
    assert h.keep and h.data.endswith(b"Content-Length: 3\r\nConnection: keep-alive\r\n\r\n")


@pytest.mark.parametrize("status", [204, 304, 101])
def test_no_body_statuses(mod, status):
    h = head(mod, status=status, length=10)
    assert h.mode == core.HEAD_ONLY and b"Content-Length" not in h.data


def test_head_method_keeps_length_but_sends_no_body(mod):
    h = head(mod, method="HEAD", length=42)
    assert h.mode == core.HEAD_ONLY and b"Content-Length: 42\r\n" in h.data


def test_not_kept_alive_says_close(mod):
    assert head(mod, keep=False, length=0).data.endswith(b"Connection: close\r\n\r\n")


def test_clean_headers_drops_framing_and_hop_by_hop():
    kept, length = core.clean_headers([("Content-Length", "12"), ("Transfer-Encoding", "chunked"),
                                       ("Connection", "close"), ("Keep-Alive", "x"), ("X-Y", "z")])
    assert kept == [("X-Y", "z")] and length == 12
    with pytest.raises(ResponseHeadError):
        core.clean_headers([("content-length", "1"), ("content-length", "2")])
    with pytest.raises(ResponseHeadError):
        core.clean_headers([("content-length", "-1")])


def test_error_answer(mod):
    data = core.error_answer(mod.status_line(400), DATE, "", b"bad\n")
    assert data == b"HTTP/1.1 400 Bad Request\r\n" + DATE.encode() + b"Content-Length: 4\r\nConnection: close\r\n\r\nbad\n"


def test_chunks_and_trailers(mod):
    assert core.chunk(b"hello") == b"5\r\nhello\r\n"
    assert core.last_chunk() == b"0\r\n\r\n"
    assert core.last_chunk([("X-Sum", "1")], mod.header_block) == b"0\r\nX-Sum: 1\r\n\r\n"


class Limits:
    write_timeout, body_timeout, header_timeout, keepalive = 30, 20, 10, 5
    tls_handshake_timeout = 3


@pytest.mark.parametrize("args,expected", [
    ((100, 60, 0, True, False), "write"), ((100, 90, 0, True, False), None),
    ((100, 75, 0, False, True), "body"), ((100, 95, 95, False, False), None),
    ((100, 99, 85, False, False), "header"), ((100, 94, 0, False, False), "keepalive"),
    ((100, 96, 0, False, False), None),
])
def test_expired(args, expected):
    assert core.expired(*args, Limits) == expected


def test_after_response_keep_close_linger():
    assert core.after_response(True, True, False) == core.KEEP
    assert core.after_response(True, True, True) == core.KEEP
    assert core.after_response(False, True, False) == core.CLOSE
    assert core.after_response(False, True, True) == core.LINGER  # pipelined requests dropped
    assert core.after_response(True, False, False) == core.LINGER  # answered before its body


@pytest.mark.parametrize("raw, version, expected", [
    (b"TE: trailers\r\n", "1.1", True),
    (b"TE: deflate;q=0.5, Trailers\r\n", "1.1", True),
    (b"TE: trailersx\r\n", "1.1", False),
    (b"", "1.1", False),
    (b"TE: trailers\r\n", "1.0", False),
])
def test_accepts_trailers_from_parsed_requests(mod, raw, version, expected):
    req = mod.RequestParser().feed(b"GET / HTTP/" + version.encode() + b"\r\nHost: x\r\n" + raw + b"\r\n")[0]
    assert core.accepts_trailers(req.version, req.headers) is expected


@pytest.mark.parametrize("args,kw,expected", [
    ((100, 98, 0, False, False), {"lingering": True}, None),
    ((100, 97, 0, False, False), {"lingering": True}, "linger"),  # after LINGER_SECONDS
    ((100, 97, 0, True, True), {"lingering": True}, "linger"),  # whatever else is going on
    ((100, 91, 0, False, False), {"proxy_partial": True}, None),
    ((100, 89, 0, False, False), {"proxy_partial": True}, "proxy"),  # the head timeout, not keepalive
    ((100, 96, 0, False, False), {"served": False}, None),
    ((100, 94, 0, False, False), {"served": False}, "keepalive"),  # both: keepalive, 5 s
])
def test_expired_linger_proxy_first_byte(args, kw, expected):
    assert core.expired(*args, Limits, **kw) == expected


@pytest.mark.parametrize("args,kw,expected", [
    ((100, 99, 0, False, False), {"handshake_started": 98, "served": False}, None),
    ((100, 99, 0, False, False), {"handshake_started": 96, "served": False}, "handshake"),  # busy, not alive
    ((100, 90, 0, False, False), {"handshake_started": 98, "served": False}, None),  # not the first-byte rule
    ((100, 99, 0, False, False), {"handshake_started": 96, "proxy_partial": True}, "handshake"),
    ((100, 97, 0, False, False), {"handshake_started": 90, "lingering": True}, "linger"),  # the 400 went out
])
def test_expired_tls_handshake(args, kw, expected):
    assert core.expired(*args, Limits, **kw) == expected


def test_first_byte_timeout_is_at_most_the_head_timeout():
    class Short(Limits):
        header_timeout, keepalive = 2, 60
    assert core.expired(100, 98.5, 0, False, False, Short, served=False) is None
    assert core.expired(100, 97.5, 0, False, False, Short, served=False) == "keepalive"
    assert core.expired(100, 97.5, 0, False, False, Short, served=True) is None


def test_refuse_head_is_a_500(caplog):
    with caplog.at_level("ERROR", logger="prefork.error"):
        assert core.refuse_head("GET", "/x", ResponseHeadError("bad field")) == (500, "Internal Server Error")
    assert "refused the response head for GET /x: bad field" in caplog.text


# ---------------------------------------------------------------------- one list of server-owned fields

FIELD_NAMES = [
    "Content-Type", "Content-Encoding", "Content-Language", "Content-Location", "Content-Range",
    "Cache-Control", "Set-Cookie", "Location", "Server", "Date", "ETag", "Expires", "Last-Modified",
    "Vary", "Via", "Warning", "Allow", "Age", "Retry-After", "WWW-Authenticate", "Accept-Ranges",
    "Strict-Transport-Security", "Link", "Alt-Svc", "Upgrade-Insecure-Requests", "Trailers", "Tee",
    "Connections", "Keep-Alive2", "Content-Lengths", "Transfer-Encodings", "Proxy-Connectio",
    "Sec-WebSocket-Accept", "Sec-WebSocket-Protocol", "X-Content-Length", "X-Powered-By",
]


def test_server_owned_is_defined_once():
    """The core, the ASGI adapter's clean_headers and both twins' header_block use the one
    set of names the pure twin defines."""
    assert core.SERVER_OWNED is _pyparser.SERVER_OWNED
    assert not hasattr(core, "SERVER_FIELDS")
    assert core.SERVER_OWNED == {"content-length", "transfer-encoding", "connection", "keep-alive", "te",
                                 "trailer", "upgrade", "proxy-connection"}


def test_c_twin_check_names_the_same_fields():
    """The Cython twin checks names with a switch on the length and byte compares (no
    Python call per field); the names it compares must be exactly SERVER_OWNED."""
    import os
    import re
    src = open(os.path.join(os.path.dirname(_pyparser.__file__), "_parser.pyx"), encoding="utf-8").read()
    body = src[src.index("cdef inline bint _server_owned"):src.index("cdef int _append_fields")]
    compared = re.findall(r'b"([^"]*)", (\d+)\)', body)
    assert {name for name, _ in compared} == set(_pyparser.SERVER_OWNED)
    assert all(len(name) == int(n) for name, n in compared)
    for name, _ in compared:  # under the right length case
        head = body[:body.index(f'b"{name}"')]
        assert head.rsplit("if n == ", 1)[1].split(":", 1)[0] == str(len(name))


def test_header_block_drops_exactly_server_owned(mod):
    names = [n for owned in _pyparser.SERVER_OWNED for n in (owned, owned.upper(), owned.title())] + FIELD_NAMES
    for name in names:
        block = mod.header_block([(name, "v")])
        assert (block == "") == (name.lower() in _pyparser.SERVER_OWNED), name
    kept, _ = core.clean_headers([(n, "1") for n in names])
    assert {n for n, _ in kept} == {n for n in names if n.lower() not in _pyparser.SERVER_OWNED}


def test_fit_length_cuts_what_passes_the_declared_length(caplog):
    with caplog.at_level("ERROR", logger="prefork.error"):
        assert core.fit_length(b"abc", 5) == b"abc"
        assert not caplog.records
        assert core.fit_length(b"abcdef", 4, "the body for GET /x") == b"abcd"
    assert "the body for GET /x is longer than its Content-Length; cut" in caplog.text


def test_upgrade_head_writes_the_server_owned_fields_itself(mod):
    """header_block drops Upgrade and Connection from any field list (they are the
    server's), so a 101 gets them from upgrade_head, after the block."""
    block = mod.header_block([("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "k")])
    data = core.upgrade_head(mod.status_line(101), DATE, block, "websocket")
    assert data == (b"HTTP/1.1 101 Switching Protocols\r\n" + DATE.encode() + b"Sec-WebSocket-Accept: k\r\n"
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
