"""Small statistics shared by evaluation, deployment reports and benchmarks (numpy, scipy)."""

from __future__ import annotations

import numpy as np


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a success rate (scipy's; sound for rates near 0 or 1 and small n); n = 0: (0, 1)."""
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest  # here: the robot-side runtime imports this module without scipy's start-up

    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


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
