"""EDM preconditioning, training sigmas and the DDIM sampler, checked against diffusers and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import EDMEulerScheduler

from dp.config import DiffusionConfig
from dp.diffusion.ddim import ddim_sample, exponential_sigmas
from dp.diffusion.edm import EDM


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and a second thread stalls on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_scalings_match_diffusers():
    edm = EDM.from_config(DiffusionConfig())
    sched = EDMEulerScheduler(sigma_min=0.001, sigma_max=80.0, sigma_data=0.5)
    sigma = torch.tensor([0.001, 0.1, 0.5, 3.0, 80.0])
    x = torch.randn(5, 10, 7)
    out = torch.randn(5, 10, 7)
    c_skip, c_out, c_in, c_noise = edm.scalings(sigma)
    for i, s in enumerate(sigma):
        torch.testing.assert_close(x[i] * c_in[i], sched.precondition_inputs(x[i], s))
        torch.testing.assert_close(c_skip[i] * x[i] + c_out[i] * out[i], sched.precondition_outputs(x[i], out[i], s))
        torch.testing.assert_close(c_noise[i], sched.precondition_noise(s).squeeze())


def test_exponential_schedule_matches_diffusers():
    sched = EDMEulerScheduler(sigma_min=0.001, sigma_max=80.0, sigma_schedule="exponential")
    sched.set_timesteps(10)
    ours = exponential_sigmas(10, 0.001, 80.0)
    assert ours.shape == (11,) and ours[-1] == 0
    torch.testing.assert_close(ours, sched.sigmas.float(), rtol=1e-6, atol=0)


def _gaussian_denoiser(mean: torch.Tensor, std: float):
    """Exact D(x; sigma) for data ~ N(mean, std^2 I)."""
    return lambda x, sigma: mean + (x - mean) * std**2 / (std**2 + sigma[:, None, None] ** 2)


def test_ddim_equals_diffusers_euler_step_for_step():
    denoise = _gaussian_denoiser(torch.tensor([0.3, -0.2]), 0.1)
    sigmas = exponential_sigmas(10, 0.001, 80.0)
    noise = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(0))
    ours = ddim_sample(denoise, noise * sigmas[0], sigmas)
    sched = EDMEulerScheduler(sigma_min=0.001, sigma_max=80.0, sigma_schedule="exponential")
    sched.set_timesteps(10)
    x = noise * sched.sigmas[0]
    for i, t in enumerate(sched.timesteps):
        s = sched.sigmas[i]
        sched.scale_model_input(x, t)
        # diffusers' step takes the raw model output F; invert the EDM output scaling to feed it D
        c_skip = 0.25 / (s**2 + 0.25)
        c_out = s * 0.5 / (s**2 + 0.25) ** 0.5
        F = (denoise(x, s.repeat(len(x))) - c_skip * x) / c_out
        x = sched.step(F, t, x).prev_sample
    torch.testing.assert_close(ours, x.float(), rtol=1e-4, atol=1e-5)


def test_sampler_recovers_the_data_distribution():
    """Exact denoiser of N(mean, 0.05^2): the mean is right at 10 steps; the spread converges with steps
    (first-order DDIM shrinks it a little at 10 steps)."""
    mean, std = torch.tensor([0.5, -0.25, 0.0]), 0.05
    noise = torch.randn(4000, 1, 3, generator=torch.Generator().manual_seed(1))
    errors = []
    for steps in (10, 100):
        sigmas = exponential_sigmas(steps, 0.001, 80.0)
        x = ddim_sample(_gaussian_denoiser(mean, std), noise * sigmas[0], sigmas)
        torch.testing.assert_close(x.mean((0, 1)), mean, atol=0.005, rtol=0)
        errors.append(x.std((0, 1)).sub(std).abs().max().item())
    assert errors[0] < 0.015 and errors[1] < 0.002


def test_training_sigmas_are_truncated_log_logistic():
    edm = EDM.from_config(DiffusionConfig())
    s = edm.sample_sigmas(200_000, generator=torch.Generator().manual_seed(0))
    assert s.min() >= 0.001 and s.max() <= 80.0
    assert s.median().item() == pytest.approx(0.5, rel=0.02)  # loc = log(sigma_data)
    # log-logistic: P(log s < log 0.5 + 0.5 * log 3) = sigmoid(log 3) = 0.75 (truncation is negligible here)
    q = (s < 0.5 * math.exp(0.5 * math.log(3))).float().mean().item()
    assert q == pytest.approx(0.75, abs=0.01)


def test_loss_is_zero_for_the_exact_denoiser():
    """With F chosen so that D is the exact denoiser of a point mass, the EDM loss vanishes."""
    edm = EDM()
    x0 = torch.randn(8, 10, 7)

    def net(cond, x_in, c_noise):
        sigma = torch.exp(4 * c_noise)[:, None, None]
        c_skip, c_out, c_in, _ = edm.scalings(sigma[:, 0, 0])
        x = x_in / c_in
        return (x0 - c_skip * x) / c_out, []

    sigma = edm.sample_sigmas(8)
    loss, _ = edm.loss(net, None, x0, sigma, torch.randn_like(x0))
    assert loss.max().item() < 1e-6
