"""Expert caching: the sampler's sigmas are fixed, so every layer's routing is known before deployment.

For each step of a fixed schedule, each layer's top-k experts and their gates are looked up once
(eval mode: deterministic top-k of the router, which sees only the noise embedding) and become
constants of the unrolled step: ``sum_i g_i * expert_i(x)`` with the expert indices and gates
``g_i`` as plain numbers. The router, the noise-embedding MLP and the EDM scalings become per-step
constants too, so a cached sampler is plain matmuls and the sampler's loop unrolls into one graph (see
:mod:`dp.export.onnx_export`).

Every weight is stored once: an :class:`ExpertBank` holds each expert a schedule uses once, shared by
every step that routes to it and by every sampler built on the same bank (the full, warm and
first-chunk graphs of an export); a step's gate scales its expert's hidden units at run time.
(Fusing a step's experts into one wider SwiGLU with the gates folded into the weights stores a copy
of the weights per distinct route and gate: 3.3x the checkpoint for the ``small`` preset, and no
faster.) Two more exact savings at batch 1: with causal attention the noise token's
keys and values are per-step constants (precomputed; the token is not run), and the last block runs
its feed-forward layer on the action tokens only (nothing reads the others).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dp.diffusion.solvers import solve_indexed
from dp.models.diffusion_policy import DiffusionPolicy
from dp.models.layers import Attention
from dp.models.moe import NoiseRoutedMoE


class ExpertBank(nn.Module):
    """The experts of a MoDE network, each materialised once on first use (``w1``, ``w3`` (hidden, dim),
    ``w2`` (dim, hidden)). Shared by the samplers built on it."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self._blocks = [block.moe for block in policy.net.blocks]  # a plain list: not submodules, not exported
        self.w1, self.w3, self.w2 = nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict()

    def expert(self, layer: int, index: int) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
        """``(w1, w3, w2)`` of expert ``index`` of block ``layer``."""
        key = f"{layer}_{index}"
        if key not in self.w1:
            expert = self._blocks[layer].experts[index]
            for name in ("w1", "w3", "w2"):
                getattr(self, name)[key] = nn.Parameter(getattr(expert, name).weight.detach().clone(), requires_grad=False)
        return self.w1[key], self.w3[key], self.w2[key]


class RoutedFFN(nn.Module):
    """One step's feed-forward layer of one block: ``sum_i w2_i (silu(w1_i x) * (g_i w3_i x))`` over the
    step's experts, with the gates ``g_i`` as constants and the weights in the shared bank."""

    def __init__(self, bank: ExpertBank, layer: int, experts: list[int], gates: list[float]):
        super().__init__()
        self.bank, self.layer = [bank], layer  # a list: the bank is registered once, by the sampler
        self.experts, self.gates = list(experts), [float(g) for g in gates]
        for index in self.experts:  # materialised now: the weights must exist before export
            bank.expert(layer, index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for index, gate in zip(self.experts, self.gates):
            w1, w3, w2 = self.bank[0].expert(self.layer, index)
            y = F.linear(F.silu(F.linear(x, w1)) * (F.linear(x, w3) * gate), w2)  # (gating the hidden units: fastest here)
            out = y if out is None else out + y
        return out


@torch.no_grad()
def step_routing(policy: DiffusionPolicy, sigmas: torch.Tensor) -> list[list[tuple[list[int], list[float]]]]:
    """Per sampler step (``sigmas[:-1]``) and layer: the eval-mode experts and their gates."""
    net = policy.net
    device = policy.sigmas.device
    steps = sigmas[:-1].to(device)
    _, _, _, c_noise = policy.edm.scalings(steps)
    noise_emb = net.noise_emb(c_noise)
    table = []
    for block in net.blocks:
        moe: NoiseRoutedMoE = block.moe
        was_training = moe.training
        moe.eval()
        routing = moe.route(noise_emb)
        moe.train(was_training)
        table.append([(routing.experts[i].tolist(), routing.gates[i].tolist()) for i in range(len(steps))])
    return [[table[layer][i] for layer in range(len(net.blocks))] for i in range(len(steps))]


class CachedAttention(nn.Module):
    """One block's attention for inference, on the block's own weights (nothing copied): q, k and v as
    three matmuls on the thirds of its qkv weight (faster in ONNX Runtime than one matmul and a split),
    QK-norms, output projection, and optionally keys/values of a constant prefix."""

    def __init__(self, attn: Attention):
        super().__init__()
        self.n_heads, self.head_dim, self.causal = attn.n_heads, attn.head_dim, attn.causal
        self.qkv, self.q_norm, self.k_norm, self.proj = attn.qkv, attn.q_norm, attn.k_norm, attn.proj

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised queries and keys, and values, each (B, heads, T, head_dim)."""
        B, T, _ = x.shape
        q, k, v = (F.linear(x, w).view(B, T, self.n_heads, self.head_dim) for w in self.qkv.weight.chunk(3))
        return self.q_norm(q).transpose(1, 2), self.k_norm(k).transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention over ``x`` (B, T, d); with ``prefix`` (keys, values of earlier tokens, (1, heads, P,
        head_dim)) the queries of ``x`` also attend to those, under the boolean ``mask`` (T, P + T)."""
        B, T, C = x.shape
        q, k, v = self.heads(x)
        if prefix is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            k = torch.cat([prefix[0].expand(B, -1, -1, -1), k], dim=2)
            v = torch.cat([prefix[1].expand(B, -1, -1, -1), v], dim=2)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class CachedSampler(nn.Module):
    """The policy's solver over one fixed schedule with cached experts: ``(cond, x_init) -> x_0`` (normalised actions).

    Shares the norms, action projection, head and attention weights of ``policy.net`` and the experts
    of ``bank`` (a new one if None; pass one bank to several samplers to store each expert once);
    holds the per-step routing (experts and gates) and noise embeddings. With causal attention the noise
    token sees only itself, so its keys and values in every block are per-step constants too: they
    are precomputed and the token is not run at all. Unrolls into straight-line ops.
    """

    def __init__(self, policy: DiffusionPolicy, sigmas: torch.Tensor, bank: ExpertBank | None = None):
        super().__init__()
        net = policy.net
        sigmas = sigmas.detach().float().cpu()
        if sigmas.ndim != 1 or len(sigmas) < 2 or float(sigmas[-1]) != 0.0:
            raise ValueError(f"sigmas must be a 1-D schedule ending at 0, got {sigmas.tolist()}")
        self.sigmas = sigmas.tolist()
        self.action_horizon = net.action_horizon
        self.action_in, self.action_pos = net.action_in, net.action_pos
        self.norm1 = nn.ModuleList(b.norm1 for b in net.blocks)
        self.attn = nn.ModuleList(CachedAttention(b.attn) for b in net.blocks)
        self.norm2 = nn.ModuleList(b.norm2 for b in net.blocks)
        self.norm_out, self.head = net.norm_out, net.head
        self.causal = net.blocks[0].attn.causal
        device = next(net.parameters()).device
        steps = sigmas[:-1].to(device)
        with torch.no_grad():
            c_skip, c_out, c_in, c_noise = policy.edm.scalings(steps)
            self.register_buffer("noise_emb", net.noise_emb(c_noise).detach().clone())  # (S, d)
        # Plain floats become graph constants: the same float32 values the uncached sampler computes.
        self.c_skip, self.c_out, self.c_in = (t.flatten().tolist() for t in (c_skip, c_out, c_in))
        self.solver = policy.solver
        self.bank = bank if bank is not None else ExpertBank(policy)
        self.ffn = nn.ModuleList(
            nn.ModuleList(RoutedFFN(self.bank, layer, experts, gates) for layer, (experts, gates) in enumerate(per_layer))
            for per_layer in step_routing(policy, sigmas)
        )
        if self.causal:
            self._cache_noise_token(1 + net.n_obs_tokens + net.action_horizon)

    @torch.no_grad()
    def _cache_noise_token(self, tokens: int) -> None:
        """Keys/values of the noise token in every block at every step (it attends only to itself),
        and the mask that lets the other ``tokens`` attend to it and causally to each other."""
        for step in range(self.n_steps):
            noise_emb = self.noise_emb[step]
            h = noise_emb[None, None]
            for layer, (norm1, attn, norm2, ffn) in enumerate(zip(self.norm1, self.attn, self.norm2, self.ffn[step])):
                x = norm1(h) + noise_emb
                _, k, v = attn.heads(x)
                self.register_buffer(f"prefix_k{step}_{layer}", k.clone())
                self.register_buffer(f"prefix_v{step}_{layer}", v.clone())
                h = h + attn(x)
                h = h + ffn(norm2(h))
        self.register_buffer("prefix_mask", torch.ones(tokens, tokens + 1, dtype=torch.bool, device=self.noise_emb.device).tril(1))

    @property
    def n_steps(self) -> int:
        return len(self.sigmas) - 1

    def denoise(self, step: int, cond: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """EDM's ``D(x; sigmas[step])`` for chunks ``x`` (B, Ta, A) given encoder tokens ``cond``."""
        B = x.shape[0]
        noise_emb = self.noise_emb[step]
        actions = self.action_in(x * self.c_in[step]) + self.action_pos
        if self.causal:  # the noise token is in the cached keys/values
            h = torch.cat([cond, actions], dim=1)
        else:
            h = torch.cat([noise_emb.expand(B, 1, -1), cond, actions], dim=1)
        last = len(self.attn) - 1
        for layer, (norm1, attn, norm2, ffn) in enumerate(zip(self.norm1, self.attn, self.norm2, self.ffn[step])):
            if self.causal:
                prefix = (getattr(self, f"prefix_k{step}_{layer}"), getattr(self, f"prefix_v{step}_{layer}"))
                mixed = attn(norm1(h) + noise_emb, prefix, self.prefix_mask)
            else:
                mixed = attn(norm1(h) + noise_emb)
            if layer == last:  # only the action tokens are read after the last block: skip the others' FFN
                h, mixed = h[:, -self.action_horizon :], mixed[:, -self.action_horizon :]
            h = h + mixed
            h = h + ffn(norm2(h))
        out = self.head(self.norm_out(h))
        return self.c_skip[step] * x + self.c_out[step] * out

    def forward(self, cond: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Integrate ``x`` (already scaled to ``sigmas[0]``) down to sigma 0."""
        return solve_indexed(lambda i, x: self.denoise(i, cond, x), x, self.sigmas, self.solver)
