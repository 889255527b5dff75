"""Observation and goal encoders: low-dim state MLP, per-camera FiLM-ResNet, goal (task or language).

The FiLM-ResNet is written here (torchvision is not a dependency, and its ResNets use BatchNorm):
small basic-block stages with GroupNorm, each block's second norm modulated by the goal
(``(1 + gamma) * h + beta``, zero-initialised so a block starts as a plain residual block).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StateEncoder(nn.Module):
    """Concatenated low-dim keys (B, To, D) -> one token per observation step (B, To, dim)."""

    def __init__(self, in_dim: int, hidden: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class FiLMBlock(nn.Module):
    """Basic residual block (3x3 conv, GroupNorm) whose second norm is FiLM-modulated by the goal."""

    def __init__(self, c_in: int, c_out: int, stride: int, cond_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.film = nn.Linear(cond_dim, 2 * c_out)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.GroupNorm(_groups(c_out), c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        gamma, beta = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        return F.relu(h * (1 + gamma) + beta + self.skip(x))


class SpatialSoftmax(nn.Module):
    """Feature map -> expected (x, y) image coordinates of ``n_keypoints`` learned keypoints."""

    def __init__(self, channels: int, n_keypoints: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, n_keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        B, K, H, W = h.shape
        attn = h.flatten(2).softmax(-1).view(B, K, H, W)
        ys = torch.linspace(-1, 1, H, device=x.device, dtype=h.dtype)
        xs = torch.linspace(-1, 1, W, device=x.device, dtype=h.dtype)
        return torch.cat([(attn.sum(2) * xs).sum(-1), (attn.sum(3) * ys).sum(-1)], dim=-1)  # (B, 2K)


class FiLMResNet(nn.Module):
    """One camera: uint8 images (N, H, W, C) + goal (N, cond_dim) -> a feature vector (N, dim)."""

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        channels: list[int],
        blocks_per_stage: int = 1,
        pool: str = "keypoints",
        n_keypoints: int = 32,
        in_channels: int = 3,
        image_size: int | None = None,
    ):
        super().__init__()
        if pool not in ("keypoints", "avg"):
            raise ValueError(f"vision_pool must be 'keypoints' or 'avg', not {pool!r}")
        self.image_size = image_size
        self.stem = nn.Sequential(  # stride 4 like a ResNet stem: 84 px -> 21
            nn.Conv2d(in_channels, channels[0], 5, 2, 2, bias=False), nn.GroupNorm(_groups(channels[0]), channels[0]), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        blocks = []
        c_prev = channels[0]
        for i, c in enumerate(channels):
            for j in range(blocks_per_stage):
                blocks.append(FiLMBlock(c_prev, c, 2 if (i > 0 and j == 0) else 1, cond_dim))
                c_prev = c
        self.blocks = nn.ModuleList(blocks)
        if pool == "keypoints":
            self.pool = SpatialSoftmax(c_prev, n_keypoints)
            self.out = nn.Linear(2 * n_keypoints, dim)
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.out = nn.Linear(c_prev, dim)

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, cond)
        return self.out(self.pool(x))


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random-shift augmentation (DrQ): replicate-pad by ``pad`` pixels, crop back at a random offset.

    ``images``: uint8 or float (N, H, W, C); one offset per image.
    """
    if pad <= 0:
        return images
    N, H, W, C = images.shape
    x = F.pad(images.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (N,), device=images.device, generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (N,), device=images.device, generator=generator)
    rows = (dy[:, None] + torch.arange(H, device=images.device))[:, None, :, None].expand(N, C, H, W + 2 * pad)
    x = x.gather(2, rows)
    cols = (dx[:, None] + torch.arange(W, device=images.device))[:, None, None, :].expand(N, C, H, W)
    x = x.gather(3, cols)
    return x.permute(0, 2, 3, 1).to(images.dtype)


class GoalEncoder(nn.Module):
    """The goal token: a task index (embedding table), a language embedding (projection), or none."""

    def __init__(self, kind: str, dim: int, n_tasks: int = 0, lang_dim: int = 384):
        super().__init__()
        if kind not in ("task", "lang", "none"):
            raise ValueError(f"goal must be 'task', 'lang' or 'none', not {kind!r}")
        self.kind = kind
        if kind == "task":
            self.table = nn.Embedding(max(1, n_tasks), dim)
            nn.init.normal_(self.table.weight, std=0.02)
        elif kind == "lang":
            self.proj = nn.Sequential(nn.Linear(lang_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        else:
            self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, task_id: torch.Tensor | None, lang_emb: torch.Tensor | None, batch: int) -> torch.Tensor:
        if self.kind == "task":
            if task_id is None:
                raise ValueError("this policy is conditioned on a task index: task_id is required")
            return self.table(task_id)
        if self.kind == "lang":
            if lang_emb is None:
                raise ValueError("this policy is conditioned on a language embedding: lang_emb is required")
            return self.proj(lang_emb.float())
        return self.null.expand(batch, -1)
