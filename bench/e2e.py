"""End-to-end benchmark: wrk against prefork-http, one worker, pinned cores.

    python bench/e2e.py                      # 1 KiB file, --parser python vs cython
    python bench/e2e.py --duration 10 --connections 32 --rounds 3

The server runs on core 0 (taskset -c 0) and wrk on core 1 (taskset -c 1), so the two
never share a core. Each configuration runs `--rounds` times, interleaved, and the best
and median requests/s are reported; ratios are taken between figures of the same run.
Needs wrk (Debian package `wrk`) and taskset (util-linux). Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, start_prefork, stop, wrk  # noqa: E402


def start_server(root: str, parser: str, cpu: str, extra=()) -> tuple:
    """One prefork-http worker serving `root`, pinned to `cpu`: (Popen, url)."""
    server = start_prefork(["--root", root, "--parser", parser, *extra], cpu)
    return server.proc, server.url


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=1024, help="file size in bytes")
    ap.add_argument("--close", action="store_true", help="send Connection: close (no keep-alive)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    www = tempfile.mkdtemp(prefix="prefork-bench-")
    with open(os.path.join(www, "file.bin"), "wb") as f:
        f.write(os.urandom(args.size))
    wrk_extra = ["-H", "Connection: close"] if args.close else []
    results = {"python": [], "cython": []}
    sys.path.insert(0, ROOT)
    from prefork.http import parser as parser_choice
    if not parser_choice.cython_available():
        print("note: the Cython parser does not import (prefork.http._parser): its rows are left out", file=sys.stderr)
        del results["cython"]
    for _ in range(args.rounds):
        for parser in results:
            proc, url = start_server(www, parser, "0")
            try:
                wrk(url + "/file.bin", "1", 1, args.connections, wrk_extra)  # warm-up
                r = wrk(url + "/file.bin", "1", args.duration, args.connections, wrk_extra)
            finally:
                stop(proc)
            if r["errors"] or r["non2xx"]:
                print(f"warning: {parser}: errors {r['errors']!r}, non-2xx {r['non2xx']}", file=sys.stderr)
            results[parser].append(r["rps"])
    shutil.rmtree(www)
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.size}-byte file, "
          f"{'Connection: close' if args.close else 'keep-alive'}, 1 worker on core 0, wrk on core 1, "
          f"{args.rounds} rounds\n")
    print("| parser | best req/s | median req/s | all rounds |")
    print("| --- | ---: | ---: | --- |")
    for parser, figures in results.items():
        print(f"| {parser} | {max(figures):,.0f} | {statistics.median(figures):,.0f} | "
              f"{', '.join(f'{x:,.0f}' for x in figures)} |")
    if "cython" in results:
        ratio = statistics.median(results["cython"]) / statistics.median(results["python"])
        print(f"\ncython / python (medians): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
