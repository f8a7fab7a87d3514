"""--reload: an edit of the application under load is picked up with no failed request;
an edit that breaks the import keeps the old workers and logs the error once."""

import os

import pytest

from conftest import ROOT, Load, Server, read_response

pytest.importorskip("watchfiles")

APP = '''
def app(environ, start_response):
    body = b"{text}"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


class Versions(Load):
    """A Load that accepts any of several bodies (old or new code) and counts each."""

    def __init__(self, address, bodies, **kw):
        super().__init__(address, "/", b"", **kw)
        self.bodies = dict.fromkeys(bodies, 0)

    def _request(self, sock):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n")
        status, _, body = read_response(sock)
        if status == 200 and body in self.bodies:
            self.bodies[body] += 1
            return True
        return False


def write_app(path, text):
    # Write whole, then rename: the watcher sees one complete new file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_reload_picks_up_an_edit_under_load_and_survives_a_broken_one(tmp_path):
    module = tmp_path / "reloadapp.py"
    write_app(module, APP.format(text="version 1"))
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT, os.environ.get("PYTHONPATH", "")])}
    srv = Server(["--bind", "127.0.0.1:0", "--workers", "2", "--reload", "--reload-dir", str(tmp_path),
                  "reloadapp:app"], cwd=tmp_path, env=env)
    try:
        srv.start(2)
        if not any("for changes to *.py (--reload)" in line for line in srv.log):
            srv.wait_for(r"Watching .* for changes to \*\.py")
        with Versions(srv.address, (b"version 1", b"version 2"), threads=3) as load1:
            load1.wait_for_ok(50)
            write_app(module, APP.format(text="version 2"))
            srv.wait_for(r"reloadapp\.py changed; reloading")
            srv.wait_for(r"HUP: reloading: 2 new workers")
            srv.wait_for(r"stopping worker \d \(pid \d+\): reload", count=2, timeout=30)
            ok = load1.ok
            load1.wait_for_ok(ok + 30)  # and on, after the old workers left
        # Not one request failed across the reload; both versions answered.
        assert load1.failures == [], load1.failures[:3]
        assert load1.bodies[b"version 1"] >= 50 and load1.bodies[b"version 2"] >= 1, load1.bodies
        with Load(srv.address, "/", b"version 2", threads=3) as load2:
            load2.wait_for_ok(50)
        assert load2.failures == []
        # A broken edit: the error once, the version-2 workers serve on.
        write_app(module, "def app(:\n")
        srv.wait_for(r"HUP: not reloading, the old workers serve on: .*reloadapp", timeout=30)
        os.utime(module)  # a second change to the same broken file: no second error line
        srv.wait_for(r"reloadapp\.py changed; reloading", timeout=20)
        with Load(srv.address, "/", b"version 2", threads=3) as load3:
            load3.wait_for_ok(50)
        assert load3.failures == []
        assert sum("not reloading" in line for line in srv.log) == 1, "".join(srv.log)
        children = srv.children()
        assert len(children) == 3  # 2 workers and the watcher
        write_app(module, APP.format(text="version 3"))
        srv.wait_for(r"HUP: reloading: 2 new workers", timeout=30)
        srv.wait_for(r"worker \d \(pid \d+\) exited with code 0", count=2, timeout=30)
        with Load(srv.address, "/", b"version 3", threads=2) as load4:
            load4.wait_for_ok(20)
    finally:
        srv.stop()
    assert srv.proc.returncode == 0
