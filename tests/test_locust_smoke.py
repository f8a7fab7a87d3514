"""Smoke load test: loadtests/run.py for 7 s per scenario (the demo site; the ASGI site on
the asyncio worker) with a few dozen locust users against the default parser. It fails when any request failed (a wrong status or body, a dropped
connection) or the server logged a traceback; never because of speed."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Only look for locust: importing it here would run gevent's monkey.patch_all() inside the
# pytest process, and every test collected with it would run on gevent's socket, threading
# and select (select.epoll is gone). The load test runs locust in its own process.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                reason="locust is in the test extra: pip install -e '.[test]'")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("scenario", ["demo", "asgi"])
def test_locust_scenario_has_no_failures(tmp_path, scenario):
    cmd = [sys.executable, os.path.join(ROOT, "loadtests", "run.py"), "--scenario", scenario, "--users", "30",
           "--time", "7s", "--wait", "0.05:0.5", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        stdout, stderr = proc.communicate(timeout=75)
    except subprocess.TimeoutExpired:
        proc.terminate()  # run.py stops its server and locust on TERM
        stdout, stderr = proc.communicate(timeout=10)
        pytest.fail(f"loadtests/run.py did not finish in 75 s\nstdout:\n{stdout}\nstderr:\n{stderr}")
    report = f"exit code {proc.returncode}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    assert proc.returncode == 0, report
    assert "OK: every request succeeded" in stdout, report
    name = "locust-auto" if scenario == "demo" else "locust-asgi-auto"
    assert (tmp_path / f"{name}.html").exists()
    # run.py reports locust's final figures: the request count of locust's own closing
    # summary (its "Aggregated" row in the log), not the CSV snapshot taken before the end.
    log = (tmp_path / f"{name}.log").read_text()
    summary = re.search(r"^\s*Aggregated\s+(\d+)\s+(\d+)\(", log, re.M)
    assert summary, log
    row = re.search(r"^\| auto \(\w+\) \| ([\d,]+) \|", stdout, re.M)
    assert row, report
    assert int(row.group(1).replace(",", "")) == int(summary.group(1)) > 0, (row.group(0), summary.group(0))
