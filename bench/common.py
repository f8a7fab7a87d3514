"""What the benchmarks share: starting and stopping servers, wrk, memory of a process
tree from /proc, and a description of the machine.

Every server is a child of the benchmark, pinned with taskset, on 127.0.0.1, stopped by
its pid. Nothing here knows about a particular benchmark.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
PY = sys.executable
BIN = os.path.dirname(PY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool(name: str) -> Optional[str]:
    """A program from this Python's environment (venv bin/) or else from PATH."""
    here = os.path.join(BIN, name)
    return here if os.access(here, os.X_OK) else shutil.which(name)


def missing_tools(*tools: str) -> List[str]:
    return [t for t in tools if not tool(t)]


# ---------------------------------------------------------------------------- servers

class ServerProc:
    """A started server: its Popen (the pid is the server itself: taskset execs) and URL.
    Its stderr is drained by a thread so that a chatty server never blocks on the pipe."""

    def __init__(self, proc: subprocess.Popen, url: str, cmd: Sequence[str], log: List[str]) -> None:
        self.proc, self.url, self.cmd, self.log = proc, url, list(cmd), log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)


def _drain(stream, into: List[str]) -> None:
    for line in stream:
        into.append(line)


def start_prefork(args: Sequence[str], cpu: str, workers: int = 1, cwd: Optional[str] = None,
                  env: Optional[Dict[str, str]] = None, timeout: float = 30.0) -> ServerProc:
    """`python -m prefork --bind 127.0.0.1:0 --workers N ARGS` under `taskset -c cpu`;
    returns once every worker has logged 'Booted worker' (the server is ready)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, full_env.get("PYTHONPATH", "")) if p)
    full_env.update(env or {})
    cmd = ["taskset", "-c", cpu, PY, "-m", "prefork", "--bind", "127.0.0.1:0", "--workers", str(workers),
           "--log-level", "info", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    log: List[str] = []
    url, booted = None, 0
    timer = threading.Timer(timeout, proc.kill)  # a server that never boots must not hang us
    timer.start()
    try:
        for line in proc.stderr:
            log.append(line)
            m = re.search(r"Listening at (\S+)", line)
            if m:
                url = m.group(1)
            if "Booted worker" in line:
                booted += 1
                if booted >= workers:
                    break
    finally:
        timer.cancel()
    if url is None or booted < workers:
        stop(proc)
        raise RuntimeError("prefork-http did not start:\n" + "".join(log))
    threading.Thread(target=_drain, args=(proc.stderr, log), daemon=True).start()
    return ServerProc(proc, url, cmd, log)


def start_process(cmd: Sequence[str], port: int, cpu: str, probe: str = "/", cwd: Optional[str] = None,
                  env: Optional[Dict[str, str]] = None, timeout: float = 20.0, tls: bool = False) -> ServerProc:
    """Any other server, pinned; ready when GET `probe` answers 200 (over TLS with `tls`)."""
    full_cmd = ["taskset", "-c", cpu, *cmd]
    proc = subprocess.Popen(full_cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    log: List[str] = []
    threading.Thread(target=_drain, args=(proc.stderr, log), daemon=True).start()
    try:
        wait_answering(port, proc, probe, timeout, tls)
    except Exception:
        stop(proc)
        raise RuntimeError(f"{cmd[0]} did not start:\n" + "".join(log))
    return ServerProc(proc, f"{'https' if tls else 'http'}://127.0.0.1:{port}", full_cmd, log)


def wait_answering(port: int, proc, probe: str = "/", timeout: float = 20.0, tls: bool = False) -> None:
    """Poll until GET `probe` answers 200: for servers that print nothing when ready.
    (A benchmark, not a test: polling for start-up is fine here.)"""
    if tls:
        import ssl

        context = ssl._create_unverified_context()
    deadline = time.monotonic() + timeout
    request = f"GET {probe} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
                s = context.wrap_socket(raw) if tls else raw
                s.sendall(request)
                if s.recv(100).split(b" ", 2)[1:2] == [b"200"]:
                    return
        except (OSError, IndexError):
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not answer in time")


def stop(proc, timeout: float = 15.0) -> None:
    """TERM the server by its pid, KILL it if it is not gone within `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> Optional[float]:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def wrk_command(url: str, cpu: str, duration: float, connections: int, headers: Sequence[str] = (),
                script: Optional[str] = None, threads: int = 1) -> List[str]:
    cmd = ["taskset", "-c", cpu, "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    return cmd + [url]


def wrk(url: str, cpu: str, duration: float, connections: int, extra: Sequence[str] = (),
        script: Optional[str] = None, threads: int = 1) -> dict:
    """Run wrk once; `extra` is wrk arguments (e.g. ["-H", "Connection: close"]). Returns
    rps, latency (avg, as wrk prints it), p50/p99 in ms, socket errors, non-2xx/3xx, wrk's CPU
    time per second (client_cpu; 1.0 is one core busy), the command."""
    headers = [extra[i + 1] for i in range(len(extra) - 1) if extra[i] == "-H"]
    cmd = wrk_command(url, cpu, duration, connections, headers, script, threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # wrk's own CPU time per second of run: near 1.0 per thread, the client set the pace
    client_cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / duration
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = re.search(r"Latency\s+(\S+)", out)
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    return {"rps": float(rps.group(1)), "errors": errors.group(1).strip() if errors else "",
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "latency": lat.group(1) if lat else "",
            "p50": _ms(pct["50"]) if "50" in pct else None, "p99": _ms(pct["99"]) if "99" in pct else None,
            "client_cpu": client_cpu, "cmd": cmd}


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by `pid` and every process below it, from
    /proc/PID/stat; threads are included (the process's own counters sum them)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


# ---------------------------------------------------------------------------- memory

def descendants(pid: int) -> List[int]:
    """pid and every process below it, from /proc/PID/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return out


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


class MemorySampler:
    """Samples a process tree's memory every `interval` seconds in a thread.

    rss_peak: the highest sum of VmRSS over the tree (pages shared after fork are counted
    once per process, as `ps` does); pss_peak: the same for Pss (shared pages split between
    their users, so the sum is what the tree really holds); hwm: each process's own VmHWM
    (kernel-tracked peak RSS) at its last sample, by role."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval = pid, interval
        self.rss_peak = self.pss_peak = 0
        self.hwm: Dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        pids = descendants(self.pid)
        self.rss_peak = max(self.rss_peak, sum(_status_kib(p, "VmRSS") for p in pids))
        self.pss_peak = max(self.pss_peak, sum(_pss_kib(p) for p in pids))
        for p in pids:
            hwm = _status_kib(p, "VmHWM")
            if hwm:
                self.hwm[p] = max(hwm, self.hwm.get(p, 0))

    def summary(self) -> dict:
        top = self.hwm.get(self.pid, 0)
        children = [v for p, v in self.hwm.items() if p != self.pid]
        return {"rss_peak_kib": self.rss_peak, "pss_peak_kib": self.pss_peak, "top_hwm_kib": top,
                "children_hwm_kib": children, "processes": len(self.hwm)}


# ---------------------------------------------------------------------------- machine

def _first_line(cmd: Sequence[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (r.stdout + r.stderr).strip()
    return text.splitlines()[0] if text else "?"


def machine() -> Dict[str, str]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib import metadata

    versions: Dict[str, str] = {}
    try:
        import prefork

        versions["prefork-http"] = prefork.__version__
    except ImportError:
        versions["prefork-http"] = "?"
    for pkg in ("Cython", "gunicorn", "uvicorn", "httptools", "uvloop", "h11", "granian", "bjoern", "uWSGI",
                "starlette", "fastapi", "websockets", "locust", "matplotlib"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    try:
        commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except OSError:
        commit = "?"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "kernel": platform.release(),
            "python": platform.python_version(), "nginx": _first_line(["nginx", "-v"]),
            "wrk": _first_line(["wrk", "-v"]), "git": commit or "?",
            **{f"pkg:{k}": v for k, v in versions.items()}}


def make_certificate(folder: str) -> tuple:
    """(certificate, key) paths: a self-signed ECDSA P-256 certificate for 127.0.0.1 made
    with the openssl command, which every TLS row uses (the same certificate for all)."""
    cert, key = os.path.join(folder, "tls-cert.pem"), os.path.join(folder, "tls-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    os.chmod(key, 0o644)  # nginx's workers run as another user
    return cert, key


# nginx as the static-file peer: its own config, one worker, sendfile on, no access log.
NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {www};
    }}
}}
"""


def _edited(text: str, *edits: tuple) -> str:
    """`text` with each (old, new) replaced; an `old` that is not there is an error, so that
    a change to NGINX_CONF cannot silently drop an edit."""
    for old, new in edits:
        if old not in text:
            raise ValueError(f"{old!r} is not in the text to edit")
        text = text.replace(old, new)
    return text


# The TLS peer: NGINX_CONF with TLS on the listener, its own pid and error log (both may
# share one temporary folder), and a 13-byte hello at / for the tls-hello row.
NGINX_TLS_CONF = _edited(
    NGINX_CONF,
    ("{tmp}/nginx.pid", "{tmp}/nginx-tls.pid"),
    ("{tmp}/error.log", "{tmp}/error-tls.log"),
    ("    server {{\n", """\
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    server {{
"""),
    ("listen 127.0.0.1:{port};", "listen 127.0.0.1:{port} ssl;"),
    ("        root {www};\n", """\
        root {www};
        location = / {{ default_type text/plain; return 200 "Hello, World!"; }}
"""),
)
