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


def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in): one axis of torch's antialiased bilinear resize as a matrix, so that
    ``R_h @ x @ R_w.T`` equals ``F.interpolate(x, mode="bilinear", antialias=True)`` to float rounding.

    Why by hand: ONNX opset 17 has no antialiased resize (torch's exporter refuses
    ``aten::_upsample_bilinear2d_aa``), while two matrix products trace into any graph, and run as fast.
    The matrix is read off torch's own kernel applied to a basis (a few columns wide: its one-column
    path filters differently)."""
    basis = torch.eye(n_in)[:, None, :, None].expand(n_in, 1, n_in, 4).contiguous()
    out = F.interpolate(basis, size=(n_out, 4), mode="bilinear", antialias=True, align_corners=False)
    return out[:, 0, :, 0].T.contiguous()


class FiLMResNet(nn.Module):
    """One camera: uint8 images (N, H, W, C) + goal (N, cond_dim) -> a feature vector (N, dim).

    ``input_size`` (H, W): the frames it is given; with ``image_size`` it resizes them to that square."""

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
        input_size: tuple[int, int] = (0, 0),
    ):
        super().__init__()
        if pool not in ("keypoints", "avg"):
            raise ValueError(f"vision_pool must be 'keypoints' or 'avg', not {pool!r}")
        self.input_size = tuple(input_size)
        self.resize = image_size is not None and self.input_size != (image_size, image_size)
        if self.resize:  # not saved: rebuilt from the configuration
            self.register_buffer("resize_h", resize_matrix(self.input_size[0], image_size), persistent=False)
            self.register_buffer("resize_w", resize_matrix(self.input_size[1], image_size), persistent=False)
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
        if tuple(images.shape[1:3]) != self.input_size:
            raise ValueError(f"the vision encoder takes {self.input_size[0]}x{self.input_size[1]} images, got {tuple(images.shape[1:3])}")
        x = images.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
        if self.resize:
            x = self.resize_h @ x @ self.resize_w.T
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, cond)
        return self.out(self.pool(x))


def _crop_each(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-image ``h`` x ``w`` windows of channels-first ``x`` (N, C, H, W) at offsets ``top``, ``left`` (N,)."""
    N, C = x.shape[:2]
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(N, C, h, x.shape[-1])
    x = x.gather(2, rows)
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(N, C, h, w)
    return x.gather(3, cols)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random-shift augmentation (DrQ): replicate-pad by ``pad`` pixels, crop back at a random offset.

    ``images``: uint8 or float (N, H, W, C); one offset per image.
    """
    if pad <= 0:
        return images
    N, H, W, C = images.shape
    x = F.pad(images.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (N,), device=images.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (N,), device=images.device, generator=generator)
    return _crop_each(x, dy, dx, H, W).permute(0, 2, 3, 1).to(images.dtype)


def crop(images: torch.Tensor, size: int, random: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Square ``size`` crops of images (N, H, W, C): at a random offset per image (training, Diffusion
    Policy's augmentation) or at the centre (inference, as Diffusion Policy evaluates)."""
    N, H, W, C = images.shape
    if size > min(H, W):
        raise ValueError(f"model.aug_crop={size} is larger than the {H}x{W} image")
    if not random:
        top, left = (H - size) // 2, (W - size) // 2
        return images[:, top : top + size, left : left + size]
    top = torch.randint(0, H - size + 1, (N,), device=images.device, generator=generator)
    left = torch.randint(0, W - size + 1, (N,), device=images.device, generator=generator)
    return _crop_each(images.permute(0, 3, 1, 2), top, left, size, size).permute(0, 2, 3, 1)


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
