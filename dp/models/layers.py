"""Transformer building blocks: RMSNorm, attention with QK-RMSNorm, SwiGLU, noise-level embedding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain.

    Written out (rather than ``nn.RMSNorm``) so that every exporter lowers it to plain ops: older
    ONNX opsets have no RMSNormalization operator.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    """Multi-head self-attention with RMS-normalised queries and keys (QK-norm), causal or full."""

    def __init__(self, dim: int, n_heads: int, causal: bool, dropout: float = 0.0):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"d_model {dim} is not divisible by n_heads {n_heads}")
        self.n_heads, self.head_dim, self.causal, self.dropout = n_heads, dim // n_heads, causal, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)``: one expert. Separate bias-free linears, so experts can be fused
    (concatenate w1/w3 rows, scale and concatenate w2 columns) into one wider SwiGLU."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class NoiseEmbedding(nn.Module):
    """EDM noise conditioning ``c_noise = log(sigma) / 4`` -> sinusoidal features -> MLP -> (B, dim)."""

    def __init__(self, dim: int, n_freqs: int = 64):
        super().__init__()
        self.n_freqs = n_freqs
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        half = torch.arange(self.n_freqs, device=c_noise.device, dtype=torch.float32)
        freqs = torch.exp(-math.log(1000.0) * half / self.n_freqs) * 100.0  # c_noise spans about [-2, 1.1]
        angles = c_noise.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))
