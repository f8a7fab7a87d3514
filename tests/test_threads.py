"""`--threads N` and the access log under load (issue 13, items 4 and 6).

The pool keeps a connection registered while its request runs and wakes as few threads
as it can (prefork/workers/pool.py); these check that nothing it promised before is lost:
answers in order, blocking handlers side by side, no job left waiting, a client that goes
away while its handler runs, and access lines complete, in order, and reopened on USR1.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import struct
import threading
import time

import pytest

from conftest import APPS, PARSERS, read_response, require_parser
from prefork.http import parser as parser_choice
from prefork.proxy import claims_forwarding
from prefork.workers.pool import HandlerPool

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def serve(start_server):
    def start(*extra, app="demo_app:app", **kw):
        return start_server(*extra, app=app, pythonpath=[APPS], **kw)
    return start


def worker_pid(srv) -> int:
    return srv.children()[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- the pool, alone

class FakeConn:
    """What the pool needs of a connection: call_handler (in a pool thread), finish (in the loop)."""

    def __init__(self, handler, answers: list) -> None:
        self.handler = handler
        self.answers = answers

    def call_handler(self, req):
        try:
            return self.handler(req)
        except Exception as exc:  # noqa: BLE001 - as Connection.call_handler: never raises
            return exc

    def finish(self, req, resp, t0) -> None:
        self.answers.append((req, resp))


def run_loop(pool: HandlerPool, answers: list, want: int, timeout: float = 20.0, wait: float = 1.0) -> None:
    """What the worker's loop does with the pool: kick before waiting, drain on the eventfd."""
    deadline = time.monotonic() + timeout
    while len(answers) < want:
        assert time.monotonic() < deadline, f"{len(answers)} of {want} answers"
        pool.kick()
        ready, _, _ = select.select([pool.fd], [], [], wait)
        if ready:
            pool.drain()


def test_pool_runs_blocking_handlers_side_by_side():
    # Four handlers that each wait for the other three: the pool must have all four
    # threads running them at once, though the loop kicked it only once (it waits longer
    # than the barrier does before it kicks again).
    size = 4
    barrier = threading.Barrier(size, timeout=3)
    answers: list = []
    pool = HandlerPool(size)
    try:
        conn = FakeConn(lambda req: barrier.wait() >= 0, answers)
        for i in range(size):
            pool.submit(conn, i)
        run_loop(pool, answers, size, wait=6.0)
        assert sorted(req for req, _ in answers) == list(range(size))
        assert all(resp is True for _, resp in answers), answers  # no broken barrier
    finally:
        pool.stop()


def test_pool_leaves_no_job_waiting_under_a_stream_of_quick_jobs():
    # Jobs queued in bursts of every size while threads go to sleep and wake: each one is
    # answered (a job left waiting with every thread asleep would stall this loop).
    answers: list = []
    pool = HandlerPool(3)
    try:
        conn = FakeConn(lambda req: req * 2, answers)
        total = 0
        for burst in range(1, 200):
            for _ in range(burst % 7 + 1):
                pool.submit(conn, total)
                total += 1
            if burst % 3:
                pool.kick()
            run_loop(pool, answers, total, timeout=10.0, wait=15.0)  # a stall fails
        assert sorted(req for req, _ in answers) == list(range(total))
        assert all(resp == req * 2 for req, resp in answers)
    finally:
        pool.stop()


def test_pool_writes_the_eventfd_once_per_batch():
    answers: list = []
    pool = HandlerPool(2)
    try:
        release = threading.Event()
        conn = FakeConn(lambda req: release.wait(10), answers)
        for i in range(20):
            pool.submit(conn, i)
        pool.kick()
        release.set()
        deadline = time.monotonic() + 10
        while len(pool.done) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # 20 answers, no drain yet: the eventfd counter says how many writes there were
        # (a write is one syscall per answer, and a wake-up of the loop each).
        writes = struct.unpack("Q", os.read(pool.fd, 8))[0]
        assert writes <= 2
        pool.drain()
        assert len(answers) == 20
    finally:
        pool.stop()


def test_pool_threads_do_not_preempt_on_wake_up():
    # SCHED_BATCH for the handler threads only (see pool.py): the loop thread, and so the
    # process's other threads, keep the default policy.
    pool = HandlerPool(2)
    try:
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        deadline = time.monotonic() + 10
        while any(t.native_id is None for t in pool.threads):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while True:  # each thread sets its policy as it starts
            policies = [os.sched_getscheduler(t.native_id) for t in pool.threads]
            if policies == [os.SCHED_BATCH] * 2 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert policies == [os.SCHED_BATCH] * 2
    finally:
        pool.stop()


# ---------------------------------------------------------------------- the real server

def test_pool_answers_of_every_kind_in_order(serve):
    # The pool's answers go out as the fused path's (the head memo, one send) when their
    # body is bytes, and through the general path otherwise: pipelined together, each
    # comes back whole, in order, and the last one's Connection: close is kept.
    srv = serve("--threads", "4", "--spool-threshold", "1024")
    big = b"x" * 5000  # over the spool threshold: a temporary file, released after the answer
    with srv.connect(timeout=15) as s:
        # The body's second half is sent once the answers before it are back: it arrives
        # after its head, so it is taken as it comes (spooled), not parsed whole.
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /download HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"POST /digest HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big[:2000]))
        buf = bytearray()
        status, headers, body = read_response(s, buf=buf)
        assert (status, body) == (200, b"Hello, World!")
        status, headers, body = read_response(s, head_only=True, buf=buf)
        assert (status, headers["content-length"], body) == (200, "13", b"")
        status, headers, body = read_response(s, buf=buf)
        assert status == 200 and "a file.txt" in headers["content-disposition"] and body
        s.sendall(big[2000:] + b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /users/3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, _, body = read_response(s, buf=buf)
        assert status == 200 and json.loads(body)["size"] == len(big) and json.loads(body)["spooled"]
        assert read_response(s, buf=buf)[0] == 500
        status, headers, body = read_response(s, buf=buf)
        assert status == 200 and json.loads(body)["id"] == 3 and headers["connection"] == "close"
        assert not buf and s.recv(1) == b""
    pid = worker_pid(srv)
    spools = [fd for fd in os.listdir(f"/proc/{pid}/fd")
              if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("(deleted)")]
    assert not spools, "the spooled body's temporary file is still open"


def test_pipelined_burst_under_threads_is_answered_in_order(serve):
    srv = serve("--threads", "4")
    n = 60
    with srv.connect(timeout=15) as s:
        s.sendall(b"".join(b"GET /users/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(n)))
        buf = bytearray()
        for i in range(n):
            status, _, body = read_response(s, buf=buf)
            assert status == 200 and json.loads(body)["id"] == i


def test_requests_sent_while_the_handler_runs_wait_their_turn(serve):
    # The first request blocks in a pool thread; more arrive on the same connection
    # meanwhile (the connection stops being read until the first is answered), and
    # another client releases the first: all come back, in order.
    srv = serve("--threads", "4")
    with srv.connect(timeout=15) as s, srv.connect() as other:
        s.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.2)  # let /block reach its handler (nothing to wait on from outside)
        for i in range(3):
            s.sendall(b"GET /users/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
        other.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(other)[::2] == (200, b"Hello, World!")
        other.sendall(b"GET /release HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(other)[2] == b"ok"
        buf = bytearray()
        assert read_response(s, buf=buf)[::2] == (200, b"released")
        for i in range(3):
            assert json.loads(read_response(s, buf=buf)[2])["id"] == i


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_gone_while_its_handler_runs(serve, how):
    # The worker neither spins on the dead connection's events (a reset reports EPOLLHUP
    # and EPOLLERR for as long as it stays registered) nor stops serving.
    srv = serve("--threads", "2")
    pid = worker_pid(srv)
    gone = srv.connect()
    gone.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.2)  # let /block reach its handler
    if how == "reset":
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    gone.close()
    before = cpu_seconds(pid)
    time.sleep(1.0)
    assert cpu_seconds(pid) - before < 0.5, "the worker spins on the closed connection"
    with srv.connect() as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[::2] == (200, b"Hello, World!")
        s.sendall(b"GET /release HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[2] == b"ok"
        s.sendall(b"GET /users/7 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert json.loads(read_response(s)[2])["id"] == 7
    assert srv.proc.poll() is None


LINE = re.compile(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /users/(\d+)\?c=(\d+) HTTP/1\.1" 200 \d+ "-" "-" \d+\.\d{6}$')


@pytest.mark.parametrize("threads", ["1", "4"])
def test_access_lines_complete_and_in_order_under_load(serve, tmp_path, threads):
    log_path = tmp_path / "access.log"
    srv = serve("--threads", threads, "--access-log", str(log_path))
    clients, per = 6, 150

    def client(c: int) -> None:
        with srv.connect(timeout=20) as s:
            buf = bytearray()
            for start in range(0, per, 30):  # pipelined bursts of 30
                s.sendall(b"".join(b"GET /users/%d?c=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (i, c)
                                   for i in range(start, start + 30)))
                for i in range(start, start + 30):
                    assert json.loads(read_response(s, buf=buf)[2])["id"] == i

    workers = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(40)
    assert srv.stop() == 0
    seen = {c: [] for c in range(clients)}
    for line in log_path.read_text().splitlines():
        m = LINE.match(line)
        assert m, f"malformed access line {line!r}"
        seen[int(m.group(2))].append(int(m.group(1)))
    for c in range(clients):
        assert seen[c] == list(range(per)), f"client {c}: lines missing or out of order"


def test_access_log_is_reopened_on_usr1(serve, tmp_path):
    log_path = tmp_path / "access.log"
    srv = serve("--access-log", str(log_path))
    with srv.connect() as s:
        s.sendall(b"GET /users/1 HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(s)
        deadline = time.monotonic() + 5
        while not log_path.exists() or b"/users/1 " not in log_path.read_bytes():
            assert time.monotonic() < deadline, "first line never written"
            time.sleep(0.01)
        rotated = tmp_path / "access.log.1"
        os.rename(log_path, rotated)  # what logrotate does
        os.kill(srv.pid, signal.SIGUSR1)
        srv.wait_for(r"USR1: workers reopen their log files")
        deadline = time.monotonic() + 10
        i = 2
        while not log_path.exists():  # the worker reopens at its next tick (once a second)
            assert time.monotonic() < deadline, "the access log was not reopened"
            s.sendall(b"GET /users/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
            read_response(s)
            i += 1
            time.sleep(0.05)
        s.sendall(b"GET /users/999 HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(s)
    assert srv.stop() == 0
    old, new = rotated.read_text(), log_path.read_text()
    assert "/users/1 " in old and "/users/999 " in new and "/users/999 " not in old
    lines = (old + new).splitlines()
    assert len(lines) == i  # /users/1, 2 .. i-1, 999: each once, none lost across the two files


# ---------------------------------------------------------------------- forwarding fields

@pytest.mark.parametrize("name", [p.values[0] for p in PARSERS])
def test_claims_forwarding_looks_for_every_field_forwarded_client_reads(name):
    require_parser(name)
    module = parser_choice.load(name)

    def req(extra: bytes):
        return module.RequestParser().feed(b"GET / HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n")[0]

    assert not claims_forwarding(req(b"User-Agent: x\r\nReferer: y\r\n"))
    assert claims_forwarding(req(b"X-Forwarded-For: 10.0.0.1\r\n"))
    assert claims_forwarding(req(b"FORWARDED: for=10.0.0.1\r\n"))
    assert claims_forwarding(req(b"x-forwarded-proto: https\r\n"))


# ---------------------------------------------------------------------- the line itself

@pytest.mark.parametrize("name", [p.values[0] for p in PARSERS])
def test_combined_line_quotes_what_needs_it_and_times_in_microseconds(name, tmp_path):
    from prefork.logs import AccessLog
    require_parser(name)
    module = parser_choice.load(name)
    req = module.RequestParser().feed(b'GET /a"b\\c HTTP/1.1\r\nHost: t\r\nUser-Agent: x\\y "z"\r\n'
                                      b'Referer: http://r/\r\n\r\n')[0]
    log = AccessLog(str(tmp_path / "access.log"))
    durations = [0.0, 0.000123, 0.123456789, 0.25, 0.9999994, 0.9999996, 1.5, 12.25]
    for d in durations:
        log(("10.1.2.3", 5000), req, 200, 13, d)
    log("", req, 404, None, 0.5)  # a unix socket's peer has no address
    log.flush()
    lines = (tmp_path / "access.log").read_text().splitlines()
    head = re.compile(r'^10\.1\.2\.3 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                      r'"GET /a\\"b\\\\c HTTP/1\.1" 200 13 "http://r/" "x\\\\y \\"z\\"" (\S+)$')
    for d, line in zip(durations, lines):
        m = head.match(line)
        assert m, line
        assert re.fullmatch(r"\d+\.\d{6}", m.group(1)) and abs(float(m.group(1)) - d) <= 0.0000011, (d, line)
    assert lines[-1].startswith("- - - [") and lines[-1].endswith('" 404 - "http://r/" "x\\\\y \\"z\\"" 0.500000')
