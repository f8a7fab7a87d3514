"""The whole benchmark suite in one command; regenerates bench/RESULTS.md and bench/results.png.

    python bench/run_all.py                  # 10 s per run (about 15 minutes)
    python bench/run_all.py --quick          # 2 s per run: proves the pipeline, measures little
    python bench/run_all.py --profile raw    # also py-spy the worker (raw or speedscope)
    python bench/run_all.py --only hello static-1k --servers prefork-app uvicorn

Workloads: hello (GET /, 13 bytes), JSON echo (POST /echo, a 0.4 KiB document parsed and
serialized back), static files of 1 KiB, 64 KiB and 10 MiB; each with keep-alive and with
`Connection: close` (wrk -H). Servers: prefork-http with the Cython and the pure parser
(App, WSGI callable, --root for files), gunicorn sync and gthread (WSGI), uvicorn with
httptools and uvloop (raw ASGI), nginx and the stdlib's ThreadingHTTPServer for files.
The applications are bench/hello.py. Every answer is checked once before its run.

One worker each, the server pinned to core 0 and wrk (`-t1 -c32`) to core 1. The scaling
rows (prefork-http, 1 then 2 workers) cannot keep them apart on a 2-core machine: server
and wrk (-t2) share `taskset -c 0,1`, and RESULTS.md says what that measures. Memory: the
peak of the summed RSS (and PSS) of master and workers, sampled from /proc every 0.25 s,
and each process's own peak (VmHWM). Also runs bench/parser.py (the parser
micro-benchmark) when it is present. One run; ratios are taken between figures of this
run only. Talks to 127.0.0.1 only. Needs wrk and taskset; nginx, gunicorn, uvicorn,
py-spy and matplotlib for their parts (left out with a note when missing).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (NGINX_CONF, BENCH, BIN, PY, ROOT, MemorySampler, ServerProc, descendants, free_port,  # noqa: E402
                    machine, missing_tools, start_prefork, start_process, stop, tool, wrk)

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
    "echo": ("JSON echo, POST /echo (%d B)" % len(ECHO_BODY), "POST", "/echo", None, 0),
    "static-1k": ("static 1 KiB", "GET", "/1024.bin", None, 1024),
    "static-64k": ("static 64 KiB", "GET", "/65536.bin", None, 64 * 1024),
    "static-10m": ("static 10 MiB", "GET", "/10485760.bin", None, 10 * 1024 * 1024),
}
MODES = {"keep-alive": [], "close": ["-H", "Connection: close"]}

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
    """One server configuration: how to start it and which workloads it serves."""

    def __init__(self, name: str, workloads, start, needs=(), parser: Optional[str] = None,
                 family: str = "") -> None:
        self.name, self.workloads, self._start, self.needs = name, tuple(workloads), start, needs
        self.parser, self.family = parser, family or name

    def why_not(self, cython: bool) -> str:
        if self.parser == "cython" and not cython:
            return "the Cython parser (prefork.http._parser) does not import on this branch/build"
        for tool in self.needs:
            if not (os.path.exists(tool) if os.sep in tool else shutil.which(tool)):
                return f"{os.path.basename(tool)} is not installed"
        return ""

    def start(self, ctx: dict, cpu: str, workers: int = 1) -> ServerProc:
        return self._start(ctx, cpu, workers)


def _prefork(parser: str, *args: str):
    def start(ctx, cpu, workers):
        app_args = [a.format(**ctx) for a in args]
        return start_prefork(["--parser", parser, *app_args], cpu, workers=workers)
    return start


def _gunicorn(worker_class: str):
    def start(ctx, cpu, workers):
        port = free_port()
        extra = ["--threads", "4"] if worker_class == "gthread" else []
        return start_process([os.path.join(BIN, "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                              "-k", worker_class, *extra, "--log-level", "warning", "--chdir", BENCH, "hello:wsgi"],
                             port, cpu, env=ctx["env"])
    return start


def _uvicorn(ctx, cpu, workers):
    port = free_port()
    return start_process([os.path.join(BIN, "uvicorn"), "--host", "127.0.0.1", "--port", str(port),
                          "--workers", str(workers), "--http", "httptools", "--loop", "uvloop", "--no-access-log",
                          "--log-level", "warning", "--app-dir", BENCH, "hello:asgi"], port, cpu, env=ctx["env"])


def _nginx(ctx, cpu, workers):
    port = free_port()
    conf = os.path.join(ctx["tmp"], "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(tmp=ctx["tmp"], www=ctx["www"], port=port).replace(
            "worker_processes 1;", f"worker_processes {workers};"))
    return start_process(["nginx", "-c", conf, "-p", ctx["tmp"]], port, cpu, probe="/1024.bin")


def _stdlib(ctx, cpu, workers):
    port = free_port()
    return start_process([PY, "-c", STDLIB_SERVER, str(port), ctx["www"]], port, cpu, probe="/1024.bin")


APP_WORKLOADS = ("hello", "echo")
STATIC_WORKLOADS = ("static-1k", "static-64k", "static-10m")
SETUPS = [
    Setup("prefork-app cython", APP_WORKLOADS, _prefork("cython", "--chdir", "{bench}", "hello:app"),
          parser="cython", family="prefork-app"),
    Setup("prefork-app python", APP_WORKLOADS, _prefork("python", "--chdir", "{bench}", "hello:app"),
          parser="python", family="prefork-app"),
    Setup("prefork-wsgi cython", APP_WORKLOADS, _prefork("cython", "--chdir", "{bench}", "hello:wsgi"),
          parser="cython", family="prefork-wsgi"),
    Setup("prefork-wsgi python", APP_WORKLOADS, _prefork("python", "--chdir", "{bench}", "hello:wsgi"),
          parser="python", family="prefork-wsgi"),
    Setup("gunicorn sync", APP_WORKLOADS, _gunicorn("sync"), needs=(os.path.join(BIN, "gunicorn"),)),
    Setup("gunicorn gthread", APP_WORKLOADS, _gunicorn("gthread"), needs=(os.path.join(BIN, "gunicorn"),)),
    Setup("uvicorn httptools", APP_WORKLOADS, _uvicorn, needs=(os.path.join(BIN, "uvicorn"),)),
    Setup("prefork-static cython", STATIC_WORKLOADS, _prefork("cython", "--root", "{www}"),
          parser="cython", family="prefork-static"),
    Setup("prefork-static python", STATIC_WORKLOADS, _prefork("python", "--root", "{www}"),
          parser="python", family="prefork-static"),
    Setup("nginx", STATIC_WORKLOADS, _nginx, needs=("nginx",)),
    Setup("http.server", STATIC_WORKLOADS, _stdlib),
]
PEERS = ("gunicorn sync", "gunicorn gthread", "uvicorn httptools", "nginx", "http.server")


# ---------------------------------------------------------------------------- one run

def check_answer(url: str, workload: str, files: Dict[str, bytes]) -> None:
    """One request through http.client: the server must give the right answer before
    its speed means anything."""
    _, method, path, expected, _ = WORKLOADS[workload]
    host, port = url.split("//", 1)[1].split(":")
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
    elif expected is not None:
        ok = resp.status == 200 and got == expected
    else:
        ok = resp.status == 200 and got == files[path]
    if not ok:
        raise RuntimeError(f"{url}{path}: wrong answer {resp.status} {got[:80]!r}")


def run_setup(setup: Setup, workloads, ctx: dict, args, results: list, memory: dict, commands: list) -> None:
    server = setup.start(ctx, SERVER_CPU)
    commands.append(("server", setup.name, " ".join(server.cmd)))
    try:
        with MemorySampler(server.pid) as mem:
            for workload in workloads:
                check_answer(server.url, workload, ctx["files"])
                for mode, extra in MODES.items():
                    url = server.url + WORKLOADS[workload][2]
                    script = ctx["echo_lua"] if workload == "echo" else None
                    wrk(url, WRK_CPU, 1, CONNECTIONS, extra, script)  # warm-up
                    r = wrk(url, WRK_CPU, args.duration, CONNECTIONS, extra, script)
                    commands.append(("wrk", f"{setup.name} {workload} {mode}", " ".join(r["cmd"])))
                    r.update(server=setup.name, family=setup.family, parser=setup.parser, workload=workload,
                             mode=mode, workers=1)
                    results.append(r)
                    print(f"  {setup.name:24} {workload:11} {mode:10} {r['rps']:>10,.0f} req/s"
                          f"{'  errors: ' + r['errors'] if r['errors'] else ''}"
                          f"{'  non-2xx: %d' % r['non2xx'] if r['non2xx'] else ''}", flush=True)
        memory[setup.name] = mem.summary()
    finally:
        server.stop()


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


def _get(results, server, workload, mode="keep-alive"):
    for r in results:
        if r["server"] == server and r["workload"] == workload and r["mode"] == mode:
            return r
    return None


def targets(results, scaling, cython: bool) -> List[tuple]:
    """(target, measured, verdict) rows: MET, MISSED or NOT MEASURED."""
    p = "cython" if cython else "python"
    note = "" if cython else " (pure parser: the Cython twin is not built, the target is for Cython)"
    rows = []

    def ratio_row(label, num, den, workload, goal, pct=False):
        a, b = _get(results, num, workload), _get(results, den, workload)
        if not a or not b:
            rows.append((label, "not measured (a server is missing)", "NOT MEASURED"))
            return
        x = a["rps"] / b["rps"]
        shown = f"{x:.0%}" if pct else f"{x:.2f}x"
        bound = [r["server"] for r in (a, b) if (r.get("client_cpu") or 0) >= CLIENT_BOUND]
        if bound:
            shown += f"; wrk used its whole core for {' and '.join(bound)}: client-bound, not a verdict on the server"
        verdict = "MET" if x >= goal else "MISSED"
        if bound:
            verdict = "NO VERDICT (client-bound)"
        rows.append((label + note if num.endswith(p) else label,
                     f"{a['rps']:,.0f} / {b['rps']:,.0f} req/s = {shown}", verdict))

    ratio_row("hello (App) keep-alive, 1 worker ≥ 4× gunicorn gthread", f"prefork-app {p}", "gunicorn gthread",
              "hello", 4.0)
    ratio_row("hello (App) keep-alive, 1 worker ≥ 1.0× uvicorn+httptools", f"prefork-app {p}",
              "uvicorn httptools", "hello", 1.0)
    ratio_row("hello (WSGI) keep-alive ≥ 3× gunicorn gthread", f"prefork-wsgi {p}", "gunicorn gthread", "hello", 3.0)
    ratio_row("static 1 KiB keep-alive ≥ 40% of nginx", f"prefork-static {p}", "nginx", "static-1k", 0.40, pct=True)
    ratio_row("static 10 MiB keep-alive ≥ 90% of nginx", f"prefork-static {p}", "nginx", "static-10m", 0.90, pct=True)
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
      "Every server's answer is checked once before its runs. One run, servers one after the other; ratios "
      "are between figures of this run only. `close` sends `Connection: close` on every request (a new TCP "
      "connection per request). gunicorn sync never keeps connections alive, so its keep-alive rows are "
      "close rows too. http.server is the stdlib's ThreadingHTTPServer with SimpleHTTPRequestHandler, "
      "set to HTTP/1.1 (keep-alive), TCP_NODELAY and a listen queue of 1024 (its defaults: HTTP/1.0, "
      "Nagle on, queue of 5). Latency columns are wrk's p50 and p99 in ms. `wrk CPU` is the CPU time "
      f"wrk used per second of its run (100% is its core busy); from {CLIENT_BOUND:.0%} up (bold) the load "
      "generator, not the server, set the pace, and the row is a floor for the server, not its speed "
      "(expect this for 10 MiB files, where wrk's reads of the bodies cost as much as the sending).\n")
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

    results = data["results"]
    for workload, (label, *_rest) in WORKLOADS.items():
        rows = [r for r in results if r["workload"] == workload]
        if not rows:
            continue
        peers = [p for p in PEERS if any(r["server"] == p for r in rows)]
        peers += [s for s in sorted({r["server"] for r in rows}) if s.endswith("python") and "prefork" in s]
        w(f"## {label}\n")
        head = "| connection | server | req/s | p50 ms | p99 ms | wrk CPU | errors |" + "".join(f" vs {p} |" for p in peers)
        w(head)
        w("| --- | --- | ---: | ---: | ---: | ---: | --- |" + " ---: |" * len(peers))
        for mode in MODES:
            for r in (x for x in rows if x["mode"] == mode):
                cells = []
                for p in peers:
                    base = _get(results, p, workload, mode)
                    cells.append("-" if not base or p == r["server"] else f"{r['rps'] / base['rps']:.2f}x")
                err = ", ".join(filter(None, [r["errors"], f"non-2xx {r['non2xx']}" if r["non2xx"] else ""])) or "-"
                w(f"| {mode} | {r['server']} | {r['rps']:,.0f} | {_fmt_ms(r['p50'])} | {_fmt_ms(r['p99'])} | "
                  f"{_cpu(r)} | {err} |"
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
    ap.add_argument("--quick", action="store_true", help="2 s per run: a smoke run of the whole pipeline")
    ap.add_argument("--only", nargs="*", choices=list(WORKLOADS), help="run only these workloads")
    ap.add_argument("--servers", nargs="*", help="run only setups whose name starts with one of these")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--no-parser-bench", action="store_true")
    ap.add_argument("--profile", choices=("raw", "speedscope"), help="also py-spy record the prefork worker")
    ap.add_argument("--profile-top", type=int, default=15)
    ap.add_argument("--note", help="a line to put at the top of RESULTS.md")
    ap.add_argument("--from-json", metavar="PATH", help="rewrite RESULTS.md and the chart from a saved "
                    "bench/out/run_all.json, running nothing")
    ap.add_argument("--results", default=os.path.join(BENCH, "RESULTS.md"))
    ap.add_argument("--chart", default=os.path.join(BENCH, "results.png"))
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        data["targets"] = targets(data["results"], data["scaling"], data["cython"])
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
    echo_lua = os.path.join(tmp, "echo.lua")
    with open(echo_lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = [[%s]]\nwrk.headers["Content-Type"] = "application/json"\n'
                % ECHO_BODY)
    ctx = {"www": www, "tmp": tmp, "bench": BENCH, "files": files, "echo_lua": echo_lua,
           "env": dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, BENCH]))}

    data = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "quick": args.quick, "duration": args.duration, "cython": cython,
            "note": args.note, "left_out": [], "results": [], "scaling": [], "memory": {}, "commands": [], "profiles": [],
            "argv": " ".join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])}
    started = time.monotonic()
    try:
        for setup in SETUPS:
            if args.servers and not any(setup.name.startswith(s) for s in args.servers):
                continue
            workloads = [wl for wl in setup.workloads if not args.only or wl in args.only]
            if not workloads:
                continue
            why = setup.why_not(cython)
            if why:
                print(f"note: {setup.name} left out: {why}", file=sys.stderr)
                data["left_out"].append(f"{setup.name}: {why}")
                continue
            print(f"{setup.name}:", flush=True)
            run_setup(setup, workloads, ctx, args, data["results"], data["memory"], data["commands"])
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
    data["targets"] = targets(data["results"], data["scaling"], cython)
    with open(os.path.join(OUT, "run_all.json"), "w") as f:
        json.dump({k: v for k, v in data.items()}, f, indent=1, default=str)
    png = chart(args.chart, data)
    write_results(args.results, data, png)
    print(f"\nwrote {os.path.relpath(args.results)}" + (f" and {os.path.relpath(png)}" if png else "")
          + f" in {time.monotonic() - started:.0f} s")
    for label, measured, verdict in data["targets"]:
        print(f"  {verdict:12} {label}: {measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
