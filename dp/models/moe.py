"""Sparse mixture of SwiGLU experts routed by the noise level (MoDE's noise-conditioned router).

The router sees only the noise embedding, so every token of a sample goes to the same experts and,
at inference, the choice at each sampler sigma is the same for every observation. In training the
top-k experts are *sampled* from the router's distribution (exploration, as in MoDE); in eval they
are the deterministic top-k; their gates are the router's probabilities renormalised over the chosen
experts (with ``top_k`` 1 a straight-through gate of value 1, so that the router still learns from
the loss). With one expert the layer is a plain dense SwiGLU (the dense baseline)
and has no router.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dp.models.layers import SwiGLU


@dataclass
class Routing:
    """One layer's routing for a batch: chosen experts, their mixing weights, router outputs."""

    experts: torch.Tensor  # (B, k) int64 expert indices
    gates: torch.Tensor  # (B, k) weights, summing to 1 per sample
    probs: torch.Tensor  # (B, E) router softmax
    logits: torch.Tensor  # (B, E)


class NoiseRoutedMoE(nn.Module):
    """``n_experts`` SwiGLU experts, ``top_k`` of them active per sample, chosen from the noise embedding."""

    def __init__(self, dim: int, hidden: int, n_experts: int, top_k: int):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in [1, n_experts]; got top_k={top_k}, n_experts={n_experts}")
        self.n_experts, self.top_k = n_experts, top_k
        self.experts = nn.ModuleList(SwiGLU(dim, hidden) for _ in range(n_experts))
        self.router = nn.Linear(dim, n_experts) if n_experts > 1 else None
        if self.router is not None:  # start uniform, as MoDE does
            nn.init.zeros_(self.router.weight)
            nn.init.zeros_(self.router.bias)

    def route(self, noise_emb: torch.Tensor) -> Routing:
        """Experts and weights for each sample from its noise embedding (B, dim)."""
        B = noise_emb.shape[0]
        if self.router is None:
            ones = noise_emb.new_ones(B, 1)
            return Routing(torch.zeros(B, 1, dtype=torch.long, device=noise_emb.device), ones, ones, ones.new_zeros(B, 1))
        logits = self.router(noise_emb).float()
        probs = logits.softmax(-1)
        if self.training:
            # NaN probabilities (a diverged run) must not crash the draw: the trainer reports the NaN loss
            experts = torch.multinomial(probs.detach().nan_to_num(1.0), self.top_k, replacement=False)
        else:
            experts = probs.topk(self.top_k, dim=-1).indices
        gates = probs.gather(1, experts)
        if self.top_k == 1:
            # One renormalised gate is the constant 1, which passes the router no gradient from the
            # diffusion loss. Straight through: the value stays 1, the gradient is d/dp of p.
            gates = gates / gates.detach()
        else:
            gates = gates / gates.sum(-1, keepdim=True)
        return Routing(experts, gates, probs, logits)

    def forward(self, x: torch.Tensor, noise_emb: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        """Mix the chosen experts' outputs for tokens ``x`` (B, T, dim)."""
        routing = self.route(noise_emb)
        if self.router is None:
            return self.experts[0](x), routing
        out = torch.zeros_like(x)
        B = x.shape[0]
        for e, expert in enumerate(self.experts):
            weight = (routing.gates * (routing.experts == e)).sum(-1)  # (B,), 0 where not chosen
            rows = weight.nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            if rows.numel() == B:  # the whole batch (always so when sampling: one sigma per step)
                out = out + weight.to(x.dtype)[:, None, None] * expert(x)
            else:
                out = out.index_add(0, rows, weight.to(x.dtype)[rows, None, None] * expert(x[rows]))
        return out, routing

    def load_balancing_loss(self, routing: Routing) -> torch.Tensor:
        """Switch-style ``E * sum_e f_e * P_e`` (f: share of assignments, P: mean router probability); 1 when balanced."""
        if self.router is None:
            return routing.probs.new_zeros(())
        counts = F.one_hot(routing.experts, self.n_experts).sum((0, 1)).float()
        share = counts / counts.sum()
        return self.n_experts * (share * routing.probs.mean(0)).sum()

    @staticmethod
    def z_loss(routing: Routing) -> torch.Tensor:
        """Router z-loss: mean squared log-partition of the router logits (keeps logits small)."""
        return torch.logsumexp(routing.logits, dim=-1).pow(2).mean()
