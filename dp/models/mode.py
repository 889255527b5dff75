"""MoDE: a diffusion transformer whose feed-forward layers are noise-routed mixtures of experts.

Token sequence: ``[noise, goal, observation tokens (state + one per camera, per obs step), actions]``.
The noise embedding is also added to the attention input of every block, and it alone drives each
block's router. :meth:`MoDE.encode` runs the encoders once per chunk; :meth:`MoDE.forward` is the raw
network ``F(c_in x, c_noise)`` of EDM, run once per denoising step on the cached observation tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from dp.config import Config, ModelConfig
from dp.models.encoders import FiLMResNet, GoalEncoder, StateEncoder, crop, random_shift
from dp.models.layers import Attention, NoiseEmbedding, RMSNorm
from dp.models.moe import NoiseRoutedMoE, Routing


class MoDEBlock(nn.Module):
    """Pre-norm block: ``x += attn(norm(x) + noise)``; ``x += moe(norm(x); router <- noise)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.attention not in ("causal", "full"):
            raise ValueError(f"model.attention must be 'causal' or 'full', not {cfg.attention!r}")
        self.norm1 = RMSNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.n_heads, causal=cfg.attention == "causal", dropout=cfg.dropout)
        self.norm2 = RMSNorm(cfg.d_model)
        self.moe = NoiseRoutedMoE(cfg.d_model, cfg.expert_hidden, cfg.n_experts, cfg.top_k)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, noise_emb: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        x = x + self.drop(self.attn(self.norm1(x) + noise_emb[:, None]))
        h, routing = self.moe(self.norm2(x), noise_emb)
        return x + self.drop(h), routing


class MoDE(nn.Module):
    """The denoiser network with its observation and goal encoders."""

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        lowdim_dim: int,
        image_keys: list[str],
        image_shapes: dict[str, list[int]],
        image_channels: int,
        action_dim: int,
        obs_horizon: int,
        action_horizon: int,
        goal: str,
        n_tasks: int,
        privileged_dim: int = 0,
    ):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.image_keys = list(image_keys)
        self.obs_horizon, self.action_horizon, self.action_dim = obs_horizon, action_horizon, action_dim
        self.goal = GoalEncoder(goal, d, n_tasks=n_tasks, lang_dim=cfg.lang_dim)
        self.state = StateEncoder(lowdim_dim, cfg.state_hidden, d) if lowdim_dim > 0 else None
        self.cameras = nn.ModuleDict(
            {
                key: FiLMResNet(
                    d, d, cfg.vision_channels, cfg.vision_blocks, cfg.vision_pool, cfg.vision_keypoints,
                    in_channels=image_channels, image_size=cfg.image_sizes.get(key, cfg.image_size),
                    input_size=(cfg.aug_crop, cfg.aug_crop) if cfg.aug_crop else tuple(image_shapes[key][:2]),
                )
                for key in self.image_keys
            }
        )
        if self.state is None and not self.image_keys:
            raise ValueError("the model needs at least one observation key (low-dim or image)")
        self.n_obs_tokens = obs_horizon * ((self.state is not None) + len(self.image_keys))
        # training only: the privileged low-dim keys (data.privileged_keys) predicted from the cameras' features
        self.privileged = nn.Linear(d * len(self.image_keys), privileged_dim) if privileged_dim and self.image_keys else None
        self.cond_pos = nn.Parameter(torch.randn(1, 1 + self.n_obs_tokens, d) * 0.02)
        self.noise_emb = NoiseEmbedding(d)
        self.action_in = nn.Linear(action_dim, d)
        self.action_pos = nn.Parameter(torch.randn(1, action_horizon, d) * 0.02)
        self.blocks = nn.ModuleList(MoDEBlock(cfg) for _ in range(cfg.n_layers))
        self.norm_out = RMSNorm(d)
        self.head = nn.Linear(d, action_dim)
        nn.init.zeros_(self.head.weight)  # F starts at 0: the denoiser starts as D(x) = c_skip x
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_config(cls, cfg: Config) -> MoDE:
        """Build from a resolved run configuration (keys, shapes and vocabulary filled in by training)."""
        data = cfg.data

        def width(keys: list[str]) -> int:  # values per step of these keys together
            return sum(int(torch.tensor(data.shapes[k]).prod()) for k in keys)

        channels = {data.shapes[k][-1] for k in data.image_keys} or {3}
        if len(channels) > 1:
            raise ValueError(f"all cameras need the same channel count; got {sorted(channels)}")
        return cls(
            cfg.model,
            lowdim_dim=width(data.lowdim_keys),
            image_keys=data.image_keys,
            image_shapes={k: data.shapes[k] for k in data.image_keys},
            image_channels=channels.pop(),
            action_dim=data.action_dim,
            obs_horizon=data.obs_horizon,
            action_horizon=data.action_horizon,
            goal=cfg.model.goal,
            n_tasks=len(cfg.vocab.tasks),
            privileged_dim=width(data.privileged_keys),
        )

    # ------------------------------------------------------------------ encoders (once per chunk)
    def encode(
        self,
        lowdim: torch.Tensor | None,
        images: dict[str, torch.Tensor],
        task_id: torch.Tensor | None = None,
        lang_emb: torch.Tensor | None = None,
        privileged: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Goal + observation tokens (B, 1 + n_obs_tokens, d); with ``privileged``, also the privileged
        keys predicted from the cameras' features (B, To, privileged_dim).

        ``lowdim``: normalised, concatenated low-dim keys (B, To, D); ``images``: key -> uint8
        (B, To, H, W, C). In training mode images get the random crop (``model.aug_crop``) and shift
        (``model.aug_shift``) augmentations; in eval mode the crop is the centre one.
        """
        B = (lowdim if lowdim is not None else next(iter(images.values()))).shape[0]
        goal = self.goal(task_id, lang_emb, B)
        tokens = [goal[:, None]]
        if self.state is not None:
            tokens.append(self.state(lowdim))
        for key, encoder in self.cameras.items():
            frames = images[key]
            flat = frames.reshape(B * self.obs_horizon, *frames.shape[2:])
            if self.cfg.aug_crop > 0:
                flat = crop(flat, self.cfg.aug_crop, random=self.training)
            if self.training and self.cfg.aug_shift > 0:
                flat = random_shift(flat, self.cfg.aug_shift)
            cond = goal.repeat_interleave(self.obs_horizon, dim=0)
            tokens.append(encoder(flat, cond).view(B, self.obs_horizon, -1))
        cond_tokens = torch.cat(tokens, dim=1) + self.cond_pos
        if not privileged:
            return cond_tokens
        if self.privileged is None:
            raise ValueError("this network predicts no privileged keys (data.privileged_keys is empty)")
        cameras = torch.cat(tokens[len(tokens) - len(self.cameras):], dim=-1)  # (B, To, n_cameras * d)
        return cond_tokens, self.privileged(cameras)

    # ------------------------------------------------------------------ denoiser (once per step)
    def forward(self, cond: torch.Tensor, x: torch.Tensor, c_noise: torch.Tensor) -> tuple[torch.Tensor, list[Routing]]:
        """EDM's raw network: ``F(c_in * x, c_noise)`` for action chunks ``x`` (B, Ta, A) -> (B, Ta, A)."""
        noise_emb = self.noise_emb(c_noise).to(cond.dtype)
        h = torch.cat([noise_emb[:, None], cond, self.action_in(x) + self.action_pos], dim=1)
        routings = []
        for block in self.blocks:
            h, routing = block(h, noise_emb)
            routings.append(routing)
        return self.head(self.norm_out(h[:, -self.action_horizon :])), routings

    def aux_loss(self, routings: list[Routing]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted load-balancing (+ router z-) loss averaged over layers, and its parts for logging."""
        lb = torch.stack([blk.moe.load_balancing_loss(r) for blk, r in zip(self.blocks, routings)]).mean()
        total = self.cfg.lb_weight * lb
        parts = {"lb_loss": lb.detach()}
        if self.cfg.z_loss_weight > 0 and self.cfg.n_experts > 1:
            z = torch.stack([NoiseRoutedMoE.z_loss(r) for r in routings]).mean()
            total = total + self.cfg.z_loss_weight * z
            parts["z_loss"] = z.detach()
        return total, parts
