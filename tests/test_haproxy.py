"""Scale-out behind HAProxy: two prefork-http instances (each its own master, 2 workers,
--proxy-protocol) behind one HAProxy on 127.0.0.1 that sends PROXY v2 and health-checks
them over HTTP (with the PROXY header too, `check-send-proxy`).

What test_stopping_one_instance_loses_no_request guarantees, exactly: with the HAProxy
settings an operator uses for this (`retries 3`, `option redispatch 1`, `retry-on
conn-failure empty-response response-timeout`, checks every 100 ms, down after 2
failures), a client sending GETs through HAProxy gets a complete 200 for every request
while one instance drains on SIGTERM and exits, and once HAProxy has marked it DOWN every
answer comes from the other one. A request that failed at the draining instance (its
listener closed, an idle kept-alive server connection closed under HAProxy) may have been
retried at the other one: that is safe for idempotent requests only, which is why the
load is GETs; a POST can be lost or, with `retry-on empty-response`, sent twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import APPS, CYTHON_BUILT, ROOT, Server, read_response

HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (Debian package haproxy; .ci/run installs it)"),
]

CONFIG = """\
global
    maxconn 500
    stats socket {admin} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend web
    bind 127.0.0.1:{port}
    default_backend prefork

backend prefork
    balance roundrobin
    option httpchk
    http-check send meth GET uri /remote ver HTTP/1.1 hdr Host health
    http-check expect status 200
    default-server send-proxy-v2 check check-send-proxy inter 100ms fall 2 rise 2
    server a 127.0.0.1:{a}
    server b 127.0.0.1:{b}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HAProxy:
    def __init__(self, folder, backends) -> None:
        self.port = free_port()
        self.admin = os.path.join(folder, "admin.sock")
        self.config = os.path.join(folder, "haproxy.cfg")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(admin=self.admin, port=self.port, a=backends[0], b=backends[1]))
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", self.config], capture_output=True, text=True, timeout=20)
        assert check.returncode == 0, check.stderr
        # -db: stay in the foreground, so that the test owns the process and its pid.
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.config], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list = []
        threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True).start()

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.admin)
            s.sendall(line.encode() + b"\n")
            out = bytearray()
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def states(self) -> dict:
        """Server name → status (UP, DOWN, ...) as the stats socket says."""
        lines = self.command("show stat").splitlines()
        fields = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(fields, l.split(","))) for l in lines[1:] if l]
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "prefork" and r["svname"] in ("a", "b")}

    def wait_states(self, want: dict, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("haproxy exited:\n" + "".join(self.output))
            try:
                seen = self.states()
            except OSError:  # the stats socket is not there yet
                seen = None
            if seen is not None and all(seen.get(k, "").startswith(v) for k, v in want.items()):
                return
            time.sleep(0.05)  # polling the stats socket: HAProxy has no event to wait on
        raise AssertionError(f"haproxy states {seen}, wanted {want}:\n" + "".join(self.output))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def topology(tmp_path):
    """(haproxy, [instance a, instance b]); everything stopped at teardown."""
    parser = "cython" if CYTHON_BUILT else "python"
    env = {"PYTHONPATH": os.pathsep.join([APPS, ROOT, os.environ.get("PYTHONPATH", "")])}
    servers = []
    proxy = None
    try:
        for _ in range(2):
            srv = Server(["--bind", "127.0.0.1:0", "--workers", "2", "--parser", parser, "--proxy-protocol",
                          "--graceful-timeout", "10", "wsgi_apps:app"], env=env)
            servers.append(srv)
            srv.start(2)
        proxy = HAProxy(str(tmp_path), [srv.address[1] for srv in servers])
        proxy.wait_states({"a": "UP", "b": "UP"})
        yield proxy, servers
    finally:
        if proxy is not None:
            proxy.stop()
        for srv in servers:
            srv.stop(signal.SIGTERM)
            for pid in srv.children():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def get_env(sock) -> dict:
    sock.sendall(b"GET /env HTTP/1.1\r\nHost: front\r\n\r\n")
    status, _, body = read_response(sock)
    assert status == 200, (status, body)
    return json.loads(body)


def test_requests_reach_both_instances_with_the_client_address(topology):
    proxy, servers = topology
    ports = {srv.address[1]: 0 for srv in servers}
    for _ in range(8):  # a new client connection each time: round robin alternates
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            client_port = s.getsockname()[1]
            env = get_env(s)
        ports[int(env["SERVER_PORT"])] += 1
        # The backend's peer is HAProxy, but REMOTE_ADDR/REMOTE_PORT are this client's:
        # HAProxy's own connection has another source port, so only the PROXY v2 header
        # can have told the backend this one.
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("127.0.0.1", str(client_port)), env
    assert all(n >= 2 for n in ports.values()), ports


class GetLoad:
    """`threads` clients, each on its own kept-alive connection to HAProxy (reopened only
    if HAProxy closes it between requests), GET /env until stopped. Every answer is noted
    as (time, backend port); anything but a complete 200 is a failure."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.answers: list = []
        self.failures: list = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        sock = None
        while not self._stop.is_set():
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                env = get_env(sock)
                self.answers.append((time.monotonic(), int(env["SERVER_PORT"])))
            except Exception as exc:  # noqa: BLE001 - every other outcome is a failure
                self.failures.append((time.monotonic(), repr(exc)))
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def wait_answers(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        target = len(self.answers) + count
        while len(self.answers) < target:
            assert time.monotonic() < deadline, f"{len(self.answers)} answers; failures {self.failures[:3]}"
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def test_stopping_one_instance_loses_no_request(topology):
    proxy, (a, b) = topology
    port_a, port_b = a.address[1], b.address[1]
    load = GetLoad(proxy.port)
    try:
        load.wait_answers(200)
        assert {p for _, p in load.answers} == {port_a, port_b}
        a.proc.send_signal(signal.SIGTERM)  # a graceful stop, as systemd or an operator does
        assert a.proc.wait(20) == 0
        proxy.wait_states({"a": "DOWN", "b": "UP"})
        down_at = time.monotonic()
        load.wait_answers(300)
    finally:
        load.stop()
    assert not load.failures, load.failures[:5]
    after = [p for t, p in load.answers if t > down_at]
    assert after and set(after) == {port_b}
    assert len(load.answers) >= 500
