"""Small statistics shared by evaluation, deployment reports and benchmarks (numpy only)."""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sound for rates near 0 or 1 and small n)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the bounds are exactly 0 / 1 at p = 0 / 1; say so rather than 0.9999999999999999
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def timing_summary(values, target: float | None = None) -> dict[str, float]:
    """median / p99 / max of timings; with ``target`` (a period) also the spread around it (jitter)."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"n": 0}
    out = {"n": int(a.size), "median": float(np.median(a)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}
    if target is not None:
        dev = np.abs(a - target)
        out.update(std=float(a.std()), p99_abs_dev=float(np.percentile(dev, 99)), max_abs_dev=float(dev.max()))
    return out
