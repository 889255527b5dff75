"""ONNX export and the ONNX Runtime policy: same chunks as torch, torch-free import, bad input refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from dp.config import build_config
from dp.data.normalize import Normalizer
from dp.errors import DpError
from dp.infer import OnnxPolicy, Policy
from dp.infer.onnx_export import export_policy
from dp.infer.rti import RTISettings
from dp.infer.runtime_common import sha256_file
from dp.models.diffusion_policy import DiffusionPolicy

ROOT = Path(__file__).resolve().parents[1]
LOWDIM = {"robot0_eef_pos": [3], "object": [5]}
INSTRUCTIONS = {"lift": "lift the cube", "can": "pick the can"}


def random_policy(images: bool, goal: str, seed: int = 0, **kwargs) -> Policy:
    """A tiny torch Policy with randomised weights and a non-trivial normaliser (gripper dim 3 discrete)."""
    torch.manual_seed(seed)
    cfg = build_config("tiny", [f"model.goal={goal}", "model.lang_dim=16", "data.obs_horizon=2", "data.action_horizon=8", "data.n_action_steps=5"])
    cfg.data.lowdim_keys = list(LOWDIM)
    cfg.data.shapes = {k: list(v) for k, v in LOWDIM.items()}
    if images:
        cfg.data.image_keys = ["agentview_image", "robot0_eye_in_hand_image"]
        cfg.data.shapes.update({k: [20, 20, 3] for k in cfg.data.image_keys})
    cfg.data.action_dim = 4
    cfg.vocab.tasks = sorted(INSTRUCTIONS)
    cfg.vocab.instructions = dict(INSTRUCTIONS)
    model = DiffusionPolicy(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (1.0 if "router" in name else 0.05))
    rng = np.random.default_rng(seed)
    stats = {"robot0_eef_pos": {"min": rng.uniform(-2, -1, 3), "max": rng.uniform(1, 3, 3)},
             "object": {"min": rng.uniform(-1, 0, 5), "max": rng.uniform(0.5, 1, 5)},
             "action": {"min": np.array([-0.5, -1, -2, -1]), "max": np.array([0.5, 1, 0, 1])}}
    goals = {text: rng.normal(size=16).astype(np.float32) for text in INSTRUCTIONS.values()} if goal == "lang" else None
    return Policy(model, Normalizer(stats, {"action": [3]}), goals, **kwargs)


def observation(policy: Policy, rng: np.random.Generator) -> dict[str, np.ndarray]:
    obs = {k: rng.uniform(-1, 1, v).astype(np.float32) for k, v in LOWDIM.items()}
    obs.update({k: rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for k in policy.image_keys})
    return obs


@pytest.fixture(scope="module", params=[(False, "task"), (True, "lang")], ids=["state-task", "cameras-lang"])
def exported(request, tmp_path_factory):
    images, goal = request.param
    folder = tmp_path_factory.mktemp("export") / "policy"
    rti = RTISettings(steps=2, sigma_start=1.0)
    export_policy(random_policy(images, goal), folder, rti=rti, control_freq=20.0, source="test")
    return images, goal, folder, rti


def test_export_writes_checked_graphs_and_a_complete_description(exported):
    images, goal, folder, rti = exported
    assert sorted(p.name for p in folder.iterdir()) == ["policy.onnx", "policy.yaml", "policy_warm.onnx"]
    for name in ("policy.onnx", "policy_warm.onnx"):
        onnx.checker.check_model(str(folder / name))
    spec = yaml.safe_load((folder / "policy.yaml").read_text())
    assert spec["files"]["policy.onnx"]["sha256"] == sha256_file(folder / "policy.onnx")
    assert spec["observation"]["shapes"]["object"] == [5] and spec["observation"]["horizon"] == 2
    assert spec["action"] == {"key": "action", "dim": 4, "horizon": 8, "n_action_steps": 5, "discrete_dims": [3]}
    assert spec["control_freq"] == 20.0 and spec["sampler"]["steps"] == 10 and len(spec["sampler"]["sigmas"]) == 11
    assert spec["rti"]["steps"] == 2 and spec["rti"]["every"] == 4 and spec["rti"]["sigmas"][0] == pytest.approx(1.0) and spec["rti"]["sigmas"][-1] == 0
    assert spec["goal"]["kind"] == goal and spec["goal"]["instructions"] == INSTRUCTIONS
    if goal == "lang":
        assert sorted(spec["goal"]["embeddings"]) == sorted(INSTRUCTIONS.values())
    warm_inputs = spec["graphs"]["policy_warm.onnx"]["inputs"]
    assert list(warm_inputs)[-2:] == ["noise", "guess"] and ("lang_emb" in warm_inputs) == (goal == "lang")
    model = onnx.load(str(folder / "policy.onnx"))
    assert not any("router" in init.name or "experts" in init.name for init in model.graph.initializer)


def test_onnx_policy_matches_torch_for_full_and_warm_chunks(exported):
    images, goal, folder, rti = exported
    torch_policy = random_policy(images, goal, rti=rti)
    onnx_policy = OnnxPolicy.load(folder, rti=True)
    rng = np.random.default_rng(3)
    for instruction in ("can", "lift the cube"):
        torch_policy.reset(instruction)
        onnx_policy.reset(instruction)
        for step in range(3):  # a full chunk, then two warm ones (each from the previous chunk)
            obs, noise = observation(torch_policy, rng), rng.standard_normal((8, 4)).astype(np.float32)
            want = torch_policy.predict_chunk(obs, noise=noise)
            got = onnx_policy.predict_chunk(obs, noise=noise)
            assert got.shape == (8, 4) and got.dtype == np.float32
            assert np.abs(got - want).max() < 1e-4, (instruction, step, np.abs(got - want).max())
            assert set(np.unique(got[:, 3])) <= {-1.0, 1.0}


def test_same_seed_gives_the_same_actions_in_both_runtimes(exported):
    """Both runtimes draw sampler noise from the same seeded numpy stream: a policy evaluated in torch
    and its export act alike, episode by episode, without any noise passed in."""
    images, goal, folder, rti = exported
    torch_policy = random_policy(images, goal, rti=rti)
    onnx_policy = OnnxPolicy.load(folder, rti=True)
    rng = np.random.default_rng(8)
    observations = [observation(torch_policy, rng) for _ in range(12)]
    for episode_seed in (11, 12):
        for policy in (torch_policy, onnx_policy):
            policy.seed(episode_seed)
            policy.reset("lift")
        pairs = [(torch_policy.select_action(obs), onnx_policy.select_action(obs)) for obs in observations]  # 3 chunks: full, warm, warm
        assert max(np.abs(a - b).max() for a, b in pairs) < 1e-4
    torch_policy.seed(11)
    torch_policy.reset("lift")
    assert not np.allclose(torch_policy.select_action(observations[0]), pairs[0][0])  # another seed, other noise


def test_rti_reset_and_action_queue(exported):
    images, goal, folder, _ = exported
    policy = OnnxPolicy.load(folder, rti=True)
    plain = OnnxPolicy.load(folder, rti=False)
    rng = np.random.default_rng(5)
    obs, noise = observation(policy, rng), rng.standard_normal((8, 4)).astype(np.float32)
    policy.reset("lift")
    plain.reset("lift")
    first = policy.predict_chunk(obs, noise=noise)
    assert np.array_equal(first, plain.predict_chunk(obs, noise=noise))  # the first chunk is full sampling
    warm = policy.predict_chunk(obs, noise=noise)
    assert not np.array_equal(warm, first)  # the second starts from the first
    policy.reset("lift")
    plain.reset("lift")
    assert np.array_equal(policy.predict_chunk(obs, noise=noise), first)  # reset() dropped the guess
    policy.reset("lift")
    actions = [policy.select_action(obs) for _ in range(7)]
    assert all(a.shape == (4,) for a in actions)
    assert policy.pending_actions().shape == (1, 4)  # RTI re-plans every 4 (rti.every): 4 + 3 used, 1 left
    assert plain.n_action_steps == 5  # without RTI: the run's n_action_steps


def test_onnx_policy_imports_without_torch():
    code = ("import sys; import dp.infer.onnx_policy; from dp.infer import OnnxPolicy; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_bad_export_folders_are_refused_before_any_session(exported, tmp_path):
    _, _, folder, _ = exported
    with pytest.raises(DpError, match="no such exported policy folder"):
        OnnxPolicy.load(tmp_path / "absent")
    cases = {
        "missing yaml": lambda d: (d / "policy.yaml").unlink(),
        "missing graph": lambda d: (d / "policy_warm.onnx").unlink(),
        "swapped graphs": lambda d: shutil.copy(d / "policy.onnx", d / "policy_warm.onnx"),
        "truncated graph": lambda d: (d / "policy.onnx").write_bytes((d / "policy.onnx").read_bytes()[:1000]),
        "foreign yaml": lambda d: (d / "policy.yaml").write_text("format: something-else\n"),
        "field missing": lambda d: (d / "policy.yaml").write_text((d / "policy.yaml").read_text().replace("  horizon: 2\n", "")),
    }
    messages = {"missing yaml": "no policy.yaml", "missing graph": "policy_warm.onnx: missing", "swapped graphs": "sha256 differs",
                "truncated graph": "sha256 differs", "foreign yaml": "not an exported policy", "field missing": "missing or malformed field"}
    for name, damage in cases.items():
        copy = tmp_path / name.replace(" ", "_")
        shutil.copytree(folder, copy)
        damage(copy)
        with pytest.raises(DpError, match=messages[name]):
            OnnxPolicy.load(copy, rti=True)


def test_bad_observations_are_refused_before_inference(exported):
    images, goal, folder, _ = exported
    policy = OnnxPolicy.load(folder)
    policy.reset("can")
    good = observation(policy, np.random.default_rng(0))
    bad = {
        "no key": ({k: v for k, v in good.items() if k != "object"}, "no key 'object'"),
        "wrong shape": ({**good, "robot0_eef_pos": np.zeros(4, np.float32)}, "'robot0_eef_pos': expected shape"),
        "wrong dtype": ({**good, "robot0_eef_pos": np.array(["a", "b", "c"])}, "expected numbers"),
        "NaN": ({**good, "object": np.full(5, np.nan, np.float32)}, "NaN"),
    }
    if images:
        bad["float image"] = ({**good, "agentview_image": good["agentview_image"].astype(np.float32)}, "expected a uint8 image")
        bad["small image"] = ({**good, "agentview_image": good["agentview_image"][:10]}, "expected a uint8 image")
    for name, (obs, message) in bad.items():
        with pytest.raises(DpError, match=message):
            policy.predict_chunk(obs)
        assert len(policy._history) == 0, name  # nothing was taken in
    with pytest.raises(DpError, match="noise"):
        policy.predict_chunk(good, noise=np.zeros(5))
    with pytest.raises(DpError, match="unknown instruction|no language embedding"):
        policy.reset("open the door")
    assert policy.predict_chunk(good).shape == (8, 4)
