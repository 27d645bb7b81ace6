"""Repeat a measurement and summarise it: median and spread, because the machine is noisy."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence


def summary(values: Sequence[float]) -> dict:
    """Median, min, max and the relative spread (max - min) / median of ``values``."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("no values to summarise")
    med = statistics.median(vals)
    return {
        "median": med,
        "min": min(vals),
        "max": max(vals),
        "spread": (max(vals) - min(vals)) / abs(med) if med else 0.0,
        "n": len(vals),
        "values": vals,
    }


def ratio_summary(a: Sequence[float], b: Sequence[float]) -> dict:
    """Summary of the per-repeat ratios a[i] / b[i]: each pair was measured side by side."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} values against {len(b)}: pairs are measured together")
    return summary([x / y for x, y in zip(a, b)])


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    vals = sorted(values)
    if not vals:
        raise ValueError("no values")
    pos = (len(vals) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def time_call(fn: Callable[[], object], min_time: float = 0.2, max_calls: int = 10_000) -> float:
    """Seconds per call of ``fn``: calls it until ``min_time`` has passed (at least once)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or calls >= max_calls:
            return elapsed / calls
