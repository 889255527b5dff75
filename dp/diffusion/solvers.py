"""The deterministic samplers: first-order DDIM and DPM-Solver++(2M), as one linear update.

Both integrate the probability-flow ODE of EDM (x0-prediction ``D(x; sigma)``) over a fixed schedule
with one network pass per step, and both are an update ``x <- a x + b D_i + c D_(i-1)`` whose
coefficients depend on the sigmas alone:

- ``ddim``: ``a = s'/s``, ``b = 1 - a``, ``c = 0``: exactly diffusers' ``EDMEulerScheduler``
  (MoDE's default sampler);
- ``dpmpp2m``: DPM-Solver++ of order 2, multistep (Lu et al. 2022): the step extrapolates D from
  this step's and the last step's values, ``b = (1 - a)(1 + 1/(2 r))``, ``c = -(1 - a)/(2 r)`` with
  ``r`` the ratio of the last log-sigma step to this one; first order at the first step and at the
  last one (down to 0). Exactly diffusers' ``EDMDPMSolverMultistepScheduler`` (midpoint, order 2).

Written out, not called through diffusers, because the coefficients must be plain numbers: expert
caching precomputes each step, the ONNX export unrolls the loop, and the runtime avoids importing
diffusers (~3 s) for a few numbers. Every sampler of the project (the model's, the cached one, RTI's
warm tail, the export check) runs :func:`step_coefficients` and :func:`solve`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from dp.config import SOLVERS



def step_coefficients(sigmas: Sequence[float] | torch.Tensor, solver: str = "ddim") -> list[tuple[float, float, float]]:
    """Per step i (``sigmas[i] -> sigmas[i + 1]``): ``(a, b, c)`` of ``x <- a x + b D_i + c D_(i-1)``."""
    if solver not in SOLVERS:
        raise ValueError(f"diffusion.solver must be one of {list(SOLVERS)}, got {solver!r}")
    s = [float(v) for v in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    out = []
    for i in range(len(s) - 1):
        a = s[i + 1] / s[i]
        if solver == "ddim" or i == 0 or s[i + 1] == 0.0:
            out.append((a, 1.0 - a, 0.0))
            continue
        r = math.log(s[i - 1] / s[i]) / math.log(s[i] / s[i + 1])  # last log-sigma step over this one
        out.append((a, (1.0 - a) * (1.0 + 0.5 / r), -(1.0 - a) * 0.5 / r))
    return out


def solve(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
          solver: str = "ddim") -> torch.Tensor:
    """Integrate from ``x`` at ``sigmas[0]`` down to ``sigmas[-1]`` (0) with ``solver``.

    ``denoise(x, sigma)`` returns D(x; sigma) for a batch, ``sigma`` being a (B,) tensor. Start from
    noise with ``x = sigmas[0] * N(0, I)``; a warm start passes a guess plus noise at an intermediate
    sigma and the tail of a schedule.
    """
    return solve_indexed(lambda i, x: denoise(x, sigmas[i] * x.new_ones(x.shape[0])), x, sigmas, solver)


def solve_indexed(denoise: Callable[[int, torch.Tensor], torch.Tensor], x: torch.Tensor, sigmas: Sequence[float] | torch.Tensor,
                  solver: str = "ddim", after_step: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """:func:`solve` with ``denoise(i, x)`` = D(x; sigmas[i]) by step index (a cached sampler's steps);
    ``after_step(x)`` sees x after every step."""
    previous = None
    for i, (a, b, c) in enumerate(step_coefficients(sigmas, solver)):
        denoised = denoise(i, x)
        x = a * x + b * denoised if c == 0.0 else a * x + b * denoised + c * previous
        previous = denoised
        if after_step is not None:
            after_step(x)
    return x
