"""`dp train` end to end on real stores: overfitting, checkpoint layout, multitask goals, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dp.cli import main as dp_main
from dp.config import build_config, load_config
from dp.data.store import EpisodeStore
from dp.errors import DpError
from dp.infer import Policy
from dp.models import checkpoint_files as ckpt
from dp.testing.reach_store import make_store
from dp.train.trainer import RUN_LOCK_FILE, NonFiniteLoss, Trainer

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out


def rows(run: Path, event: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == event]


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("overfit")
    store = make_store(root / "reach.zarr", episodes=4, length=30)
    run = root / "run"
    rc = dp_main(["train", "--data", str(store), "--preset", "tiny", "--out", str(run), "--no-progress",
                  "train.steps=400", "data.val_fraction=0"])
    assert rc == 0
    return store, run


def test_tiny_preset_overfits_a_few_episodes(overfit_run):
    store_path, run = overfit_run
    train = rows(run, "train")
    assert train[0]["loss"] / train[-1]["loss"] > 10, (train[0]["loss"], train[-1]["loss"])
    policy = Policy.load(run)
    store = EpisodeStore.open(store_path)
    errors, grip_match, baseline = [], [], []
    mean_action = store.read("action", 0, store.n_frames)[:, :6].mean(0)
    for e in range(len(store)):
        ep = store.get_episode(e)
        policy.reset()
        for t in range(0, 30, 3):
            chunk = policy.predict_chunk({k: ep[k][t] for k in policy.obs_keys})
            truth = ep["action"][np.minimum(np.arange(t, t + 10), 29)]
            errors.append(np.abs(chunk[:, :6] - truth[:, :6]).mean())
            baseline.append(np.abs(mean_action - truth[:, :6]).mean())
            grip_match.append((chunk[:, 6] == truth[:, 6]).mean())
    assert np.mean(errors) < 0.06 and np.max(errors) < 0.2, (np.mean(errors), np.max(errors))
    assert np.mean(errors) < 0.3 * np.mean(baseline)
    assert np.mean(grip_match) >= 0.9


def test_checkpoint_layout_and_safe_loading(overfit_run):
    _, run = overfit_run
    for name in ("config.yaml", "metrics.jsonl", "loss.png", "model.safetensors", "normalizer.safetensors", "train_state.pt"):
        assert (run / name).is_file(), name
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    latest = (run / "latest").resolve()
    assert latest.name == "step_0000400"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000300", "step_0000400"]  # keep 2
    cfg = load_config(latest / "config.yaml")
    assert cfg.preset == "tiny" and cfg.data.lowdim_keys == ["robot0_eef_pos", "robot0_gripper_qpos", "object"]
    assert cfg.data.action_dim == 7 and cfg.vocab.tasks == ["reach"] and cfg.model.goal == "task"
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert state["step"] == 400 and set(state) >= {"model", "ema", "optimizer", "scheduler", "rng", "epoch", "batch_in_epoch"}
    # model.safetensors holds the EMA weights, not the raw ones
    ema = ckpt.load_weights(run / "model.safetensors")
    assert any(not torch.equal(ema[k], v) for k, v in state["model"].items())
    end = rows(run, "end")[-1]
    assert end["step"] == 400 and len(end["weights_sha256"]) == 1
    start = rows(run, "start")[0]
    assert start["active_params"] < start["total_params"]
    # the EMA ablation's checkpoint of the raw weights (bench/raw_weights.py) loads and runs like any other
    raw = run.parent / "raw"
    bench = Path(__file__).resolve().parents[1] / "bench" / "raw_weights.py"
    subprocess.run([sys.executable, str(bench), str(latest), "--out", str(raw)], check=True, capture_output=True)
    assert all(torch.equal(ckpt.load_weights(raw / "model.safetensors")[k], v) for k, v in state["model"].items())
    assert Policy.load(raw).predict_chunk({k: np.zeros(cfg.data.shapes[k], np.float32) for k in cfg.data.lowdim_keys}).shape == (10, 7)
    assert subprocess.run([sys.executable, str(bench), str(latest), "--out", str(raw)], capture_output=True).returncode != 0  # never overwrites


def test_multitask_language_goals(tmp_path):
    a = make_store(tmp_path / "reach.zarr", episodes=3, length=20, tasks=("reach",), lang=True, seed=1)
    b = make_store(tmp_path / "retreat.zarr", episodes=3, length=20, tasks=("retreat",), lang=True, seed=2)
    run = tmp_path / "run"
    assert dp_main(["train", "--data", f"{a},{b}", "--preset", "tiny", "--out", str(run), "--no-progress",
                    "train.steps=30", "train.val_every=30", "data.task_weights={retreat: 2}"]) == 0
    cfg = load_config(run / "config.yaml")
    assert cfg.model.goal == "lang" and cfg.vocab.tasks == ["reach", "retreat"]
    assert cfg.data.task_weights == {"retreat": 2.0}  # the balance the run sampled with, kept for --resume
    assert cfg.vocab.instructions == {"reach": "reach the target", "retreat": "move away from the target"}
    assert len(rows(run, "val")) == 1  # one held-out episode per store
    goals = ckpt.load_goals(run / "goals.safetensors")
    assert sorted(goals) == ["move away from the target", "reach the target"] and goals["reach the target"].shape == (384,)
    policy = Policy.load(run)
    obs = {k: v[0] for k, v in EpisodeStore.open(a).get_episode(0).items()}
    noise = np.random.default_rng(0).normal(size=(10, 7))
    policy.reset("reach the target")
    reach = policy.predict_chunk(obs, noise=noise)
    policy.reset("retreat")  # a task name maps to its instruction's embedding
    retreat = policy.predict_chunk(obs, noise=noise)
    assert not np.allclose(reach, retreat)
    with pytest.raises(DpError, match="no language embedding"):
        policy.reset("open the door")
    with pytest.raises(DpError):
        policy.reset(None)  # two goals: the instruction is required


def _widen_object(src: Path, dst: Path, extra: int) -> Path:
    """A copy of store ``src`` whose 'object' vectors carry ``extra`` more (constant) values."""
    source = EpisodeStore.open(src)
    with EpisodeStore.create(dst, control_freq=20.0, robot="point", roles=source.roles, discrete_dims={"action": [6]}) as store:
        for i in range(len(source)):
            episode = source.get_episode(i)
            episode["object"] = np.concatenate([episode["object"], np.full((len(episode["object"]), extra), 0.5, np.float32)], axis=1)
            store.add_episode(episode, {k: source.meta_column(k)[i] for k in ("task", "instruction", "lang_emb", "success", "source", "seed")})
    return dst


def test_stores_of_different_widths_train_one_policy_with_padding(tmp_path, capsys):
    a = make_store(tmp_path / "reach.zarr", episodes=3, length=20, tasks=("reach",), lang=True, seed=1)
    b = _widen_object(make_store(tmp_path / "r.zarr", episodes=3, length=20, tasks=("retreat",), lang=True, seed=2), tmp_path / "retreat.zarr", 2)
    args = ["train", "--data", f"{a},{b}", "--preset", "tiny", "--no-progress"]
    assert dp_main([*args, "--out", str(tmp_path / "strict"), "train.steps=20"]) == 1
    assert "data.pad_lowdim=true" in capsys.readouterr().err
    run = tmp_path / "run"
    assert dp_main([*args, "--out", str(run), "train.steps=20", "train.val_every=20", "data.pad_lowdim=true"]) == 0
    cfg = load_config(run / "config.yaml")
    assert cfg.data.shapes["object"] == [5] and cfg.data.pad_lowdim
    policy = Policy.load(run)
    stats = policy.normalizer.stats["object"]
    assert stats["min"].shape == (5,) and stats["min"][3] == 0.0 and stats["max"][3] == 0.5  # zero padding + the 0.5 column
    narrow = {k: v[0] for k, v in EpisodeStore.open(a).get_episode(0).items()}
    padded = {**narrow, "object": np.concatenate([narrow["object"], np.zeros(2, np.float32)])}
    noise = np.random.default_rng(0).normal(size=(10, 7))
    policy.reset("reach")
    chunk = policy.predict_chunk(narrow, noise=noise)
    policy.reset("reach")
    np.testing.assert_allclose(chunk, policy.predict_chunk(padded, noise=noise), atol=1e-6)  # 3 values are padded to 5
    with pytest.raises(DpError, match="'object': expected shape"):
        policy.predict_chunk({**narrow, "object": np.zeros(6, np.float32)})
    from dp.infer import OnnxPolicy
    from dp.export.onnx_export import export_policy

    export_policy(policy, tmp_path / "exported", control_freq=20.0, source="test")
    onnx = OnnxPolicy.load(tmp_path / "exported")
    onnx.reset("reach")
    np.testing.assert_allclose(onnx.predict_chunk(narrow, noise=noise), chunk, atol=1e-4)


def test_config_overrides_are_checked():
    cfg = build_config("tiny", ["model.n_layers=3", "train.lr=2e-4", "data.obs_keys=[a,b]", "data.images=true"])
    assert cfg.model.n_layers == 3 and cfg.train.lr == 2e-4 and cfg.data.obs_keys == ["a", "b"] and cfg.data.images
    with pytest.raises(DpError, match="unknown key"):
        build_config("tiny", ["model.n_layer=3"])
    with pytest.raises(DpError, match="expected an integer"):
        build_config("tiny", ["model.n_layers=three"])
    with pytest.raises(DpError, match="unknown preset"):
        build_config("huge")
    with pytest.raises(DpError, match="section.key=value"):
        build_config("tiny", ["steps"])


# ---------------------------------------------------------------------------- bad input
def test_store_without_the_configured_keys(tmp_path, capsys):
    store = make_store(tmp_path / "s.zarr", episodes=2, length=10)
    rc = dp_main(["train", "--data", str(store), "--preset", "tiny", "--out", str(tmp_path / "run"), "data.obs_keys=[robot0_eef_pos,robot0_joint_pos]"])
    err = capsys.readouterr().err
    assert rc == 1 and "robot0_joint_pos" in err and "s.zarr" in err
    rc = dp_main(["train", "--data", str(store), "--preset", "tiny", "--out", str(tmp_path / "run"), "data.images=true"])
    assert rc == 1 and "no image keys" in capsys.readouterr().err
    rc = dp_main(["train", "--data", str(tmp_path / "missing.zarr"), "--preset", "tiny", "--out", str(tmp_path / "run")])
    assert rc == 1 and "missing.zarr" in capsys.readouterr().err


def test_a_run_folder_has_one_trainer_and_sane_intervals(tmp_path, capsys):
    store = make_store(tmp_path / "s.zarr", episodes=2, length=10)
    run = tmp_path / "run"
    args = ["train", "--data", str(store), "--preset", "tiny", "--out", str(run), "--no-progress", "train.steps=2"]
    assert dp_main([*args, "train.val_every=0"]) == 1
    assert "train.val_every must be at least 1" in capsys.readouterr().err
    # another process (a second `dp train` on the same folder) holds the run's lock: refused, nothing written
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from dp.files import hold_lock; "
                               f"hold_lock(Path({str(run / RUN_LOCK_FILE)!r}), 'busy'); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert dp_main(args) == 1
        assert "another `dp train` is using this run folder" in capsys.readouterr().err
        assert not (run / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    assert dp_main(args) == 0  # the lock died with its process


def test_checkpoint_from_another_preset(overfit_run, tmp_path, capsys):
    store, run = overfit_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    rc = dp_main(["train", "--data", str(store), "--preset", "small", "--out", str(copy), "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "another preset" in err and "preset 'small'" in err
    # a checkpoint whose weights do not fit its config: Policy.load names the tensor
    cfg_path = (copy / "latest").resolve() / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["model"]["d_model"] = 32
    cfg_path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(DpError, match="expects"):
        Policy.load(copy)
    # an existing run is not overwritten without --resume
    rc = dp_main(["train", "--data", str(store), "--preset", "tiny", "--out", str(run)])
    assert rc == 1 and "--resume" in capsys.readouterr().err


def test_resuming_with_more_steps_stretches_the_schedule(overfit_run, tmp_path):
    """train.steps=N on --resume: the cosine schedule is rebuilt to end at N and the rate continues from it
    (the finished run's rate was zero), with a warning that says so."""
    import math

    store, run = overfit_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    assert rows(copy, "train")[-1]["lr"] == pytest.approx(0.0, abs=1e-9)
    cfg = load_config(copy / "config.yaml")
    cfg.train.steps = 440

    def rate(step: int) -> float:  # diffusers' cosine with warmup, at the stretched length
        return cfg.train.lr * 0.5 * (1 + math.cos(math.pi * (step - cfg.train.warmup_steps) / (440 - cfg.train.warmup_steps)))

    with pytest.warns(UserWarning, match="now ends at step 440"):
        trainer = Trainer(cfg, [str(store)], copy, resume=True, progress=False)
    assert trainer.step == 400 and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(rate(400), rel=1e-6)  # the first resumed step's
    with pytest.warns(UserWarning, match="configured for 400.*now ends at step 440"):
        rc = dp_main(["train", "--out", str(copy), "--resume", "--no-progress", "train.steps=440", "train.log_every=10"])
    assert rc == 0
    resumed = [r for r in rows(copy, "train") if r["step"] > 400]
    assert [r["step"] for r in resumed] == [410, 420, 430, 440]
    assert [r["lr"] for r in resumed] == pytest.approx([rate(r["step"]) for r in resumed], rel=1e-6)
    assert resumed[0]["lr"] > 0.01 * cfg.train.lr


def test_nan_loss_stops_with_step_and_keeps_the_last_checkpoint(tmp_path, capsys):
    store = make_store(tmp_path / "s.zarr", episodes=3, length=20)
    run = tmp_path / "run"
    rc = dp_main(["train", "--data", str(store), "--preset", "tiny", "--out", str(run), "--no-progress",
                  "train.lr=1e30", "train.warmup_steps=0", "train.ckpt_every=1", "train.grad_clip=0", "train.steps=50"])
    err = capsys.readouterr().err
    assert rc == 1 and "training stopped at step" in err and "diverged" in err, err
    bad_step = int(err.split("training stopped at step ")[1].split(":")[0])
    latest = (run / "latest").resolve()
    assert latest.name == f"step_{bad_step - 1:07d}"  # the last good step; nothing written after it
    assert all(torch.isfinite(v).all() for v in ckpt.load_weights(run / "model.safetensors").values())
    # a batch with NaN in an input names the key
    cfg = build_config("tiny", ["train.steps=5"])
    trainer = Trainer(cfg, [str(store)], tmp_path / "run2", resume=False, progress=False)
    batch = trainer.data.train.__getitems__(list(range(8)))
    batch["obs"]["object"][0, 0, 1] = float("nan")
    with pytest.raises(NonFiniteLoss, match="'obs/object'"):
        trainer.train_step(trainer._to_device(batch, trainer.train_map))
    trainer.close()


def test_bf16_autocast_on_cpus_with_amx_tracks_fp32(tmp_path, monkeypatch):
    """train.amp trains under bf16 autocast where the CPU has AMX (and records it); the loss stays within
    bf16 rounding of the fp32 step's, and train.amp=false (or a CPU without AMX) is plain fp32."""
    from dp.train import trainer as trainer_mod

    store = make_store(tmp_path / "s.zarr", episodes=3, length=20)
    losses = {}
    for name, amx, amp in (("bf16", True, True), ("fp32", True, False), ("no_amx", False, True)):
        monkeypatch.setattr(trainer_mod, "cpu_has_amx", lambda amx=amx: amx)
        t = Trainer(build_config("tiny", ["train.steps=5", f"train.amp={str(amp).lower()}"]), [str(store)], tmp_path / name,
                    resume=False, progress=False)
        assert t.bf16 is (amx and amp)
        batch = t._to_device(t.data.train.__getitems__(list(range(8))), t.train_map)
        with t._autocast():
            assert torch.is_autocast_enabled("cpu") is t.bf16
        torch.manual_seed(0)
        losses[name] = [t.train_step(batch)["loss"] for _ in range(3)][-1]  # the first step's output is zero (zero-init head)
        t.close()
    assert losses["fp32"] == losses["no_amx"]
    assert losses["bf16"] != losses["fp32"] and abs(losses["bf16"] - losses["fp32"]) < 0.05 * abs(losses["fp32"]), losses


def test_learning_rate_schedules(tmp_path, capsys):
    """train.lr_schedule: linear warmup to train.lr, then cosine or linear decay to 0 at train.steps, or constant;
    an unknown name is refused before any data is read."""
    store = make_store(tmp_path / "s.zarr", episodes=2, length=10)
    peak, warmup, steps = 1e-3, 4, 20
    curves = {}
    for name in ("cosine", "linear", "constant"):
        t = Trainer(build_config("tiny", [f"train.steps={steps}", f"train.lr={peak}", f"train.warmup_steps={warmup}",
                                          f"train.lr_schedule={name}"]), [str(store)], tmp_path / name, resume=False, progress=False)
        lrs = []
        for _ in range(steps):
            lrs.append(t.scheduler.get_last_lr()[0])
            t.optimizer.step()
            t.scheduler.step()
        curves[name] = np.array(lrs)
        t.close()
    for lrs in curves.values():
        np.testing.assert_allclose(lrs[: warmup + 1], peak * np.arange(warmup + 1) / warmup)
    np.testing.assert_allclose(curves["constant"][warmup:], peak)
    np.testing.assert_allclose(curves["linear"][warmup:], peak * (steps - np.arange(warmup, steps)) / (steps - warmup))
    mid = warmup + (steps - warmup) // 2
    np.testing.assert_allclose(curves["cosine"][mid], peak / 2)
    assert np.all(np.diff(curves["cosine"][warmup:]) < 0) and curves["cosine"][-1] < 0.02 * peak
    rc = dp_main(["train", "--data", str(tmp_path / "missing.zarr"), "--preset", "tiny", "--out", str(tmp_path / "bad"),
                  "train.lr_schedule=step"])
    assert rc == 1 and "train.lr_schedule must be one of cosine, linear, constant, got 'step'" in capsys.readouterr().err
