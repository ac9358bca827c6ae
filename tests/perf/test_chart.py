"""The benchmark's chart is drawn from its runs (a PNG), with or without paced runs."""

from __future__ import annotations

from pathlib import Path

from tests.perf.bench_bridge import Run
from tests.perf.chart import write_chart

PNG = b"\x89PNG\r\n\x1a\n"


def backlog(calls: int, rate: float) -> Run:
    return Run("lat100", f"c{calls}", 1000, 100.0, 1, window_s=1000 / rate, peak_calls=calls)


def test_the_chart_is_a_png_of_the_runs(tmp_path: Path) -> None:
    paced = Run("paced 0ms", "c256", 6000, 0.0, 1, rate_override=1000.0)
    paced.added_ms = [float(n % 40 + 1) for n in range(6000)]
    runs = [backlog(32, 310), backlog(64, 600), backlog(256, 2100), paced]
    runs.append(Run("lat100", "broken", 1000, 100.0, 1, problem="stalled"))
    out = tmp_path / "bench.png"
    write_chart(runs, out)
    assert out.read_bytes().startswith(PNG)
    assert out.stat().st_size > 10_000  # axes, lines and labels, not an empty canvas
    backlog_only = tmp_path / "backlog.png"
    write_chart(runs[:3], backlog_only)
    assert backlog_only.read_bytes().startswith(PNG)
