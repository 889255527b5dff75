"""The torch Policy with expert caching acts as the routed model does (within 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dp.config import build_config
from dp.data.normalize import Normalizer
from dp.infer.policy import Policy
from dp.infer.rti import RTISettings
from dp.models.diffusion_policy import DiffusionPolicy

LOWDIM = {"robot0_eef_pos": [3], "object": [5]}


def random_policy(attention: str, cache_experts: bool, rti: RTISettings | bool = False) -> Policy:
    """A tiny torch Policy with randomised weights (routers spread, so steps use different experts)."""
    torch.manual_seed(0)
    cfg = build_config("tiny", ["model.goal=task", f"model.attention={attention}", "data.obs_horizon=2", "data.action_horizon=8", "data.n_action_steps=4"])
    cfg.data.lowdim_keys = list(LOWDIM)
    cfg.data.shapes = {k: list(v) for k, v in LOWDIM.items()}
    cfg.data.action_dim = 4
    cfg.vocab.tasks = ["lift"]
    model = DiffusionPolicy(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (1.0 if "router" in name else 0.05))
    rng = np.random.default_rng(0)
    stats = {"robot0_eef_pos": {"min": rng.uniform(-2, -1, 3), "max": rng.uniform(1, 3, 3)},
             "object": {"min": rng.uniform(-1, 0, 5), "max": rng.uniform(0.5, 1, 5)},
             "action": {"min": np.array([-0.5, -1, -2, -1]), "max": np.array([0.5, 1, 0, 1])}}
    return Policy(model, Normalizer(stats, {"action": [3]}), cache_experts=cache_experts, rti=rti, seed=7)


@pytest.mark.parametrize("attention", ["causal", "full"])
@pytest.mark.parametrize("rti", [False, True], ids=["full-sampling", "rti"])
def test_cached_policy_matches_the_routed_model(attention, rti):
    cached, routed = random_policy(attention, True, rti), random_policy(attention, False, rti)
    assert cached._sampler("full") is not None and routed._sampler("full") is None
    rng = np.random.default_rng(1)
    for _ in range(6):  # with RTI: the first chunk from noise, then warm starts from the previous chunk
        obs = {k: rng.uniform(-1, 1, v).astype(np.float32) for k, v in LOWDIM.items()}
        got, want = cached.predict_chunk(obs), routed.predict_chunk(obs)
        assert np.abs(got[:, :3] - want[:, :3]).max() < 1e-5
        assert np.array_equal(got[:, 3], want[:, 3])
    if rti:
        assert set(cached._samplers) == {"full", "warm"}
        assert cached._samplers["full"].bank is cached._samplers["warm"].bank  # each expert stored once
