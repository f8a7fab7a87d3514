"""Shared fixtures: the real server as a subprocess on a free port, for both parsers."""

from __future__ import annotations

import importlib
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

def _import_twin(name: str):
    """(the Cython twin's module, "") or (None, why it does not import)."""
    try:
        return importlib.import_module(name), ""
    except ImportError as exc:  # not built
        return None, str(exc)


def require_built(module, name: str, error: str) -> None:
    """The one rule for a missing Cython twin: a failure under PREFORK_REQUIRE_EXTENSION=1
    (as in CI), else a skip that says why."""
    if module is None:
        if REQUIRE_EXTENSION:
            pytest.fail(f"PREFORK_REQUIRE_EXTENSION=1 but {name} does not import: {error}")
        pytest.skip(f"the Cython twin {name} is not built: {error}")


CPARSER, C_IMPORT_ERROR = _import_twin("prefork.http._parser")
CYTHON_BUILT = CPARSER is not None
CWSGI, C_WSGI_IMPORT_ERROR = _import_twin("prefork.apps._wsgi")
CAPP, C_APP_IMPORT_ERROR = _import_twin("prefork.apps._app")
CCONN, C_CONN_IMPORT_ERROR = _import_twin("prefork.workers._conn")


def require_cython() -> None:
    require_built(CPARSER, "prefork.http._parser", C_IMPORT_ERROR)


PARSERS = [
    pytest.param("python", id="py-parser"),
    pytest.param("cython", id="c-parser"),
]


def require_parser(name: str) -> None:
    if name == "cython":
        require_cython()


# The WSGI adapter twins (prefork/apps/wsgi.py, prefork/apps/_wsgi.pyx), chosen in a server
# by PREFORK_WSGI.
WSGI_ADAPTERS = [
    pytest.param("python", id="py-wsgi"),
    pytest.param("cython", id="c-wsgi"),
]


def require_wsgi(name: str) -> None:
    if name == "cython":
        require_built(CWSGI, "prefork.apps._wsgi", C_WSGI_IMPORT_ERROR)


# The twins of the connection's hot path (prefork/workers/connection.py's PyCore and
# prefork/workers/_conn.pyx), chosen in a server by PREFORK_CONN.
CONNECTIONS = [
    pytest.param("python", id="py-conn"),
    pytest.param("cython", id="c-conn"),
]


def connection_class(name: str):
    """The Connection class over the core `name` (a skip or failure when it is not built)."""
    from prefork.workers import connection
    if name == "cython":
        require_built(CCONN, "prefork.workers._conn", C_CONN_IMPORT_ERROR)
        return connection.CConnection
    return connection.PyConnection


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
        # Closed here, at EOF: left to the garbage collector, the pipe's ResourceWarning
        # fired in whatever test ran then (the connection fuzz counts every one as a leak).
        stream.close()
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


@pytest.fixture(params=CONNECTIONS)
def conn_class(request):
    return connection_class(request.param)


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


class Load:
    """A bounded client load on 127.0.0.1: `threads` clients sending GETs until stopped or
    `max_requests` is reached. Each request uses a new connection (`keepalive=False`), or
    a kept-alive one that is reopened and the request retried only when the server closed
    it before sending any byte of an answer (what HTTP clients do for idempotent requests,
    RFC 9112 §9.3.1). Failures: anything else that is not a complete, correct answer, as
    (monotonic time the connection was established, what happened)."""

    def __init__(self, address, path: str, expect: bytes, threads: int = 4,
                 keepalive: bool = False, max_requests: int = 100_000, max_seconds: float = 60) -> None:
        self.address = address
        self.path = path
        self.expect = expect
        self.keepalive = keepalive
        self.max_requests = max_requests
        self.deadline = time.monotonic() + max_seconds
        self.ok = 0
        self.failures: list = []
        self.refused = 0  # connect() refused: the server was not listening (not a loss)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def wait_for_ok(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.ok < count:
            assert time.monotonic() < deadline, f"only {self.ok} answers in {timeout}s; failures {self.failures[:5]}"
            assert not self.failures or self.allow_failures, f"failures: {self.failures[:5]}"
            time.sleep(0.05)

    allow_failures = False

    def _request(self, sock) -> bool:
        """One request; True when answered. Raises _Retry when a reused connection was
        closed before any answer byte."""
        conn_header = b"" if self.keepalive else b"Connection: close\r\n"
        sock.sendall(b"GET " + self.path.encode() + b" HTTP/1.1\r\nHost: load\r\n" + conn_header + b"\r\n")
        status, _, body = read_response(sock)
        return status == 200 and body == self.expect

    def _connect(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.address)
        return s

    def _run(self) -> None:
        sock = None
        reused = False
        connected_at = 0.0
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            with self._lock:
                if self.ok + len(self.failures) >= self.max_requests:
                    return
            try:
                if sock is None:
                    try:
                        sock = self._connect()
                        connected_at = time.monotonic()
                    except ConnectionRefusedError:
                        with self._lock:
                            self.refused += 1
                        time.sleep(0.01)
                        continue
                    reused = False
                try:
                    good = self._request(sock)
                except (ConnectionError, OSError) as exc:
                    if reused and isinstance(exc, ConnectionError) and "before a full head; got b''" in str(exc) \
                            or reused and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                        sock.close()
                        sock = None
                        continue  # the server closed an idle kept-alive connection: retry
                    raise
                with self._lock:
                    if good:
                        self.ok += 1
                    else:
                        self.failures.append((connected_at, "wrong answer"))
                if self.keepalive:
                    reused = True
                else:
                    sock.close()
                    sock = None
            except Exception as exc:  # noqa: BLE001 - every other outcome is a failure
                with self._lock:
                    self.failures.append((connected_at, repr(exc)))
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()
