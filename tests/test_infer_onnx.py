"""ONNX export and the ONNX Runtime policy: same chunks as torch, torch-free import, bad input refused."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import warnings
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
from dp.export.onnx_export import export_policy
from dp.infer.rti import RTISettings, warm_sample
from dp.files import sha256_file
from dp.models.diffusion_policy import DiffusionPolicy

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ("policy.onnx", "policy_warm.onnx", "policy_first.onnx")
LOWDIM = {"robot0_eef_pos": [3], "object": [5]}
INSTRUCTIONS = {"lift": "lift the cube", "can": "pick the can"}


def random_policy(images: bool, goal: str, seed: int = 0, overrides: tuple[str, ...] = (), gripper: tuple[float, float] = (-1, 1),
                  **kwargs) -> Policy:
    """A tiny torch Policy with randomised weights and a non-trivial normaliser (gripper dim 3 discrete)."""
    torch.manual_seed(seed)
    cfg = build_config("tiny", [f"model.goal={goal}", "model.lang_dim=16", "data.obs_horizon=2", "data.action_horizon=8", "data.n_action_steps=5",
                                *overrides])
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
             "action": {"min": np.array([-0.5, -1, -2, gripper[0]]), "max": np.array([0.5, 1, 0, gripper[1]])}}
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
    rti = RTISettings(steps=2, sigma_start=1.0, first_steps=2, first_sigma=2.0)
    export_policy(random_policy(images, goal), folder, rti=rti, control_freq=20.0, source="test")
    return images, goal, folder, rti


def test_export_writes_checked_graphs_and_a_complete_description(exported):
    images, goal, folder, rti = exported
    assert sorted(p.name for p in folder.iterdir()) == ["policy.onnx", "policy.weights", "policy.yaml", "policy_first.onnx", "policy_warm.onnx"]
    for name in GRAPHS:
        onnx.checker.check_model(str(folder / name), full_check=True)
    spec = yaml.safe_load((folder / "policy.yaml").read_text())
    assert spec["version"] == 2 and spec["precision"] == "fp32" and spec["exporter"] == "torchscript"
    for name in (*GRAPHS, "policy.weights"):
        assert spec["files"][name]["sha256"] == sha256_file(folder / name)
    assert spec["first"]["steps"] == rti.first_steps and spec["first"]["sigmas"][0] == pytest.approx(rti.first_sigma) and spec["first"]["sigmas"][-1] == 0
    assert all(0 < d <= 1e-4 for d in spec["check"]["max_abs_diff_vs_torch"].values())
    assert spec["observation"]["shapes"]["object"] == [5] and spec["observation"]["horizon"] == 2
    assert spec["action"] == {"key": "action", "dim": 4, "horizon": 8, "n_action_steps": 5, "task_n_action_steps": {}, "discrete_dims": [3]}
    assert spec["control_freq"] == 20.0 and spec["sampler"]["steps"] == 10 and len(spec["sampler"]["sigmas"]) == 11
    assert spec["rti"]["steps"] == 2 and spec["rti"]["every"] == 4 and spec["rti"]["sigmas"][0] == pytest.approx(1.0) and spec["rti"]["sigmas"][-1] == 0
    assert spec["goal"]["kind"] == goal and spec["goal"]["instructions"] == INSTRUCTIONS
    if goal == "lang":
        assert sorted(spec["goal"]["embeddings"]) == sorted(INSTRUCTIONS.values())
    warm_inputs = spec["graphs"]["policy_warm.onnx"]["inputs"]
    assert list(warm_inputs)[-2:] == ["noise", "guess"] and ("lang_emb" in warm_inputs) == (goal == "lang")
    model = onnx.load(str(folder / "policy.onnx"), load_external_data=False)
    assert not any("router" in init.name or "experts" in init.name for init in model.graph.initializer)


def test_each_weight_is_stored_once_in_one_file_shared_by_the_graphs(exported):
    images, goal, folder, _ = exported
    policy = random_policy(images, goal)
    weight_bytes = 4 * sum(p.numel() for p in policy.model.parameters())
    stored = (folder / "policy.weights").stat().st_size
    assert stored <= 1.02 * weight_bytes, (stored, weight_bytes)  # (bench/latency.py: all files of the `small` preset <= 1.2x)
    expert_bytes = 4 * sum(p.numel() for b in policy.model.net.blocks for p in b.moe.experts.parameters())
    assert (folder / "policy.weights").stat().st_size >= 0.9 * expert_bytes  # the experts live there (once), not in a graph
    entries = {}
    for name in GRAPHS:
        model = onnx.load(str(folder / name), load_external_data=False)
        external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        fields = [{e.key: e.value for e in t.external_data} for t in external]
        assert external and {f["location"] for f in fields} == {"policy.weights"}
        assert all(len(t.raw_data) < 1024 for t in model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL)
        assert len({(f["offset"], f["length"]) for f in fields}) == len(fields)  # no tensor twice within a graph
        entries[name] = {(int(f["offset"]), int(f["length"])) for f in fields}
    unique = set().union(*entries.values())
    referenced = sum(length for graph in entries.values() for _, length in graph)
    assert sum(length for _, length in unique) <= stored <= sum(length for _, length in unique) + 4096 * len(unique)  # nothing else in it
    assert referenced >= 2 * stored  # the graphs read the same entries: the encoders, attention and experts are not copied per graph


def test_onnx_policy_matches_torch_for_full_and_warm_chunks(exported):
    images, goal, folder, rti = exported
    torch_policy = random_policy(images, goal, rti=rti)
    onnx_policy = OnnxPolicy.load(folder, rti=True, first_chunk="full")  # the torch Policy's first chunk is full sampling
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
    onnx_policy = OnnxPolicy.load(folder, rti=True, first_chunk="full")
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
    for policy in (torch_policy, onnx_policy):  # temporal ensembling is code the runtimes share: alike too
        policy.use_temporal_ensemble(0.1)
        policy.seed(13)
        policy.reset("lift")
    pairs = [(torch_policy.select_action(obs), onnx_policy.select_action(obs)) for obs in observations]
    assert max(np.abs(a - b).max() for a, b in pairs) < 1e-4
    for policy in (torch_policy, onnx_policy):  # the discrete vote too: one batch in torch, one graph run per chunk in ONNX
        policy.use_temporal_ensemble(None)
        policy.use_discrete_vote(3)
        policy.seed(14)
        policy.reset("lift")
    pairs = [(torch_policy.select_action(obs), onnx_policy.select_action(obs)) for obs in observations]
    assert max(np.abs(a - b).max() for a, b in pairs) < 1e-4


def test_rti_reset_and_action_queue(exported):
    images, goal, folder, _ = exported
    policy = OnnxPolicy.load(folder, rti=True, first_chunk="short")
    plain = OnnxPolicy.load(folder, rti=False)
    full_first = OnnxPolicy.load(folder, rti=True)
    rng = np.random.default_rng(5)
    obs, noise = observation(policy, rng), rng.standard_normal((8, 4)).astype(np.float32)
    for p in (policy, plain, full_first):
        p.reset("lift")
    first = policy.predict_chunk(obs, noise=noise)
    full = plain.predict_chunk(obs, noise=noise)
    assert np.array_equal(full_first.predict_chunk(obs, noise=noise), full)  # the default: the first chunk fully sampled
    assert np.abs(first - full).max() > 1e-3  # first_chunk="short": the short sampler
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


def test_short_first_chunk_is_the_uncached_model_from_a_zero_guess(exported):
    """With RTI an episode starts with policy_first.onnx: first_steps DDIM steps from first_sigma
    around a zero (normalised) guess, which the routed torch model computes through warm_sample."""
    images, goal, folder, rti = exported
    torch_policy = random_policy(images, goal)
    model, norm = torch_policy.model, torch_policy.normalizer
    onnx_policy = OnnxPolicy.load(folder, rti=True, first_chunk="short")
    rng = np.random.default_rng(4)
    for instruction in ("can", "lift the cube"):
        obs, noise = observation(torch_policy, rng), rng.standard_normal((8, 4)).astype(np.float32)
        onnx_policy.reset(instruction)
        got = onnx_policy.predict_chunk(obs, noise=noise)
        torch_policy.reset(instruction)
        batch = {k: torch.from_numpy(np.stack([obs[k]] * 2)[None]) for k in torch_policy.obs_keys}
        batch = {k: torch.from_numpy(norm.normalize(k, v.numpy()).astype(np.float32)) if k in LOWDIM else v for k, v in batch.items()}
        with torch.no_grad():
            cond = model.encode(batch, **torch_policy._goal)
            sigmas = rti.first_for_model(model)
            x = warm_sample(model, cond, torch.zeros(1, 8, 4), torch.from_numpy(noise[None]), sigmas)
        want = norm.unnormalize("action", x[0].numpy())
        assert len(sigmas) == rti.first_steps + 1
        assert np.abs(got[:, :3] - want[:, :3]).max() < 1e-4
        assert np.array_equal(got[:, 3], np.where(want[:, 3] >= 0, 1.0, -1.0))


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
        "version 1 export": lambda d: (d / "policy.yaml").write_text((d / "policy.yaml").read_text().replace("version: 2\n", "version: 1\n")),
        "damaged weights": lambda d: (d / "policy.weights").write_bytes(b"\0" * 16 + (d / "policy.weights").read_bytes()[16:]),
        "field missing": lambda d: (d / "policy.yaml").write_text((d / "policy.yaml").read_text().replace("  horizon: 2\n", "")),
    }
    messages = {"missing yaml": "no policy.yaml", "missing graph": "policy_warm.onnx: missing", "swapped graphs": "sha256 differs",
                "truncated graph": "sha256 differs", "foreign yaml": "not an exported policy",
                "version 1 export": "export format version 1, this runtime reads version 2.*re-export", "damaged weights": "policy.weights: sha256 differs", "field missing": "missing or malformed field"}
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


@pytest.mark.parametrize("precision,max_ratio", [("fp16", 0.55), ("int8", 0.35)])
@pytest.mark.slow
def test_fp16_and_int8_exports_are_smaller_and_act_like_torch(tmp_path, precision, max_ratio):
    policy = random_policy(False, "task")
    folder = tmp_path / precision
    spec = export_policy(policy, folder, rti=RTISettings(steps=1, first_steps=1), precision=precision, control_freq=20.0)
    assert spec["precision"] == precision
    diffs = spec["check"]["max_abs_diff_vs_torch"]
    assert all(0 < d <= spec["check"]["tolerance"] for d in diffs.values()), diffs  # checked against the routed torch model
    stored = (folder / "policy.weights").stat().st_size
    assert stored <= max_ratio * 4 * sum(p.numel() for p in policy.model.parameters()), stored
    onnx_policy = OnnxPolicy.load(folder, rti=True)
    onnx_policy.reset("lift")
    chunk = onnx_policy.predict_chunk(observation(policy, np.random.default_rng(0)))
    assert chunk.shape == (8, 4) and np.isfinite(chunk).all()


@pytest.mark.slow
def test_the_export_traces_the_checkpoints_schedule_and_solver(tmp_path):
    sampler = ("diffusion.schedule=karras", "diffusion.solver=dpmpp2m", "diffusion.steps=4", "diffusion.trim=0.001")
    policy = random_policy(False, "task", overrides=sampler)
    spec = export_policy(policy, tmp_path / "2m", rti=RTISettings(steps=1, first_steps=1), control_freq=20.0)
    assert (spec["sampler"]["schedule"], spec["sampler"]["solver"], spec["sampler"]["steps"]) == ("karras", "dpmpp2m", 4)
    np.testing.assert_allclose(spec["sampler"]["sigmas"], policy.model.sigmas.tolist(), rtol=1e-7)
    assert spec["sampler"]["sigmas"][0] < 80 * 0.5  # trimmed: not the training range's top
    ddim = tmp_path / "ddim"
    export_policy(random_policy(False, "task", overrides=sampler[:1] + sampler[2:]), ddim, rti=RTISettings(steps=1, first_steps=1), control_freq=20.0)
    graphs = {"2m": OnnxPolicy.load(tmp_path / "2m"), "ddim": OnnxPolicy.load(ddim)}
    obs, noise = observation(policy, np.random.default_rng(4)), np.random.default_rng(5).standard_normal((8, 4)).astype(np.float32)
    chunks = {}
    for name, p in [*graphs.items(), ("torch", policy)]:
        p.reset("lift")
        chunks[name] = p.predict_chunk(obs, noise=noise)
    assert np.abs(chunks["2m"] - chunks["torch"]).max() < 1e-4
    assert np.abs(chunks["2m"][:, :3] - chunks["ddim"][:, :3]).max() > 1e-3  # the graph really runs the second-order update


@pytest.mark.slow
def test_a_0_1_gripper_comes_out_at_its_levels_in_torch_and_onnx(tmp_path):
    """A gripper recorded as 0/1: both runtimes act 0 or 1 (not the -1/+1 the model works in), the
    same on the same noise, first chunk and warm ones."""
    policy = random_policy(False, "task", gripper=(0.0, 1.0), rti=RTISettings(steps=1, first_steps=1))
    export_policy(policy, tmp_path / "p", rti=RTISettings(steps=1, first_steps=1), control_freq=20.0)
    onnx_policy = OnnxPolicy.load(tmp_path / "p", rti=True, first_chunk="full")
    rng = np.random.default_rng(6)
    levels = set()
    for p in (policy, onnx_policy):
        p.reset("lift")
    for _ in range(4):
        obs, noise = observation(policy, rng), rng.standard_normal((8, 4)).astype(np.float32)
        want, got = policy.predict_chunk(obs, noise=noise), onnx_policy.predict_chunk(obs, noise=noise)
        np.testing.assert_array_equal(got[:, 3], want[:, 3])
        levels |= set(want[:, 3].tolist())
    assert levels <= {0.0, 1.0} and levels, levels


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_policy(tmp_path):
    """torch's current exporter (dynamo=True): the same graphs, checked against the routed torch model
    (a short schedule: this exporter traces every unrolled op, ~10x slower than TorchScript)."""
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript: pip install -e '.[dynamo]'")
    policy = random_policy(False, "task")
    rti = RTISettings(steps=1, first_steps=1)
    dynamo, script = tmp_path / "dynamo", tmp_path / "torchscript"
    spec = export_policy(policy, dynamo, steps=2, rti=rti, exporter="dynamo", control_freq=20.0)
    export_policy(policy, script, steps=2, rti=rti, exporter="torchscript", control_freq=20.0)
    assert spec["exporter"] == "dynamo" and all(d <= 1e-4 for d in spec["check"]["max_abs_diff_vs_torch"].values())
    assert (dynamo / "policy.weights").stat().st_size <= 1.02 * (script / "policy.weights").stat().st_size  # weights once here too
    a, b = OnnxPolicy.load(dynamo, rti=True), OnnxPolicy.load(script, rti=True)
    rng = np.random.default_rng(2)
    for p in (a, b):
        p.reset("can")
    for _ in range(2):  # the first chunk, then a warm one
        obs, noise = observation(policy, rng), rng.standard_normal((8, 4)).astype(np.float32)
        assert np.abs(a.predict_chunk(obs, noise=noise) - b.predict_chunk(obs, noise=noise)).max() < 1e-4


def test_the_deprecated_torchscript_exporter_is_still_there():
    """The default exporter is torch's TorchScript one (dynamo=False), deprecated. When a torch release
    drops it this test fails: make `dynamo` the default in dp.export.onnx_export and dp export."""
    import inspect

    from dp.export.onnx_export import EXPORTERS

    assert "dynamo" in inspect.signature(torch.onnx.export).parameters and EXPORTERS[0] == "torchscript"
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation warning
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), buffer, dynamo=False)
    assert [n.op_type for n in onnx.load_from_string(buffer.getvalue()).graph.node] == ["Gemm"]
