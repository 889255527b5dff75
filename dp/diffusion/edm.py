"""EDM (Karras et al. 2022) preconditioning, training loss and MoDE's log-logistic training sigmas.

Written by hand rather than through a diffusers scheduler: training needs per-sample sigmas and
the preconditioned loss, and inference needs tensor-only arithmetic that traces into an ONNX graph.
The scalings are the same as diffusers' ``EDMEulerScheduler.precondition_*`` (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dp.config import DiffusionConfig


@dataclass(frozen=True)
class EDM:
    sigma_data: float = 0.5
    sigma_min: float = 0.001
    sigma_max: float = 80.0
    train_loc: float = math.log(0.5)
    train_scale: float = 0.5

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> EDM:
        loc = math.log(cfg.sigma_data) if cfg.train_loc is None else cfg.train_loc
        return cls(cfg.sigma_data, cfg.sigma_min, cfg.sigma_max, loc, cfg.train_scale)

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``c_skip, c_out, c_in`` shaped (B, 1, 1) and ``c_noise`` (B,) for sigmas (B,)."""
        sd2 = self.sigma_data**2
        s2 = sigma**2
        c_skip = sd2 / (s2 + sd2)
        c_out = sigma * self.sigma_data / (s2 + sd2).sqrt()
        c_in = 1.0 / (s2 + sd2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip[:, None, None], c_out[:, None, None], c_in[:, None, None], c_noise

    def sample_sigmas(self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
        """Training sigmas: log-logistic(loc, scale) truncated to [sigma_min, sigma_max] (as MoDE/BESO)."""
        lo = torch.tensor(math.log(self.sigma_min) - self.train_loc, dtype=torch.float64).div(self.train_scale).sigmoid()
        hi = torch.tensor(math.log(self.sigma_max) - self.train_loc, dtype=torch.float64).div(self.train_scale).sigmoid()
        u = torch.rand(n, dtype=torch.float64, generator=generator).to(device) * (hi - lo) + lo
        return u.logit().mul(self.train_scale).add(self.train_loc).exp().float()

    def denoise(self, net, cond: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor):
        """``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)``; returns (denoised, routings)."""
        c_skip, c_out, c_in, c_noise = self.scalings(sigma)
        out, routings = net(cond, x * c_in, c_noise)
        return c_skip * x + c_out * out.float(), routings

    def loss(self, net, cond: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor):
        """EDM loss per sample (B,): MSE of F against its target, i.e. lambda(sigma)-weighted denoising error."""
        c_skip, c_out, c_in, c_noise = self.scalings(sigma)
        x = x0 + noise * sigma[:, None, None]
        out, routings = net(cond, x * c_in, c_noise)
        target = (x0 - c_skip * x) / c_out
        return (out.float() - target).pow(2).flatten(1).mean(1), routings
