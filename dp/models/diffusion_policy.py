"""The trainable policy: the MoDE network under EDM preconditioning, with its loss and sampler."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dp.config import Config
from dp.diffusion.edm import EDM
from dp.diffusion.sampler import ddim_sample, exponential_sigmas
from dp.models.mode import MoDE


class DiffusionPolicy(nn.Module):
    """``compute_loss(batch)`` for training, ``sample(obs, ...)`` for normalised action chunks.

    A batch is what :class:`dp.data.sampler.WindowDataset` yields: ``{"obs": {key: (B, To, ...)},
    "action": (B, Ta, A), "task_id": (B,), ["lang_emb": (B, E)]}``, low-dim values normalised.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.lowdim_keys = list(cfg.data.lowdim_keys)
        self.image_keys = list(cfg.data.image_keys)
        self.net = MoDE.from_config(cfg)
        self.edm = EDM.from_config(cfg.diffusion)
        sigmas = exponential_sigmas(cfg.diffusion.steps, cfg.diffusion.sigma_min, cfg.diffusion.sigma_max)
        self.register_buffer("sigmas", sigmas, persistent=False)  # the fixed sampler schedule

    def encode(self, obs: dict[str, torch.Tensor], task_id: torch.Tensor | None = None, lang_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Goal + observation tokens (run once per chunk)."""
        lowdim = None
        if self.lowdim_keys:
            lowdim = torch.cat([obs[k].flatten(2).float() for k in self.lowdim_keys], dim=-1)
        images = {k: obs[k] for k in self.image_keys}
        return self.net.encode(lowdim, images, task_id, lang_emb)

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss (EDM denoising loss + weighted router losses) and its parts."""
        x0 = batch["action"]
        cond = self.encode(batch["obs"], batch.get("task_id"), batch.get("lang_emb"))
        sigma = self.edm.sample_sigmas(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device) if generator else torch.randn_like(x0)
        per_sample, routings = self.edm.loss(self.net, cond, x0, sigma, noise)
        diffusion = per_sample.mean()
        aux, parts = self.net.aux_loss(routings)
        return diffusion + aux, {"diffusion_loss": diffusion.detach(), **parts}

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss (so that DistributedDataParallel's hooks see it as the forward pass)."""
        return self.compute_loss(batch)

    def schedule(self, steps: int | None = None) -> torch.Tensor:
        """The sampler's sigmas (steps + 1,), ending at 0."""
        if steps is None or steps == self.cfg.diffusion.steps:
            return self.sigmas
        return exponential_sigmas(steps, self.cfg.diffusion.sigma_min, self.cfg.diffusion.sigma_max).to(self.sigmas.device)

    @torch.no_grad()
    def sample(
        self,
        obs: dict[str, torch.Tensor],
        task_id: torch.Tensor | None = None,
        lang_emb: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Normalised action chunks (B, Ta, A) by DDIM from ``noise`` (standard normal; drawn if None)."""
        cond = self.encode(obs, task_id, lang_emb)
        B = cond.shape[0]
        shape = (B, self.net.action_horizon, self.net.action_dim)
        if noise is None:
            noise = torch.randn(shape, device=cond.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        sigmas = self.schedule(steps)
        return ddim_sample(lambda x, s: self.edm.denoise(self.net, cond, x, s)[0], noise.to(cond.device).float() * sigmas[0], sigmas)
