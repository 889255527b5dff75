"""Expert caching: the sampler's sigmas are fixed, so every layer's routing is known before deployment.

For each step of a fixed schedule, each layer's top-k experts are looked up once (eval mode:
deterministic top-k of the router, which sees only the noise embedding) and fused into one dense
SwiGLU with the router's gates folded into the down projection::

    sum_i g_i W2_i (silu(W1_i x) * W3_i x) = [g_a W2_a, g_b W2_b] (silu([W1_a; W1_b] x) * [W3_a; W3_b] x)

The router, the noise-embedding MLP and the EDM scalings all become per-step constants, so a cached
sampler is plain matmuls and the DDIM loop unrolls into one graph (see :mod:`dp.infer.onnx_export`).
Steps that route to the same expert set share the concatenated gate/up weights; only the gated down
projection is stored per step. Two more exact savings at batch 1: with causal attention the noise
token's keys and values are per-step constants (precomputed; the token is not run), and the last
block runs its feed-forward layer on the action tokens only (nothing reads the others).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dp.models.diffusion_policy import DiffusionPolicy
from dp.models.layers import Attention
from dp.models.moe import NoiseRoutedMoE


class FusedSwiGLU(nn.Module):
    """``w2 (silu(w1 x) * w3 x)`` over the concatenated hidden units of the chosen experts."""

    def __init__(self, w1: nn.Parameter, w3: nn.Parameter, w2: torch.Tensor):
        super().__init__()
        self.w1, self.w3 = w1, w3  # (k * hidden, dim) each; shared by the steps that route to the same experts
        self.w2 = nn.Parameter(w2, requires_grad=False)  # (dim, k * hidden), gates folded in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.silu(F.linear(x, self.w1)) * F.linear(x, self.w3), self.w2)


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
    """One block's attention for inference: q, k and v as separate matmuls (no split at run time),
    the block's QK-norms and output projection shared, and optionally keys/values of a constant prefix."""

    def __init__(self, attn: Attention):
        super().__init__()
        self.n_heads, self.head_dim, self.causal = attn.n_heads, attn.head_dim, attn.causal
        self.wq, self.wk, self.wv = (nn.Parameter(w.detach().clone(), requires_grad=False) for w in attn.qkv.weight.chunk(3))
        self.q_norm, self.k_norm, self.proj = attn.q_norm, attn.k_norm, attn.proj

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised queries and keys, and values, each (B, heads, T, head_dim)."""
        B, T, _ = x.shape
        q = self.q_norm(F.linear(x, self.wq).view(B, T, self.n_heads, self.head_dim))
        k = self.k_norm(F.linear(x, self.wk).view(B, T, self.n_heads, self.head_dim))
        v = F.linear(x, self.wv).view(B, T, self.n_heads, self.head_dim)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

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
    """DDIM over one fixed schedule with cached experts: ``(cond, x_init) -> x_0`` (normalised actions).

    Shares the norms, action projection, head and attention projections' weights of ``policy.net``;
    holds the per-step fused feed-forward layers and noise embeddings. With causal attention the noise
    token sees only itself, so its keys and values in every block are per-step constants too: they
    are precomputed and the token is not run at all. Unrolls into straight-line ops.
    """

    def __init__(self, policy: DiffusionPolicy, sigmas: torch.Tensor):
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
            ratios = (sigmas[1:] / sigmas[:-1]).float()
        # Plain floats become graph constants: the same float32 values the uncached sampler computes.
        self.c_skip, self.c_out, self.c_in = (t.flatten().tolist() for t in (c_skip, c_out, c_in))
        self.ratios = ratios.tolist()
        self.ffn = nn.ModuleList()
        shared: dict[tuple[int, tuple[int, ...]], tuple[nn.Parameter, nn.Parameter]] = {}
        for per_layer in step_routing(policy, sigmas):
            layers = nn.ModuleList()
            for layer, (experts, gates) in enumerate(per_layer):
                moe = net.blocks[layer].moe
                experts, gates = zip(*sorted(zip(experts, gates)))  # [2, 0] and [0, 2] share weights
                key = (layer, tuple(experts))
                if key not in shared:
                    shared[key] = tuple(
                        nn.Parameter(torch.cat([getattr(moe.experts[e], name).weight for e in experts]).detach().clone(), requires_grad=False)
                        for name in ("w1", "w3")
                    )
                w2 = torch.cat([g * moe.experts[e].w2.weight for e, g in zip(experts, gates)], dim=1)
                layers.append(FusedSwiGLU(*shared[key], w2.detach().clone()))
            self.ffn.append(layers)
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
        return len(self.ratios)

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
        for i, ratio in enumerate(self.ratios):
            denoised = self.denoise(i, cond, x)
            x = ratio * x + (1 - ratio) * denoised
        return x
