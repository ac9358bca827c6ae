"""The benchmark's figures as a picture (PNG, with matplotlib): throughput against the calls in
flight at the mock, and the distribution of the added latency of the paced runs.

``python -m tests.perf.bench_bridge ... --chart FILE.png`` writes it after the runs; run
``lat100`` with several ``BRIDGE_RATE_LIMIT__MAX_CONCURRENT`` variants to draw the curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.perf.bench_bridge import Run

__all__ = ["write_chart"]


def write_chart(runs: Sequence[Run], path: Path) -> None:
    """Two panels: backlog runs (rate against the mock's peak calls, with the ideal
    calls ÷ latency), and each paced run's added latency as a cumulative distribution."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    backlog = [r for r in runs if not r.problem and r.rate_override is None and r.latency_ms > 0]
    paced = [r for r in runs if not r.problem and r.rate_override is not None and r.added_ms]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for latency in sorted({r.latency_ms for r in backlog}):
        points = sorted((r.peak_calls, r.rate) for r in backlog if r.latency_ms == latency)
        calls = [c for c, _ in points]
        left.plot(calls, [rate for _, rate in points], "o-", label=f"bridge, mock {latency:g} ms")
        ideal = [0, max(calls)]
        left.plot(ideal, [c / latency * 1000 for c in ideal], ":", color="grey", label="ideal")
    left.set(xlabel="calls in flight at the mock (peak)", ylabel="envelopes/s")
    left.set_title("Throughput against calls in flight")
    for run in paced:
        values = sorted(run.added_ms)
        shares = [(i + 1) / len(values) for i in range(len(values))]
        right.plot(values, shares, label=f"{run.system}, mock {run.latency_ms:g} ms")
    right.set(xscale="log", xlabel="added latency (ms, log)", ylabel="share of envelopes")
    right.set_title(f"Added latency at {paced[0].rate:.0f} env/s" if paced else "Added latency")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize="small")
    figure.savefig(path, dpi=100)
    plt.close(figure)
