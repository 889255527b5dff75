"""Expert caching: the cached sampler (each step's experts and gates as constants, every weight in one bank) reproduces routed sampling, and costs no more FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dp.config import build_config
from dp.diffusion.schedules import exponential_sigmas
from dp.infer.caching import CachedSampler, ExpertBank, step_routing
from dp.models.diffusion_policy import DiffusionPolicy


def random_model(images: bool = False, overrides: list[str] | None = None, seed: int = 0) -> DiffusionPolicy:
    """A tiny policy with randomised weights: routers with real preferences, a non-zero head."""
    torch.manual_seed(seed)
    cfg = build_config("tiny", ["model.goal=task", *(overrides or [])])
    cfg.data.lowdim_keys = ["pos", "target"]
    cfg.data.shapes = {"pos": [3], "target": [3]}
    if images:
        cfg.data.image_keys = ["cam0", "cam1"]
        cfg.data.shapes.update(cam0=[24, 24, 3], cam1=[24, 24, 3])
    cfg.data.action_dim = 4
    cfg.vocab.tasks = ["a", "b"]
    model = DiffusionPolicy(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (1.0 if "router" in name else 0.05))
    return model.eval()


def inputs(model: DiffusionPolicy, B: int = 3, seed: int = 1) -> tuple[dict, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    data = model.cfg.data
    obs = {k: torch.randn(B, data.obs_horizon, *data.shapes[k], generator=g) for k in data.lowdim_keys}
    for k in data.image_keys:
        obs[k] = torch.randint(0, 256, (B, data.obs_horizon, *data.shapes[k]), generator=g, dtype=torch.uint8)
    task = torch.arange(B) % 2
    noise = torch.randn(B, data.action_horizon, data.action_dim, generator=g)
    return obs, task, noise


@pytest.mark.parametrize("images,attention,sampler", [(False, "causal", []), (True, "causal", []), (False, "full", []),
                                                     (False, "causal", ["diffusion.schedule=karras", "diffusion.solver=dpmpp2m", "diffusion.steps=5"])])
def test_cached_sampling_matches_routed_sampling(images, attention, sampler):
    model = random_model(images, [f"model.attention={attention}", *sampler])
    routes = step_routing(model, model.sigmas)
    assert len({tuple(tuple(e) for e, _ in step) for step in routes}) > 1  # routing really changes with sigma
    cached = CachedSampler(model, model.sigmas).eval()
    obs, task, noise = inputs(model)
    with torch.no_grad():
        want = model.sample(obs, task, noise=noise)
        got = cached(model.encode(obs, task), noise * model.sigmas[0])
    assert (got - want).abs().max().item() < 1e-5
    assert want.abs().max().item() > 0.1  # not a trivially small output


def test_cached_denoiser_matches_at_every_step_of_another_schedule():
    model = random_model(overrides=["model.n_experts=6", "model.top_k=3"])
    sigmas = exponential_sigmas(4, 0.01, 3.0)
    cached = CachedSampler(model, sigmas)
    obs, task, noise = inputs(model, B=2)
    with torch.no_grad():
        cond = model.encode(obs, task)
        for i in range(cached.n_steps):
            x = noise * sigmas[i]
            want, _ = model.edm.denoise(model.net, cond, x, sigmas[i].expand(2))
            assert (cached.denoise(i, cond, x) - want).abs().max().item() < 1e-5


def test_each_expert_is_stored_once_and_shared_between_samplers():
    model = random_model()
    bank = ExpertBank(model)
    cached = CachedSampler(model, model.sigmas, bank)
    warm = CachedSampler(model, exponential_sigmas(3, 0.01, 1.0), bank)
    names = [n for n, _ in cached.named_parameters()]
    assert not any("router" in n or "experts" in n or "noise_emb.mlp" in n for n in names)
    routes = step_routing(model, model.sigmas) + step_routing(model, torch.tensor(warm.sigmas))
    used = {(layer, e) for step in routes for layer, (experts, _) in enumerate(step) for e in experts}
    assert len(bank.w1) == len(bank.w3) == len(bank.w2) == len(used)  # one copy of each used expert, whatever its routes and gates
    hidden, d = model.cfg.model.expert_hidden, model.cfg.model.d_model
    assert all(w.shape == (hidden, d) for w in [*bank.w1.values(), *bank.w3.values()]) and all(w.shape == (d, hidden) for w in bank.w2.values())
    own = {id(p) for p in model.parameters()}
    stored = {id(p): p.numel() for s in (cached, warm) for p in s.parameters() if id(p) not in own}
    assert sum(stored.values()) == sum(w.numel() for w in [*bank.w1.values(), *bank.w3.values(), *bank.w2.values()])  # nothing else copied
    assert sum(stored.values()) <= sum(p.numel() for b in model.net.blocks for p in b.moe.experts.parameters())


def test_cached_flops_do_not_exceed_routed_flops_and_dense_twin_costs_more():
    def chunk_flops(model: DiffusionPolicy, cached: bool) -> int:
        obs, task, noise = inputs(model, B=1)
        sampler = CachedSampler(model, model.sigmas) if cached else None
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            if cached:
                sampler(model.encode(obs, task), noise * model.sigmas[0])
            else:
                model.sample(obs, task, noise=noise)
        return counter.get_total_flops()

    model = random_model()
    cfg = model.cfg.model
    dense = random_model(overrides=["model.n_experts=1", "model.top_k=1", f"model.expert_hidden={cfg.n_experts * cfg.expert_hidden}"])
    assert abs(sum(p.numel() for p in dense.parameters()) - sum(p.numel() for p in model.parameters())) < 0.01 * sum(p.numel() for p in model.parameters())
    routed, cached, dense_flops = chunk_flops(model, False), chunk_flops(model, True), chunk_flops(dense, False)
    assert cached <= routed
    assert dense_flops > 1.3 * cached  # top-2 of 4 experts: about half the feed-forward work of the twin
