"""Run the connection fuzz property (tests/test_fuzz_connection.py) for longer than CI does.

    python fuzz/fuzz_connection.py --seconds 600            # both parser twins, 10 minutes
    python fuzz/fuzz_connection.py --examples 100000 --parser python
    python fuzz/fuzz_connection.py --seconds 60 --seed 1234  # replay a campaign

No atheris: hypothesis generates the scenarios, in batches with fresh seeds until the
examples or the seconds run out. A failure is shrunk, printed as a scenario literal (a
dict of plain values) with the exception, and the run exits 1; see fuzz/README.md for how
to turn it into a regular test.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

import test_fuzz_connection as prop  # noqa: E402

BATCH = 2000


def available(parser: str) -> bool:
    if parser == "python":
        return True
    try:
        from prefork.http import _parser  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0: no time limit)")
    ap.add_argument("--examples", type=int, default=0, help="stop after this many scenarios per twin (0: none)")
    ap.add_argument("--parser", choices=["python", "cython", "both"], default="both")
    ap.add_argument("--seed", type=int, default=None, help="seed of the first batch (the next ones add 1)")
    args = ap.parse_args(argv)
    if not args.seconds and not args.examples:
        args.seconds = 60
    parsers = ["python", "cython"] if args.parser == "both" else [args.parser]
    for name in list(parsers):
        if not available(name):
            if args.parser == "cython" or os.environ.get("PREFORK_REQUIRE_EXTENSION", "") not in ("", "0"):
                print("the Cython parser is not built", file=sys.stderr)
                return 2
            print("the Cython parser is not built: fuzzing the Python twin only", file=sys.stderr)
            parsers.remove(name)
    folder = tempfile.mkdtemp(prefix="fuzz-connection-")
    prop.make_site(folder)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    first = args.seed if args.seed is not None else random.randrange(1 << 32)
    done = {name: 0 for name in parsers}
    batch = 0
    while True:
        for name in parsers:
            left = args.examples - done[name] if args.examples else BATCH
            if left <= 0:
                continue
            n = min(BATCH, left)
            batch_seed = first + batch

            @seed(batch_seed)
            @settings(max_examples=n, deadline=None, database=None, print_blob=True,
                      suppress_health_check=list(HealthCheck))
            @given(sc=prop.scenario(name))
            def run(sc):
                prop.run_scenario(folder=folder, **sc)

            t0 = time.monotonic()
            try:
                run()
            except Exception:
                print(f"FAILED: parser {name}, seed {batch_seed} (the falsifying scenario is above)",
                      file=sys.stderr)
                raise
            done[name] += n
            print(f"{name}: {done[name]} scenarios, batch seed {batch_seed}, {time.monotonic() - t0:.1f}s",
                  flush=True)
        batch += 1
        if deadline is not None and time.monotonic() >= deadline:
            break
        if args.examples and all(done[n] >= args.examples for n in parsers):
            break
    print("no failure:", ", ".join(f"{n} {k} scenarios" for n, k in done.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
