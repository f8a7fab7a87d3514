"""Differential fuzzing of the parser twins.

One invariant, checked on random bytes and on mutations of valid requests, split at
random points: both twins return the same requests (every field) and the same error
(class and message), each twin returns the same whether fed whole, split or one byte at a
time, and feed() never raises: a protocol error lands in `error`, anything raised is a bug.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefork.http import _pyparser
from prefork.http.errors import ParseError

from conftest import CPARSER as _cparser, require_cython


@pytest.fixture(autouse=True)
def _need_cython_twin():
    require_cython()


# PREFORK_FUZZ_EXAMPLES raises the budget for a longer local campaign.
FUZZ = settings(
    max_examples=int(os.environ.get("PREFORK_FUZZ_EXAMPLES", "400")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FIELDS = (
    "method", "target", "path", "query", "version", "headers", "host", "content_length",
    "chunked", "keep_alive", "expect_continue", "body", "trailers",
)


def outcome(mod, chunks, limits, taken=None):
    """What a twin makes of the chunks: every field of every request, the error. With
    `taken` (a list), take_body() is called after every feed and its bytes appended."""
    parser = mod.RequestParser(**limits)
    reqs = []
    for chunk in chunks:
        reqs.extend(parser.feed(chunk))
        if taken is not None:
            taken.append(parser.take_body())
    err = parser.error
    assert err is None or isinstance(err, ParseError), err
    pending = parser.pending
    return (
        [tuple(getattr(r, f) for f in FIELDS) + (r.header("host"), r.header("x-a")) for r in reqs],
        (type(err), str(err), err.status) if err is not None else None,
        None if pending is None else (pending.method, pending.target, pending.chunked, pending.expect_continue),
        parser.buffered,
    )


def cut(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def check(data: bytes, points: list[int], limits: dict) -> None:
    whole = outcome(_pyparser, [data], limits)
    split = cut(data, points)
    bytewise = [data[i:i + 1] for i in range(len(data))]
    for mod in (_pyparser, _cparser):
        assert outcome(mod, [data], limits) == whole, (mod.__name__, "whole")
        assert outcome(mod, split, limits) == whole, (mod.__name__, "split", split)
        assert outcome(mod, bytewise, limits) == whole, (mod.__name__, "bytewise")
    # take_body() after every feed: the same pieces from both twins.
    pieces = [[], []]
    results = [outcome(mod, split, limits, taken) for mod, taken in zip((_pyparser, _cparser), pieces)]
    assert results[0] == results[1] and pieces[0] == pieces[1], split


# ---------------------------------------------------------------------- strategies

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"CONNECT a.b:443 HTTP/1.1\r\nHost: a.b:443\r\n\r\n",
    b"GET http://a.b/c?d HTTP/1.1\r\nHost: a.b\r\n\r\n",
    b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-A: t\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nX-A: 2\r\n\r\n",
    b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: b\r\n\r\n",
    # absolute-form authority, Host ports, chunk-ext grammar, list elements (issue 11)
    b"GET http://u@[::1]:80/p#f HTTP/1.1\r\nHost: [::1]:8x0\r\n\r\n",
    b"GET https://a.example:/q?x HTTP/1.0\r\nHost: b.example:443\r\n\r\n",
    b'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n'
    b'2 \t; a = "b\\" c" ;d=e\r\nhi\r\n0 ;z\r\n\r\n',
    b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 2, ,2\r\nExpect: ,100-continue\r\n\r\nhi",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
]

# Bytes that matter to an HTTP parser.
INTERESTING = b"\r\n \t:;,=\x00\x01\x0b\x16\x7f\x80\xe9\xff0159afAFxX-_/?*#@[]\"'+%Hh\\"

EXTRA_HEADERS = [
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: xchunked", b"Transfer-Encoding:  chunked",
    b"Transfer-Encoding: chunked, chunked", b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding : chunked",
    b"Transfer-Encoding: chunked\r\n ", b"Content-Length: 5", b"Content-Length: +5", b"Content-Length: 0x5",
    b"Content-Length: 5,5", b"Content-Length: 5, 6", b"Content-Length: 99999999999999999999",
    b"Host: a", b"Host: a b", b"Connection: close", b"Connection: keep-alive", b"Expect: 100-continue",
    b"Expect: x", b"X-A: \xe9\t v ", b"X-A:", b"X-A: 1\x00", b" folded", b"\tfolded",
    b"Transfer-Encoding: , chunked", b"Transfer-Encoding: chunked,", b"Transfer-Encoding: ,",
    b"Content-Length: 5, 5", b"Content-Length: ,", b"Content-Length: 5,,5", b"Expect: ,",
    b"Host: a:8x0", b"Host: [::1]:80", b"Host: a:", b"Host: [::1", b"Host: a]:1",
]


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "dup-line", "lf", "header", "case", "chunk"]))
        at = draw(st.integers(0, len(data)))
        if op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3)) if draw(st.booleans()) else \
                bytes([draw(st.sampled_from(INTERESTING))])
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 4))]
        elif op == "replace" and at < len(data):
            data[at] = draw(st.sampled_from(INTERESTING))
        elif op == "dup-line":
            lines = bytes(data).split(b"\r\n")
            k = draw(st.integers(0, len(lines) - 1))
            lines.insert(k, lines[k])
            data = bytearray(b"\r\n".join(lines))
        elif op == "lf":
            crlfs = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\r\n"]
            if crlfs:
                i = draw(st.sampled_from(crlfs))
                del data[i]
        elif op == "header":
            first = bytes(data).find(b"\r\n")
            if first >= 0:
                data[first + 2:first + 2] = draw(st.sampled_from(EXTRA_HEADERS)) + b"\r\n"
        elif op == "case" and at < len(data):
            data[at:at + 1] = bytes(data[at:at + 1]).swapcase()
        elif op == "chunk":
            data += draw(st.sampled_from([b"0\r\n\r\n", b"3\r\nabc\r\n", b"+1\r\n", b"1 \r\n", b"1;\x01\r\n",
                                          b"0\r\nT: 1\r\n\r\n", b"ffffffffffffffff\r\n", b"\r\n",
                                          b"1 ;a=b\r\nx\r\n", b'1;a="\\"\r\n', b"2;\r\n", b"1;a =\t\"q\"\r\n"]))
    return bytes(data)


LIMITS = st.one_of(
    st.just({}),
    st.fixed_dictionaries({
        "max_request_line": st.integers(0, 64),
        "max_fields": st.integers(0, 6),
        "max_field_size": st.integers(0, 48),
        "max_head_size": st.integers(0, 160),
        "max_body_size": st.integers(0, 20),
    }),
)
POINTS = st.lists(st.integers(0, 10_000), max_size=8)


# ---------------------------------------------------------------------- the tests

@pytest.mark.timeout(int(os.environ.get("PREFORK_FUZZ_TIMEOUT", "60")))
@FUZZ
@given(data=mutated(), points=POINTS, limits=LIMITS)
def test_mutated_requests(data, points, limits):
    check(data, points, limits)


@pytest.mark.timeout(int(os.environ.get("PREFORK_FUZZ_TIMEOUT", "60")))
@FUZZ
@given(data=st.binary(max_size=200), points=POINTS, limits=LIMITS)
def test_random_bytes(data, points, limits):
    check(data, points, limits)


@pytest.mark.timeout(int(os.environ.get("PREFORK_FUZZ_TIMEOUT", "60")))
@FUZZ
@given(prefix=st.sampled_from([b"GET / HTTP/1.1\r\n", b"POST / HTTP/1.1\r\nHost: a\r\n", b""]),
       body=st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b"Host: a", b"X-A: v", b":", b" ", b"\t",
                                      b"Transfer-Encoding: chunked", b"Content-Length: 2", b"0", b"1",
                                      b"ab", b"\x00", b"\xe9", b"GET / HTTP/1.1", b";", b",", b"=",
                                      b'"', b"\\", b"http://a", b"@", b"#"]), max_size=30),
       points=POINTS, limits=LIMITS)
def test_token_soup(prefix, body, points, limits):
    check(prefix + b"".join(body), points, limits)


def test_response_head_agrees():
    """response_head and header_block: the same result or the same error."""
    names = ["X-A", "x a", "", "X\u00e9", "Content-Type", "A:", "\u0100", "Content-Length", "TE",
             "transfer-ENCODING", "Connection", "Connectio", "Te_", "te^", "Upgrade~"]
    values = ["v", "", "a\r\nb", "\u00e9\t", "\u0100", "\x7f", "a\x00", "\x85", "ok ok"]
    for name in names:
        for value in values:
            for status in (200, 404, 599, 99, 1000):
                results = []
                for mod in (_pyparser, _cparser):
                    for call in (lambda: mod.response_head(status, [("Server", "t"), (name, value)]),
                                 lambda: mod.header_block([(name, value), ("Server", "t")])):
                        try:
                            results.append(call())
                        except Exception as exc:  # noqa: BLE001 - the class and message are compared
                            results.append((type(exc), str(exc)))
                assert results[:2] == results[2:], (status, name, value)
