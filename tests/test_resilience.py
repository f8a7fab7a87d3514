"""What must never stop the service: log writes that fail, metrics clients, a failed USR2,
a signal aimed at a worker that has only just been forked; and what a client must not be
able to do to the error log (flood it).

These run the real server with the default parser; the parser twins are covered elsewhere.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, Server, read_response, recv_until_closed

pytestmark = pytest.mark.timeout(120)
BODY = b"file a\n"
GET = b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture
def launch(docroot):
    started = []

    def launch(*extra, workers: int = 1, env=None, root=None) -> Server:
        srv = Server(["--bind", "127.0.0.1:0", "--workers", str(workers), "--root", str(root or docroot),
                      *extra], env=env)
        started.append(srv)
        return srv.start(workers)

    yield launch
    for srv in started:
        stop_all(srv.proc, srv.pid)


def stop_all(proc, pid) -> None:
    children = _children(pid)
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    for child in children + _children(pid):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def wait_until(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return parse_metrics(text)


def parse_metrics(text: str) -> dict:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def metrics_url(srv: Server) -> str:
    return re.search(r"Metrics at (\S+)", "".join(srv.log)).group(1)


ACCESS_DROPPED = 'prefork_log_lines_dropped_total{log="access"}'
ERROR_DROPPED = 'prefork_log_lines_dropped_total{log="error"}'


def get_many(connect, n: int, headers: bytes = b"") -> None:
    """n keep-alive GETs on 4 connections; every one must be answered 200 with the file."""
    per = n // 4
    for _ in range(4):
        with connect() as s:
            buf = bytearray()
            for _ in range(per):
                s.sendall(b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
                assert read_response(s, buf=buf)[::2] == (200, BODY)


# ---------------------------------------------------------------- 2: log writes that fail

def test_access_log_on_a_full_disk_costs_no_request_and_no_worker(launch):
    # /dev/full: every write fails with ENOSPC. 200 lines of 2 KB overflow any buffer.
    srv = launch("--access-log", "/dev/full", "--metrics-bind", "127.0.0.1:0", workers=2)
    workers = sorted(srv.children())
    t0 = time.monotonic()
    get_many(srv.connect, 200, b"User-Agent: " + b"x" * 2000 + b"\r\n")
    url = metrics_url(srv)
    wait_until(lambda: scrape(url).get(ACCESS_DROPPED) == 200, what="200 access lines counted as dropped")
    elapsed = time.monotonic() - t0
    assert sorted(srv.children()) == workers, "a worker was replaced"
    assert srv.proc.poll() is None
    log = "".join(srv.log)
    assert "starting a new one" not in log and "Traceback" not in log, log
    reports = re.findall(r"\[(\d+)\] \[ERROR\] cannot write the access log /dev/full: No space", log)
    assert reports, log
    for pid in set(reports):  # one line per worker per interval (10 s)
        assert reports.count(pid) <= 1 + elapsed / 10, log


def test_access_log_to_a_closed_pipe_costs_no_request(docroot, tmp_path):
    # `--access-log -` into a pipe nobody reads any more: EPIPE on every write.
    sock_path, metrics_path = str(tmp_path / "http.sock"), str(tmp_path / "metrics.sock")
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.Popen([sys.executable, "-m", "prefork", "--bind", f"unix:{sock_path}",
                             "--metrics-bind", f"unix:{metrics_path}", "--workers", "1",
                             "--root", str(docroot), "--access-log", "-"],
                            env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
                            stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    try:
        connect = unix_connector(sock_path)
        wait_until(lambda: _can_connect(connect) and len(_children(proc.pid)) == 1, what="server up")
        workers = _children(proc.pid)
        get_many(connect, 200)
        wait_until(lambda: unix_metrics(metrics_path).get(ACCESS_DROPPED) == 200,
                   what="200 access lines counted as dropped")
        assert _children(proc.pid) == workers and proc.poll() is None
    finally:
        stop_all(proc, proc.pid)
    log = proc.stderr.read()
    assert "cannot write the access log -: Broken pipe" in log, log
    assert "Traceback" not in log, log


@pytest.mark.parametrize("target", ["dev-full", "closed-pipe"])
def test_error_log_that_cannot_be_written_costs_nothing(docroot, tmp_path, target):
    sock_path, metrics_path = str(tmp_path / "http.sock"), str(tmp_path / "metrics.sock")
    if target == "dev-full":
        err = os.open("/dev/full", os.O_WRONLY)
    else:
        read_end, err = os.pipe()
        os.close(read_end)
    proc = subprocess.Popen([sys.executable, "-m", "prefork", "--bind", f"unix:{sock_path}",
                             "--metrics-bind", f"unix:{metrics_path}", "--workers", "1",
                             "--root", str(docroot)],
                            env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=err)
    os.close(err)
    try:
        connect = unix_connector(sock_path)
        wait_until(lambda: _can_connect(connect) and len(_children(proc.pid)) == 1, what="server up")
        workers = _children(proc.pid)
        for _ in range(50):  # each one is an error-log line in the worker
            with connect() as s:
                s.sendall(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400
                assert recv_until_closed(s).startswith(b"HTTP/1.1 400 ")
        get_many(connect, 100)
        values = wait_until(lambda: (lambda v: v if v.get('prefork_requests_total{code="4xx"}') == 50 else None)(
            unix_metrics(metrics_path)), what="50 rejected requests counted")
        # The master's start-up lines and at least the worker's first ten 400 lines.
        assert values[ERROR_DROPPED] >= 10, values
        assert _children(proc.pid) == workers and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        stop_all(proc, proc.pid)


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True,
                       capture_output=True, timeout=10)
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    yield mnt
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_access_log_resumes_when_the_disk_has_room_again(launch, tiny_disk):
    log_path = tiny_disk / "access.log"
    log_path.touch()
    filler = tiny_disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    srv = launch("--access-log", str(log_path), "--metrics-bind", "127.0.0.1:0", workers=1)
    workers = srv.children()
    url = metrics_url(srv)
    get_many(srv.connect, 40)
    wait_until(lambda: scrape(url).get(ACCESS_DROPPED) == 40, what="40 lines dropped")
    assert log_path.stat().st_size == 0
    filler.unlink()  # room again
    with srv.connect() as s:
        s.sendall(b"GET /sub/a.txt?after HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[0] == 200
    wait_until(lambda: b"/sub/a.txt?after" in log_path.read_bytes(), what="the line after the gap")
    srv.wait_for(r"access log .*access.log: writing again after 40 lines were dropped")
    assert srv.children() == workers
    assert log_path.read_bytes().count(b"\n") == 1


def unix_connector(path: str):
    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        return s
    return connect


def _can_connect(connect) -> bool:
    try:
        connect().close()
        return True
    except OSError:
        return False


def unix_metrics(path: str) -> dict:
    s = unix_connector(path)()
    with s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
        status, _, body = read_response(s)
    assert status == 200
    return parse_metrics(body.decode())


# ---------------------------------------------------------------- 10: access lines on time

def test_access_log_line_is_written_as_the_request_is_answered(launch, tmp_path):
    log_path = tmp_path / "access.log"
    srv = launch("--access-log", str(log_path), workers=1)
    with srv.connect() as s:
        buf = bytearray()
        for i in range(5):
            s.sendall(f"GET /sub/a.txt?n={i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            assert read_response(s, buf=buf)[0] == 200
            # Once a second (the old flush) would be late for most of these.
            deadline = time.monotonic() + 0.5
            while f"?n={i} ".encode() not in log_path.read_bytes():
                assert time.monotonic() < deadline, f"request {i} not in the access log after 0.5s"
                time.sleep(0.005)


# ---------------------------------------------------------------- 9: log floods

def test_rejected_requests_are_aggregated_in_the_log_and_exact_in_metrics(launch):
    srv = launch("--metrics-bind", "127.0.0.1:0", workers=1)
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
    assert shown <= 10 * (seconds + 2), (shown, seconds)  # FLOOD_BURST a second
    assert cut >= n - 10 * (seconds + 2)


# ---------------------------------------------------------------- 5: a failed USR2

def test_failed_upgrade_is_logged_and_can_be_retried(launch, tmp_path):
    app_dir = tmp_path / "code"
    app_dir.mkdir()
    module = app_dir / "versioned.py"
    module.write_text("from prefork import App\napp = App()\n@app.get('/v')\ndef v(req):\n    return 'v1'\n")
    pid_file = tmp_path / "master.pid"
    srv = launch("--pid", str(pid_file), "--chdir", str(app_dir), "versioned:app", workers=1,
                 env={"PYTHONDONTWRITEBYTECODE": "1"})
    new_pid = None
    try:
        module.write_text("raise RuntimeError('the new code does not import')\n")
        srv.proc.send_signal(signal.SIGUSR2)
        srv.wait_for(r"upgrade failed: new master exited with code 4", timeout=30)
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() == str(srv.pid),
                   what="pid file restored")
        assert not (tmp_path / "master.pid.oldbin").exists()
        module.write_text("from prefork import App\napp = App()\n@app.get('/v')\ndef v(req):\n    return 'v2'\n")
        srv.proc.send_signal(signal.SIGUSR2)
        srv.wait_for(r"USR2: started a new master", timeout=30)
        new_pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != str(srv.pid)
                                 and pid_file.read_text(), timeout=30, what="new pid file"))
        assert (tmp_path / "master.pid.oldbin").read_text().strip() == str(srv.pid)
        wait_until(lambda: len(_children(new_pid)) == 1, timeout=30, what="the new master's worker")
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0

        def answer():
            with srv.connect() as s:
                s.sendall(b"GET /v HTTP/1.1\r\nHost: t\r\n\r\n")
                return read_response(s)[::2]
        assert wait_until(lambda: answer() == (200, b"v2"), timeout=30, what="the new master serves v2")
    finally:
        if new_pid:
            kids = _children(new_pid)
            try:
                os.kill(new_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            wait_until(lambda: not os.path.exists(f"/proc/{new_pid}") or
                       open(f"/proc/{new_pid}/stat").read().split(")")[-1].split()[0] == "Z",
                       timeout=30, what="new master exit")
            for pid in kids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# ---------------------------------------------------------------- 8: the metrics endpoint

def test_idle_metrics_clients_are_capped_and_timed_out(launch):
    from prefork.metrics import CLIENT_TIMEOUT, MAX_CLIENTS
    srv = launch("--metrics-bind", "127.0.0.1:0", workers=1)
    url = metrics_url(srv)
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    idle = []
    try:
        for _ in range(MAX_CLIENTS + 24):
            s = socket.create_connection((host, int(port)), timeout=CLIENT_TIMEOUT + 10)
            idle.append(s)
        assert scrape(url)["prefork_workers"] == 1  # a scraper still gets its answer
        # The cap: the oldest idle clients were let go at once, long before the timeout.
        t0 = time.monotonic()
        for s in idle[:24]:
            s.settimeout(max(0.1, CLIENT_TIMEOUT / 2 - (time.monotonic() - t0)))
            assert s.recv(1) == b""
        # The timeout: the last idle client is closed after CLIENT_TIMEOUT, not kept.
        last = idle[-1]
        last.settimeout(CLIENT_TIMEOUT + 10)
        assert last.recv(1) == b""
        assert srv.proc.poll() is None
    finally:
        for s in idle:
            s.close()


def test_master_out_of_descriptors_survives_metrics_clients(launch):
    srv = launch("--metrics-bind", "127.0.0.1:0", workers=2)
    url = metrics_url(srv)
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    workers = sorted(srv.children())
    limits = resource.prlimit(srv.pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{srv.pid}/fd"))
    resource.prlimit(srv.pid, resource.RLIMIT_NOFILE, (in_use + 2, limits[1]))
    clients = []
    try:
        for _ in range(10):
            clients.append(socket.create_connection((host, int(port)), timeout=5))
        srv.wait_for(r"metrics: cannot accept: .*Too many open files", timeout=10)
        time.sleep(1.5)  # a few passes of the master's loop with the listener paused and back
        assert srv.proc.poll() is None, "".join(srv.log)
    finally:
        for s in clients:
            s.close()
        if srv.proc.poll() is None:
            resource.prlimit(srv.pid, resource.RLIMIT_NOFILE, limits)
    assert wait_until(lambda: scrape(url).get("prefork_workers") == 2, what="metrics answered again")
    assert sorted(srv.children()) == workers
    with srv.connect() as s:
        s.sendall(GET)
        assert read_response(s)[::2] == (200, BODY)


# ---------------------------------------------------------------- 13: fork and signals

SLOW_FORK = """
import os, time
if os.environ.get("PREFORK_TEST_SLOW_FORK"):
    _fork = os.fork
    def slow_fork():
        pid = _fork()
        if pid == 0:
            time.sleep(float(os.environ["PREFORK_TEST_SLOW_FORK"]))
        return pid
    os.fork = slow_fork
"""


def test_term_to_a_just_forked_worker_does_not_stop_the_server(launch, tmp_path):
    # A child that is slow right after fork() (a loaded machine) makes the window between
    # fork() and the child's own signal set-up wide enough to hit every time.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_FORK)
    env = {"PREFORK_TEST_SLOW_FORK": "0.5", "PYTHONPATH": os.pathsep.join([str(site), ROOT])}
    srv = launch(workers=1, env=env)
    for _ in range(3):
        before = set(srv.children())
        srv.proc.send_signal(signal.SIGTTIN)
        new = wait_until(lambda: set(srv.children()) - before, timeout=20, what="a new child")
        for pid in new:
            os.kill(pid, signal.SIGTERM)
        srv.wait_for(r"was killed by signal 15; starting a new one", timeout=20)
        srv.wait_for(r"Booted worker", timeout=30)  # its replacement (after the crash back-off)
        srv.proc.send_signal(signal.SIGTTOU)
        srv.wait_for(r"stopping worker .*: scale down", timeout=20)
    log = "".join(srv.log)
    assert "graceful stop" not in log, log
    assert srv.proc.poll() is None
    with srv.connect() as s:
        s.sendall(GET)
        assert read_response(s)[::2] == (200, BODY)
