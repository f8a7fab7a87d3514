"""Servers A and B, interleaved (A B A B ...), on one workload: the server's CPU time per
request and where it goes. For targets whose rows move more between runs than the servers
differ (static 10 MiB: the kernel's TCP work dominates, and who is charged for it depends
on the scheduling of the server and wrk).

Per run: req/s and wrk's p50/p99; the server's CPU per request (all its processes, exact,
from /proc/PID/schedstat; its user/system split from /proc/PID/stat ticks); wrk's CPU per
request. With --perf, the share of the worker's samples (perf record -e cpu-clock) in the
kernel and in user space; with --syscalls, the worker's system calls per request (perf
stat on the syscall tracepoints, and sendfile's EAGAIN returns). Then the mean ± sd of each
over the rounds, and the ratio of B to A in each round.

One worker, pinned to core 0; wrk -t1 -c32, pinned to core 1, after a 1 s warm-up (as
run_all.py). Servers: `prefork` (this checkout, --root over the files), `prefork@DIR` (the
prefork package in DIR: a copy with a change, to compare with this checkout), `nginx`
(common.NGINX_CONF), `nginx+DIRECTIVE` (that conf with one more http directive). perf on
nginx's worker needs root. Wrap in `flock /tmp/bench.lock`:

  python bench/ab_split.py --path /10485760.bin --rounds 4 --perf --syscalls prefork nginx
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import NGINX_CONF, descendants, free_port, start_prefork, start_process, stop  # noqa: E402

SERVER_CPU, WRK_CPU = "0", "1"
SIZES = (1024, 65536, 10485760)  # the files of run_all.py's static workloads
SYSCALLS = ("sendfile64", "sendto", "writev", "recvfrom", "epoll_wait", "epoll_ctl", "setsockopt",
            "openat", "newfstatat", "close")


def make_www() -> tuple:
    tmp = tempfile.mkdtemp(prefix="prefork-ab-")
    os.chmod(tmp, 0o755)  # nginx's worker runs as another user
    www = os.path.join(tmp, "www")
    os.mkdir(www)
    os.chmod(www, 0o755)
    for size in SIZES:
        path = os.path.join(www, f"{size}.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        os.chmod(path, 0o644)
    return tmp, www


def start(name: str, tmp: str, www: str):
    if name.split("@")[0] == "prefork":
        # `python -m` puts its working folder first on sys.path: the copy's, for a copy
        where = name.split("@", 1)[1] if "@" in name else None
        server = start_prefork(["--parser", "cython", "--root", www], SERVER_CPU, cwd=where,
                               env={"PYTHONPATH": where} if where else None)
        return server, server.url.rstrip("/")
    if name.split("+")[0] != "nginx":
        raise SystemExit(f"unknown server {name!r}: prefork, prefork@DIR, nginx or nginx+DIRECTIVE")
    port = free_port()
    conf = NGINX_CONF.format(tmp=tmp, www=www, port=port)
    if "+" in name:
        conf = conf.replace("sendfile on;", f"sendfile on;\n    {name.split('+', 1)[1].rstrip(';')};")
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    server = start_process(["nginx", "-c", path, "-p", tmp], port, SERVER_CPU, probe="/1024.bin")
    return server, f"http://127.0.0.1:{port}"


def cpu(pid: int) -> tuple:
    """(utime ticks, stime ticks, exact ns on the CPU) of one process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/schedstat") as f:
        ns = int(f.read().split()[0])
    return int(fields[11]), int(fields[12]), ns


def run(name: str, args, tmp: str, www: str) -> dict:
    server, url = start(name, tmp, www)
    tag = re.sub(r"[^\w.+-]", "_", name)
    try:
        tree = descendants(server.proc.pid)
        worker = tree[-1]  # prefork: taskset → master → worker; nginx: master → worker
        url += args.path
        subprocess.run(["taskset", "-c", WRK_CPU, "wrk", "-t1", "-c32", "-d1s", url], capture_output=True)
        watchers = []
        if args.syscalls:
            events = []
            for call in SYSCALLS:
                events += ["-e", f"syscalls:sys_enter_{call}"]
            events += ["-e", "syscalls:sys_exit_sendfile64", "--filter", "ret == -11", "-e", "raw_syscalls:sys_enter"]
            watchers.append(subprocess.Popen(["perf", "stat", "-x,", "-o", f"{tmp}/syscalls-{tag}.txt", *events,
                                              "-p", str(worker)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if args.perf:
            watchers.append(subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-p", str(worker),
                                              "-o", f"{tmp}/perf-{tag}.data"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if watchers:
            time.sleep(0.3)
        before = {p: cpu(p) for p in tree}
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(["taskset", "-c", WRK_CPU, "wrk", "-t1", "-c32", f"-d{args.duration}s", "--latency", url],
                             capture_output=True, text=True).stdout
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        after = {p: cpu(p) for p in tree}
        for w in watchers:
            w.send_signal(2)
            w.wait()
    finally:
        stop(server.proc)
    n = int(re.search(r"(\d+) requests in", out).group(1))
    tick = os.sysconf("SC_CLK_TCK")
    row = {
        "req/s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "server": sum(after[p][2] - before[p][2] for p in tree) / 1e3 / n,
        "user": sum(after[p][0] - before[p][0] for p in tree) / tick * 1e6 / n,
        "sys": sum(after[p][1] - before[p][1] for p in tree) / tick * 1e6 / n,
    }
    # wrk's CPU (taskset execs it, so the child is wrk itself)
    row["wrk"] = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e6 / n
    row["server+wrk"] = row["server"] + row["wrk"]
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    line = (f"{name:28s} {row['req/s']:7.1f} req/s  p50 {pct.get('50', '-'):>9} p99 {pct.get('99', '-'):>9}  "
            f"server {row['server']:7.1f} us/req (ticks: user {row['user']:5.1f} sys {row['sys']:7.1f})  "
            f"wrk {row['wrk']:7.1f}")
    if args.perf:
        report = subprocess.run(["perf", "report", "-i", f"{tmp}/perf-{tag}.data", "--sort", "dso", "--stdio"],
                                capture_output=True, text=True).stdout
        kernel = sum(float(x.split("%")[0]) for x in report.splitlines()
                     if "[kernel" in x and "%" in x and not x.startswith("#")) / 100
        row["perf kernel"] = row["server"] * kernel
        row["perf user"] = row["server"] * (1 - kernel)
        line += f"  perf: kernel {row['perf kernel']:7.1f} user {row['perf user']:5.1f} us/req"
    print(line, flush=True)
    if args.syscalls:
        calls = []
        with open(f"{tmp}/syscalls-{tag}.txt") as f:
            for text in f:
                parts = text.split(",")
                if len(parts) > 3 and parts[0].strip().isdigit():
                    event = parts[2].split(":")[1]
                    event = {"sys_exit_sendfile64": "sendfile EAGAIN", "sys_enter": "all"}.get(event, event.replace("sys_enter_", ""))
                    row[f"calls {event}"] = int(parts[0]) / n
                    calls.append(f"{event} {int(parts[0]) / n:.2f}")
        print("    syscalls per request: " + ", ".join(calls), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("servers", nargs="+")
    ap.add_argument("--path", default="/10485760.bin", help="/1024.bin, /65536.bin or /10485760.bin")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=int, default=5, help="seconds of each wrk run")
    ap.add_argument("--perf", action="store_true", help="the worker's kernel/user split, from perf samples")
    ap.add_argument("--syscalls", action="store_true", help="the worker's system calls per request")
    args = ap.parse_args()
    tmp, www = make_www()
    rows = {name: [] for name in args.servers}
    for _ in range(args.rounds):
        for name in args.servers:
            rows[name].append(run(name, args, tmp, www))
    print(f"\nmean ± sd over {args.rounds} rounds (us per request unless said)")
    for name, runs in rows.items():
        cols = []
        for key in runs[0]:
            values = [r.get(key, 0.0) for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cols.append(f"{key} {statistics.mean(values):.2f} ± {sd:.2f}" if key.startswith("calls")
                        else f"{key} {statistics.mean(values):.1f} ± {sd:.1f}")
        print(f"{name}:\n    " + "\n    ".join(cols))
    first = args.servers[0]
    for name in args.servers[1:]:
        ratios = [b["server"] / a["server"] for a, b in zip(rows[first], rows[name])]
        print(f"server CPU per request, {name} / {first}, each round: " + " ".join(f"{r:.2f}" for r in ratios)
              + f"  (>1: {first} is cheaper)")


if __name__ == "__main__":
    main()
