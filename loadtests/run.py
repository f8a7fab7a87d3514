"""Run the locust scenario against a prefork-http it starts itself.

    python loadtests/run.py                                  # 1 worker, auto parser, 20 users, 30 s
    python loadtests/run.py --workers 2 --users 50 --time 2m --parser python
    python loadtests/run.py --compare --users 32 --time 60s  # --parser python, then cython
    python loadtests/run.py --scenario asgi                  # the ASGI app on the asyncio worker

Builds the demo site (loadtests/demo_site.py) under the output folder, starts
`python -m prefork --bind 127.0.0.1:0` serving it, runs `locust --headless` with
loadtests/locustfile.py for the given time and users, and keeps locust's HTML report, its
CSVs and the server's log under --out (default loadtests/out/<UTC time>/, git-ignored).
With --scenario asgi it serves loadtests/asgi_site.py (a raw ASGI application, on the
asyncio worker) and runs loadtests/locust_asgi.py instead.
Everything it starts is stopped by pid. Exit status: 0 when every request succeeded, 1
when any failed (or none ran, or the server logged a traceback), 2 on a usage problem.

With one worker on a machine of two cores or more, the server is pinned to core 0 and
locust to core 1; otherwise both may use every core (said in the output).

--compare runs the same scenario with --parser python and --parser cython back to back
(the Cython run is left out, with a note, when prefork.http._parser does not import) and prints
one table (requests/s, p50, p95, p99, failures) and writes compare.png. It uses a closed
loop (no think time: LOADTEST_WAIT=0:0) unless --wait says otherwise, so that the server,
not the users' pauses, sets the pace.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import resource
import signal
import subprocess
import sys
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
from common import start_prefork, tool  # noqa: E402
import demo_site  # noqa: E402


def cpus(workers: int) -> tuple:
    """(server cpus, locust cpus, description)."""
    n = os.cpu_count() or 1
    if workers == 1 and n >= 2:
        return "0", "1", "server on core 0, locust on core 1"
    every = f"0-{n - 1}"
    return every, every, f"server ({workers} workers) and locust share cores {every}"


def read_final_stats(prefix: str) -> Optional[dict]:
    """locust's final Aggregated figures, written by locustfile.py when locust quits
    (<prefix>_final.json): the numbers of locust's own closing summary."""
    try:
        with open(prefix + "_final.json") as f:
            final = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    return {"requests": int(final["requests"]), "failures": int(final["failures"]), "rps": float(final["rps"]),
            "p50": float(final["p50"]), "p95": float(final["p95"]), "p99": float(final["p99"])}


def read_stats(prefix: str) -> Optional[dict]:
    """The Aggregated row of locust's <prefix>_stats.csv: a snapshot locust refreshes once a
    second during the run, not at its end (it misses the last requests). A fallback only."""
    try:
        with open(prefix + "_stats.csv", newline="") as f:
            for row in csv.DictReader(f):
                if row["Name"] == "Aggregated":
                    return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                            "rps": float(row["Requests/s"]), "p50": float(row["50%"] or 0),
                            "p95": float(row["95%"] or 0), "p99": float(row["99%"] or 0)}
    except FileNotFoundError:
        return None
    return None


def read_failures(prefix: str, limit: int = 10) -> List[str]:
    try:
        with open(prefix + "_failures.csv", newline="") as f:
            return [f"{r['Occurrences']}x {r['Method']} {r['Name']}: {r['Error']}" for r in csv.DictReader(f)][:limit]
    except FileNotFoundError:
        return []


def run_once(parser: str, args, out: str) -> dict:
    """One server, one locust run; returns the aggregated stats and what went wrong."""
    server_cpu, locust_cpu, where = cpus(args.workers)
    site = os.path.join(out, "site")
    demo_site.build(site)
    asgi = args.scenario == "asgi"
    app, locustfile = ("asgi_site:app", "locust_asgi.py") if asgi else ("demo_site:app", "locustfile.py")
    name = f"locust-{parser}" if not asgi else f"locust-asgi-{parser}"
    prefix = os.path.join(out, name)
    print(f"[{parser}] prefork-http ({args.scenario}), {args.workers} worker(s), {args.users} users for {args.time}; {where}",
          flush=True)
    server = start_prefork(["--parser", parser, "--chdir", HERE, app], server_cpu,
                           workers=args.workers, env={"PREFORK_LOADTEST_ROOT": site})
    problems: List[str] = []
    locust_load = None  # CPU seconds locust used per second of run time
    try:
        cmd = ["taskset", "-c", locust_cpu, tool("locust") or "locust", "-f", os.path.join(HERE, locustfile),
               "--headless", "--users", str(args.users), "--spawn-rate", str(args.spawn_rate or args.users),
               "--run-time", args.time, "--host", server.url, "--csv", prefix, "--html", prefix + ".html",
               "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING"]
        env = dict(os.environ, LOADTEST_WAIT=args.wait, LOADTEST_FINAL_STATS=prefix + "_final.json")
        with open(prefix + ".log", "w") as log:
            locust = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=out)
            rc = None
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            try:
                rc = locust.wait(timeout=_seconds(args.time) + 120)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                locust_load = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / max(
                    1, _seconds(args.time))
            except subprocess.TimeoutExpired:
                problems.append("locust did not finish in time (killed)")
            finally:
                if locust.poll() is None:  # timed out, or we are being stopped (SIGTERM)
                    locust.kill()
                    locust.wait()
    finally:
        server.stop()
        with open(os.path.join(out, f"server-{parser}.log"), "w") as f:
            f.writelines(server.log)
    stats = read_final_stats(prefix)
    if stats is None:
        stats = read_stats(prefix)
        if stats is not None:
            problems.append(f"locust wrote no final figures ({prefix}_final.json); these are its last "
                            "CSV snapshot, which misses the end of the run")
    if stats is None:
        problems.append(f"locust wrote no statistics (exit code {rc}; see {prefix}.log)")
        stats = {"requests": 0, "failures": 0, "rps": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0}
    elif stats["requests"] == 0:
        problems.append("no request was made")
    if stats["failures"]:
        problems.append(f"{stats['failures']} of {stats['requests']} requests failed:")
        problems.extend("  " + line for line in read_failures(prefix))
    tracebacks = sum("Traceback" in line for line in server.log)
    if tracebacks:
        problems.append(f"the server logged {tracebacks} traceback(s): see server-{parser}.log")
    if rc not in (0, None) and not problems:
        problems.append(f"locust exited with {rc}: see {prefix}.log")
    stats.update(parser=parser, problems=problems, report=prefix + ".html", locust_load=locust_load)
    return stats


def _seconds(text: str) -> int:
    """locust's run time ('30s', '2m', '1h30m') in seconds."""
    total, num = 0, ""
    for ch in text:
        if ch.isdigit():
            num += ch
        else:
            total += int(num or 0) * {"s": 1, "m": 60, "h": 3600}[ch]
            num = ""
    return total + int(num or 0)


def table(rows: List[dict]) -> str:
    lines = ["| parser | requests | req/s | p50 ms | p95 ms | p99 ms | failures |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['parser']} | {r['requests']:,} | {r['rps']:,.1f} | {r['p50']:.0f} | {r['p95']:.0f} | "
                     f"{r['p99']:.0f} | {r['failures']} |")
    if len(rows) == 2 and rows[0]["rps"]:
        lines.append(f"\ncython / python: {rows[1]['rps'] / rows[0]['rps']:.2f}x requests/s")
    return "\n".join(lines)


COLOURS = {"python": "tab:gray", "cython": "tab:blue"}


def colour_of(parser: str, index: int) -> str:
    """A parser's colour in compare.png: the same bar colour in every panel."""
    for name, colour in COLOURS.items():
        if parser == name or parser.startswith(f"auto ({name})"):
            return colour
    return ["tab:orange", "tab:green", "tab:red"][index % 3]


def chart(rows: List[dict], path: str, title: str) -> Optional[str]:
    try:
        import matplotlib
    except ImportError:
        print("note: matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    names = [r["parser"] for r in rows]
    colours = [colour_of(name, i) for i, name in enumerate(names)]  # one per parser, in both panels
    left.bar(names, [r["rps"] for r in rows], color=colours)
    left.set_ylabel("requests/s")
    left.set_title("throughput")
    width = 0.8 / max(1, len(rows))
    for i, r in enumerate(rows):
        xs = [j + i * width for j in range(3)]
        right.bar(xs, [r["p50"], r["p95"], r["p99"]], width, label=r["parser"], color=colours[i])
    right.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(3)], ["p50", "p95", "p99"])
    right.set_ylabel("ms")
    right.set_title("response time")
    right.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--parser", default="auto", choices=("auto", "python", "cython"))
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--spawn-rate", type=float, help="users started per second (default: all at once)")
    ap.add_argument("--time", default="30s", help="locust run time: 30s, 2m, 1h (default 30s)")
    ap.add_argument("--wait", help="think time MIN:MAX seconds (default 0.5:2; 0:0 with --compare)")
    ap.add_argument("--scenario", default="demo", choices=("demo", "asgi"),
                    help="demo: the demo site (App); asgi: loadtests/asgi_site.py on the asyncio worker")
    ap.add_argument("--compare", action="store_true", help="--parser python then --parser cython")
    ap.add_argument("--out", help="output folder (default loadtests/out/<UTC time>)")
    args = ap.parse_args()
    # A TERM (a test's timeout, CI cancelling) unwinds through the finally blocks, which
    # stop the server and locust by pid.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.wait is None:
        args.wait = "0:0" if args.compare else "0.5:2"
    if not tool("locust"):
        print("locust is not installed (pip install locust)", file=sys.stderr)
        return 2
    if not tool("taskset"):
        print("taskset is not installed (util-linux)", file=sys.stderr)
        return 2
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = os.path.abspath(args.out or os.path.join(HERE, "out", stamp))
    os.makedirs(out, exist_ok=True)

    from prefork.http import parser as parser_choice
    if args.compare:
        parsers = ["python", "cython"]
        if not parser_choice.cython_available():
            print("note: prefork.http._parser does not import: the cython run is left out", file=sys.stderr)
            parsers.remove("cython")
    else:
        parsers = [args.parser]
    rows = [run_once(p, args, out) for p in parsers]
    for r in rows:
        if r["parser"] == "auto":
            r["parser"] = f"auto ({parser_choice.name_of(parser_choice.load('auto'))})"

    failed = False
    for r in rows:
        for line in r["problems"]:
            print(f"[{r['parser']}] {line}", file=sys.stderr)
        failed = failed or bool(r["problems"])
    print()
    print(table(rows))
    if args.compare:
        title = (f"locust, {args.users} users, {args.time}, think time {args.wait} s, {args.workers} worker(s); "
                 f"{cpus(args.workers)[2]}")
        png = chart(rows, os.path.join(out, "compare.png"), title)
        with open(os.path.join(out, "compare.md"), "w") as f:
            f.write(f"{title}\n\n{table(rows)}\n")
        if png:
            print(f"\nchart: {png}")
    for r in rows:
        if r["locust_load"] is not None and r["locust_load"] > 0.85:
            print(f"[{r['parser']}] note: locust used {r['locust_load']:.0%} of a core for the run: the load "
                  "generator, not the server, probably set the pace (its req/s is locust's limit)")
    print(f"reports: {', '.join(r['report'] for r in rows)}")
    print("FAILED" if failed else "OK: every request succeeded")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
