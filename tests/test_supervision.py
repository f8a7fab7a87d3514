"""Supervision end to end: real master and workers, real client load on 127.0.0.1.

These run with the default parser (Cython when built); the parser itself is covered for
both twins elsewhere.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, Load, Server, read_response

pytestmark = pytest.mark.timeout(90)
BODY = b"file a\n"


@pytest.fixture
def launch(docroot):
    started = []

    def launch(*extra, workers: int = 2, env=None, wait: bool = True) -> Server:
        srv = Server(["--bind", "127.0.0.1:0", "--workers", str(workers), "--root", str(docroot),
                      "--graceful-timeout", "10", *extra], env=env)
        started.append(srv)
        return srv.start(workers) if wait else srv

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


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_killed_worker_under_load_is_replaced_within_a_second(launch):
    srv = launch(workers=2)
    with Load(srv.address, "/sub/a.txt", BODY, threads=4, keepalive=True, max_seconds=30) as load:
        load.allow_failures = True
        load.wait_for_ok(200)
        victim = srv.children()[0]
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        srv.wait_for(r"Booted worker", timeout=5)
        replaced_in = time.monotonic() - t0
        before = load.ok
        load.wait_for_ok(before + 500)
    assert replaced_in < 1.0, replaced_in
    # Only what the dead worker owned can fail: at most one in-flight request per client
    # connection it held (4 clients in all).
    assert len(load.failures) <= 4, load.failures
    assert len(srv.children()) == 2


def test_hup_three_times_and_max_requests_under_load_lose_nothing(launch):
    srv = launch("--max-requests", "50", "--max-requests-jitter", "10", workers=2)
    with Load(srv.address, "/sub/a.txt", BODY, threads=4, keepalive=False, max_seconds=80) as load:
        load.wait_for_ok(300)
        for i in range(3):
            before = srv.children()
            srv.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: not set(before) & set(srv.children()), timeout=20,
                       what="every pre-reload worker gone")
            load.wait_for_ok(load.ok + 300)
        load.wait_for_ok(2000)
    assert load.failures == [], load.failures[:10]
    assert load.ok >= 2000
    text = "".join(srv.log)
    assert text.count("reached --max-requests") >= 10
    assert "was killed" not in text and "exited with code" not in text.replace("exited with code 0", "")


def test_keepalive_clients_across_reloads_lose_nothing(launch):
    srv = launch("--max-requests", "100", workers=2)
    with Load(srv.address, "/sub/a.txt", BODY, threads=4, keepalive=True, max_seconds=60) as load:
        load.wait_for_ok(300)
        before = srv.children()
        srv.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: not set(before) & set(srv.children()), timeout=20,
                   what="every pre-reload worker gone")
        load.wait_for_ok(load.ok + 1500)
    assert load.failures == [], load.failures[:10]


def test_term_under_load_completes_in_flight_and_exits_0(launch, docroot):
    (docroot / "mid.bin").write_bytes(os.urandom(2 << 20))
    expect = (docroot / "mid.bin").read_bytes()
    srv = launch(workers=2)
    with Load(srv.address, "/mid.bin", expect, threads=4, keepalive=False, max_seconds=30) as load:
        load.wait_for_ok(50)
        answered_before = load.ok
        term_sent = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(20) == 0
        load.stop()
    # Every connection established before the TERM (in flight, or queued in the kernel) is
    # answered in full. One that connects while the last listener closes may be reset:
    # that client raced the shutdown and was never accepted.
    early = [f for f in load.failures if f[0] < term_sent]
    assert early == [], early
    late = [f for f in load.failures if f[0] >= term_sent]
    assert all("ConnectionResetError" in what or "closed before a full head; got b''" in what
               for _, what in late), late
    assert len(late) <= 4, late
    assert load.ok > answered_before  # the in-flight responses completed after the TERM
    assert not srv.children()


def test_ttin_and_ttou_change_the_worker_count(launch):
    srv = launch(workers=2)
    srv.proc.send_signal(signal.SIGTTIN)
    srv.wait_for(r"Booted worker")
    assert wait_until(lambda: len(srv.children()) == 3, what="3 workers")
    for _ in range(3):  # never below one
        srv.proc.send_signal(signal.SIGTTOU)
        srv.wait_for(r"TTOU: \d+ workers")
    assert wait_until(lambda: len(srv.children()) == 1, what="1 worker")
    assert sum(": scale down" in line for line in srv.log) == 2
    with srv.connect() as s:
        s.sendall(b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[::2] == (200, BODY)


def test_metrics_count_requests_and_survive_a_worker_restart(launch):
    srv = launch("--metrics-bind", "127.0.0.1:0", workers=1)
    url = re.search(r"Metrics at (\S+)", "".join(srv.log)).group(1)
    n = 37
    with srv.connect() as s:
        buf = bytearray()
        for _ in range(n):
            s.sendall(b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(s, buf=buf)[0] == 200
        s.sendall(b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s, buf=buf)[0] == 404
    key = 'prefork_requests_total{code="2xx"}'
    wait_until(lambda: scrape(url).get(key) == n, what=f"{key} == {n}")
    values = scrape(url)
    assert values['prefork_requests_total{code="4xx"}'] == 1
    assert values["prefork_workers"] == 1
    os.kill(srv.children()[0], signal.SIGKILL)
    srv.wait_for(r"Booted worker")
    values = wait_until(lambda: (lambda v: v if v.get("prefork_workers") == 1 and
                                 v.get('prefork_worker_restarts_total{cause="crash"}') == 1 else None)(scrape(url)),
                        what="restart counted")
    assert values[key] == n
    assert values["prefork_requests_all_total"] == n + 1


def test_socket_passed_the_systemd_way_is_used(docroot):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    port = lsock.getsockname()[1]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = str(docroot.parent / "notify.sock")
    notify.bind(notify_path)
    notify.settimeout(15)
    # systemd puts the sockets at fd 3... and names the process that may take them.
    launcher = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
                "os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid()); "
                "os.execv(sys.executable, [sys.executable, '-m', 'prefork', *sys.argv[2:]])")
    env = dict(os.environ, PYTHONPATH=ROOT, NOTIFY_SOCKET=notify_path)
    proc = subprocess.Popen([sys.executable, "-c", launcher, str(lsock.fileno()), "--workers", "1",
                             "--root", str(docroot)], pass_fds=(lsock.fileno(),), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lsock.close()  # only the server holds it now
        assert notify.recv(4096).startswith(b"READY=1")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /sub/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(s)[::2] == (200, BODY)
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(4096) == b"STOPPING=1"
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    log = proc.stderr.read()
    assert f"Listening at http://127.0.0.1:{port}" in log


def test_usr2_hands_over_to_a_new_master_without_failed_requests(launch, tmp_path):
    pid_file = tmp_path / "master.pid"
    srv = launch("--pid", str(pid_file), workers=2)
    new_pid = None
    try:
        with Load(srv.address, "/sub/a.txt", BODY, threads=4, keepalive=False, max_seconds=60) as load:
            load.wait_for_ok(200)
            srv.proc.send_signal(signal.SIGUSR2)
            srv.wait_for(r"USR2: started a new master")
            srv.wait_for(r"Booted worker", count=2, timeout=20)  # the new master's workers
            new_pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != str(srv.pid)
                                     and pid_file.read_text(), what="new pid file"))
            assert (tmp_path / "master.pid.oldbin").read_text().strip() == str(srv.pid)
            load.wait_for_ok(load.ok + 200)
            srv.proc.send_signal(signal.SIGTERM)  # the old master drains and exits
            assert srv.proc.wait(20) == 0
            load.wait_for_ok(load.ok + 300)  # the new master serves on the same socket
        assert load.failures == [], load.failures[:10]
    finally:
        if new_pid:
            os.kill(new_pid, signal.SIGTERM)
            wait_until(lambda: not os.path.exists(f"/proc/{new_pid}") or
                       open(f"/proc/{new_pid}/stat").read().split(")")[-1].split()[0] == "Z",
                       timeout=20, what="new master exit")


def test_hung_handler_is_killed_with_its_stack_in_the_log(launch):
    from conftest import APPS
    srv = launch("--timeout", "2", "hang_app:app", workers=1, env={"PYTHONPATH": os.pathsep.join([APPS, ROOT])})
    victim = srv.children()[0]
    stuck = srv.connect(timeout=20)
    stuck.sendall(b"GET /sleep HTTP/1.1\r\nHost: t\r\n\r\n")
    srv.wait_for(r"silent for \d+s: dumping its stacks", timeout=15)
    srv.wait_for(r"hung in GET /sleep HTTP/1.1", timeout=5)
    srv.wait_for(r"Booted worker", timeout=10)
    text = "".join(srv.log)
    assert 'hang_app.py", line' in text and "sleep_forever" in text  # faulthandler's frame
    assert victim not in srv.children()
    assert stuck.recv(1024) == b""  # its connection died with it
    stuck.close()
    with srv.connect() as s:
        s.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[::2] == (200, b"ok")


def test_hung_handler_in_a_thread_is_detected_while_the_loop_still_beats(launch):
    from conftest import APPS
    srv = launch("--timeout", "2", "--threads", "2", "hang_app:app", workers=1,
                 env={"PYTHONPATH": os.pathsep.join([APPS, ROOT])})
    stuck = srv.connect(timeout=20)
    stuck.sendall(b"GET /sleep HTTP/1.1\r\nHost: t\r\n\r\n")
    srv.wait_for(r"in one request for \d+s: dumping its stacks", timeout=15)
    srv.wait_for(r"hung in GET /sleep HTTP/1.1", timeout=5)
    srv.wait_for(r"Booted worker", timeout=10)
    assert "sleep_forever" in "".join(srv.log)
    stuck.close()


def test_app_that_fails_to_import_stops_before_any_fork(docroot):
    from conftest import APPS
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([APPS, ROOT]))
    proc = subprocess.run([sys.executable, "-m", "prefork", "--bind", "127.0.0.1:0", "--workers", "4",
                           "--log-level", "debug", "broken_import:app"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 4
    assert "this module fails on import" in proc.stderr
    assert "forked worker" not in proc.stderr and "Listening" not in proc.stderr


def test_factory_failing_in_workers_forks_at_most_once_per_slot(docroot):
    from conftest import APPS
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([APPS, ROOT]))
    proc = subprocess.run([sys.executable, "-m", "prefork", "--bind", "127.0.0.1:0", "--workers", "3",
                           "--log-level", "debug", "demo_factory:broken()"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    assert "factory failed" in proc.stderr
    assert proc.stderr.count("forked worker") <= 3


def test_hup_loads_new_application_code(launch, tmp_path):
    app_dir = tmp_path / "code"
    app_dir.mkdir()
    (app_dir / "versioned.py").write_text("from prefork import App\napp = App()\n"
                                          "@app.get('/v')\ndef v(req):\n    return 'v1'\n")
    srv = launch("--chdir", str(app_dir), "versioned:app", workers=2)
    with srv.connect() as s:
        s.sendall(b"GET /v HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[::2] == (200, b"v1")
    (app_dir / "versioned.py").write_text("from prefork import App\napp = App()\n"
                                          "@app.get('/v')\ndef v(req):\n    return 'v2'\n")
    before = srv.children()
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: not set(before) & set(srv.children()), timeout=20, what="old workers gone")
    with srv.connect() as s:
        s.sendall(b"GET /v HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[::2] == (200, b"v2")


def test_crash_loop_after_boot_backs_off_exponentially(launch):
    from conftest import APPS
    srv = launch("crashy:create_app()", workers=1, env={"PYTHONPATH": os.pathsep.join([APPS, ROOT])})
    waits = [float(m.group(1)) for m in srv.wait_for(r"dying right after start; waiting ([\d.]+)s", count=4,
                                                      timeout=20)]
    assert waits == sorted(waits) and waits[-1] >= 4 * waits[0], waits  # doubling each time
    t0 = time.monotonic()
    srv.wait_for(r"dying right after start; waiting", timeout=20)
    assert time.monotonic() - t0 >= waits[-1] * 0.9  # the master really waited before forking again
    forks = sum("Booted worker" in line for line in srv.log)
    assert forks <= 7, forks  # not a tight loop: a handful of forks in several seconds
    assert srv.stop() == 0
