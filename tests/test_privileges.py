"""--user/--group/--socket-mode/--allow-root, as root (CI runs as root; skipped otherwise)."""

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

import pytest

from conftest import ROOT, Server, read_response

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
NOBODY = pwd.getpwnam("nobody")


def ids(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return [int(v) for v in fields["Uid"].split()], [int(v) for v in fields["Gid"].split()], fields["Groups"].split()


@pytest.fixture
def public_root():
    # tmp_path lies under a root-only folder; nobody must be able to reach this one.
    folder = tempfile.mkdtemp(prefix="prefork-priv-")
    os.chmod(folder, 0o755)
    with open(os.path.join(folder, "public.txt"), "w") as f:
        f.write("for everyone\n")
    os.chmod(os.path.join(folder, "public.txt"), 0o644)
    with open(os.path.join(folder, "secret.txt"), "w") as f:
        f.write("root only\n")
    os.chmod(os.path.join(folder, "secret.txt"), 0o600)
    yield folder
    shutil.rmtree(folder)


def get(srv, path):
    with srv.connect() as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return read_response(s)


def test_workers_run_as_the_user_and_read_files_as_that_user(public_root):
    sock = os.path.join(public_root, "web.sock")
    srv = Server(["--bind", "127.0.0.1:0", "--bind", f"unix:{sock}", "--workers", "2", "--root", public_root,
                  "--user", "nobody", "--socket-mode", "660"])
    try:
        srv.start(2)
        assert ids(srv.pid)[0] == [0, 0, 0, 0]  # the master stays root
        workers = srv.children()
        assert len(workers) == 2
        for pid in workers:
            uids, gids, groups = ids(pid)
            assert uids == [NOBODY.pw_uid] * 4
            assert gids == [NOBODY.pw_gid] * 4
            assert "0" not in groups  # root's supplementary groups are gone
        status, _, body = get(srv, "/public.txt")
        assert (status, body) == (200, b"for everyone\n")
        assert get(srv, "/secret.txt")[0] in (403, 404)
        st = os.stat(sock)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert (st.st_uid, st.st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    finally:
        srv.stop()
    assert srv.proc.returncode == 0


def test_without_user_the_same_file_is_served_as_root(public_root):
    """The control for the test above: the 403/404 comes from the user, not the file."""
    srv = Server(["--bind", "127.0.0.1:0", "--workers", "1", "--root", public_root])
    try:
        srv.start(1)
        assert get(srv, "/secret.txt")[0] == 200
        assert any("workers run as root" in line and "--user" in line for line in srv.log)
    finally:
        srv.stop()


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "prefork", *args], env=env, capture_output=True,
                          text=True, timeout=20)


def test_root_workers_need_allow_root(public_root):
    sock = os.path.join(public_root, "web.sock")
    r = run_cli("--bind", f"unix:{sock}", "--root", public_root, "--user", "root")
    assert r.returncode == 2
    assert r.stderr.startswith("prefork-http: error: --user root: workers would run as root")
    assert "--allow-root" in r.stderr and r.stderr.count("\n") == 1
    assert not os.path.exists(sock)
    r = run_cli("--root", public_root, "--user", "no-such-user-here")
    assert r.returncode == 2 and "--user 'no-such-user-here': no such user" in r.stderr
    srv = Server(["--bind", "127.0.0.1:0", "--workers", "1", "--root", public_root, "--user", "root",
                  "--allow-root"])
    try:
        srv.start(1)
        assert ids(srv.children()[0])[0][0] == 0
        assert not any("workers run as root" in line for line in srv.log)
    finally:
        srv.stop(signal.SIGTERM)
