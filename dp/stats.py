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


def mean_interval(values, level: float = 0.95, bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """Student-t interval of a mean, clipped to ``bounds`` (default [0, 1], for per-episode scores; (-1, 1)
    for differences of such scores); fewer than 2 values: ``bounds``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return bounds
    from scipy import stats  # here: as for wilson_interval, keep scipy's start-up off the robot-side import

    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))  # not t.interval: it gives NaN when every value is equal
    return max(bounds[0], float(x.mean()) - half), min(bounds[1], float(x.mean()) + half)


def paired_outcomes(success_a, success_b, scores_a=None, scores_b=None) -> dict[str, float | int | list[float]]:
    """Two policies on the same episodes (same seeds, same order): the episodes only A solved and only B
    solved, the exact two-sided McNemar p-value of their success rates (a binomial test on those
    discordant episodes), and with scores the mean of B's minus A's with its 95% t-interval.

    Also whether the two fail the same episodes more often than chance: the episodes both failed, the
    number expected if each failed its episodes independently of the other (failures of A times
    failures of B over the episodes), and the one-sided p-value of Fisher's exact test on the 2x2
    table (small: the episodes themselves, their starts or their draws, decide outcomes)."""
    a, b = np.asarray(success_a, dtype=bool), np.asarray(success_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes need two equal-length lists of episodes, got {a.shape} and {b.shape}")
    only_a, only_b, both, neither = int((a & ~b).sum()), int((~a & b).sum()), int((a & b).sum()), int((~a & ~b).sum())
    from scipy.stats import binomtest, fisher_exact  # as above

    p = float(binomtest(min(only_a, only_b), only_a + only_b).pvalue) if only_a + only_b else 1.0
    agreement = float(fisher_exact([[neither, only_b], [only_a, both]], alternative="greater").pvalue)
    out: dict[str, float | int | list[float]] = {"episodes": int(a.size), "successes_a": int(a.sum()), "successes_b": int(b.sum()),
                                                 "only_a": only_a, "only_b": only_b, "mcnemar_p": p, "both_failed": neither,
                                                 "both_failed_if_independent": float((~a).sum() * (~b).sum() / a.size),
                                                 "same_failures_p": agreement}
    if scores_a is not None and scores_b is not None:
        diff = np.asarray(scores_b, dtype=np.float64) - np.asarray(scores_a, dtype=np.float64)
        out["score_difference"] = float(diff.mean())
        out["score_difference_ci95"] = list(mean_interval(diff, bounds=(-1.0, 1.0)))
    return out


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
