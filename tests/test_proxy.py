"""PROXY protocol v1/v2 parsing and trusted forwarded headers (sans-I/O)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from prefork.proxy import (V2_SIGNATURE, ProxyProtocolError, TrustedProxies, forwarded_client,
                           parse_networks, parse_proxy_header)


def v2(cmd=1, fam=0x11, payload=b"", length=None):
    return V2_SIGNATURE + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(payload) if length is None else length) + payload


def v4_block(src="203.0.113.7", dst="10.0.0.1", sport=51000, dport=8080):
    return ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + struct.pack("!HH", sport, dport)


@pytest.mark.parametrize("raw, expect", [
    (b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 8080\r\nGET", (44, ("203.0.113.7", 51000))),
    (b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n", (40, ("2001:db8::1", 1))),
    (b"PROXY UNKNOWN\r\n", (15, None)),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", (35, None)),
])
def test_v1(raw, expect):
    assert parse_proxy_header(raw) == expect
    for cut in range(1, expect[0]):  # any prefix: need more
        assert parse_proxy_header(raw[:cut]) is None


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\n\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
    b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY " + b"x" * 120, b"PROXX TCP4", b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + b"\x00" * 12,
])
def test_v1_and_v2_malformed(raw):
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(raw)


def test_v2_tcp4_tcp6_local_unspec_and_tlvs():
    hdr = v2(payload=v4_block())
    assert parse_proxy_header(hdr + b"GET") == (28, ("203.0.113.7", 51000))
    for cut in range(1, 28):
        assert parse_proxy_header(hdr[:cut]) is None
    six = ipaddress.IPv6Address("2001:db8::5").packed + ipaddress.IPv6Address("::1").packed + struct.pack("!HH", 7, 8)
    assert parse_proxy_header(v2(fam=0x21, payload=six)) == (52, ("2001:db8::5", 7))
    assert parse_proxy_header(v2(cmd=0, fam=0, payload=b"")) == (16, None)  # LOCAL health check
    tlv = b"\x04\x00\x03abc"  # a TLV after the addresses is skipped
    assert parse_proxy_header(v2(payload=v4_block() + tlv)) == (34, ("203.0.113.7", 51000))
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(v2(payload=b"\x00" * 4))  # too short for IPv4
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(V2_SIGNATURE + b"\x31\x11\x00\x0c" + v4_block())  # version 3
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(v2(length=60000))


def test_trusted_networks():
    trusted = TrustedProxies(parse_networks("127.0.0.1, 10.0.0.0/8, ::1"))
    assert trusted.trusts(("127.0.0.1", 5)) and trusted.trusts(("10.9.8.7", 5))
    assert trusted.trusts(("::ffff:10.1.1.1", 5, 0, 0)) and trusted.trusts(("::1", 5, 0, 0))
    assert not trusted.trusts(("192.0.2.1", 5))
    assert trusted.trusts("/run/app.sock") and trusted.trusts("")
    assert not TrustedProxies([]) and TrustedProxies(parse_networks("*")).trusts(("8.8.8.8", 1))
    with pytest.raises(ValueError):
        parse_networks("10.0.0.300")


def test_forwarded_headers_walk_from_the_right_past_trusted_hops():
    trusted = TrustedProxies(parse_networks("10.0.0.0/8"))
    h = [("x-forwarded-for", "6.6.6.6, 198.51.100.9, 10.0.0.2"), ("x-forwarded-proto", "https")]
    assert forwarded_client(h, "10.0.0.1", trusted) == ("198.51.100.9", "https")
    assert forwarded_client([("x-forwarded-for", "198.51.100.9:4711")], "10.0.0.1", trusted)[0] == "198.51.100.9"
    assert forwarded_client([], "10.0.0.1", trusted) == ("10.0.0.1", "http")
    assert forwarded_client([("x-forwarded-for", "a, unknown")], "10.0.0.1", trusted)[0] == "10.0.0.1"
    assert forwarded_client([("x-forwarded-for", "198.51.100.9, unknown")], "10.0.0.1", trusted)[0] == "10.0.0.1"
    assert forwarded_client([("x-forwarded-proto", "gopher")], "10.0.0.1", trusted) == ("10.0.0.1", "http")
    f = [("forwarded", 'for=6.6.6.6;proto=http, for="[2001:db8::7]:99";proto=https')]
    assert forwarded_client(f, "10.0.0.1", trusted) == ("2001:db8::7", "https")
