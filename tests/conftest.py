"""Shared fixtures: the real server as a subprocess on a free port, for both parsers."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, "tests", "apps")  # applications the end-to-end tests serve
REQUIRE_EXTENSION = os.environ.get("PREFORK_REQUIRE_EXTENSION", "") not in ("", "0")

try:
    from prefork import _parser as _cparser  # noqa: F401
    CYTHON_BUILT = True
except ImportError:
    CYTHON_BUILT = False

PARSERS = [
    pytest.param("python", id="py-parser"),
    pytest.param("cython", id="c-parser"),
]


def require_parser(name: str) -> None:
    if name == "cython" and not CYTHON_BUILT:
        if REQUIRE_EXTENSION:
            pytest.fail("PREFORK_REQUIRE_EXTENSION=1 but prefork._parser did not import")
        pytest.skip("the Cython parser is not built")


class Server:
    """A running `prefork-http` master, its log lines, and helpers to talk to it."""

    LISTEN = re.compile(r"Listening at (\S+)")

    def __init__(self, args, cwd=None, env=None) -> None:
        self.args = [sys.executable, "-m", "prefork", *args]
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.proc = subprocess.Popen(self.args, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.log: list = []
        self.stdout: list = []
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.log, self.lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout, None), daemon=True).start()
        self.urls: list = []
        self.pid = self.proc.pid

    @staticmethod
    def _pump(stream, into, q) -> None:
        for line in stream:
            into.append(line)
            if q is not None:
                q.put(line)
        if q is not None:
            q.put(None)

    def wait_for(self, pattern: str, timeout: float = 10.0, count: int = 1) -> list:
        """Wait until `count` log lines (seen from now on) match `pattern`."""
        rx = re.compile(pattern)
        found = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no log line matching {pattern!r} within {timeout}s; log:\n" + "".join(self.log))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"server exited before logging {pattern!r}; log:\n" + "".join(self.log))
            m = rx.search(line)
            if m:
                found.append(m)
        return found

    def start(self, workers: int) -> "Server":
        self.wait_for(r"Serving .* with \d+ workers, parser")
        self.urls = [m.group(1) for m in (self.LISTEN.search(l) for l in self.log) if m]
        self.wait_for(r"Booted worker", count=workers)
        return self

    @property
    def address(self):
        url = self.urls[0]
        host, _, port = url.rpartition(":")
        host = host.split("//", 1)[1].strip("[]")
        return host, int(port)

    def children(self) -> list:
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []

    def connect(self, timeout: float = 5.0) -> socket.socket:
        host, port = self.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect((host, port))
        return s

    def stop(self, sig=signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture(params=PARSERS)
def parser_name(request):
    require_parser(request.param)
    return request.param


@pytest.fixture
def docroot(tmp_path):
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "sub" / "a.txt").write_text("file a\n")
    (root / "sub" / "index.html").write_text("sub index\n")
    (root / "data.bin").write_bytes(os.urandom(5000))
    (root / "empty").mkdir()
    return root


@pytest.fixture
def start_server(parser_name, docroot):
    """start_server(*extra_args, workers=1) → a started Server; stopped at teardown."""
    servers = []

    def start(*extra, workers: int = 1, root=None, env=None, app=None, cwd=None, pythonpath=()) -> Server:
        """`app` is a MODULE:APP spec; `pythonpath` folders are put first on PYTHONPATH
        (test applications live in tests/apps); `cwd` is the server's working folder."""
        args = ["--bind", "127.0.0.1:0", "--workers", str(workers), "--root", str(root or docroot),
                "--parser", parser_name, *extra]
        if app is not None:
            args.append(app)
        env = dict(env or {})
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), ROOT, os.environ.get("PYTHONPATH", "")])
        srv = Server(args, cwd=cwd, env=env)
        servers.append(srv)
        return srv.start(workers)

    yield start
    for srv in servers:
        if srv.proc.poll() is None:
            srv.stop(signal.SIGKILL)
            # The workers notice the master is gone at their next heartbeat; make sure.
        for pid in srv.children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def read_response(sock: socket.socket, head_only: bool = False, buf: bytearray | None = None):
    """Read one response from `sock`: (status, headers dict lower-case, body bytes).
    `buf` carries bytes read past this response to the next call."""
    if buf is None:
        buf = bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full head; got {bytes(buf)!r}")
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[:end + 4]
    status = int(head[0].split(" ")[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head_only or status in (204, 304) or 100 <= status < 200 else int(headers.get("content-length", 0))
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return status, headers, body


def recv_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = bytearray()
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)
