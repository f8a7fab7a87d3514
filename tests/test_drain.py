"""A draining worker (reload, --max-requests, scale-down) loses no keep-alive request.

Twenty keep-alive clients send requests back to back while workers are replaced. No
retries: every request sent must get a complete, correct answer. A connection may be
closed by the server only after an answer that says `Connection: close` (then the
client opens a new one, which is not a failure); a reset, an empty reply or a cut answer
to a request already sent is a failure, whatever its cause.

These run with the default parser (Cython when built).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from conftest import Server, read_response

pytestmark = pytest.mark.timeout(90)
BODY = b"file a\n"
CLIENTS = 20
REQUEST = b"GET /sub/a.txt HTTP/1.1\r\nHost: drain\r\n\r\n"
REQUEST_CLOSE = b"GET /sub/a.txt HTTP/1.1\r\nHost: drain\r\nConnection: close\r\n\r\n"


class KeepAliveClients:
    """`CLIENTS` threads, each on one kept-alive connection at a time, sending GETs back to
    back until stopped; every answer is checked. With `close_every` N, every Nth request on
    a connection asks for `Connection: close` itself (so that connections move between
    workers)."""

    def __init__(self, address, clients: int = CLIENTS, close_every: int = 0) -> None:
        self.address = address
        self.close_every = close_every
        self.ok = 0
        self.reopened = 0  # connections the server closed after a `Connection: close` it chose
        self.failures: list = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> "KeepAliveClients":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def wait_for_ok(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.ok < count:
            assert time.monotonic() < deadline, f"only {self.ok} answers; failures {self.failures[:5]}"
            time.sleep(0.02)

    def _run(self) -> None:
        sock = None
        buf = bytearray()
        served = 0  # answers on this connection
        while not self._stop.is_set():
            if sock is None:
                try:
                    sock = socket.create_connection(self.address, timeout=10)
                except OSError as exc:
                    with self._lock:
                        self.failures.append(f"connect: {exc!r}")
                    time.sleep(0.05)
                    continue
                buf = bytearray()
                served = 0
            asks_close = self.close_every and (served + 1) % self.close_every == 0
            try:
                sock.sendall(REQUEST_CLOSE if asks_close else REQUEST)
                status, headers, body = read_response(sock, buf=buf)
            except Exception as exc:  # noqa: BLE001 - a sent request without its answer
                with self._lock:
                    self.failures.append(f"request {served + 1} on a connection: {exc!r}")
                sock.close()
                sock = None
                continue
            with self._lock:
                if status == 200 and body == BODY and not buf:
                    self.ok += 1
                else:
                    self.failures.append(f"wrong answer {status} {body!r} {bytes(buf)!r}")
            served += 1
            if headers.get("connection", "").lower() == "close":
                sock.close()
                sock = None
                if not asks_close:
                    with self._lock:
                        self.reopened += 1
        if sock is not None:
            sock.close()


@pytest.fixture
def launch(docroot):
    started = []

    def launch(*extra, workers: int = 2) -> Server:
        srv = Server(["--bind", "127.0.0.1:0", "--workers", str(workers), "--root", str(docroot),
                      "--graceful-timeout", "10", *extra])
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


def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def finish(srv: Server, load: KeepAliveClients) -> None:
    assert load.failures == [], f"{len(load.failures)} failures of {load.ok + len(load.failures)}: " \
                                f"{load.failures[:10]}"
    assert load.reopened > 0  # the draining workers did close connections, the right way
    log = "".join(srv.log)
    assert "was killed" not in log and "Traceback" not in log


HUPS = 20


def test_keepalive_clients_lose_nothing_across_reloads(launch):
    srv = launch(workers=2)
    with KeepAliveClients(srv.address) as load:
        load.wait_for_ok(200)
        for _ in range(HUPS):
            before = set(srv.children())
            srv.proc.send_signal(signal.SIGHUP)
            # The new workers are up and every old one has drained and exited.
            wait_until(lambda: not before & set(srv.children()) and len(srv.children()) == 2,
                       what="every pre-reload worker gone")
            load.wait_for_ok(load.ok + 200)
    finish(srv, load)


def test_keepalive_clients_lose_nothing_when_workers_retire(launch):
    srv = launch("--max-requests", "200", "--max-requests-jitter", "20", workers=2)
    with KeepAliveClients(srv.address) as load:
        srv.wait_for(r"reached --max-requests; starting its replacement", count=40, timeout=60)
        load.wait_for_ok(load.ok + 100)
    finish(srv, load)


def test_keepalive_clients_lose_nothing_when_workers_scale_down(launch):
    srv = launch(workers=2)
    # Clients move between workers now and then, so that the new worker that TTOU stops
    # holds busy keep-alive connections.
    with KeepAliveClients(srv.address, close_every=25) as load:
        load.wait_for_ok(200)
        for _ in range(8):
            srv.proc.send_signal(signal.SIGTTIN)
            srv.wait_for(r"Booted worker")
            wait_until(lambda: len(srv.children()) == 3, what="3 workers")
            load.wait_for_ok(load.ok + 500)
            srv.proc.send_signal(signal.SIGTTOU)
            srv.wait_for(r"worker \d+ \(pid \d+\) exited with code 0")
            wait_until(lambda: len(srv.children()) == 2, what="2 workers")
            load.wait_for_ok(load.ok + 100)
    finish(srv, load)
