"""Application benchmark: hello-world throughput, one worker, pinned cores, one run.

    python bench/apps.py                      # 10 s per server, 32 connections
    python bench/apps.py --duration 5 --only prefork-app gunicorn-gthread

Servers (all answer GET / with the same 13-byte text/plain body, bench/hello.py):
  prefork-app        prefork-http, an App route            (--parser auto: Cython when built)
  prefork-wsgi       prefork-http, a WSGI callable
  gunicorn-sync      gunicorn -k sync (closes after every response: no keep-alive)
  gunicorn-gthread   gunicorn -k gthread --threads 4
  uvicorn-httptools  uvicorn --http httptools --loop uvloop, a raw ASGI callable
Each server runs alone on core 0 (taskset -c 0), wrk on core 1 (taskset -c 1,
`wrk -t1 -c32 -d10s`), one after the other in one run, after a 1 s warm-up. Ratios are
taken between figures of this run only. Talks to 127.0.0.1 only. Needs wrk and taskset.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BENCH, BIN, PY, ROOT, free_port, stop, wait_answering, wrk as wrk_on  # noqa: E402

sys.path.insert(0, ROOT)


def commands(port: int, parser: str) -> dict:
    bind = f"127.0.0.1:{port}"
    prefork = [PY, "-m", "prefork", "--bind", bind, "--workers", "1", "--parser", parser,
               "--log-level", "warning"]
    gunicorn = [os.path.join(BIN, "gunicorn"), "--bind", bind, "--workers", "1",
                "--log-level", "warning", "--chdir", BENCH]
    return {
        "prefork-app": prefork + ["--chdir", BENCH, "hello:app"],
        "prefork-wsgi": prefork + ["--chdir", BENCH, "hello:wsgi"],
        "gunicorn-sync": gunicorn + ["-k", "sync", "hello:wsgi"],
        "gunicorn-gthread": gunicorn + ["-k", "gthread", "--threads", "4", "hello:wsgi"],
        "uvicorn-httptools": [os.path.join(BIN, "uvicorn"), "--host", "127.0.0.1", "--port", str(port),
                              "--workers", "1", "--http", "httptools", "--loop", "uvloop",
                              "--no-access-log", "--log-level", "warning", "--app-dir", BENCH,
                              "hello:asgi"],
    }


def wrk(url: str, duration: int, connections: int) -> dict:
    return wrk_on(url, "1", duration, connections)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--parser", default="auto", choices=("auto", "cython", "python"))
    ap.add_argument("--only", nargs="*", help="run only these servers")
    args = ap.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, BENCH]))
    from prefork.http import parser as parser_choice
    parser_name = parser_choice.name_of(parser_choice.load(args.parser))
    results = {}
    for name in commands(0, args.parser):
        if args.only and name not in args.only:
            continue
        port = free_port()
        cmd = commands(port, args.parser)[name]
        if not os.path.exists(cmd[0]):
            print(f"skipping {name}: {cmd[0]} is not installed", file=sys.stderr)
            continue
        proc = subprocess.Popen(["taskset", "-c", "0", *cmd], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_answering(port, proc)
            url = f"http://127.0.0.1:{port}/"
            wrk(url, 1, args.connections)  # warm-up
            r = wrk(url, args.duration, args.connections)
        finally:
            stop(proc)
        if r["errors"] or r["non2xx"]:
            print(f"note: {name}: socket errors {r['errors']!r}, non-2xx {r['non2xx']}", file=sys.stderr)
        results[name] = r
        print(f"{name}: {r['rps']:,.0f} req/s", file=sys.stderr)
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s, GET / → 13-byte text/plain, keep-alive, "
          f"1 worker pinned to core 0, wrk on core 1, one run; prefork parser: {parser_name}\n")
    base_g = results.get("gunicorn-gthread", {}).get("rps")
    base_u = results.get("uvicorn-httptools", {}).get("rps")
    print("| server | req/s | latency avg | vs gunicorn gthread | vs uvicorn httptools | socket errors |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, r in results.items():
        rg = f"{r['rps'] / base_g:.2f}x" if base_g else "-"
        ru = f"{r['rps'] / base_u:.2f}x" if base_u else "-"
        print(f"| {name} | {r['rps']:,.0f} | {r['latency']} | {rg} | {ru} | {r['errors'] or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
