"""The config file, PREFORK_* variables, WEB_CONCURRENCY, their precedence, --print-config,
one-line errors naming the file and key, HUP re-reading the file, --version."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, Server, read_response


def run_cli(*args, env=None, cwd=None, timeout=30):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_") and k != "WEB_CONCURRENCY"}
    full_env["PYTHONPATH"] = ROOT
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "prefork", *args], env=full_env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def start(args, workers, env=None, cwd=None):
    clean = {k: "" for k in os.environ if k.startswith("PREFORK_") and k != "PREFORK_REQUIRE_EXTENSION"}
    srv = Server(args, cwd=cwd, env={**clean, **(env or {})})
    try:
        return srv.start(workers)
    except BaseException:
        srv.stop(signal.SIGKILL)
        raise


@pytest.fixture
def servers():
    started = []
    yield started
    for srv in started:
        srv.stop()


def wait_children(srv, count, timeout=20.0):
    deadline = time.monotonic() + timeout
    while len(srv.children()) != count:
        assert time.monotonic() < deadline, f"{len(srv.children())} workers, not {count}; log:\n" + "".join(srv.log)
        time.sleep(0.05)


def test_file_then_env_then_command_line_set_the_worker_count(tmp_path, servers):
    conf = tmp_path / "web.toml"
    conf.write_text(f'workers = 3\nbind = "127.0.0.1:0"\nroot = "{tmp_path}"\n')
    srv = start(["--config", str(conf)], 3)
    servers.append(srv)
    wait_children(srv, 3)
    assert any("Configuration read from " + str(conf) in line for line in srv.log)
    srv = start(["--config", str(conf)], 2, env={"PREFORK_WORKERS": "2", "WEB_CONCURRENCY": "4"})
    servers.append(srv)
    wait_children(srv, 2)
    srv = start(["--config", str(conf), "--workers", "1"], 1, env={"PREFORK_WORKERS": "2"})
    servers.append(srv)
    wait_children(srv, 1)


def test_web_concurrency_when_nothing_else_sets_workers(tmp_path, servers):
    srv = start(["--bind", "127.0.0.1:0", "--root", str(tmp_path)], 2, env={"WEB_CONCURRENCY": "2"})
    servers.append(srv)
    wait_children(srv, 2)


def test_header_timeout_from_the_file_and_a_bool_from_the_environment(tmp_path, servers):
    conf = tmp_path / "web.toml"
    conf.write_text('header-timeout = 0.5\nworkers = 1\nbind = ["127.0.0.1:0"]\n')
    (tmp_path / "sub").mkdir()
    srv = start(["--config", str(conf), "--root", str(tmp_path)], 1, env={"PREFORK_LISTING": "yes"})
    servers.append(srv)
    with srv.connect(timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(s)
        assert status == 200 and b"sub/" in body  # --listing from PREFORK_LISTING
        started = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        status, _, _ = read_response(s)
        assert status == 408
        assert time.monotonic() - started < 8  # the default would be 20 s


def test_print_config_names_every_source(tmp_path):
    conf = tmp_path / "web.toml"
    conf.write_text('workers = 3\nkeepalive = 2.5\naccess-log = "-"\n')
    r = run_cli("--config", str(conf), "--print-config", "--timeout", "9",
                env={"PREFORK_KEEPALIVE": "7", "WEB_CONCURRENCY": "5", "PREFORK_BIND": "127.0.0.1:9,unix:/tmp/x.sock"})
    assert r.returncode == 0, r.stderr
    lines = {line.split(" = ")[0]: line for line in r.stdout.splitlines() if " = " in line and not line.startswith("#")}
    assert lines["workers"].startswith("workers = 3 ") and lines["workers"].endswith(f"# file {conf}")
    assert lines["keepalive"].startswith("keepalive = 7.0 ") and lines["keepalive"].endswith("# env PREFORK_KEEPALIVE")
    assert lines["timeout"].startswith("timeout = 9.0 ") and lines["timeout"].endswith("# command line")
    assert lines["access-log"].startswith('access-log = "-"')
    assert lines["bind"].startswith('bind = ["127.0.0.1:9", "unix:/tmp/x.sock"]')
    assert lines["backlog"].endswith("# default")
    assert not os.path.exists("/tmp/x.sock")
    r = run_cli("--print-config", env={"WEB_CONCURRENCY": "5"})
    assert any(line.startswith("workers = 5 ") and line.endswith("# WEB_CONCURRENCY") for line in r.stdout.splitlines())


@pytest.mark.parametrize("body, key, why", [
    ("wrokers = 2\n", "wrokers", "unknown option (did you mean 'workers'?)"),
    ('workers = "two"\n', "workers", "expected a whole number"),
    ("workers = 0\n", "workers", "'0' must be at least 1"),
    ("listing = 1\n", "listing", "expected true or false"),
    ('log-level = "loud"\n', "log-level", "is not one of"),
    ('root = "/no/such/folder"\n', "root", "is not a directory"),
    ("workers = [\n", None, "not valid TOML"),
])
def test_a_bad_file_is_one_line_naming_file_and_key_before_binding(tmp_path, body, key, why):
    sock = tmp_path / "web.sock"
    conf = tmp_path / "web.toml"
    conf.write_text(f'bind = "unix:{sock}"\n' + body)
    r = run_cli("--config", str(conf), timeout=15)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1, r.stderr
    expected = f"{conf}: {key}: " if key else f"{conf}: "
    assert r.stderr.startswith("prefork-http: error: " + expected), r.stderr
    assert why in r.stderr
    assert not sock.exists()  # nothing was bound


def test_a_bad_environment_variable_is_one_line(tmp_path):
    r = run_cli("--root", str(tmp_path), env={"PREFORK_MAX_BODY_SIZE": "lots"})
    assert r.returncode == 2
    assert r.stderr.startswith("prefork-http: error: PREFORK_MAX_BODY_SIZE: 'lots' is not a size")
    assert r.stderr.count("\n") == 1


def test_wsgi_adapter_choice_is_checked_before_binding(tmp_path):
    sock = tmp_path / "web.sock"
    r = run_cli("--bind", f"unix:{sock}", "--root", str(tmp_path), env={"PREFORK_WSGI": "fast"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("prefork-http: error: PREFORK_WSGI: ") and "'fast'" in r.stderr
    r = run_cli("--bind", f"unix:{sock}", "--wsgi", "fast")
    assert r.returncode == 2 and "--wsgi" in r.stderr and not sock.exists()


def test_pyproject_table_is_read_and_said(tmp_path, servers):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "site"\n\n[tool.prefork-http]\nworkers = 2\n'
                                             'bind = "127.0.0.1:0"\n')
    srv = start([], 2, cwd=tmp_path)
    servers.append(srv)
    wait_children(srv, 2)
    assert any(f"Configuration read from {tmp_path / 'pyproject.toml'}" in line for line in srv.log)


def test_hup_rereads_the_file_workers_change_and_bind_is_ignored(tmp_path, servers):
    conf = tmp_path / "web.toml"
    conf.write_text('workers = 1\nbind = "127.0.0.1:0"\n')
    srv = start(["--config", str(conf), "--root", str(tmp_path)], 1)
    servers.append(srv)
    conf.write_text('workers = 3\nbind = "127.0.0.1:1"\nkeepalive = 1.5\n')
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_for(r"HUP: bind changed \(to 127.0.0.1:1\), but cannot change on reload .*ignored")
    srv.wait_for(r"HUP: configuration changed: workers, keepalive")
    wait_children(srv, 3)
    # A broken file on HUP: one error, the running configuration stays.
    conf.write_text('workers = "many"\n')
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_for(rf"HUP: configuration not re-read, the current one stays: {conf}: workers: expected a whole number")
    time.sleep(1.0)  # the rolling reload of 3 workers; the count must stay 3
    wait_children(srv, 3)
    with srv.connect() as s:  # still on the first address
        s.sendall(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 404


def test_version_names_parser_and_python():
    r = run_cli("--version")
    assert r.returncode == 0
    import platform

    assert r.stdout.startswith("prefork-http ")
    assert f"{platform.python_implementation()} {platform.python_version()}" in r.stdout
    assert "(parser cython," in r.stdout or "(parser python," in r.stdout
    assert " wsgi cython," in r.stdout or " wsgi python," in r.stdout
    assert " connection cython," in r.stdout or " connection python," in r.stdout
