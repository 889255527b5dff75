"""The sampler's noise schedules: which sigmas the sampler visits, from the highest down to 0.

- ``exponential``: log-spaced from sigma_max to sigma_min (MoDE's default; diffusers'
  ``sigma_schedule="exponential"``);
- ``karras``: Karras et al. (2022)'s ``(max^(1/rho) + ramp (min^(1/rho) - max^(1/rho)))^rho``, denser at
  low noise (diffusers' ``sigma_schedule="karras"``);
- ``fitted``: equal steps in probability under the training sigmas' log-logistic, so the sampler
  visits sigmas in proportion to how often training saw them.

``diffusion.trim`` (p > 0) narrows any schedule's range to the training distribution's p and 1 - p
quantiles: the steps then fall where the model was trained (with the defaults almost all training
sigmas lie in [0.05, 5] at p = 0.01) instead of at 80 or 0.001, where a step barely changes the chunk.
Written by hand, as the solver is, because they are a few numbers that must trace into the export.
"""

from __future__ import annotations

import math

import torch

from dp.config import SCHEDULES, DiffusionConfig



def _with_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def _check(steps: int, sigma_min: float, sigma_max: float) -> None:
    if steps < 1:
        raise ValueError(f"sampler steps must be >= 1, got {steps}")
    if not 0.0 < sigma_min < sigma_max:
        raise ValueError(f"the schedule needs 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """``steps`` sigmas log-spaced from sigma_max down to sigma_min, then a final 0: shape (steps + 1,)."""
    _check(steps, sigma_min, sigma_max)
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp())


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al.'s schedule with exponent ``rho`` from sigma_max to sigma_min, then 0: (steps + 1,)."""
    _check(steps, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return _with_zero((hi + ramp * (lo - hi)) ** rho)


def log_logistic_cdf(sigma: float, loc: float, scale: float) -> float:
    """P(training sigma <= ``sigma``) for log(sigma) ~ logistic(loc, scale), before truncation."""
    return 1.0 / (1.0 + math.exp(-(math.log(sigma) - loc) / scale))


def log_logistic_quantile(p: torch.Tensor | float, loc: float, scale: float) -> torch.Tensor:
    """The sigma below which a fraction ``p`` of log-logistic(loc, scale) sigmas lie."""
    return torch.as_tensor(p, dtype=torch.float64).logit().mul(scale).add(loc).exp()


def fitted_sigmas(steps: int, sigma_min: float, sigma_max: float, loc: float, scale: float) -> torch.Tensor:
    """``steps`` sigmas at equal steps of the training distribution's CDF from sigma_max down to
    sigma_min (its quantiles), then 0: (steps + 1,)."""
    _check(steps, sigma_min, sigma_max)
    hi, lo = log_logistic_cdf(sigma_max, loc, scale), log_logistic_cdf(sigma_min, loc, scale)
    return _with_zero(log_logistic_quantile(torch.linspace(hi, lo, steps, dtype=torch.float64), loc, scale))


def sampling_range(cfg: DiffusionConfig) -> tuple[float, float]:
    """(lowest, highest) sigma the sampler visits: the training range, or its ``trim`` quantiles."""
    if not 0.0 <= cfg.trim < 0.5:
        raise ValueError(f"diffusion.trim must be in [0, 0.5), got {cfg.trim}")
    if cfg.trim == 0:
        return cfg.sigma_min, cfg.sigma_max
    loc = math.log(cfg.sigma_data) if cfg.train_loc is None else cfg.train_loc
    lo, hi = (float(log_logistic_quantile(p, loc, cfg.train_scale)) for p in (cfg.trim, 1 - cfg.trim))
    return max(lo, cfg.sigma_min), min(hi, cfg.sigma_max)


def sampler_sigmas(cfg: DiffusionConfig, steps: int | None = None) -> torch.Tensor:
    """The schedule ``cfg`` names (``diffusion.schedule``, ``trim``, ``rho``) with ``steps`` steps
    (default ``diffusion.steps``): (steps + 1,) float32, ending at 0."""
    steps = cfg.steps if steps is None else steps
    lo, hi = sampling_range(cfg)
    if cfg.schedule == "exponential":
        return exponential_sigmas(steps, lo, hi)
    if cfg.schedule == "karras":
        return karras_sigmas(steps, lo, hi, cfg.rho)
    if cfg.schedule == "fitted":
        loc = math.log(cfg.sigma_data) if cfg.train_loc is None else cfg.train_loc
        return fitted_sigmas(steps, lo, hi, loc, cfg.train_scale)
    raise ValueError(f"diffusion.schedule must be one of {list(SCHEDULES)}, got {cfg.schedule!r}")
