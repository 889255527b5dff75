"""The trainable policy: the MoDE network under EDM preconditioning, with its loss and sampler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dp.config import Config
from dp.data.normalize import Normalizer
from dp.diffusion.edm import EDM
from dp.diffusion.schedules import sampler_sigmas
from dp.diffusion.solvers import solve, step_coefficients
from dp.errors import DpError
from dp.models.mode import MoDE
from dp.models.normalization import Normalization


def _vectors(obs: dict[str, Any], keys: list[str]) -> torch.Tensor:
    """Low-dim keys of ``obs`` (B, To, ...) flattened per step and concatenated: (B, To, D)."""
    return torch.cat([obs[k].flatten(2).float() for k in keys], dim=-1)


class DiffusionPolicy(nn.Module):
    """``compute_loss(batch)`` for training, ``sample(obs, ...)`` for normalised action chunks.

    A batch is what :class:`dp.data.windows.WindowDataset` yields: ``{"obs": {key: (B, To, ...)},
    "action": (B, Ta, A), "task_id": (B,), ["lang_emb": (B, E)]}``, low-dim values normalised.
    With a normaliser (:meth:`set_normalizer`), :meth:`observation_batch` and
    :meth:`normalize_action` / :meth:`unnormalize_action` map raw values (the runtime and the export).
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.lowdim_keys = list(cfg.data.lowdim_keys)
        self.image_keys = list(cfg.data.image_keys)
        self.net = MoDE.from_config(cfg)
        self.edm = EDM.from_config(cfg.diffusion)
        try:
            sigmas = sampler_sigmas(cfg.diffusion)
            step_coefficients(sigmas, cfg.diffusion.solver)
        except ValueError as exc:
            raise DpError(f"the sampler: {exc}") from None
        self.solver = cfg.diffusion.solver
        self.register_buffer("sigmas", sigmas, persistent=False)  # the fixed sampler schedule
        self.action_key = cfg.data.action_key
        self.normalization: Normalization | None = None  # set by the runtime from the checkpoint's normaliser

    def set_normalizer(self, normalizer: Normalizer) -> None:
        """Take the low-dim keys' and the action's maps from ``normalizer`` (on the model's device)."""
        module = Normalization(normalizer, [*self.lowdim_keys, self.action_key])
        self.normalization = module.to(self.sigmas.device)

    def _normalization(self) -> Normalization:
        if self.normalization is None:
            raise RuntimeError("this model has no normaliser: call set_normalizer first")
        return self.normalization

    def observation_batch(self, frames: dict[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw observation windows (key -> (B, To, ...); images uint8) -> model inputs, low-dim keys
        normalised (float32). Numpy arrays are moved to the model's device; tensors must be there."""
        obs = {}
        for key in [*self.lowdim_keys, *self.image_keys]:
            value = frames[key]
            if not isinstance(value, torch.Tensor):  # tensors (the export's traced inputs) pass untouched: no casts in the graph
                value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32 if key in self.lowdim_keys else None)).to(self.sigmas.device)
            obs[key] = self._normalization().normalize(key, value) if key in self.lowdim_keys else value
        return obs

    def normalize_action(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw action chunks -> normalised."""
        return self._normalization().normalize(self.action_key, actions)

    def unnormalize_action(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalised action chunks -> raw."""
        return self._normalization().unnormalize(self.action_key, actions)

    def encode(
        self, obs: dict[str, torch.Tensor], task_id: torch.Tensor | None = None, lang_emb: torch.Tensor | None = None,
        privileged: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Goal + observation tokens (run once per chunk); with ``privileged``, also the privileged keys
        predicted from the cameras (:meth:`MoDE.encode`)."""
        lowdim = None
        if self.lowdim_keys:
            lowdim = _vectors(obs, self.lowdim_keys)
        images = {k: obs[k] for k in self.image_keys}
        return self.net.encode(lowdim, images, task_id, lang_emb, privileged=privileged)

    def _privileged_targets(self, obs: dict[str, Any]) -> torch.Tensor:
        missing = [k for k in self.cfg.data.privileged_keys if k not in obs]
        if missing:
            raise DpError(f"the batch has no privileged key(s) {missing} (data.privileged_keys), which this policy learns to predict")
        return _vectors(obs, self.cfg.data.privileged_keys)

    def compute_loss(
        self, batch: dict[str, Any], generator: torch.Generator | None = None, draws: int | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss (EDM denoising loss + weighted router losses) and its parts, over ``draws``
        (sigma, noise) pairs per window (default ``train.noise_draws``)."""
        x0 = batch["action"]
        extra: dict[str, torch.Tensor] = {}
        if self.cfg.data.privileged_keys:  # the cameras' features also predict the privileged state
            cond, predicted = self.encode(batch["obs"], batch.get("task_id"), batch.get("lang_emb"), privileged=True)
            extra["privileged_loss"] = F.mse_loss(predicted, self._privileged_targets(batch["obs"]))
        else:
            cond = self.encode(batch["obs"], batch.get("task_id"), batch.get("lang_emb"))
        draws = self.cfg.train.noise_draws if draws is None else draws
        if draws > 1:  # one encoding, several noise levels: the denoiser's samples without the encoder's cost
            cond, x0 = cond.repeat_interleave(draws, 0), x0.repeat_interleave(draws, 0)
        sigma = self.edm.sample_sigmas(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device) if generator else torch.randn_like(x0)
        per_sample, routings = self.edm.loss(self.net, cond, x0, sigma, noise)
        diffusion = per_sample.mean()
        aux, parts = self.net.aux_loss(routings)
        total = diffusion + aux + self.cfg.model.privileged_weight * extra.get("privileged_loss", 0.0)
        return total, {"diffusion_loss": diffusion.detach(), **parts, **{k: v.detach() for k, v in extra.items()}}

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss (so that DistributedDataParallel's hooks see it as the forward pass)."""
        return self.compute_loss(batch)

    def schedule(self, steps: int | None = None) -> torch.Tensor:
        """The sampler's sigmas (steps + 1,), ending at 0 (``diffusion.schedule``)."""
        if steps is None or steps == self.cfg.diffusion.steps:
            return self.sigmas
        try:
            return sampler_sigmas(self.cfg.diffusion, steps).to(self.sigmas.device)
        except ValueError as exc:
            raise DpError(f"the sampler: {exc}") from None

    def solve(self, cond: torch.Tensor, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """Integrate chunks ``x`` at ``sigmas[0]`` down to 0 with the routed network and ``diffusion.solver``."""
        return solve(lambda x, s: self.edm.denoise(self.net, cond, x, s)[0], x, sigmas, self.solver)

    @torch.no_grad()
    def sample(
        self,
        obs: dict[str, torch.Tensor],
        task_id: torch.Tensor | None = None,
        lang_emb: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        steps: int | None = None,
        sampler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Normalised action chunks (B, Ta, A) sampled from ``noise`` (standard normal; drawn if None).

        ``sampler``: a cached sampler over this schedule (``sampler(cond, x) -> x0``,
        :class:`dp.infer.caching.CachedSampler`); by default the routed network runs every step."""
        cond = self.encode(obs, task_id, lang_emb)
        shape = (cond.shape[0], self.net.action_horizon, self.net.action_dim)
        if noise is None:
            noise = torch.randn(shape, device=cond.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        return self.sample_encoded(cond, noise, steps, sampler)

    @torch.no_grad()
    def sample_encoded(
        self,
        cond: torch.Tensor,
        noise: torch.Tensor,
        steps: int | None = None,
        sampler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """:meth:`sample` from encoder tokens ``cond`` (B, T, d) (:meth:`encode`) and ``noise`` (B, Ta, A)."""
        sigmas = self.schedule(steps)
        x = noise.to(cond.device).float() * sigmas[0]
        if sampler is not None:
            return sampler(cond, x)
        return self.solve(cond, x, sigmas)
