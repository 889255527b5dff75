"""EDM preconditioning, training sigmas, the schedules and the solvers, checked against diffusers and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

from dp.config import DiffusionConfig
from dp.diffusion.schedules import exponential_sigmas, fitted_sigmas, karras_sigmas, log_logistic_cdf, sampler_sigmas, sampling_range
from dp.diffusion.solvers import solve
from dp.diffusion.edm import EDM


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest.py)


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
    ours = solve(denoise, noise * sigmas[0], sigmas)
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
        x = solve(_gaussian_denoiser(mean, std), noise * sigmas[0], sigmas)
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


def test_karras_schedule_matches_diffusers():
    sched = EDMEulerScheduler(sigma_min=0.001, sigma_max=80.0, sigma_schedule="karras", rho=7.0)
    sched.set_timesteps(5)
    ours = karras_sigmas(5, 0.001, 80.0, rho=7.0)
    torch.testing.assert_close(ours, sched.sigmas.float(), rtol=1e-6, atol=0)
    # closed form: sigma_i^(1/rho) is evenly spaced from 80^(1/7) to 0.001^(1/7)
    gaps = ours[:-1].double().pow(1 / 7).diff()
    torch.testing.assert_close(gaps, gaps[:1].expand_as(gaps), rtol=1e-5, atol=0)


def test_fitted_schedule_takes_equal_steps_of_the_training_distribution():
    cfg = DiffusionConfig(schedule="fitted", trim=0.01, steps=6)
    sigmas = sampler_sigmas(cfg)
    lo, hi = sampling_range(cfg)
    assert sigmas[0].item() == pytest.approx(hi, rel=1e-5) and sigmas[-2].item() == pytest.approx(lo, rel=1e-5)
    cdf = torch.tensor([log_logistic_cdf(float(s), math.log(0.5), 0.5) for s in sigmas[:-1]])
    torch.testing.assert_close(cdf.diff(), torch.full((5,), -(0.98 / 5)), rtol=1e-4, atol=1e-6)  # from 0.99 to 0.01
    # and the training sigmas really fall evenly between consecutive steps
    drawn = EDM.from_config(cfg).sample_sigmas(200_000, generator=torch.Generator().manual_seed(0))
    share = [((drawn < a) & (drawn >= b)).float().mean().item() for a, b in zip(sigmas[:-2], sigmas[1:-1])]
    assert max(share) - min(share) < 0.01 and sum(share) == pytest.approx(0.98, abs=0.01)
    torch.testing.assert_close(fitted_sigmas(3, lo, hi, math.log(0.5), 0.5), sampler_sigmas(DiffusionConfig(schedule="fitted", trim=0.01, steps=3)))


def test_trim_keeps_the_sampler_where_training_looked():
    lo, hi = sampling_range(DiffusionConfig(trim=0.01))
    # log-logistic quantiles: 0.5 * exp(0.5 * logit(p))
    assert lo == pytest.approx(0.5 * math.exp(0.5 * math.log(0.01 / 0.99)), rel=1e-6)
    assert hi == pytest.approx(0.5 * math.exp(0.5 * math.log(0.99 / 0.01)), rel=1e-6)
    assert sampling_range(DiffusionConfig()) == (0.001, 80.0)
    torch.testing.assert_close(sampler_sigmas(DiffusionConfig(trim=0.01, steps=4)), exponential_sigmas(4, lo, hi))
    with pytest.raises(ValueError, match="diffusion.trim"):
        sampling_range(DiffusionConfig(trim=0.5))
    with pytest.raises(ValueError, match="diffusion.schedule"):
        sampler_sigmas(DiffusionConfig(schedule="cosine"))


@pytest.mark.parametrize("schedule", ["exponential", "karras"])
def test_dpmpp2m_equals_diffusers_step_for_step(schedule):
    denoise = _gaussian_denoiser(torch.tensor([0.3, -0.2]), 0.1)
    sigmas = sampler_sigmas(DiffusionConfig(schedule=schedule, steps=5))
    noise = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(0))
    ours = solve(denoise, noise * sigmas[0], sigmas, "dpmpp2m")
    sched = EDMDPMSolverMultistepScheduler(sigma_min=0.001, sigma_max=80.0, sigma_data=0.5, sigma_schedule=schedule,
                                           prediction_type="epsilon", solver_order=2, final_sigmas_type="zero")  # "epsilon": EDM's F
    sched.set_timesteps(5)
    torch.testing.assert_close(sched.sigmas.float(), sigmas, rtol=1e-6, atol=0)
    x = noise * sched.sigmas[0]
    for i, t in enumerate(sched.timesteps):
        s = sched.sigmas[i]
        c_skip = 0.25 / (s**2 + 0.25)
        c_out = s * 0.5 / (s**2 + 0.25) ** 0.5
        F = (denoise(x, s.repeat(len(x))) - c_skip * x) / c_out  # its step wants the raw output F
        x = sched.step(F, t, x).prev_sample
    torch.testing.assert_close(ours, x.float(), rtol=1e-4, atol=1e-5)
    assert (ours - solve(denoise, noise * sigmas[0], sigmas, "ddim")).abs().max() > 1e-3  # a different sampler


def test_second_order_beats_ten_ddim_steps_in_five_passes():
    """Exact denoiser of N(mean, 0.3^2) (about the spread of normalised actions): on MoDE's exponential
    schedule 5 passes of DPM-Solver++(2M) recover the distribution better than DDIM at 5 passes and at
    10 (error: the worst of mean and spread; deterministic noise)."""
    mean, std = torch.tensor([0.5, -0.25, 0.0]), 0.3
    noise = torch.randn(4000, 1, 3, generator=torch.Generator().manual_seed(1))
    err = {}
    configs = {"ddim5": DiffusionConfig(steps=5), "ddim10": DiffusionConfig(steps=10), "2m5": DiffusionConfig(steps=5, solver="dpmpp2m")}
    for name, cfg in configs.items():
        sigmas = sampler_sigmas(cfg)
        x = solve(_gaussian_denoiser(mean, std), noise * sigmas[0], sigmas, cfg.solver)
        err[name] = max(x.mean((0, 1)).sub(mean).abs().max().item(), x.std((0, 1)).sub(std).abs().max().item())
    assert err["2m5"] < 0.25 * err["ddim5"] and err["2m5"] < 0.5 * err["ddim10"], err
