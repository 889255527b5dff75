"""The MoDE network on tensors: shapes, noise-only routing, load balancing, dense twin, sizes and FLOPs."""

from __future__ import annotations

import pytest
import torch

from dp.config import Config, build_config
from dp.models.cost import measure_flops, param_counts
from dp.models.diffusion_policy import DiffusionPolicy
from dp.models.encoders import crop, random_shift, resize_matrix


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread (conftest.py)


def tiny_config(overrides: list[str] | None = None, images: bool = False, tasks: int = 2) -> Config:
    cfg = build_config("tiny", ["model.goal=task", *(overrides or [])])
    cfg.data.lowdim_keys = ["pos", "target"]
    cfg.data.shapes = {"pos": [3], "target": [3]}
    cfg.data.action_dim = 4
    if images:
        cfg.data.image_keys = ["cam0", "cam1"]
        cfg.data.shapes.update(cam0=[32, 32, 3], cam1=[32, 32, 3])
    cfg.vocab.tasks = [f"task{i}" for i in range(tasks)]
    return cfg


def batch_for(cfg: Config, B: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    obs = {k: torch.randn(B, cfg.data.obs_horizon, *cfg.data.shapes[k], generator=g) for k in cfg.data.lowdim_keys}
    for k in cfg.data.image_keys:
        obs[k] = torch.randint(0, 256, (B, cfg.data.obs_horizon, *cfg.data.shapes[k]), generator=g, dtype=torch.uint8)
    pos, target = obs["pos"][:, -1], obs["target"][:, -1]
    step = (target - pos).clamp(-1, 1)
    action = torch.cat([step, torch.sign(step[:, :1])], -1)[:, None].repeat(1, cfg.data.action_horizon, 1)
    return {"obs": obs, "action": action, "task_id": torch.randint(0, len(cfg.vocab.tasks), (B,), generator=g)}


@pytest.mark.parametrize("top_k", [1, 2])
def test_every_router_and_layer_learns_from_the_diffusion_loss_alone(top_k):
    """Without the router losses, the denoising loss itself moves every router (also at top_k 1, where
    the gate is a straight-through 1) and every other parameter; the top-1 gate's value stays 1."""
    cfg = tiny_config(["model.n_experts=4", f"model.top_k={top_k}"])
    policy = DiffusionPolicy(cfg)
    torch.nn.init.normal_(policy.net.head.weight, std=0.1)  # a zero head (the initial one) passes no gradient back
    batch = batch_for(cfg, 8)
    cond = policy.encode(batch["obs"], batch["task_id"])
    g = torch.Generator().manual_seed(0)
    sigma = policy.edm.sample_sigmas(8, generator=g)
    per_sample, routings = policy.edm.loss(policy.net, cond, batch["action"], sigma, torch.randn(batch["action"].shape, generator=g))
    per_sample.mean().backward()
    for i, block in enumerate(policy.net.blocks):
        assert block.moe.router.weight.grad.abs().sum() > 0, f"block {i}'s router gets no gradient at top_k={top_k}"
    idle = [n for n, p in policy.named_parameters() if "experts" not in n and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not idle, idle
    if top_k == 1:
        assert all(torch.equal(r.gates, torch.ones_like(r.gates)) for r in routings)


@pytest.mark.parametrize("images", [False, True])
def test_loss_and_sample_shapes(images):
    cfg = tiny_config(images=images)
    policy = DiffusionPolicy(cfg)
    batch = batch_for(cfg, 5)
    loss, parts = policy.compute_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert parts["lb_loss"].item() == pytest.approx(1.0, abs=1e-4)  # router starts uniform: perfectly balanced
    loss.backward()
    assert all(p.grad is not None for n, p in policy.named_parameters() if "experts" not in n)
    assert policy.net.head.weight.grad.abs().sum() > 0  # the zero head: the one layer a first step can move
    policy.eval()
    noise = torch.randn(5, cfg.data.action_horizon, 4)
    a = policy.sample(batch["obs"], batch["task_id"], noise=noise)
    b = policy.sample(batch["obs"], batch["task_id"], noise=noise)
    assert a.shape == (5, cfg.data.action_horizon, 4)
    assert torch.equal(a, b)  # noise is an input: sampling is reproducible


def test_eval_routing_depends_on_sigma_only():
    cfg = tiny_config()
    policy = DiffusionPolicy(cfg)
    for block in policy.net.blocks:  # give the routers a non-trivial preference
        torch.nn.init.normal_(block.moe.router.weight, std=1.0)
    policy.eval()
    batch = batch_for(cfg, 16, seed=1)
    cond = policy.encode(batch["obs"], batch["task_id"])
    x = torch.randn(16, cfg.data.action_horizon, 4)
    choices_per_sigma = []
    for sigma in policy.sigmas[:-1]:
        _, _, _, c_noise = policy.edm.scalings(sigma.repeat(16))
        _, routings = policy.net(cond, x, c_noise)
        for r in routings:
            assert r.experts.shape == (16, cfg.model.top_k)
            assert (r.experts == r.experts[0]).all(), "every sample must get the same experts at one sigma"
        choices_per_sigma.append(tuple(tuple(r.experts[0].tolist()) for r in routings))
        # a fresh batch of other observations routes the same way
        other = batch_for(cfg, 3, seed=7)
        _, routings2 = policy.net(policy.encode(other["obs"], other["task_id"]), x[:3], c_noise[:3])
        assert [tuple(r.experts[0].tolist()) for r in routings2] == list(choices_per_sigma[-1])
    assert len(set(choices_per_sigma)) > 1, "different noise levels should use different experts"


def test_training_routing_is_sampled():
    cfg = tiny_config()
    policy = DiffusionPolicy(cfg).train()
    moe = policy.net.blocks[0].moe
    emb = torch.randn(1, cfg.model.d_model).repeat(400, 1)
    picks = moe.route(emb).experts
    assert len({tuple(sorted(p.tolist())) for p in picks}) > 1  # uniform router: pairs vary between draws
    policy.eval()
    assert len({tuple(p.tolist()) for p in moe.route(emb).experts}) == 1


def _imbalance(policy: DiffusionPolicy) -> float:
    """Share of the most used expert over the sampler's sigmas and all layers (eval routing); 0.5 = balanced top-2 of 4."""
    policy.eval()
    sigmas = torch.exp(torch.linspace(torch.log(torch.tensor(0.001)), torch.log(torch.tensor(80.0)), 64))
    _, _, _, c_noise = policy.edm.scalings(sigmas)
    emb = policy.net.noise_emb(c_noise)
    counts = torch.zeros(policy.cfg.model.n_experts)
    for block in policy.net.blocks:
        counts += torch.bincount(block.moe.route(emb).experts.flatten(), minlength=len(counts)).float()
    return (counts.max() / counts.sum() * policy.cfg.model.top_k).item()


def _train_with_lb(lb_weight: float) -> float:
    torch.manual_seed(0)
    cfg = tiny_config([f"model.lb_weight={lb_weight}"])
    policy = DiffusionPolicy(cfg)
    for block in policy.net.blocks:  # start strongly imbalanced: experts 0 and 1 take everything
        block.moe.router.bias.data = torch.tensor([3.0, 3.0, -3.0, -3.0])
    start = _imbalance(policy)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    batch = batch_for(cfg, 64)
    policy.train()
    for _ in range(60):
        loss, _ = policy.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert start == pytest.approx(1.0)
    return _imbalance(policy)


@pytest.mark.slow
def test_load_balancing_loss_lowers_imbalance():
    without = _train_with_lb(0.0)
    with_lb = _train_with_lb(1.0)
    assert with_lb < without - 0.2, (with_lb, without)
    assert with_lb <= 0.8


def test_z_loss_is_reported_and_positive():
    cfg = tiny_config(["model.z_loss_weight=0.001"])
    loss, parts = DiffusionPolicy(cfg).compute_loss(batch_for(cfg, 4))
    assert parts["z_loss"].item() == pytest.approx(torch.log(torch.tensor(4.0)).item() ** 2, rel=1e-4)  # zero logits


def test_dense_twin_same_code_and_active_cost():
    moe_cfg = tiny_config()
    dense_cfg = tiny_config(["model.n_experts=1", "model.top_k=1", f"model.expert_hidden={moe_cfg.model.expert_hidden * 2}"])
    moe, dense = DiffusionPolicy(moe_cfg), DiffusionPolicy(dense_cfg)
    assert all(b.moe.router is None and len(b.moe.experts) == 1 for b in dense.net.blocks)
    loss, parts = dense.compute_loss(batch_for(dense_cfg, 4))
    assert parts["lb_loss"].item() == 0.0 and torch.isfinite(loss)
    pm, pd = param_counts(moe), param_counts(dense)
    assert pd["total_params"] == pd["active_params"]
    assert pm["active_params"] < pm["total_params"]
    expert = sum(p.numel() for p in moe.net.blocks[0].moe.experts[0].parameters())
    assert pm["total_params"] - pm["active_params"] == 2 * expert * len(moe.net.blocks)
    fm, fd = measure_flops(moe), measure_flops(dense)
    # top-2 of 4 experts costs what one expert twice as wide costs (+ the tiny router)
    assert fm["flops_per_step"] == pytest.approx(fd["flops_per_step"], rel=0.01)
    everything = tiny_config(["model.top_k=4"])
    assert measure_flops(DiffusionPolicy(everything))["flops_per_step"] > 1.3 * fm["flops_per_step"]


def test_goal_conditioning_changes_the_prediction():
    cfg = tiny_config()
    policy = DiffusionPolicy(cfg)
    torch.nn.init.normal_(policy.net.head.weight)
    policy.eval()
    batch = batch_for(cfg, 1)
    noise = torch.randn(1, cfg.data.action_horizon, 4)
    a = policy.sample(batch["obs"], torch.tensor([0]), noise=noise)
    b = policy.sample(batch["obs"], torch.tensor([1]), noise=noise)
    assert not torch.allclose(a, b)


def test_random_shift_keeps_content():
    imgs = torch.randint(0, 256, (6, 20, 20, 3), dtype=torch.uint8)
    assert torch.equal(random_shift(imgs, 0), imgs)
    shifted = random_shift(imgs, 2)
    assert shifted.shape == imgs.shape and shifted.dtype == torch.uint8
    # the centre 16x16 of every image survives somewhere within +-2 pixels
    for i in range(6):
        centre = imgs[i, 2:18, 2:18]
        assert any(torch.equal(shifted[i, dy : dy + 16, dx : dx + 16], centre) for dy in range(5) for dx in range(5))


def test_crop_is_a_crop_of_the_input():
    imgs = torch.randint(0, 256, (8, 24, 20, 3), dtype=torch.uint8)
    centre = crop(imgs, 16, random=False)
    assert torch.equal(centre, imgs[:, 4:20, 2:18])
    g = torch.Generator().manual_seed(0)
    cropped = crop(imgs, 16, random=True, generator=g)
    assert cropped.shape == (8, 16, 16, 3) and cropped.dtype == torch.uint8
    offsets = set()
    for i in range(8):
        found = [(t, l) for t in range(9) for l in range(5) if torch.equal(cropped[i], imgs[i, t : t + 16, l : l + 16])]
        assert found, f"crop {i} is not a window of its image"
        offsets.add(found[0])
    assert len(offsets) > 1  # one offset per image, not one per batch
    with pytest.raises(ValueError, match="aug_crop=32 is larger than the 24x20 image"):
        crop(imgs, 32, random=True)


def test_aug_crop_random_in_training_centre_at_inference():
    cfg = tiny_config(["model.aug_crop=24", "model.aug_shift=0"], images=True)
    torch.manual_seed(0)
    policy = DiffusionPolicy(cfg)
    batch = batch_for(cfg, 2)
    seen = []
    policy.net.cameras["cam0"].register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    policy.eval()
    policy.encode(batch["obs"], batch["task_id"])
    flat = batch["obs"]["cam0"].reshape(-1, 32, 32, 3)
    assert torch.equal(seen[-1], flat[:, 4:28, 4:28])  # the centre, deterministic
    policy.train()
    policy.encode(batch["obs"], batch["task_id"])
    policy.encode(batch["obs"], batch["task_id"])
    assert seen[-1].shape == (2 * cfg.data.obs_horizon, 24, 24, 3) and not torch.equal(seen[-1], seen[-2])  # random windows in training


def test_noise_draws_encode_once_and_train_several_sigmas():
    cfg = tiny_config(["train.noise_draws=3"], images=True)
    torch.manual_seed(0)
    policy = DiffusionPolicy(cfg)
    torch.nn.init.normal_(policy.net.head.weight)  # a zero head (the initial one) passes no gradient back
    batch = batch_for(cfg, 4)
    encoded, denoised = [], []
    policy.net.cameras["cam0"].register_forward_hook(lambda m, args, out: encoded.append(out.shape[0]))
    policy.net.head.register_forward_hook(lambda m, args, out: denoised.append(out.shape[0]))
    loss, parts = policy.compute_loss(batch)
    assert encoded == [4 * cfg.data.obs_horizon]  # every window's frames encoded once
    assert denoised == [12]  # 3 noise draws of each of the 4 windows
    loss.backward()
    assert policy.net.cameras["cam0"].stem[0].weight.grad.abs().sum() > 0
    encoded.clear(), denoised.clear()
    policy.compute_loss(batch, draws=1)
    assert encoded == [4 * cfg.data.obs_horizon] and denoised == [4]


def test_resize_matrices_equal_torchs_antialiased_resize():
    """The encoder resizes by two matrix products (they export to ONNX; the antialiased kernel does not)."""
    x = torch.rand(3, 2, 96, 80) * 2 - 1
    ref = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(resize_matrix(96, 64) @ x @ resize_matrix(80, 64).T, ref, atol=1e-5, rtol=0)
    up = torch.nn.functional.interpolate(x, size=(100, 100), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(resize_matrix(96, 100) @ x @ resize_matrix(80, 100).T, up, atol=1e-5, rtol=0)


def test_an_image_of_another_size_is_refused_by_the_encoder():
    cfg = tiny_config(["model.image_size=16"], images=True)
    policy = DiffusionPolicy(cfg)
    batch = batch_for(cfg, 2)
    batch["obs"]["cam0"] = batch["obs"]["cam0"][:, :, :30]
    with pytest.raises(ValueError, match=r"takes 32x32 images, got \(30, 32\)"):
        policy.encode(batch["obs"], batch["task_id"])
