"""Real-time-iteration (RTI) warm starts: start the sampler from the previous chunk, not from noise.

After the first chunk, the previous chunk shifted by the executed steps (last action repeated,
discrete dimensions snapped to +-1: :func:`dp.infer.rti_guess.shift_guess`) is a good guess of
the next one. It is noised to an intermediate ``sigma_start`` and only ``steps`` sampler steps run,
spaced as the full schedule (the same ratio between consecutive sigmas), the last one down to 0.
With ``sigma_start`` at the full schedule's ``sigmas[N - steps]`` the tail is exactly the last
``steps`` steps of the full schedule; a larger ``sigma_start`` lets the new observation move the
guess further. (A tail that ends at sigma_min wastes its last step: at sigma 0.001 the denoiser is
the identity to within 0.1%.)

As in RTI for model-predictive control, the warm start is useful when the map guess -> chunk is
contractive: an error in the guess must shrink through the tail steps. :func:`contraction_profile`
measures that on real observations (and :func:`dp.eval.warm_starts.evaluate_warm_starts` over
held-out episodes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dp.diffusion.solvers import solve_indexed
from dp.errors import DpError
from dp.infer.rti_guess import DEFAULT_FIRST_SIGMA, DEFAULT_FIRST_STEPS, DEFAULT_RTI_EVERY, DEFAULT_RTI_SIGMA, DEFAULT_RTI_STEPS
from dp.models.diffusion_policy import DiffusionPolicy

# The defaults (dp/infer/rti_guess.py) were chosen by closed-loop success on validation seeds; the
# measurements are on the results page, "Experiment notes" (bench/results/notes.md).


@dataclass(frozen=True)
class RTISettings:
    """How a warm start runs: ``steps`` sampler steps from ``sigma_start``, a new chunk every ``every``
    control steps (the actions executed per chunk: the shift of the guess). An episode's first chunk
    (no previous one) is the same tail sampler from a zero guess (the middle of the action range):
    ``first_steps`` steps from ``first_sigma`` (exported as ``policy_first.onnx``). ``guess`` "zero"
    starts every chunk from that zero guess instead of the shifted previous chunk (torch runtime
    only: the measurement of what the shifted guess buys)."""

    steps: int = DEFAULT_RTI_STEPS
    sigma_start: float = DEFAULT_RTI_SIGMA
    every: int = DEFAULT_RTI_EVERY
    first_steps: int = DEFAULT_FIRST_STEPS
    first_sigma: float = DEFAULT_FIRST_SIGMA
    guess: str = "shift"

    def sigmas(self, sigma_min: float, sigma_max: float, full_steps: int) -> torch.Tensor:
        """The warm tail (steps + 1,): ``sigma_start`` times the full schedule's step ratio
        ``(sigma_min / sigma_max) ** (1 / (full_steps - 1))`` to the powers 0..steps-1, then 0."""
        if self.steps < 1:
            raise DpError(f"RTI steps must be >= 1, got {self.steps}")
        if self.guess not in ("shift", "zero"):
            raise DpError(f"RTI guess must be 'shift' or 'zero', got {self.guess!r}")
        if not 0.0 < self.sigma_start <= sigma_max:
            raise DpError(f"RTI start sigma must be in (0, {sigma_max}] (the model's sigma range), got {self.sigma_start}")
        ratio = (sigma_min / sigma_max) ** (1.0 / max(1, full_steps - 1))
        tail = self.sigma_start * ratio ** torch.arange(self.steps, dtype=torch.float64)
        return torch.cat([tail, tail.new_zeros(1)]).float()

    def for_model(self, model: DiffusionPolicy, full_steps: int | None = None) -> torch.Tensor:
        """The tail for ``model`` whose full schedule has ``full_steps`` steps (default: its config's)."""
        diffusion = model.cfg.diffusion
        return self.sigmas(diffusion.sigma_min, diffusion.sigma_max, full_steps or diffusion.steps).to(model.sigmas.device)

    def first_for_model(self, model: DiffusionPolicy, full_steps: int | None = None) -> torch.Tensor:
        """The first chunk's schedule: ``first_steps`` steps from ``first_sigma``, spaced as the warm tail."""
        try:
            return RTISettings(self.first_steps, self.first_sigma).for_model(model, full_steps)
        except DpError as exc:
            raise DpError(f"first chunk: {exc}") from None


@torch.no_grad()
def warm_sample(
    model: DiffusionPolicy,
    cond: torch.Tensor,
    guess: torch.Tensor,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    sampler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Normalised chunks (B, Ta, A) from normalised ``guess`` chunks noised to ``sigmas[0]`` with
    standard-normal ``noise``, integrated over the tail ``sigmas``: by ``sampler`` (a cached sampler
    over ``sigmas``, :class:`dp.infer.caching.CachedSampler`) or else the routed model."""
    x = guess.float() + sigmas[0] * noise.float()
    if sampler is not None:
        return sampler(cond, x)
    return model.solve(cond, x, sigmas)


@torch.no_grad()
def contraction_profile(
    model: DiffusionPolicy,
    cond: torch.Tensor,
    guess: torch.Tensor,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    perturbation: torch.Tensor,
) -> list[float]:
    """How an error in the guess shrinks over the warm steps: the ratio ``|x_j(g + d) - x_j(g)| / |d|``
    after each step j = 0..steps (j = 0: the noised start, ratio 1), same noise for both runs."""
    x_a = guess.float() + sigmas[0] * noise.float()
    base = perturbation.flatten(1).norm(dim=1)
    ratios = [1.0]
    B = x_a.shape[0]
    pair = torch.cat([cond, cond])  # both runs as one batch: the same steps, the same solver

    def record(x: torch.Tensor) -> None:
        ratios.append(float(((x[B:] - x[:B]).flatten(1).norm(dim=1) / base).mean()))

    solve_indexed(lambda i, x: model.edm.denoise(model.net, pair, x, sigmas[i] * x.new_ones(2 * B))[0],
                  torch.cat([x_a, x_a + perturbation]), sigmas, model.solver, record)
    return ratios
