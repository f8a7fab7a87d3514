"""RequestParser.take_body(): both twins hand over a pending body in pieces."""

from __future__ import annotations

import pytest

from prefork.http import parser as parser_choice
from prefork.http.errors import BodyTooLarge

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def module(parser_name):
    return parser_choice.load(parser_name)


def test_nothing_pending_gives_empty_bytes(module):
    p = module.RequestParser()
    assert p.take_body() == b""
    assert p.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")[0].body == b""
    assert p.take_body() == b""


def test_content_length_body_taken_in_pieces(module):
    p = module.RequestParser()
    assert p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc") == []
    assert p.pending is not None and p.pending.content_length == 10
    assert p.take_body() == b"abc"
    assert p.take_body() == b""  # forgotten once taken
    assert p.feed(b"defg") == []
    assert p.take_body() == b"defg"
    reqs = p.feed(b"hijGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [r.body for r in reqs] == [b"hij", b""]  # the completed body holds only the rest
    assert reqs[1].path == "/next" and p.pending is None


def test_chunked_body_taken_in_pieces_and_trailers_kept(module):
    p = module.RequestParser()
    p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    assert p.take_body() == b"hel"
    p.feed(b"lo\r\n6\r\n world\r\n")
    assert p.take_body() == b"lo world"
    reqs = p.feed(b"0\r\nX-T: 1\r\n\r\n")
    assert len(reqs) == 1 and reqs[0].body == b"" and reqs[0].trailers == [("x-t", "1")]


def test_limits_count_the_whole_body_even_when_taken(module):
    p = module.RequestParser(max_body_size=10)
    p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n")
    assert p.take_body() == b"abcdef"
    p.feed(b"6\r\nghijkl\r\n")
    assert isinstance(p.error, BodyTooLarge)


def test_same_result_whole_or_byte_by_byte(module):
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\npayload"
    p = module.RequestParser()
    taken = bytearray()
    reqs = []
    for i in range(len(raw)):
        reqs += p.feed(raw[i:i + 1])
        taken += p.take_body()
    assert len(reqs) == 1 and bytes(taken) + reqs[0].body == b"payload"
