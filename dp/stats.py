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


def mean_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of a mean (e.g. per-episode scores in [0, 1]), clipped to [0, 1]; fewer than 2 values: (0, 1)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return 0.0, 1.0
    from scipy import stats  # here: as for wilson_interval, keep scipy's start-up off the robot-side import

    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))  # not t.interval: it gives NaN when every value is equal
    return max(0.0, float(x.mean()) - half), min(1.0, float(x.mean()) + half)


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
