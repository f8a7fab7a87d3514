"""The accept path end to end: out of descriptors, out of connections, and how
connections are shared out between workers (prefork/workers/epoll.py, `Worker._accept`).

These run with the default parser (Cython when built); the parser is covered for both
twins elsewhere. Which worker holds a connection is read from /proc: the server-side
socket's inode in /proc/net/tcp, found among a worker's /proc/<pid>/fd.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import time

import pytest

from conftest import APPS, ROOT, Server, read_response

pytestmark = pytest.mark.timeout(90)
CLK_TCK = os.sysconf("SC_CLK_TCK")


@pytest.fixture
def launch(docroot):
    started = []

    def launch(*extra, workers: int = 1, app=None) -> Server:
        args = ["--bind", "127.0.0.1:0", "--workers", str(workers), "--log-level", "info", *extra]
        args += [app] if app else ["--root", str(docroot)]
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


def get(sock: socket.socket, path: str = "/sub/a.txt"):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return read_response(sock)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def server_side_inodes(port: int) -> set:
    """Inodes of the established sockets whose local end is the server's port."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "01" and int(local.rpartition(":")[2], 16) == port:
                inodes.add(inode)
    return inodes


def sockets_of(pid: int) -> set:
    found = set()
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def held_by_worker(srv: Server) -> dict:
    """pid → how many client connections that worker holds."""
    conns = server_side_inodes(srv.address[1])
    return {pid: len(sockets_of(pid) & conns) for pid in srv.children()}


def open_slowly(srv: Server, count: int, gap: float = 0.005) -> list:
    """`count` keep-alive connections, one at a time, each answered once."""
    socks = []
    for _ in range(count):
        s = srv.connect()
        assert get(s)[0] == 200
        socks.append(s)
        time.sleep(gap)  # a low connection rate is the point here
    return socks


# ---------------------------------------------------------------------- out of descriptors

def test_out_of_descriptors_pauses_accepting_logs_a_summary_and_recovers(launch):
    srv = launch(workers=1, app="demo_app:app")  # /hello opens no file: it can answer
    (worker,) = srv.children()
    # The master raises its own limit at start; cap the worker's from outside instead.
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
        assert re.search(r"accept: too many open files, \d+ times in the last", "".join(window) or
                         "".join(srv.log)), "no summary line"
        # What it holds is still served.
        held[0].sendall(b"Host: t\r\n\r\n")
        assert read_response(held[0])[::2] == (200, b"Hello, World!")
    finally:
        for s in held:
            s.close()
    # Descriptors free again: the queued (now closed) clients are taken and dropped, and a
    # new client is answered.
    with srv.connect(timeout=10) as s:
        assert get(s, "/hello")[::2] == (200, b"Hello, World!")
    assert srv.proc.poll() is None and srv.children() == [worker]


# ---------------------------------------------------------------------- out of connections

def test_full_worker_closes_idle_connections_to_answer_a_new_client(launch):
    srv = launch("--max-connections", "50", workers=1)
    kept = open_slowly(srv, 35, gap=0)  # idle between keep-alive requests
    silent = [srv.connect() for _ in range(40)]  # never send a byte; 25 stay queued
    try:
        t0 = time.monotonic()
        with srv.connect(timeout=4) as s:
            status, _, body = get(s)
        took = time.monotonic() - t0
        assert (status, body) == (200, b"file a\n")
        assert took < 2.0, f"a new client waited {took:.1f}s behind idle connections"
        srv.wait_for(r"closed \d+ idle connections to make room")
        # The oldest idle ones made room: the first kept-alive connection was closed.
        kept[0].settimeout(5)
        assert kept[0].recv(1) == b""
    finally:
        for s in kept + silent:
            s.close()


def test_connection_that_sends_nothing_is_closed_after_the_first_byte_timeout(launch):
    # --keepalive is long, --header-timeout short: a silent connection goes after the
    # latter (min(5 s, --header-timeout)), a kept-alive one stays for the former.
    srv = launch("--keepalive", "60", "--header-timeout", "2")
    kept = srv.connect()
    assert get(kept)[0] == 200
    silent = srv.connect(timeout=10)
    t0 = time.monotonic()
    assert silent.recv(1) == b""
    assert time.monotonic() - t0 < 8
    assert get(kept)[::2] == (200, b"file a\n")
    kept.close()
    silent.close()


# ---------------------------------------------------------------------- sharing out

@pytest.mark.parametrize("workers", [2, 4])
def test_connections_spread_over_workers(launch, workers):
    srv = launch(workers=workers)
    socks = open_slowly(srv, 200)
    try:
        held = held_by_worker(srv)
        assert sum(held.values()) == 200, held
        assert max(held.values()) <= 0.65 * 200, f"one worker holds too many: {held}"
    finally:
        for s in socks:
            s.close()


def test_worker_added_by_ttin_gets_connections_at_once(launch):
    srv = launch(workers=2)
    socks = open_slowly(srv, 40)
    try:
        before = set(srv.children())
        os.kill(srv.pid, signal.SIGTTIN)
        srv.wait_for(r"Booted worker")
        (new,) = set(srv.children()) - before
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            socks += open_slowly(srv, 1, gap=0.03)
        held = held_by_worker(srv)
        assert held[new] >= 3, f"the new worker took {held[new]} connections in a second: {held}"
    finally:
        for s in socks:
            s.close()
