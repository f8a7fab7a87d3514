"""The whole benchmark suite in one command; regenerates bench/RESULTS.md and bench/results.png.

    python bench/run_all.py                  # 10 s per run (about 25 minutes)
    python bench/run_all.py --quick          # 2 s per run: proves the pipeline, measures little
    python bench/run_all.py --profile raw    # also py-spy the worker (raw or speedscope)
    python bench/run_all.py --only hello static-1k --servers prefork-app uvicorn
    python bench/run_all.py --only asgi      # groups: app, asgi, static, issue12, issue13
    python bench/run_all.py --only hello-pipelined --record-baseline bench/out/baseline.json
    python bench/run_all.py --baseline bench/out/baseline.json    # the pipelined target vs that run
    python bench/run_all.py --only hello --rounds 3    # medians of 3 interleaved rounds

Workloads: hello (GET /, 13 bytes), 10 pipelined hellos per write (wrk + pipeline.lua), JSON
echo (POST /echo, a 0.4 KiB document parsed and serialized back), static files of 1 KiB,
64 KiB and 10 MiB; each with keep-alive and with `Connection: close` (wrk -H; the pipelined
row keep-alive only). ASGI (issue 12): the raw ASGI hello (the hello workload), Starlette
hello, FastAPI JSON, Starlette FileResponse 1 KiB and a WebSocket echo (messages/s, 32
clients, bench/ws_echo.py), keep-alive. Servers: prefork-http with the Cython and the pure
parser (App, WSGI callable, ASGI, --root for files; App with --threads 4 and with
--access-log), bjoern, granian (WSGI, ASGI, static files), uWSGI (--http11-socket),
gunicorn sync, gthread and asgi, uvicorn with httptools and uvloop, nginx and the stdlib's
ThreadingHTTPServer for files. The applications are bench/hello.py and bench/asgi_apps.py.
Every answer is checked once before its runs; a server that does not start or answers
wrongly is left out with the reason (RESULTS.md lists it) and the run goes on.

One worker each, the server pinned to core 0 and wrk (`-t1 -c32`) or the WebSocket client to
core 1; the client's own CPU is measured, and a row where it used its whole core is marked
client-bound. The scaling
rows (prefork-http, 1 then 2 workers) cannot keep them apart on a 2-core machine: server
and wrk (-t2) share `taskset -c 0,1`, and RESULTS.md says what that measures. Memory: the
peak of the summed RSS (and PSS) of master and workers, sampled from /proc every 0.25 s,
and each process's own peak (VmHWM). Also runs bench/parser.py (the parser
micro-benchmark) when it is present. One run; ratios are taken between figures of this
run only, except the pipelined target, which compares with a baseline run (--baseline or
--pipelined-baseline). Talks to 127.0.0.1 only. Needs wrk and taskset; nginx, the peers,
py-spy and matplotlib for their parts (left out with a note when missing): bench/setup.sh
installs them all.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import shutil
import statistics
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (NGINX_CONF, NGINX_TLS_CONF, BENCH, BIN, PY, ROOT, MemorySampler, ServerProc,  # noqa: E402
                    descendants, free_port, machine, make_certificate, missing_tools, start_prefork, start_process,
                    tool, tree_cpu_seconds, wrk)

sys.path.insert(0, ROOT)

SERVER_CPU, WRK_CPU, BOTH_CPUS = "0", "1", "0,1"
CONNECTIONS = 32
OUT = os.path.join(BENCH, "out")

ECHO_DOC = {"order": 1234567, "customer": {"id": 42, "name": "Ada Lovelace", "email": "ada@example.org"},
            "lines": [{"sku": f"SKU-{i:04d}", "qty": i, "price": 9.99 + i} for i in range(6)],
            "note": "deliver after 6 pm", "gift": False}
ECHO_BODY = json.dumps(ECHO_DOC)

# name → (label, method, path, expected body or None for a file, size for files)
WORKLOADS = {
    "hello": ("hello, GET / (13 B)", "GET", "/", b"Hello, World!", 0),
    "hello-pipelined": ("hello, 10 pipelined requests per write", "GET", "/", b"Hello, World!", 0),
    "echo": ("JSON echo, POST /echo (%d B)" % len(ECHO_BODY), "POST", "/echo", None, 0),
    "starlette-hello": ("Starlette hello, GET /starlette (13 B)", "GET", "/starlette", b"Hello, World!", 0),
    "fastapi-json": ("FastAPI JSON, GET /fastapi", "GET", "/fastapi", None, 0),
    "starlette-file-1k": ("Starlette FileResponse 1 KiB, GET /file", "GET", "/file", None, 0),
    "ws-echo": ("WebSocket echo, 32 B messages, %d clients (messages/s)" % CONNECTIONS, "WS", "/ws", None, 0),
    "static-1k": ("static 1 KiB", "GET", "/1024.bin", None, 1024),
    "static-64k": ("static 64 KiB", "GET", "/65536.bin", None, 64 * 1024),
    "static-10m": ("static 10 MiB", "GET", "/10485760.bin", None, 10 * 1024 * 1024),
    # issue 14: over TLS, one self-signed ECDSA P-256 certificate for every server;
    # `close` is a new connection, hence a full handshake, per request (handshakes/s)
    "tls-hello": ("TLS hello, GET / (13 B); close = a handshake per request", "GET", "/", b"Hello, World!", 0),
    "tls-static-64k": ("TLS static 64 KiB", "GET", "/65536.bin", None, 64 * 1024),
}
MODES = {"keep-alive": [], "close": ["-H", "Connection: close"]}
# workloads run with keep-alive only (the rest: keep-alive and close)
KEEP_ALIVE_ONLY = {"hello-pipelined", "starlette-hello", "fastapi-json", "starlette-file-1k", "ws-echo"}
PIPELINE_DEPTH = 10
FASTAPI_ANSWER = {"message": "Hello, World!"}
# the classic wrk pipeline script: PIPELINE_DEPTH requests in one write
PIPELINE_LUA = """\
init = function(args)
   local r = {}
   for i = 1, %d do r[i] = wrk.format() end
   req = table.concat(r)
end
request = function() return req end
""" % PIPELINE_DEPTH

STDLIB_SERVER = """\
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive (the default HTTP/1.0 closes every time)
    disable_nagle_algorithm = True  # head and body are two writes: without it, 40 ms delayed ACKs
    def log_message(self, *args): pass
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024       # the default 5 refuses wrk's 32 connections under load
Server(("127.0.0.1", int(sys.argv[1])), functools.partial(Handler, directory=sys.argv[2])).serve_forever()
"""



# ---------------------------------------------------------------------------- servers

class Setup:
    """One server configuration: how to start it and which workloads it serves.

    `apps` maps a workload to the application the server must be started with for it
    (ctx["app"]; the ASGI servers serve the raw hello, Starlette and FastAPI apps): the
    server is started once per application. `prefix` goes before the path of the static
    workloads (granian serves files under a route of its own). `check` returns why the
    setup cannot run here ("" when it can)."""

    def __init__(self, name: str, workloads, start, needs=(), parser: Optional[str] = None,
                 family: str = "", apps: Optional[Dict[str, str]] = None, prefix: str = "",
                 check=None) -> None:
        self.name, self.workloads, self._start, self.needs = name, tuple(workloads), start, needs
        self.parser, self.family = parser, family or name
        self.apps, self.prefix, self.check = apps or {}, prefix, check

    def why_not(self, cython: bool) -> str:
        if self.parser == "cython" and not cython:
            return "the Cython parser (prefork.http._parser) does not import on this branch/build"
        for need in self.needs:
            if not (os.path.exists(need) if os.sep in need else shutil.which(need)):
                return f"{os.path.basename(need)} is not installed"
        return self.check() if self.check else ""

    def start(self, ctx: dict, cpu: str, workers: int = 1) -> ServerProc:
        return self._start(ctx, cpu, workers)


def _prefork(parser: str, *args: str):
    # The "python" rows are the pure-Python stack: the parser and the WSGI adapter twins
    # (PREFORK_WSGI, which a build without the WSGI twin ignores).
    def start(ctx, cpu, workers):
        app_args = [a.format(**ctx) for a in args]
        return start_prefork(["--parser", parser, *app_args], cpu, workers=workers,
                             env={"PREFORK_WSGI": "python" if parser == "python" else "auto"})
    return start


def _gunicorn(worker_class: str):
    def start(ctx, cpu, workers):
        port = free_port()
        extra = {"gthread": ["--threads", "4"], "asgi": ["--asgi-loop", "uvloop"]}.get(worker_class, [])
        return start_process([os.path.join(BIN, "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                              "-k", worker_class, *extra, "--log-level", "warning", "--chdir", BENCH,
                              ctx.get("app") or "hello:wsgi"], port, cpu, env=ctx["env"], probe=ctx["probe"])
    return start


def _uvicorn(ctx, cpu, workers, tls=False):
    port = free_port()
    extra = ["--ssl-certfile", ctx["cert"], "--ssl-keyfile", ctx["key"]] if tls else []
    return start_process([os.path.join(BIN, "uvicorn"), "--host", "127.0.0.1", "--port", str(port),
                          "--workers", str(workers), "--http", "httptools", "--loop", "uvloop", "--ws", "websockets",
                          "--no-access-log", "--log-level", "warning", "--app-dir", BENCH, *extra,
                          ctx.get("app") or "hello:asgi"], port, cpu, env=ctx["env"], probe=ctx["probe"], tls=tls)


def _uvicorn_tls(ctx, cpu, workers):
    return _uvicorn(ctx, cpu, workers, tls=True)


def _granian(interface: str, static: bool = False, tls: bool = False):
    def start(ctx, cpu, workers):
        port = free_port()
        extra = ["--loop", "uvloop"] if interface == "asgi" else []
        if static:
            extra += ["--static-path-route", "/static", "--static-path-mount", ctx["www"]]
        if tls:
            extra += ["--ssl-certificate", ctx["cert"], "--ssl-keyfile", ctx["key"], "--ssl-protocol-min", "tls1.2"]
        return start_process([os.path.join(BIN, "granian"), "--interface", interface, "--host", "127.0.0.1",
                              "--port", str(port), "--workers", str(workers), "--runtime-threads", "1", *extra,
                              "--no-access-log", "--log-level", "warning", "--working-dir", BENCH,
                              ctx.get("app") or ("hello:asgi" if interface == "asgi" else "hello:wsgi")],
                             port, cpu, env=ctx["env"], probe=ctx["probe"], tls=tls)
    return start


BJOERN_SERVER = """\
import sys, bjoern, hello
bjoern.run(hello.wsgi, "127.0.0.1", int(sys.argv[1]))
"""


def _bjoern(ctx, cpu, workers):
    # bjoern has no workers of its own: one process, the WSGI callable of bench/hello.py
    port = free_port()
    return start_process([PY, "-c", BJOERN_SERVER, str(port)], port, cpu, env=ctx["env"], probe=ctx["probe"])


def _uwsgi(ctx, cpu, workers):
    # --http11-socket: uWSGI's own HTTP/1.1 (keep-alive) parser in the worker, no router
    # process; --die-on-term: TERM stops it (uWSGI's master reloads on TERM by default)
    port = free_port()
    return start_process([os.path.join(BIN, "uwsgi"), "--http11-socket", f"127.0.0.1:{port}", "--master",
                          "--die-on-term", "--need-app", "--processes", str(workers), "--disable-logging",
                          "--chdir", BENCH, "--wsgi-file", os.path.join(BENCH, "hello.py"), "--callable", "wsgi"],
                         port, cpu, env=ctx["env"], probe=ctx["probe"])


def _nginx(ctx, cpu, workers):
    port = free_port()
    conf = os.path.join(ctx["tmp"], "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(tmp=ctx["tmp"], www=ctx["www"], port=port).replace(
            "worker_processes 1;", f"worker_processes {workers};"))
    return start_process(["nginx", "-c", conf, "-p", ctx["tmp"]], port, cpu, probe="/1024.bin")


def _nginx_tls(ctx, cpu, workers):
    port = free_port()
    conf = os.path.join(ctx["tmp"], "nginx-tls.conf")
    with open(conf, "w") as f:
        f.write(NGINX_TLS_CONF.format(tmp=ctx["tmp"], www=ctx["www"], port=port, cert=ctx["cert"], key=ctx["key"])
                .replace("worker_processes 1;", f"worker_processes {workers};"))
    return start_process(["nginx", "-c", conf, "-p", ctx["tmp"]], port, cpu, probe="/1024.bin", tls=True)


def _tls_check() -> str:
    return "" if shutil.which("openssl") else "the openssl command (to make the certificate) is not installed"


def _stdlib(ctx, cpu, workers):
    port = free_port()
    return start_process([PY, "-c", STDLIB_SERVER, str(port), ctx["www"]], port, cpu, probe="/1024.bin")


def _importable(module: str, hint: str):
    def check():
        import importlib.util
        return "" if importlib.util.find_spec(module) else f"{module} is not installed ({hint})"
    return check


def _gunicorn_asgi_check() -> str:
    # gunicorn's own ASGI worker (-k asgi) came with gunicorn 24
    try:
        from gunicorn.workers import SUPPORTED_WORKERS
    except ImportError:
        return "gunicorn is not installed"
    return "" if "asgi" in SUPPORTED_WORKERS else "this gunicorn has no asgi worker class (it needs gunicorn >= 24)"


APP_WORKLOADS = ("hello", "echo")
PIPELINED = APP_WORKLOADS + ("hello-pipelined",)
STATIC_WORKLOADS = ("static-1k", "static-64k", "static-10m")
FILE_WORKLOADS = STATIC_WORKLOADS + ("tls-static-64k",)  # granian serves these under its /static prefix
TLS_ARGS = ("--certfile", "{cert}", "--keyfile", "{key}")
ASGI_APPS = {"hello": "hello:asgi", "echo": "hello:asgi", "starlette-hello": "asgi_apps:starlette",
             "fastapi-json": "asgi_apps:fastapi", "starlette-file-1k": "asgi_apps:starlette",
             "ws-echo": "asgi_apps:starlette"}
ASGI_WORKLOADS = tuple(ASGI_APPS)
ASGI_NEEDS = _importable("starlette", "pip install -e '.[bench]'")
GUNICORN, UVICORN, GRANIAN, UWSGI = (os.path.join(BIN, n) for n in ("gunicorn", "uvicorn", "granian", "uwsgi"))
SETUPS = [
    Setup("prefork-app cython", PIPELINED, _prefork("cython", "--chdir", "{bench}", "hello:app"),
          parser="cython", family="prefork-app"),
    Setup("prefork-app python", PIPELINED, _prefork("python", "--chdir", "{bench}", "hello:app"),
          parser="python", family="prefork-app"),
    Setup("prefork-wsgi cython", PIPELINED, _prefork("cython", "--chdir", "{bench}", "hello:wsgi"),
          parser="cython", family="prefork-wsgi"),
    Setup("prefork-wsgi python", PIPELINED, _prefork("python", "--chdir", "{bench}", "hello:wsgi"),
          parser="python", family="prefork-wsgi"),
    # issue 13: the thread pool and the access log, against the plain prefork-app rows above
    Setup("prefork-app cython --threads 4", ("hello",), _prefork("cython", "--threads", "4", "--chdir", "{bench}",
                                                                 "hello:app"), parser="cython", family="prefork-app"),
    Setup("prefork-app cython --access-log", ("hello",),
          _prefork("cython", "--access-log", "{tmp}/access.log", "--chdir", "{bench}", "hello:app"),
          parser="cython", family="prefork-app"),
    Setup("prefork-asgi cython", ASGI_WORKLOADS,
          _prefork("cython", "--interface", "asgi", "--loop", "auto", "--chdir", "{bench}", "{app}"),
          parser="cython", family="prefork-asgi", apps=ASGI_APPS, check=ASGI_NEEDS),
    Setup("prefork-asgi python", ASGI_WORKLOADS,
          _prefork("python", "--interface", "asgi", "--loop", "auto", "--chdir", "{bench}", "{app}"),
          parser="python", family="prefork-asgi", apps=ASGI_APPS, check=ASGI_NEEDS),
    Setup("bjoern", PIPELINED, _bjoern, check=_importable("bjoern", "needs libev-dev to build: bench/setup.sh")),
    Setup("granian wsgi", PIPELINED, _granian("wsgi"), needs=(GRANIAN,)),
    Setup("uwsgi", APP_WORKLOADS, _uwsgi, needs=(UWSGI,)),
    Setup("gunicorn sync", APP_WORKLOADS, _gunicorn("sync"), needs=(GUNICORN,)),
    Setup("gunicorn gthread", APP_WORKLOADS, _gunicorn("gthread"), needs=(GUNICORN,)),
    Setup("uvicorn httptools", ASGI_WORKLOADS, _uvicorn, needs=(UVICORN,), apps=ASGI_APPS, check=ASGI_NEEDS),
    Setup("granian asgi", ASGI_WORKLOADS, _granian("asgi"), needs=(GRANIAN,), apps=ASGI_APPS, check=ASGI_NEEDS),
    Setup("gunicorn asgi", ASGI_WORKLOADS, _gunicorn("asgi"), needs=(GUNICORN,), apps=ASGI_APPS,
          check=lambda: _gunicorn_asgi_check() or ASGI_NEEDS()),
    Setup("prefork-static cython", STATIC_WORKLOADS, _prefork("cython", "--root", "{www}"),
          parser="cython", family="prefork-static"),
    Setup("prefork-static python", STATIC_WORKLOADS, _prefork("python", "--root", "{www}"),
          parser="python", family="prefork-static"),
    Setup("nginx", STATIC_WORKLOADS, _nginx, needs=("nginx",)),
    Setup("granian static", STATIC_WORKLOADS, _granian("wsgi", static=True), needs=(GRANIAN,), prefix="/static"),
    Setup("http.server", STATIC_WORKLOADS, _stdlib),
    # issue 14: TLS
    Setup("prefork-app tls cython", ("tls-hello",), _prefork("cython", *TLS_ARGS, "--chdir", "{bench}", "hello:app"),
          parser="cython", family="prefork-app tls", check=_tls_check),
    Setup("prefork-asgi tls cython", ("tls-hello",),
          _prefork("cython", *TLS_ARGS, "--interface", "asgi", "--loop", "auto", "--chdir", "{bench}", "hello:asgi"),
          parser="cython", family="prefork-asgi tls", check=_tls_check),
    Setup("prefork-static tls cython", ("tls-static-64k",), _prefork("cython", *TLS_ARGS, "--root", "{www}"),
          parser="cython", family="prefork-static tls", check=_tls_check),
    Setup("nginx tls", ("tls-hello", "tls-static-64k"), _nginx_tls, needs=("nginx",), check=_tls_check),
    Setup("uvicorn tls", ("tls-hello",), _uvicorn_tls, needs=(UVICORN,), check=_tls_check),
    Setup("granian wsgi tls", ("tls-hello",), _granian("wsgi", tls=True), needs=(GRANIAN,), check=_tls_check),
    Setup("granian static tls", ("tls-static-64k",), _granian("wsgi", static=True, tls=True), needs=(GRANIAN,),
          prefix="/static", check=_tls_check),
]
# the "vs" columns of each table: the peers, by kind of workload (rows show every server)
APP_PEERS = ("gunicorn gthread", "uvicorn httptools", "granian wsgi", "bjoern", "granian asgi")
ASGI_PEERS = ("uvicorn httptools", "granian asgi", "gunicorn asgi")
STATIC_PEERS = ("nginx", "granian static", "http.server")
PEERS = {"hello": APP_PEERS, "hello-pipelined": APP_PEERS, "echo": APP_PEERS,
         **{w: ASGI_PEERS for w in ASGI_WORKLOADS if w not in APP_WORKLOADS},
         **{w: STATIC_PEERS for w in STATIC_WORKLOADS},
         "tls-hello": ("uvicorn tls", "granian wsgi tls", "nginx tls"),
         "tls-static-64k": ("nginx tls", "granian static tls")}


# --only accepts these names for sets of workloads
GROUPS = {"app": list(PIPELINED), "asgi": list(ASGI_WORKLOADS), "static": list(STATIC_WORKLOADS),
          "issue12": list(ASGI_WORKLOADS), "issue13": ["hello", "hello-pipelined", *STATIC_WORKLOADS],
          "tls": ["tls-hello", "tls-static-64k"], "issue14": ["tls-hello", "tls-static-64k"]}


# ---------------------------------------------------------------------------- one run

def check_answer(url: str, workload: str, files: Dict[str, bytes], prefix: str = "") -> None:
    """One request through http.client (or the `websockets` client, or 10 pipelined
    requests on a raw socket): the server must give the right answer before its speed
    means anything."""
    _, method, path, expected, _ = WORKLOADS[workload]
    if workload == "ws-echo":
        return check_ws(url.replace("http://", "ws://") + path)
    if workload == "hello-pipelined":
        return check_pipelined(url, path, expected)
    if workload in FILE_WORKLOADS:
        path = prefix + path
    host, port = url.split("//", 1)[1].split(":")
    if url.startswith("https://"):
        import ssl

        conn = http.client.HTTPSConnection(host, int(port), timeout=10, context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        body = ECHO_BODY.encode() if method == "POST" else None
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        resp = conn.getresponse()
        got = resp.read()
    finally:
        conn.close()
    if workload == "echo":
        ok = resp.status == 200 and json.loads(got) == {"echo": ECHO_DOC}
    elif workload == "fastapi-json":
        ok = resp.status == 200 and json.loads(got) == FASTAPI_ANSWER
    elif workload == "starlette-file-1k":
        ok = resp.status == 200 and got == files["/1024.bin"]
    elif expected is not None:
        ok = resp.status == 200 and got == expected
    else:
        ok = resp.status == 200 and got == files[WORKLOADS[workload][2]]
    if not ok:
        raise RuntimeError(f"{url}{path}: wrong answer {resp.status} {got[:80]!r}")


def check_pipelined(url: str, path: str, expected: bytes) -> None:
    """PIPELINE_DEPTH requests in one write; all their answers must come back, in order."""
    host, port = url.split("//", 1)[1].split(":")
    one = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(one * PIPELINE_DEPTH)
        s.settimeout(5)
        got = b""
        try:
            while got.count(expected) < PIPELINE_DEPTH:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except socket.timeout:  # e.g. a server that answers only the first request of a read
            pass
    if got.count(b" 200 ") != PIPELINE_DEPTH or got.count(expected) != PIPELINE_DEPTH:
        raise RuntimeError(f"{url}{path}: {PIPELINE_DEPTH} pipelined requests got {got.count(b' 200 ')} "
                           f"200 answers: {got[:160]!r}")


def check_ws(url: str) -> None:
    """A text and a binary message through the `websockets` library's client."""
    from websockets.sync.client import connect
    with connect(url, open_timeout=10, close_timeout=5) as ws:
        for message in ("check", b"\x00\x01check"):
            ws.send(message)
            got = ws.recv(timeout=10)
            if got != message:
                raise RuntimeError(f"{url}: sent {message!r}, the echo was {got!r}")


def ws_echo(url: str, cpu: str, duration: float, connections: int) -> dict:
    """bench/ws_echo.py pinned like wrk; the same fields as common.wrk (rps is messages/s;
    client_cpu is the client's own CPU per second of its measured window)."""
    cmd = ["taskset", "-c", cpu, PY, os.path.join(BENCH, "ws_echo.py"), url, "--connections", str(connections),
           "--duration", str(duration)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"ws_echo.py printed no result (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"rps": out["mps"], "errors": "; ".join(out["errors"]) if out["n_errors"] else "", "non2xx": 0,
            "latency": "", "p50": None, "p99": None, "client_cpu": out["client_cpu"],
            "cmd": ["taskset", "-c", cpu, "python", "bench/ws_echo.py", *cmd[5:]]}


def run_setup(setup: Setup, workloads, ctx: dict, args, results: list, memory: dict, commands: list) -> None:
    # one server per application: the ASGI servers serve the raw, Starlette and FastAPI apps
    groups: Dict[str, list] = {}
    for workload in workloads:
        groups.setdefault(setup.apps.get(workload, ""), []).append(workload)
    for app, group in groups.items():
        first = group[0]
        probe = "/starlette" if first == "ws-echo" else setup.prefix * (first in FILE_WORKLOADS) + WORKLOADS[first][2]
        try:
            server = setup.start(dict(ctx, app=app, probe=probe), SERVER_CPU)
        except RuntimeError as exc:
            _leave_out(ctx, f"{setup.name} ({', '.join(group)})", f"did not start: {str(exc).strip()[-300:]}")
            continue
        commands.append(("server", setup.name + (f" ({app})" if app else ""), " ".join(server.cmd)))
        try:
            with MemorySampler(server.pid) as mem:
                for workload in group:
                    run_workload(setup, server, workload, ctx, args, results, commands)
            summary = mem.summary()
            if setup.name in memory:  # the peak over the server's applications
                old = memory[setup.name]
                summary = {k: (max(v, old[k]) if isinstance(v, int) else (v if sum(v) >= sum(old[k]) else old[k]))
                           for k, v in summary.items()}
            memory[setup.name] = summary
        finally:
            server.stop()


def medians(runs: list) -> list:
    """One row per server, workload, mode and worker count: the median of its rounds' req/s,
    server CPU per request, client CPU and latency percentiles, each taken on its own; the
    rounds' own figures are kept in `rounds`. One round: the rows as they are."""
    groups: Dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r["server"], r["workload"], r["mode"], r["workers"]), []).append(r)
    out = []
    for rows in groups.values():
        if len(rows) == 1:
            out.append(rows[0])
            continue
        row = dict(sorted(rows, key=lambda r: r["rps"])[len(rows) // 2])  # its latency text, command
        for key in ("rps", "server_us", "client_cpu", "p50", "p99"):
            values = [r[key] for r in rows if r.get(key) is not None]
            if len(values) == len(rows):
                row[key] = statistics.median(values)
        row["errors"] = "; ".join(r["errors"] for r in rows if r["errors"])
        row["non2xx"] = sum(r["non2xx"] for r in rows)
        row["rounds"] = [{"rps": r["rps"], "server_us": r.get("server_us")} for r in rows]
        out.append(row)
    return out


def _leave_out(ctx: dict, what: str, why: str) -> None:
    why = " ".join(why.split())[:400]
    print(f"note: {what} left out: {why}", file=sys.stderr, flush=True)
    ctx["left_out"].append(f"{what}: {why}")


def run_workload(setup: Setup, server: ServerProc, workload: str, ctx: dict, args, results: list,
                 commands: list) -> None:
    try:
        check_answer(server.url, workload, ctx["files"], setup.prefix)
    except Exception as exc:  # a wrong answer leaves the row out; the run goes on
        _leave_out(ctx, f"{setup.name} {workload}", f"wrong answer: {type(exc).__name__}: {exc}")
        return
    for mode, extra in MODES.items():
        if mode != "keep-alive" and workload in KEEP_ALIVE_ONLY:
            continue
        path = WORKLOADS[workload][2]
        if workload == "ws-echo":
            url = server.url.replace("http://", "ws://") + path
            ws_echo(url, WRK_CPU, 1, CONNECTIONS)  # warm-up
            r = ws_echo(url, WRK_CPU, args.duration, CONNECTIONS)
            commands.append(("client", f"{setup.name} {workload}", " ".join(r["cmd"])))
        else:
            url = server.url + setup.prefix * (workload in FILE_WORKLOADS) + path
            script = {"echo": ctx["echo_lua"], "hello-pipelined": ctx["pipeline_lua"]}.get(workload)
            wrk(url, WRK_CPU, 1, CONNECTIONS, extra, script)  # warm-up
            cpu0 = tree_cpu_seconds(server.pid)
            r = wrk(url, WRK_CPU, args.duration, CONNECTIONS, extra, script)
            r["server_us"] = (tree_cpu_seconds(server.pid) - cpu0) * 1e6 / max(1.0, r["rps"] * args.duration)
            commands.append(("wrk", f"{setup.name} {workload} {mode}", " ".join(r["cmd"])))
        r.update(server=setup.name, family=setup.family, parser=setup.parser, workload=workload,
                 mode=mode, workers=1)
        results.append(r)
        unit = "msg/s" if workload == "ws-echo" else "req/s"
        print(f"  {setup.name:32} {workload:17} {mode:10} {r['rps']:>10,.0f} {unit}"
              f"  client CPU {r['client_cpu']:.0%}"
              f"{'  server %.2f us/req' % r['server_us'] if r.get('server_us') else ''}"
              f"{'  errors: ' + r['errors'] if r['errors'] else ''}"
              f"{'  non-2xx: %d' % r['non2xx'] if r['non2xx'] else ''}", flush=True)


def run_scaling(setups: List[Setup], ctx: dict, args, scaling: list, commands: list) -> None:
    """1 then 2 prefork-http workers; server and wrk (-t2) share both cores."""
    for setup, workload in setups:
        for workers in (1, 2):
            server = setup.start(ctx, BOTH_CPUS, workers)
            commands.append(("server", f"{setup.name} x{workers}", " ".join(server.cmd)))
            try:
                check_answer(server.url, workload, ctx["files"])
                url = server.url + WORKLOADS[workload][2]
                wrk(url, BOTH_CPUS, 1, CONNECTIONS * 2, threads=2)
                r = wrk(url, BOTH_CPUS, args.duration, CONNECTIONS * 2, threads=2)
                commands.append(("wrk", f"{setup.name} x{workers} {workload}", " ".join(r["cmd"])))
            finally:
                server.stop()
            r.update(server=setup.name, workload=workload, workers=workers)
            scaling.append(r)
            print(f"  {setup.name:24} {workload:11} {workers} worker(s) {r['rps']:>10,.0f} req/s", flush=True)


# ---------------------------------------------------------------------------- profile

def profile(setup: Setup, workload: str, ctx: dict, args, fmt: str) -> dict:
    """py-spy record of the (only) worker while wrk runs; top frames by self time."""
    server = setup.start(ctx, SERVER_CPU)
    ext = "txt" if fmt == "raw" else "json"
    out = os.path.join(OUT, f"profile-{setup.family}-{workload}.{ext}")
    try:
        workers = [p for p in descendants(server.pid) if p != server.pid]
        target = workers[0] if workers else server.pid
        duration = max(3, args.duration)
        spy = subprocess.Popen(["taskset", "-c", WRK_CPU, tool("py-spy"), "record", "--pid", str(target), "--duration",
                                str(duration), "--rate", "250", "--format", fmt, "--output", out],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            extra = []
            script = ctx["echo_lua"] if workload == "echo" else None
            wrk(server.url + WORKLOADS[workload][2], WRK_CPU, duration + 1, CONNECTIONS, extra, script)
            _, err = spy.communicate(timeout=60)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
    finally:
        server.stop()
    if spy.returncode != 0 or not os.path.exists(out):
        return {"setup": setup.name, "workload": workload, "error": (err or "").strip()[-300:], "file": out}
    self_time = _self_time_raw(out) if fmt == "raw" else _self_time_speedscope(out)
    total = sum(self_time.values()) or 1
    top = [(frame, n / total) for frame, n in self_time.most_common(args.profile_top)]
    return {"setup": setup.name, "workload": workload, "file": os.path.relpath(out, ROOT), "samples": total,
            "top": top}


def _short(frame: str) -> str:
    # "name (path/to/file.py:123)" → "name (file.py)": self time per function, not per line
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({os.path.basename(path)})" if path else name


def _self_time_raw(path: str) -> Counter:
    counts: Counter = Counter()
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if stack and n.isdigit():
                counts[_short(stack.split(";")[-1])] += int(n)
    return counts


def _self_time_speedscope(path: str) -> Counter:
    with open(path) as f:
        doc = json.load(f)
    frames = doc["shared"]["frames"]
    counts: Counter = Counter()
    for prof in doc["profiles"]:
        for stack, weight in zip(prof.get("samples", []), prof.get("weights", [])):
            if stack:
                fr = frames[stack[-1]]
                counts[f"{fr['name']} ({os.path.basename(fr.get('file', ''))})"] += weight
    return counts


# ---------------------------------------------------------------------------- parser micro-benchmark

def parser_bench(quick: bool) -> dict:
    script = os.path.join(BENCH, "parser.py")
    if not os.path.exists(script):
        return {"skipped": "bench/parser.py is not on this branch yet (the parser engineer is finishing it)"}
    cmd = [PY, script]
    try:
        helptext = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=60).stdout
    except subprocess.TimeoutExpired:
        helptext = ""
    if quick and "--quick" in helptext:
        cmd.append("--quick")
    elif quick and "--repeat" in helptext:
        cmd += ["--repeat", "3"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run(["taskset", "-c", SERVER_CPU, *cmd], capture_output=True, text=True, timeout=1800, env=env)
    shown = ["taskset", "-c", SERVER_CPU, "python", os.path.relpath(script, ROOT), *cmd[2:]]
    return {"cmd": " ".join(shown), "rc": r.returncode,
            "stdout": r.stdout, "stderr": r.stderr[-2000:]}


# ---------------------------------------------------------------------------- report

def _fmt_ms(x: Optional[float]) -> str:
    return "-" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.1f}")


CLIENT_BOUND = 0.9  # wrk busy this share of its core or more: it, not the server, set the pace


def _cpu(r) -> str:
    x = r.get("client_cpu")
    return "-" if x is None else (f"**{x:.0%}**" if x >= CLIENT_BOUND else f"{x:.0%}")


def _us(r) -> str:
    x = r.get("server_us")  # the server's CPU time (all its processes) per request; absent in older runs
    return "-" if not x else f"{x:.2f}"


def _get(results, server, workload, mode="keep-alive"):
    for r in results:
        if r["server"] == server and r["workload"] == workload and r["mode"] == mode:
            return r
    return None


def baseline_from(args) -> Dict[str, float]:
    """The pipelined baseline: {server: req/s} from an earlier run's JSON (--baseline) and/or
    figures given on the command line (--pipelined-baseline app=N wsgi=N)."""
    base: Dict[str, float] = {}
    if args.baseline:
        with open(args.baseline) as f:
            old = json.load(f)
        for r in old["results"]:
            if r["workload"] == "hello-pipelined" and r["mode"] == "keep-alive":
                base[r["server"]] = r["rps"]
    for item in args.pipelined_baseline or ():
        kind, _, rps = item.partition("=")
        for parser in ("cython", "python"):
            base[f"prefork-{kind} {parser}"] = float(rps)
    return base


def targets(results, scaling, cython: bool, baseline: Optional[Dict[str, float]] = None) -> List[tuple]:
    """(target, measured, verdict) rows: MET, MISSED, NO VERDICT (client-bound) or NOT MEASURED."""
    p = "cython" if cython else "python"
    note = "" if cython else " (pure parser: the Cython twin is not built, the target is for Cython)"
    rows = []

    def verdict_row(label, num, a, b, goal, shown_x=None, met=None):
        x = a["rps"] / b["rps"]
        shown = shown_x(x) if shown_x else f"{x:.2f}x"
        bound = [r["server"] for r in (a, b) if (r.get("client_cpu") or 0) >= CLIENT_BOUND]
        if bound:
            shown += f"; the client used its whole core for {' and '.join(bound)}: client-bound, not a verdict on the server"
        verdict = "MET" if (met(x) if met else x >= goal) else "MISSED"
        if bound:
            verdict = "NO VERDICT (client-bound)"
            ua, ub = a.get("server_us"), b.get("server_us")
            if ua and ub:
                # The server's CPU time per request (its core's capacity) still compares them:
                # 1/µs is what each could serve with a client that kept up.
                xc = ub / ua
                shown += (f"; server CPU per request {ua:.2f} / {ub:.2f} µs: capacity "
                          + (shown_x(xc) if shown_x else f"{xc:.2f}x"))
                verdict = ("MET" if (met(xc) if met else xc >= goal) else "MISSED") \
                    + " (by server CPU per request; client-bound)"
        rows.append((label + note if num.endswith(p) or f" {p} " in num else label,
                     f"{a['rps']:,.0f} / {b['rps']:,.0f} {'msg' if a['workload'] == 'ws-echo' else 'req'}/s = {shown}",
                     verdict))

    def ratio_row(label, num, den, workload, goal, pct=False, mode="keep-alive"):
        a, b = _get(results, num, workload, mode), _get(results, den, workload, mode)
        if not a or not b:
            missing = " and ".join(n for n, r in ((num, a), (den, b)) if not r)
            rows.append((label, f"not measured ({missing}: not run or left out)", "NOT MEASURED"))
            return
        verdict_row(label, num, a, b, goal, (lambda x: f"{x:.0%}") if pct else None)

    app, wsgi, asgi, static = f"prefork-app {p}", f"prefork-wsgi {p}", f"prefork-asgi {p}", f"prefork-static {p}"
    ratio_row("hello (App) keep-alive, 1 worker ≥ 4× gunicorn gthread", app, "gunicorn gthread", "hello", 4.0)
    ratio_row("hello (App) keep-alive, 1 worker ≥ 1.0× uvicorn+httptools", app, "uvicorn httptools", "hello", 1.0)
    ratio_row("hello (WSGI) keep-alive ≥ 3× gunicorn gthread", wsgi, "gunicorn gthread", "hello", 3.0)
    # issue 12: ASGI
    ratio_row("#12 raw ASGI hello keep-alive ≥ 1.5× uvicorn+httptools", asgi, "uvicorn httptools", "hello", 1.5)
    ratio_row("#12 raw ASGI hello keep-alive ≥ 1.5× granian ASGI", asgi, "granian asgi", "hello", 1.5)
    ratio_row("#12 Starlette FileResponse 1 KiB ≥ 3× uvicorn+httptools", asgi, "uvicorn httptools",
              "starlette-file-1k", 3.0)
    ratio_row("#12 WebSocket echo (messages/s, 32 clients) ≥ 1.3× uvicorn+httptools", asgi, "uvicorn httptools",
              "ws-echo", 1.3)
    # issue 13: the C and Rust servers as the bar
    ratio_row("#13 hello (App) keep-alive ≥ 1.0× bjoern", app, "bjoern", "hello", 1.0)
    ratio_row("#13 hello (App) keep-alive ≥ 1.5× granian WSGI", app, "granian wsgi", "hello", 1.5)
    ratio_row("#13 hello (WSGI) keep-alive ≥ 1.2× granian WSGI", wsgi, "granian wsgi", "hello", 1.2)
    ratio_row("#13 hello (WSGI) keep-alive ≥ 0.8× bjoern", wsgi, "bjoern", "hello", 0.8)
    ratio_row("#13 hello (App) Connection: close ≥ 1.1× granian WSGI", app, "granian wsgi", "hello", 1.1,
              mode="close")
    ratio_row("#13 hello (WSGI) Connection: close ≥ 0.9× granian WSGI", wsgi, "granian wsgi", "hello", 0.9,
              mode="close")
    ratio_row("#13 static 1 KiB keep-alive ≥ 80% of nginx", static, "nginx", "static-1k", 0.80, pct=True)
    ratio_row("#13 static 64 KiB keep-alive ≥ 100% of nginx", static, "nginx", "static-64k", 1.0, pct=True)
    ratio_row("#13 static 10 MiB keep-alive ≥ 100% of nginx", static, "nginx", "static-10m", 1.0, pct=True)
    for num in (app, wsgi):
        label = f"#13 {PIPELINE_DEPTH} pipelined hello requests per write ({num}) ≥ 2× the baseline run"
        now = _get(results, num, "hello-pipelined")
        if not now:
            rows.append((label, "not measured (no pipelined row in this run)", "NOT MEASURED"))
        elif not baseline or num not in baseline:
            rows.append((label, f"{now['rps']:,.0f} req/s; no baseline (give --baseline RUN.json or "
                                "--pipelined-baseline app=N wsgi=N)", "NOT MEASURED"))
        else:
            verdict_row(label, num, now, {"rps": baseline[num], "server": "baseline"}, 2.0)
    # issue 14: TLS
    tapp, tasgi = f"prefork-app tls {p}", f"prefork-asgi tls {p}"
    ratio_row("#14 TLS hello (App) keep-alive ≥ 1.3× uvicorn+httptools", tapp, "uvicorn tls", "tls-hello", 1.3)
    ratio_row("#14 TLS hello (App) keep-alive ≥ 1.0× granian WSGI", tapp, "granian wsgi tls", "tls-hello", 1.0)
    ratio_row("#14 TLS raw ASGI hello keep-alive ≥ 1.3× uvicorn+httptools", tasgi, "uvicorn tls", "tls-hello", 1.3)
    ratio_row("#14 TLS handshakes/s (hello, new connection per request, App) ≥ 0.8× nginx", tapp, "nginx tls",
              "tls-hello", 0.8, mode="close")
    ratio_row("#13 hello (App) keep-alive --threads 4 ≥ 0.7× --threads 1", f"{app} --threads 4", app, "hello", 0.7)
    on, off = _get(results, f"{app} --access-log", "hello"), _get(results, app, "hello")
    label = "#13 access log to a file costs < 15% (hello App keep-alive, --access-log vs off)"
    if on and off:
        verdict_row(label, app, on, off, 0.0, shown_x=lambda x: f"cost {1 - x:.0%}", met=lambda x: 1 - x < 0.15)
    else:
        rows.append((label, "not measured (a row is missing)", "NOT MEASURED"))
    for workload in sorted({s["workload"] for s in scaling}):
        one = next((s for s in scaling if s["workload"] == workload and s["workers"] == 1), None)
        two = next((s for s in scaling if s["workload"] == workload and s["workers"] == 2), None)
        if one and two:
            x = two["rps"] / one["rps"]
            rows.append((f"2 workers ≥ 1.8× 1 worker ({workload}, {one['server']}; wrk shares the cores, see below)",
                         f"{two['rps']:,.0f} / {one['rps']:,.0f} req/s = {x:.2f}x", "MET" if x >= 1.8 else "MISSED"))
    if not scaling:
        rows.append(("2 workers ≥ 1.8× 1 worker", "not run", "NOT MEASURED"))
    if not cython:
        rows.append(("Cython vs pure parser gain per workload", "the Cython twin does not import here",
                     "NOT MEASURED"))
    return rows


def write_results(path: str, data: dict, chart: Optional[str]) -> None:
    L: List[str] = []
    w = L.append
    m = data["machine"]
    w("# Benchmark results\n")
    w("Generated by `python bench/run_all.py` — do not edit by hand; run it again.\n")
    if data["quick"]:
        w("> **SMOKE RUN (`--quick`, %d s per wrk run) on a busy, shared machine.** Other engineers' test "
          "suites were running on the same 2 cores, so these figures prove that the pipeline works end to end "
          "and say little about speed. Regenerate on a quiet machine before quoting any of them.\n" % data["duration"])
    if data.get("note"):
        w(f"> {data['note']}\n")
    w(f"Date: {data['date']} · git `{m['git']}`\n")
    w("| machine | |\n| --- | --- |")
    w(f"| CPU | {m['cpu']} ({m['cores']} cores) |")
    w(f"| kernel | {m['kernel']} |")
    w(f"| Python | {m['python']} |")
    for k, v in m.items():
        if k.startswith("pkg:"):
            w(f"| {k[4:]} | {v} |")
    w(f"| nginx | {m['nginx']} |")
    w(f"| wrk | {m['wrk']} |")
    w(f"| prefork-http parser | {'Cython and pure' if data['cython'] else 'pure only (prefork.http._parser does not import: Cython rows skipped)'} |")
    w("")
    w(f"Method: one worker per server; the server is pinned to core {SERVER_CPU} (`taskset -c {SERVER_CPU}`) and "
      f"wrk to core {WRK_CPU} (`wrk -t1 -c{CONNECTIONS} -d{data['duration']}s --latency`, after a 1 s warm-up). "
      "Every server's answer is checked once before its runs. One run, servers one after the other"
      + (f", {data['rounds']} times over (interleaved rounds: every server, then every server again); each "
         "figure is the median of its rounds" if data.get("rounds", 1) > 1 else "") + "; ratios "
      "are between figures of this run only (the pipelined target compares with a baseline run: "
      + (", ".join(f"{k} {v:,.0f} req/s" for k, v in sorted((data.get("baseline") or {}).items())) or "none given")
      + "). bjoern is one process (no workers); uWSGI runs `--http11-socket` (its keep-alive HTTP "
      "parser in the worker) with a master; granian `--runtime-threads 1`, and serves files under "
      "/static/ (its static route cannot be /). The ASGI servers use uvloop. `close` sends `Connection: close` on every request (a new TCP "
      "connection per request). gunicorn sync never keeps connections alive, so its keep-alive rows are "
      "close rows too. http.server is the stdlib's ThreadingHTTPServer with SimpleHTTPRequestHandler, "
      "set to HTTP/1.1 (keep-alive), TCP_NODELAY and a listen queue of 1024 (its defaults: HTTP/1.0, "
      "Nagle on, queue of 5). Latency columns are wrk's p50 and p99 in ms. `client CPU` is the CPU time "
      f"wrk (or bench/ws_echo.py) used per second of its run (100% is its core busy); from {CLIENT_BOUND:.0%} up (bold) the load "
      "generator, not the server, set the pace, and the row is a floor for the server, not its speed "
      "(expect this for 10 MiB files, where wrk's reads of the bodies cost as much as the sending). "
      "`server µs/req` is the CPU time (user + system, from /proc) the server's processes used "
      "during the measured run divided by the requests answered: the server's cost per request, "
      "which a saturated client does not hide (1/µs is what its one core could serve). Where a "
      "target's rows are client-bound, its verdict is taken from that ratio and says so.\n")
    for line in data["left_out"]:
        w(f"- Left out: {line}")
    if data["left_out"]:
        w("")
    if chart:
        w(f"![throughput chart]({os.path.basename(chart)})\n")

    w("## Targets\n")
    w("| target | measured | verdict |\n| --- | --- | --- |")
    for label, measured, verdict in data["targets"]:
        w(f"| {label} | {measured} | **{verdict}** |")
    missed = [t for t in data["targets"] if t[2] != "MET"]
    w("")
    if data["quick"]:
        w("These verdicts come from a smoke run on a busy machine: they show the report works, not that a "
          "target is met or missed.\n")
    if missed:
        w(f"{len(missed)} of {len(data['targets'])} targets are not met in this run (missed, client-bound or not measured): "
          + "; ".join(t[0] for t in missed) + ".\n")
    else:
        w("Every target is met in this run.\n")
    if data.get("analysis"):  # --analysis: what the profiles say about the targets not met
        w(data["analysis"].rstrip() + "\n")

    results = data["results"]
    for workload, (label, *_rest) in WORKLOADS.items():
        rows = [r for r in results if r["workload"] == workload]
        if not rows:
            continue
        peers = [p for p in PEERS.get(workload, ()) if any(r["server"] == p for r in rows)]
        peers += [s for s in sorted({r["server"] for r in rows}) if s.endswith("python") and "prefork" in s]
        w(f"## {label}\n")
        if workload == "ws-echo":
            w("bench/ws_echo.py, a raw-socket asyncio client: each of the %d connections sends a 32-byte binary "
              "message and awaits its echo, in a loop; `client CPU` is that client's own CPU time per second.\n"
              % CONNECTIONS)
        elif workload == "hello-pipelined":
            w(f"wrk with a Lua script that writes {PIPELINE_DEPTH} requests at a time on each of the "
              f"{CONNECTIONS} connections (the classic pipeline.lua); req/s counts responses.\n")
        elif workload == "starlette-file-1k":
            w("Starlette's FileResponse: sent through `http.response.pathsend` (sendfile) where the server "
              "offers that extension (prefork-http, granian), else read and sent by Starlette.\n")
        unit = "msg/s" if workload == "ws-echo" else "req/s"
        head = (f"| connection | server | {unit} | p50 ms | p99 ms | client CPU | server µs/req | errors |"
                + "".join(f" vs {p} |" for p in peers))
        w(head)
        w("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |" + " ---: |" * len(peers))
        for mode in MODES:
            for r in (x for x in rows if x["mode"] == mode):
                cells = []
                for p in peers:
                    base = _get(results, p, workload, mode)
                    cells.append("-" if not base or p == r["server"] else f"{r['rps'] / base['rps']:.2f}x")
                err = ", ".join(filter(None, [r["errors"], f"non-2xx {r['non2xx']}" if r["non2xx"] else ""])) or "-"
                w(f"| {mode} | {r['server']} | {r['rps']:,.0f} | {_fmt_ms(r['p50'])} | {_fmt_ms(r['p99'])} | "
                  f"{_cpu(r)} | {_us(r)} | {err} |"
                  + "".join(f" {c} |" for c in cells))
        w("")

    w("## Cython vs pure parser\n")
    if data["cython"]:
        w("| workload | connection | server | Cython req/s | pure req/s | gain |\n| --- | --- | --- | ---: | ---: | ---: |")
        for r in results:
            if r["parser"] == "cython":
                twin = _get(results, r["server"].replace("cython", "python"), r["workload"], r["mode"])
                if twin:
                    w(f"| {r['workload']} | {r['mode']} | {r['family']} | {r['rps']:,.0f} | {twin['rps']:,.0f} | "
                      f"{r['rps'] / twin['rps']:.2f}x |")
    else:
        w("Not measured: `prefork.http._parser` (the Cython twin) does not import in this build, so only the pure "
          "parser ran. The table appears when the extension is built.")
    w("")

    w("## Scaling: 1 → 2 prefork-http workers\n")
    if data["scaling"]:
        w(f"Server and wrk (`-t2 -c{CONNECTIONS * 2}`) both run on `taskset -c {BOTH_CPUS}`: on a 2-core "
          "machine the load generator cannot be given cores of its own, so wrk takes CPU from the workers. "
          "This measures what the whole machine serves with one worker and with two, not how the server "
          "scales per core; a 1.8× gain is not reachable this way when wrk itself needs a large share of a "
          "core. Measure scaling with the load generator on another machine.\n")
        w("| workload | server | 1 worker req/s | 2 workers req/s | 2 / 1 |\n| --- | --- | ---: | ---: | ---: |")
        for workload in sorted({s["workload"] for s in data["scaling"]}):
            one = next(s for s in data["scaling"] if s["workload"] == workload and s["workers"] == 1)
            two = next(s for s in data["scaling"] if s["workload"] == workload and s["workers"] == 2)
            w(f"| {workload} | {one['server']} | {one['rps']:,.0f} | {two['rps']:,.0f} | {two['rps'] / one['rps']:.2f}x |")
    else:
        w("Not run.")
    w("")

    w("## Memory\n")
    w("Peak over all of the server's runs above, sampled every 0.25 s from /proc. RSS sum counts pages "
      "shared after fork once per process (as `ps` does); PSS splits them, so its sum is what the tree "
      "really holds. Per process: the kernel's own peak (VmHWM) of the first process (master) and of the "
      "others (workers; nginx's worker, gunicorn's worker).\n")
    w("| server | processes | peak RSS sum MiB | peak PSS sum MiB | first process peak MiB | each other process peak MiB |")
    w("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, mem in data["memory"].items():
        kids = ", ".join(f"{k / 1024:.1f}" for k in mem["children_hwm_kib"]) or "-"
        w(f"| {name} | {mem['processes']} | {mem['rss_peak_kib'] / 1024:.1f} | {mem['pss_peak_kib'] / 1024:.1f} | "
          f"{mem['top_hwm_kib'] / 1024:.1f} | {kids} |")
    w("")

    w("## Parser micro-benchmark (bench/parser.py)\n")
    pb = data["parser_bench"]
    if "skipped" in pb:
        w(f"Not run: {pb['skipped']}.")
    else:
        w(f"`{pb['cmd']}` (exit code {pb['rc']}):\n")
        w("```\n" + (pb["stdout"].strip() or "(no output)") + "\n```")
        if pb["rc"] != 0:
            w("\nIt failed; its stderr ends with:\n\n```\n" + pb["stderr"].strip() + "\n```")
    w("")

    if data["profiles"]:
        w("## Profiles (py-spy, self time of the worker)\n")
        for prof in data["profiles"]:
            w(f"### {prof['setup']}, {prof['workload']}, keep-alive\n")
            if "error" in prof:
                w(f"py-spy failed: `{prof['error']}`\n")
                continue
            w(f"{prof['samples']} samples at 250 Hz while wrk ran; full profile in `{prof['file']}` "
              "(git-ignored). A frame's self time includes the system calls it makes (send, recv, "
              "epoll_wait, sendfile): py-spy samples Python frames only, so the time of Cython "
              "functions (the parser) counts in their Python caller (`Connection.on_readable`).\n")
            w("| frame | self time |\n| --- | ---: |")
            for frame, share in prof["top"]:
                w(f"| `{frame}` | {share:.1%} |")
            w("")

    w("## Exact commands\n")
    w("<details><summary>every server and wrk command of this run</summary>\n")
    w("```")
    for kind, label, cmd in data["commands"]:
        w(f"# {kind}: {label}\n{cmd}")
    w("```\n</details>")
    w(f"\nThe whole run: `{data['argv']}`\n")
    with open(path, "w") as f:
        f.write("\n".join(L))


def chart(path: str, data: dict) -> Optional[str]:
    try:
        import matplotlib
    except ImportError:
        print("note: matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(w, m) for w in WORKLOADS for m in MODES if any(r["workload"] == w and r["mode"] == m
                                                             for r in data["results"])]
    n = len(panels) + (1 if data["scaling"] else 0)
    cols = 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.6 * rows), squeeze=False)
    for ax, (workload, mode) in zip(axes.flat, panels):
        rs = [r for r in data["results"] if r["workload"] == workload and r["mode"] == mode]
        names = [r["server"] for r in rs]
        colors = ["tab:blue" if n.startswith("prefork") else "tab:gray" for n in names]
        ax.barh(names, [r["rps"] for r in rs], color=colors)
        ax.invert_yaxis()
        ax.set_title(f"{WORKLOADS[workload][0]}, {mode}", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("requests/s", fontsize=8)
    if data["scaling"]:
        ax = axes.flat[len(panels)]
        labels = [f"{s['workload']} x{s['workers']}" for s in data["scaling"]]
        ax.barh(labels, [s["rps"] for s in data["scaling"]], color="tab:blue")
        ax.invert_yaxis()
        ax.set_title("prefork-http 1 → 2 workers (server and wrk share 2 cores)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("requests/s", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    title = "prefork-http benchmarks, one run, " + data["date"]
    if data["quick"]:
        title += " — SMOKE RUN on a busy machine, not a measurement"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every server and workload this many times, in interleaved rounds (all "
                         "servers, then all again), and report each row's medians (default 1)")
    ap.add_argument("--quick", action="store_true", help="2 s per run: a smoke run of the whole pipeline")
    ap.add_argument("--only", nargs="*", choices=list(WORKLOADS) + list(GROUPS),
                    help="run only these workloads (or groups: %s)" % ", ".join(GROUPS))
    ap.add_argument("--servers", nargs="*", help="run only setups whose name starts with one of these")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--no-parser-bench", action="store_true")
    ap.add_argument("--profile", choices=("raw", "speedscope"), help="also py-spy record the prefork worker")
    ap.add_argument("--profile-top", type=int, default=15)
    ap.add_argument("--note", help="a line to put at the top of RESULTS.md")
    ap.add_argument("--analysis", metavar="FILE.md",
                    help="Markdown put after the targets: where the time goes for those not met "
                         "(written from profiles by hand; kept in the run's JSON)")
    ap.add_argument("--from-json", metavar="PATH", help="rewrite RESULTS.md and the chart from a saved "
                    "run's JSON (bench/out/run_all.json, or FILE.json beside a --results FILE.md), running nothing")
    ap.add_argument("--baseline", metavar="RUN.json", help="an earlier run's JSON (bench/out/run_all.json, or "
                    "one kept with --record-baseline): its pipelined rows are the baseline of the pipelined target")
    ap.add_argument("--pipelined-baseline", nargs="*", metavar="KIND=RPS",
                    help="the pipelined baseline as figures instead: app=N wsgi=N (req/s)")
    ap.add_argument("--record-baseline", metavar="PATH", help="also copy this run's JSON to PATH, to pass as "
                    "--baseline to a later run")
    ap.add_argument("--results", default=os.path.join(BENCH, "RESULTS.md"))
    ap.add_argument("--chart", default=os.path.join(BENCH, "results.png"))
    args = ap.parse_args()
    if args.only:
        args.only = [w for name in args.only for w in GROUPS.get(name, [name])]
    for item in args.pipelined_baseline or ():
        kind, _, rps = item.partition("=")
        try:
            float(rps)
        except ValueError:
            kind = ""
        if kind not in ("app", "wsgi"):
            print(f"run_all.py: --pipelined-baseline takes app=N or wsgi=N, not {item!r}", file=sys.stderr)
            return 2
    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        if args.baseline or args.pipelined_baseline:
            data["baseline"] = baseline_from(args)
        if args.note:
            data["note"] = args.note
        if args.analysis:
            with open(args.analysis) as f:
                data["analysis"] = f.read()
        data["targets"] = targets(data["results"], data["scaling"], data["cython"], data.get("baseline"))
        write_results(args.results, data, chart(args.chart, data))
        print(f"wrote {os.path.relpath(args.results)} from {args.from_json}")
        return 0
    if args.quick:
        args.duration = 2
    missing = missing_tools("wrk", "taskset")
    if missing:
        print(f"{', '.join(missing)} not installed (apt-get install wrk util-linux)", file=sys.stderr)
        return 2
    if args.profile and missing_tools("py-spy"):
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    from prefork.http import parser as parser_choice
    cython = parser_choice.cython_available()
    os.makedirs(OUT, exist_ok=True)

    tmp = tempfile.mkdtemp(prefix="prefork-bench-all-")
    os.chmod(tmp, 0o755)  # nginx's worker runs as another user
    www = os.path.join(tmp, "www")
    os.mkdir(www)
    os.chmod(www, 0o755)
    files = {}
    for _, _, path, _, size in WORKLOADS.values():
        if size:
            files[path] = os.urandom(size)
            with open(os.path.join(www, path.lstrip("/")), "wb") as f:
                f.write(files[path])
            os.chmod(os.path.join(www, path.lstrip("/")), 0o644)
    os.environ["BENCH_WWW"] = www  # bench/asgi_apps.py's FileResponse serves $BENCH_WWW/1024.bin
    pipeline_lua = os.path.join(tmp, "pipeline.lua")
    with open(pipeline_lua, "w") as f:
        f.write(PIPELINE_LUA)
    echo_lua = os.path.join(tmp, "echo.lua")
    with open(echo_lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = [[%s]]\nwrk.headers["Content-Type"] = "application/json"\n'
                % ECHO_BODY)
    try:
        cert, key = make_certificate(tmp)
    except (OSError, subprocess.CalledProcessError):
        cert = key = ""  # the TLS setups then fail to start and are left out with the reason
    ctx = {"cert": cert, "key": key, "www": www, "tmp": tmp, "bench": BENCH, "files": files, "echo_lua": echo_lua, "pipeline_lua": pipeline_lua, "left_out": [],
           "env": dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, BENCH]))}

    data = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "quick": args.quick, "duration": args.duration, "cython": cython,
            "note": args.note, "analysis": open(args.analysis).read() if args.analysis else "", "left_out": [], "baseline": baseline_from(args), "results": [], "scaling": [], "memory": {}, "commands": [], "profiles": [],
            "argv": " ".join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])}
    ctx["left_out"] = data["left_out"]
    data["rounds"] = max(1, args.rounds)
    started = time.monotonic()
    try:
        runs: list = []
        for rnd in range(data["rounds"]):
            if data["rounds"] > 1:
                print(f"round {rnd + 1} of {data['rounds']}:", flush=True)
            for setup in SETUPS:
                if args.servers and not any(setup.name.startswith(s) for s in args.servers):
                    continue
                workloads = [wl for wl in setup.workloads if not args.only or wl in args.only]
                if not workloads:
                    continue
                why = setup.why_not(cython)
                if why:
                    if rnd == 0:
                        print(f"note: {setup.name} left out: {why}", file=sys.stderr)
                        data["left_out"].append(f"{setup.name}: {why}")
                    continue
                print(f"{setup.name}:", flush=True)
                run_setup(setup, workloads, ctx, args, runs, data["memory"], data["commands"] if rnd == 0 else [])
        data["results"] = medians(runs)
        best = "cython" if cython else "python"
        by_name = {s.name: s for s in SETUPS}
        if not args.no_scaling:
            print("scaling (server and wrk share cores 0,1):", flush=True)
            pairs = [(by_name[f"prefork-app {best}"], "hello"), (by_name[f"prefork-static {best}"], "static-1k")]
            run_scaling([(s, w) for s, w in pairs if not args.only or w in args.only], ctx, args,
                        data["scaling"], data["commands"])
        if args.profile:
            print("py-spy profiles:", flush=True)
            for name, workload in ((f"prefork-app {best}", "hello"), (f"prefork-static {best}", "static-1k")):
                if not args.only or workload in args.only:
                    data["profiles"].append(profile(by_name[name], workload, ctx, args, args.profile))
        if not args.no_parser_bench:
            print("parser micro-benchmark:", flush=True)
            data["parser_bench"] = parser_bench(args.quick)
        else:
            data["parser_bench"] = {"skipped": "--no-parser-bench"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    data["targets"] = targets(data["results"], data["scaling"], cython, data["baseline"])
    # The run's JSON: bench/out/run_all.json for the default RESULTS.md, else beside the
    # --results file (FILE.json), so that a side run does not overwrite the full run's.
    if os.path.abspath(args.results) == os.path.join(BENCH, "RESULTS.md"):
        saved = os.path.join(OUT, "run_all.json")
    else:
        saved = os.path.splitext(args.results)[0] + ".json"
    with open(saved, "w") as f:
        json.dump({k: v for k, v in data.items()}, f, indent=1, default=str)
    print(f"saved the run's figures in {os.path.relpath(saved)}")
    if args.record_baseline:
        shutil.copyfile(saved, args.record_baseline)
        print(f"recorded this run as a baseline in {args.record_baseline}")
    png = chart(args.chart, data)
    write_results(args.results, data, png)
    print(f"\nwrote {os.path.relpath(args.results)}" + (f" and {os.path.relpath(png)}" if png else "")
          + f" in {time.monotonic() - started:.0f} s")
    for label, measured, verdict in data["targets"]:
        print(f"  {verdict:12} {label}: {measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
