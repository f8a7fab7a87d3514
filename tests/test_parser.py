"""Both parser twins against one table of requests.

Every case is fed whole, one byte at a time and split at random points, to both twins
(`py-parser` and `c-parser`); the outcome must be the one the table states: the requests
(with the fields the table names) and the error class, or no error. Also: response_head,
header_block, status_line, Request.header(), pending and the dead state after an error.
"""

from __future__ import annotations

import random

import pytest

from prefork.http import _pyparser
from prefork.http.errors import (
    BadRequest,
    BodyTooLarge,
    ExpectationFailed,
    HeadersTooLarge,
    ParseError,
    RequestLineTooLong,
    ResponseHeadError,
    UnsupportedTransferCoding,
    VersionNotSupported,
)

from conftest import CPARSER as _cparser, require_cython


def load_twin(name: str):
    if name == "py-parser":
        return _pyparser
    require_cython()
    return _cparser


@pytest.fixture(params=["py-parser", "c-parser"], ids=["py-parser", "c-parser"])
def twin(request):
    return load_twin(request.param)


def test_c_extension_loaded():
    """Under PREFORK_REQUIRE_EXTENSION=1 a missing Cython twin is a failure, not a skip."""
    require_cython()
    assert _cparser.RequestParser is not _pyparser.RequestParser


# ---------------------------------------------------------------------- helpers

FIELDS = (
    "method", "target", "path", "query", "version", "headers", "host", "content_length",
    "chunked", "keep_alive", "expect_continue", "body", "trailers",
)


def snapshot(req) -> dict:
    return {f: getattr(req, f) for f in FIELDS}


def feed_in(mod, chunks, limits):
    parser = mod.RequestParser(**limits)
    out = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out, parser


def splits(data: bytes, seed: str):
    """Whole, byte by byte, and five random splittings."""
    yield "whole", [data]
    yield "bytes", [data[i:i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    for k in range(5):
        if len(data) < 2:
            break
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
        bounds = [0, *cuts, len(data)]
        yield f"random{k}", [data[a:b] for a, b in zip(bounds, bounds[1:])]


def R(method="GET", target="/", **fields) -> dict:
    """An expected request: the fields named are compared."""
    fields["method"] = method
    fields["target"] = target
    return fields


HOST = b"Host: example.com\r\n"


def get(target=b"/", extra=b"", version=b"HTTP/1.1", method=b"GET", host=HOST) -> bytes:
    return method + b" " + target + b" " + version + b"\r\n" + host + extra + b"\r\n"


def post(body: bytes, extra=b"") -> bytes:
    return b"POST /up HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


def chunked(body: bytes, extra=b"", te=b"chunked") -> bytes:
    return b"POST /c HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: " + te + b"\r\n" + extra + b"\r\n" + body


# ---------------------------------------------------------------------- the table

# (id, bytes, limits, expected requests, expected error class or None)
CASES: list[tuple[str, bytes, dict, list[dict], type[ParseError] | None]] = []


def case(id, data, reqs=(), error=None, **limits):
    CASES.append((id, data, limits, list(reqs), error))


# --- valid requests
case("simple-get", get(), [R(path="/", query="", version="HTTP/1.1", host="example.com",
                             headers=[("host", "example.com")], content_length=None,
                             chunked=False, keep_alive=True, expect_continue=False,
                             body=b"", trailers=[])])
case("query", get(b"/a/b?x=1&y=2"), [R(target="/a/b?x=1&y=2", path="/a/b", query="x=1&y=2")])
case("empty-query", get(b"/a?"), [R(target="/a?", path="/a", query="")])
case("two-question-marks", get(b"/a?b?c"), [R(target="/a?b?c", path="/a", query="b?c")])
case("pct-encoded", get(b"/%7Euser/%20x"), [R(target="/%7Euser/%20x", path="/%7Euser/%20x")])
case("http10-no-host", b"GET / HTTP/1.0\r\n\r\n", [R(version="HTTP/1.0", host=None, keep_alive=False, headers=[])])
case("http10-keep-alive", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     [R(version="HTTP/1.0", keep_alive=True)])
case("http10-host", b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", [R(version="HTTP/1.0", host="a")])
case("conn-close", get(extra=b"Connection: close\r\n"), [R(keep_alive=False)])
case("conn-close-upper", get(extra=b"Connection: CLOSE\r\n"), [R(keep_alive=False)])
case("conn-list-close", get(extra=b"Connection: keep-alive, close\r\n"), [R(keep_alive=False)])
case("conn-two-fields", get(extra=b"Connection: upgrade\r\nConnection: close\r\n"), [R(keep_alive=False)])
case("conn-upgrade-only", get(extra=b"Connection: Upgrade\r\n"), [R(keep_alive=True)])
case("conn-closed-not-close", get(extra=b"Connection: closed\r\n"), [R(keep_alive=True)])
case("http10-conn-close-then-ka", b"GET / HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n",
     [R(version="HTTP/1.0", keep_alive=False)])
case("post-body", post(b"hello world"), [R("POST", "/up", body=b"hello world", content_length=11,
                                           chunked=False, pending=None)])
case("post-1k", post(bytes(range(256)) * 4), [R("POST", "/up", body=bytes(range(256)) * 4, content_length=1024)])
case("cl-zero", get(extra=b"Content-Length: 0\r\n"), [R(content_length=0, body=b"")])
case("cl-leading-zeros", post(b"abc").replace(b"Length: 3", b"Length: 003"), [R("POST", "/up", body=b"abc", content_length=3)])
case("cl-repeated-same-fields", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
     [R("POST", body=b"hi", content_length=2)])
case("cl-list-same", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2,2\r\n\r\nhi", [R("POST", body=b"hi")])
case("cl-equal-numbers-different-zeros", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2,02\r\n\r\nhi",
     [R("POST", body=b"hi", content_length=2)])
case("cl-at-limit", post(b"x" * 10), [R("POST", "/up", body=b"x" * 10)], max_body_size=10)
case("chunked", chunked(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
     [R("POST", "/c", body=b"hello world", chunked=True, content_length=None, trailers=[])])
case("chunked-upper-hex", chunked(b"A\r\n0123456789\r\n0\r\n\r\n"), [R("POST", "/c", body=b"0123456789")])
case("chunked-lower-hex", chunked(b"a\r\n0123456789\r\n0\r\n\r\n"), [R("POST", "/c", body=b"0123456789")])
case("chunked-16-digits", chunked(b"0000000000000003\r\nabc\r\n0\r\n\r\n"), [R("POST", "/c", body=b"abc")])
case("chunked-ext", chunked(b"3;name=value\r\nabc\r\n0;last\r\n\r\n"), [R("POST", "/c", body=b"abc")])
case("chunked-ext-quoted", chunked(b'3;a="b c"\t;d\r\nabc\r\n0\r\n\r\n'), [R("POST", "/c", body=b"abc")])
case("chunked-empty", chunked(b"0\r\n\r\n"), [R("POST", "/c", body=b"", chunked=True)])
case("chunked-trailers", chunked(b"3\r\nabc\r\n0\r\nX-Sum: 12 \r\nX-Other:\tv\r\n\r\n"),
     [R("POST", "/c", body=b"abc", trailers=[("x-sum", "12"), ("x-other", "v")])])
case("te-case-insensitive", chunked(b"1\r\nz\r\n0\r\n\r\n", te=b"CHUNKED"), [R("POST", "/c", body=b"z", chunked=True)])
case("te-ows-stripped", chunked(b"1\r\nz\r\n0\r\n\r\n", te=b"\t chunked \t"), [R("POST", "/c", body=b"z")])
case("pipelined-3", get(b"/1") + get(b"/2") + get(b"/3"), [R(target="/1"), R(target="/2"), R(target="/3")])
case("pipelined-mixed", post(b"abc") + chunked(b"1\r\nx\r\n0\r\n\r\n") + get(b"/z"),
     [R("POST", "/up", body=b"abc"), R("POST", "/c", body=b"x"), R(target="/z")])
case("leading-crlf", b"\r\n\r\n" + get(), [R()])
case("crlf-between-requests", get(b"/1") + b"\r\n" + get(b"/2"), [R(target="/1"), R(target="/2")])
case("absolute-http", get(b"http://example.com/p?q"), [R(target="http://example.com/p?q", path="/p", query="q")])
case("absolute-https", get(b"https://example.com:8443/p"), [R(target="https://example.com:8443/p", path="/p", query="")])
case("absolute-upper-scheme", get(b"HTTPS://example.com/"), [R(target="HTTPS://example.com/", path="/")])
case("absolute-no-path", get(b"http://example.com"), [R(target="http://example.com", path="/", query="")])
case("absolute-query-no-path", get(b"http://example.com?a=1"), [R(target="http://example.com?a=1", path="/", query="a=1")])
case("connect", get(b"example.com:443", method=b"CONNECT"), [R("CONNECT", "example.com:443", path="", query="")])
case("connect-ipv6", get(b"[::1]:443", method=b"CONNECT"), [R("CONNECT", "[::1]:443", path="")])
case("options-star", get(b"*", method=b"OPTIONS"), [R("OPTIONS", "*", path="*", query="")])
case("options-path", get(b"/x", method=b"OPTIONS"), [R("OPTIONS", "/x", path="/x")])
case("custom-method", get(method=b"PROPFIND"), [R("PROPFIND")])
case("method-tchar", get(method=b"X-M!#$%&'*+.^_`|~9"), [R("X-M!#$%&'*+.^_`|~9")])
case("lowercase-method", get(method=b"get"), [R("get")])
case("obs-text-value", get(extra=b"X-Name: caf\xe9\xff\r\n"), [R(headers=[("host", "example.com"), ("x-name", "caf\xe9\xff")])])
case("value-ows", get(extra=b"X-A: \t v 1 \t \r\n"), [R(headers=[("host", "example.com"), ("x-a", "v 1")])])
case("value-inner-tab", get(extra=b"X-A: a\tb\r\n"), [R(headers=[("host", "example.com"), ("x-a", "a\tb")])])
case("value-empty", get(extra=b"X-A:\r\nX-B: \r\n"), [R(headers=[("host", "example.com"), ("x-a", ""), ("x-b", "")])])
case("name-case-lowered", b"GET / HTTP/1.1\r\nHOST: a\r\nX-MiXeD: V\r\n\r\n", [R(headers=[("host", "a"), ("x-mixed", "V")], host="a")])
case("name-tchars", get(extra=b"!#$%&'*+-.^_`|~0aZ: 1\r\n"), [R(headers=[("host", "example.com"), ("!#$%&'*+-.^_`|~0az", "1")])])
case("duplicate-plain-headers", get(extra=b"X-A: 1\r\nX-A: 2\r\n"),
     [R(headers=[("host", "example.com"), ("x-a", "1"), ("x-a", "2")])])
case("expect-100", post(b"abc", b"Expect: 100-continue\r\n"), [R("POST", "/up", expect_continue=True, body=b"abc")])
case("expect-100-case", post(b"abc", b"Expect: 100-Continue\r\n"), [R("POST", "/up", expect_continue=True)])
case("expect-http10-ignored", b"GET / HTTP/1.0\r\nExpect: nonsense\r\n\r\n", [R(version="HTTP/1.0", expect_continue=False)])
case("host-empty", get(host=b"Host:\r\n"), [R(host="")])
case("host-port", get(host=b"Host: example.com:8080\r\n"), [R(host="example.com:8080")])
case("host-ipv6", get(host=b"Host: [::1]:80\r\n"), [R(host="[::1]:80")])
case("host-subdelims", get(host=b"Host: a.b-c_d~e!$&'()*+,;=%41\r\n"), [R(host="a.b-c_d~e!$&'()*+,;=%41")])
case("transfer_encoding-underscore-is-plain", get(extra=b"Transfer_Encoding: chunked\r\n"),
     [R(chunked=False, headers=[("host", "example.com"), ("transfer_encoding", "chunked")])])
case("content_length-underscore-is-plain", get(extra=b"Content_Length: 5\r\n"), [R(content_length=None, body=b"")])
case("request-line-at-limit", b"GET /" + b"a" * 10 + b" HTTP/1.1\r\nHost: a\r\n\r\n", [R(target="/" + "a" * 10)],
     max_request_line=24)
case("fields-at-limit", get(extra=b"A: 1\r\nB: 2\r\n"), [R()], max_fields=3)
case("field-at-limit", get(extra=b"X: " + b"v" * 17 + b"\r\n"), [R()], max_field_size=20)
case("head-at-limit", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", [R()], max_head_size=27)
case("chunked-at-body-limit", chunked(b"5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n"), [R("POST", "/c", body=b"abcdefghij")],
     max_body_size=10)
case("trailers-at-limit", chunked(b"0\r\nA: 1\r\nB: 2\r\n\r\n", extra=b""), [R("POST", "/c", trailers=[("a", "1"), ("b", "2")])],
     max_fields=3)
case("incomplete-head", b"GET / HTTP/1.1\r\nHost: a\r\n", [])
case("incomplete-body", post(b"abc")[:-1], [])
case("incomplete-chunked", chunked(b"5\r\nhel"), [])
case("incomplete-trailer", chunked(b"0\r\nX: 1\r\n"), [])
case("only-crlfs", b"\r\n\r\n\r\n", [])
case("lone-cr-tail", b"\r\n\r", [])
case("huge-head-limit-default", get(extra=b"X-Big: " + b"b" * 8000 + b"\r\n"), [R()])

# --- request line
case("bare-lf-request-line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", error=BadRequest)
case("bare-lf-only", b"\n", error=BadRequest)
case("bare-lf-header", b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", error=BadRequest)
case("bare-lf-terminator", b"GET / HTTP/1.1\r\nHost: a\n\n", error=BadRequest)
case("bare-lf-after-crlf", b"GET / HTTP/1.1\r\nHost: a\r\n\n", error=BadRequest)
case("lf-lf-head", b"GET / HTTP/1.1\n\n", error=BadRequest)
case("bare-cr-request-line", b"GET / HTTP/1.1\rHost: a\r\n\r\n", error=BadRequest)
case("bare-cr-header", get(extra=b"X: a\rb\r\n"), error=BadRequest)
case("cr-cr-lf", get(extra=b"X: a\r\r\n"), error=BadRequest)
case("lone-cr-then-garbage", b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", error=BadRequest)
case("double-space", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", error=BadRequest)
case("trailing-space", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", error=BadRequest)
case("leading-space", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", error=BadRequest)
case("tab-separator", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", error=BadRequest)
case("no-version", b"GET /\r\nHost: a\r\n\r\n", error=BadRequest)
case("http09-style", b"GET /\r\n\r\n", error=BadRequest)
case("lowercase-http", b"GET / http/1.1\r\nHost: a\r\n\r\n", error=BadRequest)
case("version-11", b"GET / HTTP/11\r\nHost: a\r\n\r\n", error=BadRequest)
case("version-1.x", b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", error=BadRequest)
case("version-10.1", b"GET / HTTP/10.1\r\nHost: a\r\n\r\n", error=BadRequest)
case("version-2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", error=VersionNotSupported)
case("version-1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", error=VersionNotSupported)
case("version-0.9", b"GET / HTTP/0.9\r\n\r\n", error=VersionNotSupported)
case("version-3.0", b"GET / HTTP/3.0\r\n\r\n", error=VersionNotSupported)
case("method-bad-char", get(method=b"GE(T"), error=BadRequest)
case("method-non-ascii", get(method=b"G\xc9T"), error=BadRequest)
case("nul-in-target", get(b"/a\x00b"), error=BadRequest)
case("obs-text-in-target", get(b"/caf\xe9"), error=BadRequest)
case("del-in-target", get(b"/a\x7f"), error=BadRequest)
case("target-no-slash", get(b"index.html"), error=BadRequest)
case("target-star-get", get(b"*"), error=BadRequest)
case("target-star-suffix", get(b"*x", method=b"OPTIONS"), error=BadRequest)
case("target-ftp", get(b"ftp://example.com/"), error=BadRequest)
case("target-http-no-authority", get(b"http:///p"), error=BadRequest)
case("target-http-empty", get(b"http://"), error=BadRequest)
case("target-http-query-only", get(b"http://?a"), error=BadRequest)
case("target-http-single-slash", get(b"http:/a/b"), error=BadRequest)
case("target-httpx", get(b"httpx://a/b"), error=BadRequest)
case("connect-origin-form", get(b"/", method=b"CONNECT"), error=BadRequest)
case("connect-absolute", get(b"http://a:80/", method=b"CONNECT"), error=BadRequest)
case("connect-no-port", get(b"example.com", method=b"CONNECT"), error=BadRequest)
case("connect-empty-port", get(b"example.com:", method=b"CONNECT"), error=BadRequest)
case("connect-bad-port", get(b"example.com:8a", method=b"CONNECT"), error=BadRequest)
case("connect-userinfo", get(b"u@example.com:80", method=b"CONNECT"), error=BadRequest)
case("connect-no-host", get(b":80", method=b"CONNECT"), error=BadRequest)
case("connect-star", get(b"*", method=b"CONNECT"), error=BadRequest)
case("empty-request-line-garbage", b"\x00\r\n\r\n", error=BadRequest)
case("tls-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\r\n\r\n", error=BadRequest)

# --- header fields
case("space-before-colon", get(extra=b"X-A : 1\r\n"), error=BadRequest)
case("tab-before-colon", get(extra=b"X-A\t: 1\r\n"), error=BadRequest)
case("host-space-before-colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", error=BadRequest)
case("space-in-name", get(extra=b"X A: 1\r\n"), error=BadRequest)
case("obs-fold-space", get(extra=b"X-A: 1\r\n continued\r\n"), error=BadRequest)
case("obs-fold-tab", get(extra=b"X-A: 1\r\n\tcontinued\r\n"), error=BadRequest)
case("fold-first-line", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", error=BadRequest)
case("empty-name", get(extra=b": v\r\n"), error=BadRequest)
case("no-colon", get(extra=b"X-A 1\r\n"), error=BadRequest)
case("nul-in-value", get(extra=b"X-A: a\x00b\r\n"), error=BadRequest)
case("nul-in-name", get(extra=b"X\x00A: 1\r\n"), error=BadRequest)
case("del-in-value", get(extra=b"X-A: a\x7f\r\n"), error=BadRequest)
case("ctl-in-value", get(extra=b"X-A: a\x01\r\n"), error=BadRequest)
case("esc-in-long-value", get(extra=b"X-A: " + b"a" * 20 + b"\x1b" + b"b" * 20 + b"\r\n"), error=BadRequest)
case("vt-in-value", get(extra=b"X-A: \x0b\r\n"), error=BadRequest)
case("obs-text-in-name", get(extra=b"X-\xe9: 1\r\n"), error=BadRequest)
case("colon-in-name-ok-value", get(extra=b"X-A:: 1\r\n"),
     [R(headers=[("host", "example.com"), ("x-a", ": 1")])])

# --- Host
case("host-missing-11", b"GET / HTTP/1.1\r\nX: 1\r\n\r\n", error=BadRequest)
case("host-duplicate", get(extra=b"Host: example.com\r\n"), error=BadRequest)
case("host-duplicate-10", b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", error=BadRequest)
case("host-space", get(host=b"Host: a b\r\n"), error=BadRequest)
case("host-slash", get(host=b"Host: a/b\r\n"), error=BadRequest)
case("host-at", get(host=b"Host: u@a\r\n"), error=BadRequest)
case("host-obs-text", get(host=b"Host: caf\xe9\r\n"), error=BadRequest)
case("host-malformed-before-te", chunked(b"0\r\n\r\n", extra=b"Content-Length: 1\r\n").replace(b"example.com", b"a b"),
     error=BadRequest)

# --- Content-Length
case("cl-plus", post(b"abcde").replace(b"Length: 5", b"Length: +5"), error=BadRequest)
case("cl-minus", post(b"").replace(b"Length: 0", b"Length: -1"), error=BadRequest)
case("cl-hex", post(b"abcde").replace(b"Length: 5", b"Length: 0x5"), error=BadRequest)
case("cl-exp", post(b"abcde").replace(b"Length: 5", b"Length: 5e0"), error=BadRequest)
case("cl-inner-space", post(b"abcde").replace(b"Length: 5", b"Length: 5 5"), error=BadRequest)
case("cl-empty", post(b"").replace(b"Length: 0", b"Length:"), error=BadRequest)
case("cl-conflict-fields", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
     error=BadRequest)
case("cl-conflict-list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,2\r\n\r\nab", error=BadRequest)
case("cl-unicode-digit", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \xb2\r\n\r\nab", error=BadRequest)
case("cl-over-limit", post(b"x" * 11), error=BodyTooLarge, max_body_size=10)
case("cl-huge", post(b"").replace(b"Length: 0", b"Length: 99999999999999999999999999"), error=BodyTooLarge)
case("cl-huge-conflict", post(b"").replace(b"Length: 0", b"Length: 99999999999999999999998,99999999999999999999999"),
     error=BadRequest)
case("cl-huge-same", post(b"").replace(b"Length: 0", b"Length: 99999999999999999999999,099999999999999999999999"),
     error=BodyTooLarge)
case("cl-after-request", get(b"/1") + post(b"x" * 11), [R(target="/1")], BodyTooLarge, max_body_size=10)

# --- Transfer-Encoding (CL.TE, TE.CL, TE.TE)
case("cl-te", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     error=BadRequest)
case("te-cl", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
     error=BadRequest)
case("te-cl-zero", chunked(b"0\r\n\r\n", extra=b"Content-Length: 0\r\n"), error=BadRequest)
case("te-xchunked", chunked(b"0\r\n\r\n", te=b"xchunked"), error=BadRequest)
case("te-chunked-x", chunked(b"0\r\n\r\n", te=b"chunkedx"), error=BadRequest)
case("te-chunk", chunked(b"0\r\n\r\n", te=b"chunk"), error=BadRequest)
case("te-space-before-colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
     error=BadRequest)
case("te-fold", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", error=BadRequest)
case("te-twice-list", chunked(b"0\r\n\r\n", te=b"chunked, chunked"), error=BadRequest)
case("te-twice-fields", chunked(b"0\r\n\r\n", extra=b"Transfer-Encoding: chunked\r\n"), error=BadRequest)
case("te-gzip-chunked", chunked(b"0\r\n\r\n", te=b"gzip, chunked"), error=UnsupportedTransferCoding)
case("te-gzip-then-chunked-fields", chunked(b"0\r\n\r\n", te=b"gzip", extra=b"Transfer-Encoding: chunked\r\n"),
     error=UnsupportedTransferCoding)
case("te-chunked-gzip", chunked(b"0\r\n\r\n", te=b"chunked, gzip"), error=BadRequest)
case("te-identity", chunked(b"0\r\n\r\n", te=b"identity"), error=BadRequest)
case("te-empty", chunked(b"0\r\n\r\n", te=b""), error=BadRequest)
case("te-params", chunked(b"0\r\n\r\n", te=b"chunked;q=1"), error=BadRequest)
case("te-quoted", chunked(b"0\r\n\r\n", te=b'"chunked"'), error=BadRequest)
case("te-obs-text", chunked(b"0\r\n\r\n", te=b"chunked\xe9"), error=BadRequest)
case("te-vtab", chunked(b"0\r\n\r\n", te=b"\x0bchunked"), error=BadRequest)
case("te-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", error=BadRequest)
case("te-before-cl-order", chunked(b"0\r\n\r\n", te=b"gzip", extra=b"Content-Length: 1\r\n"), error=BadRequest)

# --- chunk sizes and chunk framing
case("chunk-plus", chunked(b"+5\r\nhello\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-minus", chunked(b"-5\r\nhello\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-0x", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-leading-space", chunked(b" 5\r\nhello\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-trailing-space", chunked(b"5 \r\nhello\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-17-digits", chunked(b"00000000000000005\r\nhello\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-max-16-digits", chunked(b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n"), error=BodyTooLarge)
case("chunk-empty-size", chunked(b"\r\nhello\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-non-hex", chunked(b"g\r\nhello\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-ext-ctl", chunked(b"5;a\x01\r\nhello\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-ext-bare-cr", chunked(b"5;a\rb\r\nhello\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-size-bare-lf", chunked(b"5\nhello\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-data-too-long", chunked(b"5\r\nhello!\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-data-lf-only", chunked(b"5\r\nhello\n0\r\n\r\n"), error=BadRequest)
case("chunk-data-cr-only", chunked(b"5\r\nhello\r0\r\n\r\n"), error=BadRequest)
case("chunk-line-too-long", chunked(b"5;" + b"e" * 40 + b"\r\nhello\r\n0\r\n\r\n"), error=BadRequest, max_field_size=32)
case("chunk-sum-over-limit", chunked(b"6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n"), error=BodyTooLarge, max_body_size=10)
case("chunk-size-over-limit", chunked(b"b\r\n"), error=BodyTooLarge, max_body_size=10)
case("last-chunk-bare-lf", chunked(b"0\n\r\n"), error=BadRequest)
case("smuggle-te-hides-request", chunked(b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"),
     [R("POST", "/c", body=b""), R(target="/admin")])

# --- trailers
case("trailer-malformed", chunked(b"0\r\nbad trailer\r\n\r\n"), error=BadRequest)
case("trailer-space-before-colon", chunked(b"0\r\nX : 1\r\n\r\n"), error=BadRequest)
case("trailer-bare-lf", chunked(b"0\r\nX: 1\n\r\n"), error=BadRequest)
case("trailer-final-bare-lf", chunked(b"0\r\nX: 1\r\n\n"), error=BadRequest)
case("trailer-nul", chunked(b"0\r\nX: \x00\r\n\r\n"), error=BadRequest)
case("trailer-fold", chunked(b"0\r\nX: 1\r\n 2\r\n\r\n"), error=BadRequest)
case("trailers-too-many", chunked(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"), error=HeadersTooLarge, max_fields=3)
case("trailer-too-long", chunked(b"0\r\nX: " + b"v" * 40 + b"\r\n\r\n"), error=HeadersTooLarge, max_field_size=32)

# --- limits
case("request-line-too-long", b"GET /" + b"a" * 11 + b" HTTP/1.1\r\nHost: a\r\n\r\n", error=RequestLineTooLong,
     max_request_line=24)
case("request-line-no-lf", b"GET /" + b"a" * 40, error=RequestLineTooLong, max_request_line=24)
case("request-line-bare-lf-before-limit", b"GET /a\n" + b"a" * 40, error=BadRequest, max_request_line=24)
case("too-many-fields", get(extra=b"A: 1\r\nB: 2\r\nC: 3\r\n"), error=HeadersTooLarge, max_fields=3)
case("too-many-fields-before-malformed", get(extra=b"A: 1\r\nB: 2\r\nC 3\r\n"), error=HeadersTooLarge, max_fields=3)
case("malformed-before-too-many", get(extra=b"A 1\r\nB: 2\r\nC: 3\r\n"), error=BadRequest, max_fields=3)
case("field-too-long", get(extra=b"X: " + b"v" * 18 + b"\r\n"), error=HeadersTooLarge, max_field_size=20)
case("field-too-long-and-malformed", get(extra=b"X : " + b"v" * 18 + b"\r\n"), error=HeadersTooLarge, max_field_size=20)
case("head-too-large", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", error=HeadersTooLarge, max_head_size=26)
case("head-too-large-no-end", get(extra=b"X: " + b"v" * 100), error=HeadersTooLarge, max_head_size=64)
case("head-bare-lf-before-limit", get(extra=b"X: v\n" + b"v" * 100), error=BadRequest, max_head_size=64)
case("head-bare-lf-after-limit", get(extra=b"X: " + b"v" * 100 + b"\n"), error=HeadersTooLarge, max_head_size=64)
case("head-limit-then-valid", get(b"/1") + get(extra=b"X: " + b"v" * 100), [R(target="/1")], HeadersTooLarge,
     max_head_size=64)
case("head-limit-default", get(extra=(b"X-Big: " + b"b" * 8000 + b"\r\n") * 9), error=HeadersTooLarge)
case("field-limit-default", get(extra=b"X-Big: " + b"b" * 8200 + b"\r\n"), error=HeadersTooLarge)
case("fields-limit-default", get(extra=b"A: 1\r\n" * 100), error=HeadersTooLarge)
case("request-line-limit-default", get(b"/" + b"a" * 8200), error=RequestLineTooLong)
case("body-limit-zero", post(b"x"), error=BodyTooLarge, max_body_size=0)
case("malformed-request-line-414-wins", b"GET\x00/" + b"a" * 40, error=RequestLineTooLong, max_request_line=24)
case("tiny-head-limit-leading-crlf", b"\r\n\n", error=BadRequest, max_head_size=1)
case("tiny-head-limit-zero", b"\r\n\r\n", [], max_head_size=0)

# --- Expect
case("expect-other", post(b"abc", b"Expect: something\r\n"), error=ExpectationFailed)
case("expect-list", post(b"abc", b"Expect: 100-continue, x\r\n"), error=ExpectationFailed)
case("expect-after-framing", post(b"abc", b"Expect: x\r\nContent-Length: 4\r\n"), error=BadRequest)

# --- errors after good requests (pipelining)
case("good-then-bad", get(b"/1") + b"GET / HTTP/1.1\r\n\r\n", [R(target="/1")], BadRequest)
case("good-then-505", get(b"/1") + b"GET / HTTP/2.0\r\n\r\n", [R(target="/1")], VersionNotSupported)
case("chunked-then-bare-lf", chunked(b"1\r\nx\r\n0\r\n\r\n") + b"GET /\n", [R("POST", "/c", body=b"x")], BadRequest)

# --- issue 11, items 14-20: protocol edges

# 15: Host = uri-host [ ":" port ]; port = *DIGIT (RFC 9112 §3.2: an invalid Host is 400)
case("host-port-not-digits", get(host=b"Host: 127.0.0.1:8x0\r\n"), error=BadRequest)
case("host-port-sign", get(host=b"Host: a:+80\r\n"), error=BadRequest)
case("host-two-ports", get(host=b"Host: a:80:81\r\n"), error=BadRequest)
case("host-empty-port", get(host=b"Host: a:\r\n"), [R(host="a:")])
case("host-only-port", get(host=b"Host: :80\r\n"), [R(host=":80")])
case("host-ipv4-port", get(host=b"Host: 127.0.0.1:8080\r\n"), [R(host="127.0.0.1:8080")])
case("host-ipv6-no-port", get(host=b"Host: [::1]\r\n"), [R(host="[::1]")])
case("host-ipv6-bad-port", get(host=b"Host: [::1]:8a\r\n"), error=BadRequest)
case("host-ipv6-junk-after", get(host=b"Host: [::1]x\r\n"), error=BadRequest)
case("host-ipv6-unclosed", get(host=b"Host: [::1\r\n"), error=BadRequest)
case("host-ipv6-empty", get(host=b"Host: []\r\n"), error=BadRequest)
case("host-ipv6-nested", get(host=b"Host: [[::1]]\r\n"), error=BadRequest)
case("host-bracket-in-name", get(host=b"Host: a[b]\r\n"), error=BadRequest)
case("host-close-bracket", get(host=b"Host: a]\r\n"), error=BadRequest)
case("host-port-then-bracket", get(host=b"Host: a:[80]\r\n"), error=BadRequest)

# 16: a fragment is not part of a request-target (RFC 9112 §3.2)
case("fragment", get(b"/a#frag"), error=BadRequest)
case("fragment-empty", get(b"/a#"), error=BadRequest)
case("fragment-in-query", get(b"/a?b=1#c"), error=BadRequest)
case("fragment-absolute", get(b"http://a.example/p#x"), error=BadRequest)
case("fragment-absolute-authority", get(b"http://a.example#x"), error=BadRequest)
case("fragment-after-good", get(b"/ok") + get(b"/#"), [R(target="/ok")], BadRequest)
case("hash-pct-encoded-ok", get(b"/a%23b"), [R(target="/a%23b", path="/a%23b")])

# 17: absolute-form: the target's authority is the host (RFC 9112 §3.2.2)
case("absolute-authority-wins", get(b"http://a.example/x", host=b"Host: b.example\r\n"),
     [R(target="http://a.example/x", path="/x", host="a.example",
        headers=[("host", "b.example")])])
case("absolute-authority-port", get(b"https://a.example:8443?q", host=b"Host: b\r\n"),
     [R(target="https://a.example:8443?q", path="/", query="q", host="a.example:8443")])
case("absolute-authority-ipv6", get(b"http://[::1]:8080/p"), [R(target="http://[::1]:8080/p", path="/p", host="[::1]:8080")])
case("absolute-authority-empty-port", get(b"http://a:/p"), [R(target="http://a:/p", path="/p", host="a:")])
case("absolute-http10-no-host", b"GET http://a.example/ HTTP/1.0\r\n\r\n",
     [R(target="http://a.example/", version="HTTP/1.0", host="a.example", headers=[])])
case("absolute-http10-host-ignored", b"GET http://a.example/ HTTP/1.0\r\nHost: b\r\n\r\n",
     [R(target="http://a.example/", host="a.example")])
case("absolute-userinfo", get(b"http://user@a.example/"), error=BadRequest)
case("absolute-userinfo-password", get(b"http://user:pw@a.example/x"), error=BadRequest)
case("absolute-userinfo-empty", get(b"http://@a.example/"), error=BadRequest)
case("absolute-authority-bad-port", get(b"http://a.example:8x/"), error=BadRequest)
case("absolute-authority-no-host", get(b"http://:80/"), error=BadRequest)
case("absolute-authority-bad-char", get(b"http://a\"b/"), error=BadRequest)
case("absolute-authority-unclosed-ipv6", get(b"http://[::1/"), error=BadRequest)
case("absolute-still-needs-host-11", b"GET http://a.example/ HTTP/1.1\r\n\r\n", error=BadRequest)
case("absolute-host-still-single", get(b"http://a.example/", extra=b"Host: c\r\n"), error=BadRequest)
case("absolute-host-still-valid", get(b"http://a.example/", host=b"Host: b:x\r\n"), error=BadRequest)
case("options-star-host-header", get(b"*", method=b"OPTIONS", host=b"Host: h:1\r\n"), [R("OPTIONS", "*", host="h:1")])
case("connect-host-header", get(b"a:443", method=b"CONNECT", host=b"Host: h\r\n"), [R("CONNECT", "a:443", host="h")])

# 18: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
case("chunk-ext-bws-before-semicolon", chunked(b"5 ;a=b\r\nhello\r\n0\r\n\r\n"), [R("POST", "/c", body=b"hello")])
case("chunk-ext-bws-everywhere", chunked(b'5 \t; a = b\t;\tc\t=\t"q \\" d" ;e\r\nhello\r\n0 ;z\r\n\r\n'),
     [R("POST", "/c", body=b"hello")])
case("chunk-ext-quoted-obs-text", chunked(b'1;a="\xe9\\\xe9"\r\nx\r\n0\r\n\r\n'), [R("POST", "/c", body=b"x")])
case("chunk-ext-quoted-empty", chunked(b'1;a=""\r\nx\r\n0\r\n\r\n'), [R("POST", "/c", body=b"x")])
case("chunk-ext-name-only-many", chunked(b"1;a;b;c\r\nx\r\n0\r\n\r\n"), [R("POST", "/c", body=b"x")])
case("chunk-ext-empty-name", chunked(b"2;\r\nhi\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-ext-empty-name-value", chunked(b"2;=b\r\nhi\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-ext-double-semicolon", chunked(b"2;;a\r\nhi\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-ext-unbalanced-quote", chunked(b'2;a="b\r\nhi\r\n0\r\n\r\n'), error=BadRequest)
case("chunk-ext-escaped-end-quote", chunked(b'2;a="b\\"\r\nhi\r\n0\r\n\r\n'), error=BadRequest)
case("chunk-ext-backslash-at-end", chunked(b'2;a="\\\r\nhi\r\n0\r\n\r\n'), error=BadRequest)
case("chunk-ext-empty-value", chunked(b"2;a=\r\nhi\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-ext-trailing-bws", chunked(b"2;a \r\nhi\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-ext-trailing-bws-after-value", chunked(b"2;a=b\t\r\nhi\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-ext-name-not-token", chunked(b"2;a/b\r\nhi\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-ext-value-not-token", chunked(b"2;a=b/c\r\nhi\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-ext-token-then-quote", chunked(b'2;a=b"c"\r\nhi\r\n0\r\n\r\n'), error=BadRequest)
case("chunk-ext-junk-after-quote", chunked(b'2;a="b"c\r\nhi\r\n0\r\n\r\n'), error=BadRequest)
case("chunk-ext-two-values", chunked(b"2;a=b=c\r\nhi\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-ext-ctl-in-quote", chunked(b'2;a="\x01"\r\nhi\r\n0\r\n\r\n'), error=BadRequest)
case("chunk-ext-del-after-backslash", chunked(b'2;a="\\\x7f"\r\nhi\r\n0\r\n\r\n'), error=BadRequest)
case("chunk-ext-obs-text-name", chunked(b"2;\xe9\r\nhi\r\n0\r\n\r\n"), error=BadRequest)
case("chunk-ext-no-semicolon", chunked(b"2 a\r\nhi\r\n0\r\n\r\n"), error=BadRequest)
case("last-chunk-ext-empty-name", chunked(b"0;\r\n\r\n"), error=BadRequest)
case("chunk-ext-17th-hex-digit", chunked(b"00000000000000002;a\r\nhi\r\n0\r\n\r\n"), error=BadRequest)

# 19: empty list elements are ignored (RFC 9110 §5.6.1.2)
case("te-leading-comma", chunked(b"1\r\nz\r\n0\r\n\r\n", te=b", chunked"), [R("POST", "/c", body=b"z", chunked=True)])
case("te-trailing-comma", chunked(b"1\r\nz\r\n0\r\n\r\n", te=b"chunked ,"), [R("POST", "/c", body=b"z", chunked=True)])
case("te-empty-elements-around", chunked(b"0\r\n\r\n", te=b" , ,chunked, ,"), [R("POST", "/c", chunked=True)])
case("te-empty-field-then-chunked", chunked(b"0\r\n\r\n", extra=b"Transfer-Encoding: \r\n", te=b"chunked"),
     [R("POST", "/c", chunked=True)])
case("te-empty-element", chunked(b"0\r\n\r\n", te=b"gzip,,chunked"), error=UnsupportedTransferCoding)
case("te-only-commas", chunked(b"0\r\n\r\n", te=b", ,"), error=BadRequest)
case("te-chunked-then-empty-field", chunked(b"0\r\n\r\n", extra=b"Transfer-Encoding: ,\r\n"),
     [R("POST", "/c", chunked=True)])
case("te-chunked-empty-chunked", chunked(b"0\r\n\r\n", te=b"chunked,,chunked"), error=BadRequest)
case("cl-list-space", post(b"abcde").replace(b"Length: 5", b"Length: 5, 5"), [R("POST", "/up", body=b"abcde", content_length=5)])
case("cl-list-tab", post(b"abcde").replace(b"Length: 5", b"Length: 5\t,\t5"), [R("POST", "/up", body=b"abcde")])
case("cl-list-empty-element", post(b"abcde").replace(b"Length: 5", b"Length: 5,,5"), [R("POST", "/up", body=b"abcde")])
case("cl-leading-comma", post(b"abcde").replace(b"Length: 5", b"Length: ,5"), [R("POST", "/up", body=b"abcde")])
case("cl-trailing-comma", post(b"abcde").replace(b"Length: 5", b"Length: 5 ,"), [R("POST", "/up", body=b"abcde")])
case("cl-list-space-conflict", post(b"abcde").replace(b"Length: 5", b"Length: 5, 6"), error=BadRequest)
case("cl-only-comma", post(b"").replace(b"Length: 0", b"Length: ,"), error=BadRequest)
case("cl-only-commas-ows", post(b"").replace(b"Length: 0", b"Length: , ,"), error=BadRequest)
case("cl-empty-field-and-number", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\nContent-Length: 2\r\n\r\nhi",
     [R("POST", body=b"hi", content_length=2)])
case("cl-list-inner-space-still-bad", post(b"abcde").replace(b"Length: 5", b"Length: 5, 5 5"), error=BadRequest)
case("expect-empty", post(b"abc", b"Expect:\r\n"), [R("POST", "/up", expect_continue=False, body=b"abc")])
case("expect-empty-elements", post(b"abc", b"Expect: , 100-continue ,\r\n"), [R("POST", "/up", expect_continue=True)])
case("expect-empty-then-other", post(b"abc", b"Expect: ,x\r\n"), error=ExpectationFailed)
case("conn-empty-elements", get(extra=b"Connection: , ,close,\r\n"), [R(keep_alive=False)])

# 20: bytes that cannot start a request are 400 at once, not at the header timeout
case("tls-client-hello-start", b"\x16\x03\x01\x02\x00\x01", error=BadRequest)
case("tls-first-byte", b"\x16", error=BadRequest)
case("nul-first-byte", b"\x00", error=BadRequest)
case("ctl-first-byte", b"\x01GET / HTTP/1.1\r\n", error=BadRequest)
case("space-first-byte", b" ", error=BadRequest)
case("tab-first-byte", b"\t", error=BadRequest)
case("obs-text-first-byte", b"\x80", error=BadRequest)
case("del-first-byte", b"\x7f", error=BadRequest)
case("separator-first-byte", b"(GET", error=BadRequest)
case("cr-not-lf-first", b"\rG", error=BadRequest)
case("crlf-then-tls", b"\r\n\r\n\x16\x03", error=BadRequest)
case("crlf-then-lone-cr", b"\r\n\r", [])
case("good-then-tls", get(b"/1") + b"\x16\x03\x01", [R(target="/1")], BadRequest)
case("body-then-nul", post(b"ab") + b"\x00", [R("POST", "/up", body=b"ab")], BadRequest)
case("chunked-then-nul", chunked(b"0\r\n\r\n") + b"\x00", [R("POST", "/c")], BadRequest)
case("first-byte-before-head-limit", b"\x16", error=BadRequest, max_head_size=0)
case("first-byte-before-line-limit", b"\x16", error=BadRequest, max_request_line=0)
case("tchar-first-then-limit", b"G", error=HeadersTooLarge, max_head_size=1)

assert len(CASES) >= 150, len(CASES)
assert len({c[0] for c in CASES}) == len(CASES), "duplicate case ids"


# ---------------------------------------------------------------------- the corpus

@pytest.mark.parametrize("case_id, data, limits, expected, error", CASES, ids=[c[0] for c in CASES])
def test_corpus(twin, case_id, data, limits, expected, error):
    for how, chunks in splits(data, case_id):
        reqs, parser = feed_in(twin, chunks, limits)
        where = f"{case_id} fed {how}"
        assert len(reqs) == len(expected), (where, [snapshot(r) for r in reqs], parser.error)
        for got, want in zip(reqs, expected):
            for field, value in want.items():
                if field == "pending":
                    continue
                assert getattr(got, field) == value, (where, field)
        if error is None:
            assert parser.error is None, (where, parser.error)
        else:
            assert type(parser.error) is error, (where, parser.error)
            assert parser.error.status == error.status
            assert parser.feed(get()) == [], "a parser after an error accepts nothing"


def test_twins_agree_on_corpus():
    """Beyond the table: every field of every request, and the error message."""
    if _cparser is None:
        load_twin("c-parser")
    for case_id, data, limits, _, _ in CASES:
        for how, chunks in splits(data, case_id):
            a, pa = feed_in(_pyparser, chunks, limits)
            b, pb = feed_in(_cparser, chunks, limits)
            assert [snapshot(r) for r in a] == [snapshot(r) for r in b], (case_id, how)
            assert type(pa.error) is type(pb.error), (case_id, how)
            assert str(pa.error) == str(pb.error), (case_id, how)


# ---------------------------------------------------------------------- API details

def test_pending_and_expect(twin):
    parser = twin.RequestParser()
    head = b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 6\r\n\r\n"
    assert parser.feed(head) == []
    assert parser.pending is not None
    assert parser.pending.expect_continue and parser.pending.method == "PUT"
    assert parser.feed(b"abc") == []
    [req] = parser.feed(b"def")
    assert req.body == b"abcdef" and parser.pending is None


def test_pending_chunked(twin):
    parser = twin.RequestParser()
    assert parser.feed(chunked(b"3\r\nabc\r\n")) == []
    assert parser.pending is not None and parser.pending.chunked
    [req] = parser.feed(b"0\r\n\r\n")
    assert req.body == b"abc" and parser.pending is None


def test_take_body(twin):
    parser = twin.RequestParser(max_body_size=10)
    assert parser.take_body() == b""
    assert parser.feed(post(b"0123456789")[:-6]) == []
    assert parser.take_body() == b"0123"
    assert parser.take_body() == b""
    assert parser.feed(b"45") == [] and parser.feed(b"67") == []
    assert parser.take_body() == b"4567"
    [req] = parser.feed(b"89")
    assert req.body == b"89" and parser.take_body() == b""
    # chunked: limits still count the whole body
    parser = twin.RequestParser(max_body_size=10)
    parser.feed(chunked(b"6\r\nabcdef\r\n"))
    assert parser.take_body() == b"abcdef"
    assert parser.feed(b"5\r\nghijk\r\n") == []
    assert isinstance(parser.error, BodyTooLarge) and parser.take_body() == b""


def test_error_clears_pending(twin):
    parser = twin.RequestParser()
    parser.feed(chunked(b"3\r\nabc\r\n"))
    assert parser.feed(b"zz\r\n") == []
    assert isinstance(parser.error, BadRequest) and parser.pending is None


def test_feed_accepts_buffers(twin):
    data = get(b"/b")
    for kind in (bytes, bytearray, memoryview):
        parser = twin.RequestParser()
        [req] = parser.feed(kind(data))
        assert req.target == "/b"
    parser = twin.RequestParser()
    parser.feed(bytearray(data[:5]))
    [req] = parser.feed(memoryview(data[5:]))
    assert req.target == "/b"


def test_requests_survive_buffer_reuse(twin):
    buf = bytearray(get(b"/one", b"X-A: 1\r\n"))
    parser = twin.RequestParser()
    [req] = parser.feed(buf)
    buf[:] = b"x" * len(buf)
    assert req.target == "/one" and req.header("x-a") == "1"
    assert req.headers == [("host", "example.com"), ("x-a", "1")]


def test_header(twin):
    [req] = twin.RequestParser().feed(get(extra=b"X-Dup: 1\r\nX-DUP: 2\r\nAccept: */*\r\nX-Latin: \xe9\r\n"))
    assert req.header("x-dup") == "1"
    assert req.header("accept") == "*/*"
    assert req.header("host") == "example.com"
    assert req.header("x-latin") == "\xe9"
    assert req.header("missing") is None
    assert req.header("missing", "d") == "d"
    assert req.header("X-Dup") is None, "names are looked up lower-case, as stored"
    assert req.header("x-dup\xe9") is None
    assert req.header(b"x-dup") is None
    req.headers = [("x-dup", "replaced")]
    assert req.header("x-dup") == "replaced"


def test_headers_cached_and_mutable(twin):
    [req] = twin.RequestParser().feed(get())
    assert req.headers is req.headers
    req.headers.append(("x", "y"))
    assert req.header("x") == "y"
    assert req.trailers == [] and req.trailers is req.trailers
    assert repr(req) == "<Request GET / HTTP/1.1>"


def test_limits_are_attributes(twin):
    parser = twin.RequestParser(max_request_line=1, max_fields=2, max_field_size=3, max_head_size=4, max_body_size=5)
    assert (parser.max_request_line, parser.max_fields, parser.max_field_size, parser.max_head_size,
            parser.max_body_size) == (1, 2, 3, 4, 5)
    assert parser.error is None and parser.pending is None
    default = twin.RequestParser()
    assert default.max_head_size == _pyparser.MAX_HEAD_SIZE
    assert default.max_body_size == _pyparser.MAX_BODY_SIZE
    for name in ("MAX_REQUEST_LINE", "MAX_FIELDS", "MAX_FIELD_SIZE", "MAX_HEAD_SIZE", "MAX_BODY_SIZE"):
        assert getattr(twin, name) == getattr(_pyparser, name)


def test_error_is_shared_hierarchy(twin):
    parser = twin.RequestParser()
    parser.feed(b"GET / HTTP/1.1\n\n")
    assert isinstance(parser.error, ParseError) and isinstance(parser.error, BadRequest)
    assert parser.error.status == 400


# ---------------------------------------------------------------------- response heads

def test_status_line(twin):
    assert twin.status_line(200) == "HTTP/1.1 200 OK\r\n"
    assert twin.status_line(404) == "HTTP/1.1 404 Not Found\r\n"
    assert twin.status_line(599) == "HTTP/1.1 599 \r\n"
    for bad in (99, 1000, -200, 0):
        with pytest.raises(ResponseHeadError):
            twin.status_line(bad)


def test_response_head(twin):
    head = twin.response_head(200, [("Content-Type", "text/plain"), ("X-Length", "5"), ("X-Latin", "caf\xe9\t!")])
    assert head == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Length: 5\r\n"
                    b"X-Latin: caf\xe9\t!\r\n\r\n")
    assert twin.response_head(204, []) == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert twin.response_head(200, iter([("A", "")])) == b"HTTP/1.1 200 OK\r\nA: \r\n\r\n"


@pytest.mark.parametrize("name, value", [
    ("X-A", "a\r\nSet-Cookie: x=1"),
    ("X-A", "a\nb"),
    ("X-A", "a\rb"),
    ("X-A", "a\x00b"),
    ("X-A", "a\x7f"),
    ("X-A", "\x1b[31m"),
    ("X-A", "\u2028\n"),
    ("X A", "v"),
    ("X-A:", "v"),
    ("", "v"),
    ("X-\xe9", "v"),
    ("X-A\r\n", "v"),
    ("X-\u0100", "v"),
    ("X-A", "\u0100"),
    ("X-A", "\U0001f600"),
])
def test_response_head_refuses(twin, name, value):
    with pytest.raises(ResponseHeadError):
        twin.response_head(200, [("Ok", "1"), (name, value)])
    with pytest.raises(ResponseHeadError):
        twin.header_block([("Ok", "1"), (name, value)])


def test_header_block(twin):
    assert twin.header_block([]) == ""
    block = twin.header_block([("Content-Type", "text/plain"), ("X-Latin", "caf\xe9")])
    assert block == "Content-Type: text/plain\r\nX-Latin: caf\xe9\r\n"
    assert type(block) is str
    assert twin.response_head(404, [("A", "b")]) == (twin.status_line(404) + twin.header_block([("A", "b")])
                                                       + "\r\n").encode("latin-1")


def _cases(name):
    return {name, name.upper(), name.title(), name.swapcase().title().swapcase(),
            "".join(c.upper() if i % 2 else c for i, c in enumerate(name))}


FRAMING_AND_HOP_BY_HOP = ["content-length", "transfer-encoding", "connection", "keep-alive", "te",
                          "trailer", "upgrade", "proxy-connection"]


@pytest.mark.parametrize("name", FRAMING_AND_HOP_BY_HOP)
def test_header_block_drops_server_owned(twin, name):
    """Framing and hop-by-hop fields from a handler never reach the wire, in any case: the
    connection writes its own Content-Length / Transfer-Encoding and Connection."""
    for spelled in _cases(name):
        fields = [("A", "1"), (spelled, "5"), ("B", "2"), (spelled, "chunked")]
        assert twin.header_block(fields) == "A: 1\r\nB: 2\r\n", spelled
        assert twin.response_head(200, fields) == b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"
        # Still checked before it is dropped: a split attempt is refused, not hidden.
        with pytest.raises(ResponseHeadError):
            twin.header_block([(spelled, "5\r\nX: y")])
        # Not latin-1 but dropped: nothing of it is sent, so nothing to refuse (both twins).
        assert twin.header_block([(spelled, "\u20ac"), ("A", "1")]) == "A: 1\r\n"


@pytest.mark.parametrize("name", ["Content-Lengths", "Content-Lengt", "X-Content-Length", "Tee", "T",
                                  "Trailers", "Upgrade-Insecure-Requests", "Keep-Alive2", "Proxy-Connectio",
                                  "Transfer_Encoding", "Content^Length", "te~", "Connection~",
                                  "Content-Type", "Server", "Date", "Via", "Set-Cookie"])
def test_header_block_keeps_near_names(twin, name):
    assert twin.header_block([(name, "v")]) == f"{name}: v\r\n"


def test_header_block_drops_for_str_subclasses(twin):
    """The twin's slow path (a str subclass, not exactly str) keeps the same rule."""
    class S(str):
        pass
    assert twin.header_block([(S("Content-Length"), S("5")), (S("X"), S("1"))]) == "X: 1\r\n"
    assert twin.header_block([(S("Content-Lengthy"), "5")]) == "Content-Lengthy: 5\r\n"


def test_response_head_refusal_messages_agree():
    if _cparser is None:
        load_twin("c-parser")
    for headers in ([("X A", "v"), ("Y", "\u0100")], [("Y", "\u0100"), ("X A", "v")], [("Y", "\u0100")],
                    [("Y", "a\x00")], [("Y", "\u0100\x00")]):
        errors = []
        for mod in (_pyparser, _cparser):
            with pytest.raises(ResponseHeadError) as info:
                mod.response_head(200, headers)
            errors.append(str(info.value))
            with pytest.raises(ResponseHeadError) as info:
                mod.header_block(headers)
            errors.append(str(info.value))
        assert errors[0] == errors[1] == errors[2] == errors[3], headers


def test_response_head_non_str(twin):
    with pytest.raises(TypeError):
        twin.response_head(200, [(b"X", "v")])
    with pytest.raises(TypeError):
        twin.header_block([("X", 1)])


def test_repeated_and_near_identical_lines(twin):
    """Lines that repeat, or differ in one byte, in name case or in "^"/"~", across
    requests: each request still gets exactly its own fields (the Cython twin shares
    the tuples of repeated lines between requests)."""
    variants = [
        b"Cookie: a=1xxxxxxxxxxxxxxxxxxxxxxxb\r\nX-A^: 1\r\nAccept: */*\r\n",
        b"Cookie: a=1xxxxxxxxxyxxxxxxxxxxxxb\r\nX-A~: 1\r\nACCEPT: */*\r\n",
        b"Cookie: a=1xxxxxxxxxxxxxxxxxxxxxxxb\r\nx-a~: 1\r\naccept: */+\r\n",
        b"Cookie: a=1xxxxxxxxxxxxxxxxxxxxxxx\xe9\r\nX-A^: 2\r\nAccept: \xe9/*\r\n",
    ]
    parser = twin.RequestParser()
    for rounds in range(3):
        for extra in variants:
            [req] = parser.feed(get(extra=extra))
            want = [("host", "example.com")] + [
                (name.decode().lower(), value.decode("latin-1").strip())
                for name, _, value in (line.partition(b":") for line in extra.split(b"\r\n")[:-1])
            ]
            assert req.headers == want
            assert req.header("cookie") == want[1][1]


# ---------------------------------------------------------------------- limits at the bound

def test_limits_clamped_alike_at_the_bound():
    """Any limit above LIMIT_MAX (1 PiB) is clamped to it by both twins, so that both
    answer the same at absurd limits (--max-body-size 1000000000G once made the Cython
    twin clamp at 1e17 and the pure one not: a Content-Length of 5e17 was 413 from one
    and a pending body from the other)."""
    require_cython()
    bound = _pyparser.LIMIT_MAX
    assert bound == 1 << 50
    for given in (bound - 1, bound, bound + 1, 10 ** 17, 1_000_000_000 << 30, 2 ** 64):
        want = min(given, bound)
        seen = []
        for mod in (_pyparser, _cparser):
            p = mod.RequestParser(max_request_line=given, max_fields=given, max_field_size=given,
                                  max_head_size=given, max_body_size=given)
            assert (p.max_request_line, p.max_fields, p.max_field_size, p.max_head_size,
                    p.max_body_size) == (want,) * 5, (mod.__name__, given)
            outcome = []
            for length in (want, want + 1, 5 * 10 ** 17, 10 ** 18 - 1, 10 ** 19):
                p = mod.RequestParser(max_body_size=given)
                p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length)
                outcome.append((length, type(p.error), p.pending is not None))
            for size in (want, want + 1):
                p = mod.RequestParser(max_body_size=given)
                p.feed(chunked(b"%x\r\n" % size))
                outcome.append((size, type(p.error), p.pending is not None))
            seen.append(outcome)
            assert outcome[0] == (want, type(None), True), (mod.__name__, given)
            assert outcome[1][1] is BodyTooLarge and outcome[2][1] is BodyTooLarge, (mod.__name__, given)
            assert outcome[5] == (want, type(None), True) and outcome[6][1] is BodyTooLarge
        assert seen[0] == seen[1], given
