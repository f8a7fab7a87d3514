"""Request smuggling and limits end to end: raw bytes over real sockets, both parsers.

Each payload hides a second request (GET /sub/a.txt, whose answer is "file a") behind a
framing trick. Whatever the trick, the server answers the first request with an error and
closes: the hidden request is never answered.
"""

from __future__ import annotations

import pytest

from conftest import recv_until_closed

pytestmark = pytest.mark.timeout(60)

HIDDEN = b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n"

VECTORS = {
    # CL.TE: a front end that trusts Content-Length forwards all; one that trusts chunked
    # ends the body at "0" and would see HIDDEN as the next request.
    "CL.TE": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (
        5 + len(HIDDEN)) + HIDDEN,
    # TE.CL: the reverse.
    "TE.CL": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
             b"%x\r\n" % len(HIDDEN) + HIDDEN + b"\r\n0\r\n\r\n",
    # TE.TE: obfuscated Transfer-Encoding that one server ignores and another honours.
    "TE.TE xchunked": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc" + HIDDEN,
    "TE.TE space before colon": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + HIDDEN,
    "TE.TE obs-fold": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n" + HIDDEN,
    "TE.TE chunked twice": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n" + HIDDEN,
    "TE.TE chunked then identity": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                                   b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n" + HIDDEN,
    "TE.TE tab": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\tchunked\x0b\r\n\r\n0\r\n\r\n" + HIDDEN,
    "TE on HTTP/1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + HIDDEN,
    "duplicate CL": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN,
    "CL list": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0, %d\r\n\r\n" % len(HIDDEN) + HIDDEN,
    "CL plus sign": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +%d\r\n\r\n" % len(HIDDEN) + HIDDEN,
    "chunk size 0x": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x0\r\n\r\n" + HIDDEN,
    "chunk size trailing space": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0 \r\n\r\n" + HIDDEN,
    "chunk size overflow": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"10000000000000000000000000000001\r\nx\r\n0\r\n\r\n" + HIDDEN,
    "chunk data without CRLF": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n" + HIDDEN,
    "bare LF in chunk line": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n" + HIDDEN,
    "bare CR in header": b"GET / HTTP/1.1\r\nHost: t\r\nX: a\rTransfer-Encoding: chunked\r\n\r\n" + HIDDEN,
    "NUL in header": b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n" + HIDDEN,
    "two Host": b"GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n" + HIDDEN,
}


@pytest.mark.parametrize("name", VECTORS)
def test_smuggled_request_is_never_answered(start_server, name):
    srv = start_server(workers=1)
    with srv.connect() as s:
        s.sendall(VECTORS[name])
        data = recv_until_closed(s)
    assert data.count(b"HTTP/1.1 ") == 1, data  # one answer: the error, then the close
    status = int(data.split(b" ", 2)[1])
    assert status in (400, 501), data
    assert b"Connection: close\r\n" in data and b"file a" not in data


def test_limits_from_the_command_line(start_server):
    srv = start_server("--limit-request-line", "64", "--limit-request-fields", "4",
                       "--limit-request-field-size", "40", "--max-body-size", "10", workers=1)
    cases = [
        (b"GET /" + b"a" * 80 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X%d: y\r\n" % i for i in range(5)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: " + b"v" * 50 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n" + b"b" * 11, 413),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n" + b"c" * 8 + b"\r\n8\r\n" + b"c" * 8
         + b"\r\n0\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\n\r\n", 417),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"GET / HTTP/3.0\r\nHost: t\r\n\r\n", 505),
    ]
    for raw, want in cases:
        with srv.connect() as s:
            s.sendall(raw)
            data = recv_until_closed(s)
        assert data.startswith(b"HTTP/1.1 %d " % want), (raw[:60], data[:80])
        assert b"Connection: close\r\n" in data
    with srv.connect() as s:  # within every limit: served
        s.sendall(b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert recv_until_closed(s).endswith(b"file a\n")
