"""The deterministic DDIM-style sampler on an exponential sigma schedule (MoDE's default sampler).

First-order DDIM in EDM form, ``x <- (s'/s) x + (1 - s'/s) D(x; s)``, which is exactly diffusers'
``EDMEulerScheduler`` with ``sigma_schedule="exponential"`` (tested step for step). It is written
out because the sigmas must be a fixed tensor and the loop plain tensor arithmetic: expert caching
precomputes the router's choice per step and the ONNX export unrolls the loop; the runtime also
avoids importing diffusers (~3 s) for ten numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """``steps`` sigmas log-spaced from sigma_max down to sigma_min, then a final 0: shape (steps + 1,)."""
    if steps < 1:
        raise ValueError(f"sampler steps must be >= 1, got {steps}")
    sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp()
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def ddim_sample(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Integrate from ``x`` at ``sigmas[0]`` down to ``sigmas[-1]`` (0).

    ``denoise(x, sigma)`` returns D(x; sigma) for a batch, ``sigma`` being a (B,) tensor. Start from
    noise with ``x = sigmas[0] * N(0, I)``; a warm start passes a guess plus noise at an intermediate
    sigma and the tail of the schedule.
    """
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i] * ones)
        ratio = sigmas[i + 1] / sigmas[i]
        x = ratio * x + (1 - ratio) * denoised
    return x
