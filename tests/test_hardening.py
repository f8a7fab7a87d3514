"""Slow and hostile clients, trusted proxies: end to end, real sockets on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import os
import resource
import socket
import struct
import time

import pytest

from conftest import APPS, ROOT, read_response, recv_until_closed

pytestmark = pytest.mark.timeout(90)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def answered_quickly(srv, path=b"/sub/a.txt") -> float:
    t0 = time.monotonic()
    with srv.connect() as s:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body = read_response(s)
    assert (status, body) == (200, b"file a\n")
    return time.monotonic() - t0


# ---------------------------------------------------------------------- timeouts

def test_head_that_never_completes_gets_408(start_server):
    srv = start_server("--header-timeout", "1.5")
    with srv.connect(timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        t0 = time.monotonic()
        data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"Connection: close" in data
    assert 1.4 < time.monotonic() - t0 < 4.0
    assert answered_quickly(srv) < 1.0


def test_body_that_stops_arriving_gets_408(start_server):
    srv = start_server("--body-timeout", "1.5", app="demo_app:app", pythonpath=[APPS])
    with srv.connect(timeout=10) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 408 ")


def test_idle_connection_before_any_request_is_closed(start_server):
    srv = start_server("--keepalive", "1")
    with srv.connect(timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(1) == b""
        assert time.monotonic() - t0 < 4


@pytest.mark.timeout(120)
def test_client_that_never_reads_100mib_keeps_memory_flat_and_others_served(start_server, docroot):
    with open(docroot / "big.bin", "wb") as f:
        f.truncate(100 << 20)  # sparse: 100 MiB of zeros
    srv = start_server("--write-timeout", "3", workers=1)
    worker = srv.children()[0]
    baseline = rss_kib(worker)
    stalled = srv.connect(timeout=30)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    stalled.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    peak = baseline
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:  # the client reads nothing; others are served
        assert answered_quickly(srv) < 1.0
        peak = max(peak, rss_kib(worker))
    assert peak - baseline < 4096, (baseline, peak)  # sendfile: nothing buffered per byte
    # The stalled connection is closed after --write-timeout.
    srv.wait_for(r"not reading for \d+s", timeout=10)
    got = 0
    stalled.settimeout(10)
    try:
        while True:
            chunk = stalled.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    except ConnectionResetError:
        pass
    stalled.close()
    assert got < 100 << 20


@pytest.mark.timeout(150)
def test_thousand_slowloris_connections_do_not_stop_service(start_server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    srv = start_server("--header-timeout", "4", "--max-connections", "1100", workers=1)
    worker = srv.children()[0]
    assert answered_quickly(srv) < 1.0
    baseline = rss_kib(worker)
    request = b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"x" * 60
    socks = []
    for _ in range(1000):
        s = socket.create_connection(srv.address, timeout=10)
        s.setblocking(False)
        socks.append(s)
    t_start = time.monotonic()
    worst = 0.0
    closed_at = {}
    for i in range(8):  # one header byte per second, per connection
        for s in socks:
            if s in closed_at:
                continue
            try:
                s.send(request[i:i + 1])
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
        worst = max(worst, answered_quickly(srv))
        deadline = t_start + i + 1
        while time.monotonic() < deadline:
            for s in socks:
                if s in closed_at:
                    continue
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                if data.startswith(b"HTTP/1.1 408") or not data:
                    closed_at[s] = time.monotonic() - t_start
            time.sleep(0.05)
    assert worst < 1.0, worst
    assert len(closed_at) == 1000, f"{1000 - len(closed_at)} slow connections still open"
    assert max(closed_at.values()) < 4 + 2.5  # the head timeout, checked once a second
    for s in socks:
        s.close()
    assert answered_quickly(srv) < 1.0
    after = rss_kib(worker)
    assert after <= baseline * 1.10, (baseline, after)  # within 10% of the baseline


# ---------------------------------------------------------------------- trusted proxies

def proxy_v2(src: str, sport: int) -> bytes:
    addr = ipaddress.ip_address(src)
    fam = 0x11 if addr.version == 4 else 0x21
    dst = ipaddress.ip_address("127.0.0.1" if addr.version == 4 else "::1")
    block = addr.packed + dst.packed + struct.pack("!HH", sport, 80)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, fam]) + struct.pack("!H", len(block)) + block


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n",
    proxy_v2("203.0.113.9", 40000),
])
def test_proxy_protocol_from_a_trusted_peer_sets_the_client(start_server, header):
    srv = start_server("--proxy-protocol", "--access-log", "-", app="wsgi_apps:app", pythonpath=[APPS])
    with srv.connect() as s:
        s.sendall(header + b"GET /remote HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body = read_response(s)
    assert (status, body) == (200, b"203.0.113.9 http")
    srv.stop()
    assert any(line.startswith("203.0.113.9 - - [") for line in srv.stdout), srv.stdout


def test_proxy_protocol_required_from_trusted_and_refused_from_untrusted(start_server):
    srv = start_server("--proxy-protocol", app="wsgi_apps:app", pythonpath=[APPS])
    with srv.connect() as s:  # trusted peer without a header: closed, nothing answered
        s.sendall(b"GET /remote HTTP/1.1\r\nHost: t\r\n\r\n")
        assert recv_until_closed(s) == b""
    srv2 = start_server("--proxy-protocol", "--forwarded-allow-ips", "10.9.9.9",
                        app="wsgi_apps:app", pythonpath=[APPS])
    with srv2.connect() as s:  # an untrusted peer cannot claim an address: 400
        s.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\nGET /remote HTTP/1.1\r\nHost: t\r\n\r\n")
        assert recv_until_closed(s).startswith(b"HTTP/1.1 400 ")
    with srv2.connect() as s:  # and without a header it is served as itself
        s.sendall(b"GET /remote HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[::2] == (200, b"127.0.0.1 http")


def test_forwarded_headers_only_from_trusted_peers(start_server):
    spoof = b"X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\n"
    trusted = start_server(app="wsgi_apps:app", pythonpath=[APPS])  # default: 127.0.0.1 trusted
    with trusted.connect() as s:
        s.sendall(b"GET /remote HTTP/1.1\r\nHost: t\r\n" + spoof + b"\r\n")
        assert read_response(s)[::2] == (200, b"198.51.100.7 https")
    untrusted = start_server("--forwarded-allow-ips", "10.0.0.0/8", app="wsgi_apps:app", pythonpath=[APPS])
    with untrusted.connect() as s:
        s.sendall(b"GET /remote HTTP/1.1\r\nHost: t\r\n" + spoof + b"\r\n")
        assert read_response(s)[::2] == (200, b"127.0.0.1 http")


def test_bad_forwarded_allow_ips_is_a_usage_error():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "prefork", "--forwarded-allow-ips", "10.0.0.300"],
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2 and "--forwarded-allow-ips" in proc.stderr.splitlines()[-1]
