"""loadtests/run.py's compare.png: each parser keeps one colour in both panels.

Needs matplotlib (the bench extra); skipped without it. Imports run.py, which imports
neither locust nor gevent."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_compare_chart_keeps_one_colour_per_parser(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    monkeypatch.syspath_prepend(os.path.join(ROOT, "loadtests"))
    sys.modules.pop("run", None)
    import run

    figures = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), save(self, *a, **k))[1])
    rows = [dict(parser="python", rps=900.0, p50=2, p95=11, p99=36),
            dict(parser="cython", rps=2000.0, p50=1, p95=5, p99=9)]
    assert run.chart(rows, str(tmp_path / "compare.png"), "t") == str(tmp_path / "compare.png")
    assert (tmp_path / "compare.png").stat().st_size > 0
    left, right = figures[0].axes
    throughput = [bar.get_facecolor() for bar in left.patches]
    latency = [bar.get_facecolor() for bar in right.patches]  # p50, p95, p99 of each parser in turn
    assert len(throughput) == 2 and throughput[0] != throughput[1]
    assert latency == [throughput[0]] * 3 + [throughput[1]] * 3
    legend = {text.get_text(): handle.get_facecolor()
              for text, handle in zip(right.get_legend().get_texts(), right.get_legend().legend_handles)}
    assert legend == {"python": throughput[0], "cython": throughput[1]}
    sys.modules.pop("run", None)
