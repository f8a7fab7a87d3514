"""The asyncio worker (ASGI) has what issue 11 gave the epoll worker: the accept path (out
of descriptors, out of connections, the first-byte timeout, connections spread over
workers), draining without losing a keep-alive request, access lines on time, failed log
writes, log floods, the first impossible byte, one framing on the wire.

The same checks as tests/test_accept.py, tests/test_drain.py and tests/test_resilience.py,
run against an ASGI application (tests/apps/asgi_apps.py) with the default parser.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import time

import pytest

from conftest import APPS, ROOT, Server, read_response, recv_until_closed
from test_accept import cpu_seconds, held_by_worker, open_slowly
from test_drain import KeepAliveClients, finish
from test_resilience import ACCESS_DROPPED, get_many, metrics_url, scrape, wait_until

pytestmark = pytest.mark.timeout(120)
APP = "asgi_apps:raw"


@pytest.fixture
def launch():
    started = []

    def launch(*extra, workers: int = 1) -> Server:
        args = ["--bind", "127.0.0.1:0", "--workers", str(workers), "--log-level", "info", *extra, APP]
        srv = Server(args, env={"PYTHONPATH": os.pathsep.join([APPS, ROOT])})
        started.append(srv)
        return srv.start(workers)

    yield launch
    for srv in started:
        pids = srv.children()
        if srv.proc.poll() is None:
            srv.stop(signal.SIGKILL)
        for pid in pids + srv.children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def get(sock, path: str = "/sub/a.txt"):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return read_response(sock)


# ---------------------------------------------------------------------- the accept path

def test_out_of_descriptors_pauses_accepting_logs_a_summary_and_recovers(launch):
    srv = launch()
    (worker,) = srv.children()
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (64, 64))
    held = []
    try:
        for _ in range(120):  # more than the worker can hold: the rest wait in the queue
            s = srv.connect()
            s.sendall(b"GET /hello HTTP/1.1\r\n")  # a head in progress: not idle
            held.append(s)
        srv.wait_for(r"(?i)too many open files")
        lines_before = len(srv.log)
        wall0, cpu0 = time.monotonic(), cpu_seconds(worker)
        time.sleep(3.0)  # the measurement window: the listener stays readable throughout
        wall, cpu = time.monotonic() - wall0, cpu_seconds(worker) - cpu0
        window = srv.log[lines_before:]
        errors = [l for l in window if re.search(r"(?i)too many open files", l)]
        assert cpu < 0.3 * wall, f"worker used {cpu:.2f}s CPU in {wall:.1f}s while out of descriptors"
        assert len(errors) <= 8, f"{len(errors)} accept error lines in {wall:.1f}s: {errors[:3]}"
        assert re.search(r"accept: too many open files, \d+ times in the last", "".join(srv.log)), "no summary line"
        held[0].sendall(b"Host: t\r\n\r\n")
        assert read_response(held[0])[::2] == (200, b"hello /hello")
    finally:
        for s in held:
            s.close()
    with srv.connect(timeout=10) as s:
        assert get(s, "/hello")[::2] == (200, b"hello /hello")
    assert srv.proc.poll() is None and srv.children() == [worker]


def test_full_worker_closes_idle_connections_to_answer_a_new_client(launch):
    srv = launch("--max-connections", "50")
    kept = open_slowly(srv, 35, gap=0)  # idle between keep-alive requests
    silent = [srv.connect() for _ in range(40)]  # never send a byte; 25 stay queued
    try:
        with srv.connect(timeout=4) as s:
            assert get(s)[::2] == (200, b"file a\n")
        srv.wait_for(r"closed \d+ idle connections to make room")
        kept[0].settimeout(5)
        assert kept[0].recv(1) == b""  # the oldest idle one made room
    finally:
        for s in kept + silent:
            s.close()


def test_connection_that_sends_nothing_is_closed_after_the_first_byte_timeout(launch):
    srv = launch("--keepalive", "60", "--header-timeout", "2")
    kept = srv.connect()
    assert get(kept)[0] == 200
    silent = srv.connect(timeout=10)
    t0 = time.monotonic()
    assert silent.recv(1) == b""
    assert time.monotonic() - t0 < 8
    assert get(kept)[::2] == (200, b"file a\n")  # a kept-alive one waits for --keepalive
    kept.close()
    silent.close()


@pytest.mark.parametrize("workers", [2, 4])
def test_connections_spread_over_workers(launch, workers):
    srv = launch(workers=workers)
    socks = open_slowly(srv, 200)
    try:
        held = held_by_worker(srv)
        print(f"connections per worker ({workers} workers): {sorted(held.values())}")
        assert sum(held.values()) == 200, held
        fair = 200 / workers  # the listener re-registered after each accept: workers take turns
        assert max(held.values()) <= max(0.65 * 200, 1.5 * fair), f"one worker holds too many: {held}"
        assert min(held.values()) >= 0.5 * fair, f"one worker holds too few: {held}"
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------- draining

def test_keepalive_clients_lose_nothing_across_reloads(launch):
    srv = launch("--graceful-timeout", "10", workers=2)
    with KeepAliveClients(srv.address) as load:
        load.wait_for_ok(200)
        for _ in range(10):
            before = set(srv.children())
            srv.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: not before & set(srv.children()) and len(srv.children()) == 2, timeout=30,
                       what="every pre-reload worker gone")
            load.wait_for_ok(load.ok + 200)
    finish(srv, load)


def test_keepalive_clients_lose_nothing_when_workers_retire(launch):
    srv = launch("--graceful-timeout", "10", "--max-requests", "200", "--max-requests-jitter", "20", workers=2)
    with KeepAliveClients(srv.address) as load:
        srv.wait_for(r"reached --max-requests; starting its replacement", count=20, timeout=60)
        load.wait_for_ok(load.ok + 100)
    finish(srv, load)


# ---------------------------------------------------------------------- logs

def test_access_log_line_is_written_as_the_request_is_answered(launch, tmp_path):
    log_path = tmp_path / "access.log"
    srv = launch("--access-log", str(log_path))
    with srv.connect() as s:
        buf = bytearray()
        for i in range(5):
            s.sendall(f"GET /x?n={i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            assert read_response(s, buf=buf)[0] == 200
            deadline = time.monotonic() + 0.5  # the 1 s tick would be late for most
            while f"?n={i} ".encode() not in log_path.read_bytes():
                assert time.monotonic() < deadline, f"request {i} not in the access log after 0.5s"
                time.sleep(0.005)


def test_access_log_on_a_full_disk_costs_no_request_and_no_worker(launch):
    srv = launch("--access-log", "/dev/full", "--metrics-bind", "127.0.0.1:0", workers=2)
    workers = sorted(srv.children())
    get_many(srv.connect, 200, b"User-Agent: " + b"x" * 2000 + b"\r\n")
    url = metrics_url(srv)
    wait_until(lambda: scrape(url).get(ACCESS_DROPPED) == 200, what="200 access lines counted as dropped")
    assert sorted(srv.children()) == workers, "a worker was replaced"


def test_rejected_requests_are_aggregated_in_the_log_and_exact_in_metrics(launch):
    srv = launch("--metrics-bind", "127.0.0.1:0")
    url = metrics_url(srv)
    n = 500
    t0 = time.monotonic()
    for _ in range(n):
        with srv.connect() as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400
            assert recv_until_closed(s).startswith(b"HTTP/1.1 400 ")
    seconds = time.monotonic() - t0
    wait_until(lambda: scrape(url).get('prefork_requests_total{code="4xx"}') == n, what=f"{n} 4xx counted")

    def accounted():
        shown = sum(1 for l in srv.log if "400 from" in l and "suppressed" not in l)
        cut = sum(int(m.group(1)) for m in (re.search(r"suppressed (\d+) similar lines .*400 from", l)
                                            for l in srv.log) if m)
        return (shown, cut) if shown + cut == n else None
    shown, cut = wait_until(accounted, what="every rejected request shown or counted as suppressed")
    assert shown <= 10 * (seconds + 2), (shown, seconds)


# ---------------------------------------------------------------------- protocol edges

def test_tls_client_hello_is_answered_400_at_its_first_byte(launch):
    srv = launch()
    with srv.connect(timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01")  # a TLS ClientHello's first bytes, and no more
        assert recv_until_closed(s).startswith(b"HTTP/1.1 400 ")
    srv.wait_for(r"400 from")
    with srv.connect() as s:
        assert get(s)[0] == 200


def test_application_framing_headers_give_one_framing_on_the_wire(launch):
    srv = launch()
    with srv.connect(timeout=5) as s:
        s.sendall(b"GET /both-framings HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = read_response(s)
        assert (status, body) == (200, b"hello")
        raw = b""
        s.sendall(b"GET /both-framings HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        raw = recv_until_closed(s)
    head = raw.partition(b"\r\n\r\n")[0].lower()
    framings = head.count(b"\ncontent-length:") + head.count(b"\ntransfer-encoding:")
    assert framings == 1, raw
    assert head.count(b"\ncontent-length: 5") == 1 and raw.endswith(b"\r\n\r\nhello"), raw
