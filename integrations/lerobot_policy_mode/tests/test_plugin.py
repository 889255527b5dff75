"""The mode plugin inside LeRobot 0.4.4: registration, config errors, lerobot-train, the one-model
check against dp's own loss, conversions both ways, lerobot-eval in LeRobot's Push-T environment.

Runs with the python of LeRobot's virtualenv (bench/peers/setup_lerobot.sh) with dp and the plugin
installed there (docs/lerobot.md); tests/test_lerobot_plugin.py in dp's suite runs it. The Push-T
datasets are made with dp's own commands (``dp import dp-zarr``, ``dp export-data lerobot``), run by
``$DP_PYTHON`` (default: this python), from Diffusion Policy's first 3 demonstrations.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local datasets only
SETUP = ("bash bench/peers/setup_lerobot.sh, then in that virtualenv: pip install --no-deps -e . && "
         "pip install -e 'integrations/lerobot_policy_mode[test]' (docs/lerobot.md)")
pytest.importorskip("lerobot", reason=f"needs LeRobot 0.4.4: {SETUP}")
pytest.importorskip("lerobot_policy_mode", reason=f"needs the plugin installed: {SETUP}")

import torch  # noqa: E402
from lerobot.configs.policies import PreTrainedConfig  # noqa: E402
from lerobot.configs.types import FeatureType  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata  # noqa: E402
from lerobot.datasets.utils import dataset_to_policy_features  # noqa: E402

from lerobot_policy_mode import ModeConfig, ModePolicy, make_mode_pre_post_processors  # noqa: E402
from lerobot_policy_mode.convert import to_dp, to_lerobot  # noqa: E402

PUSHT = Path(__file__).resolve().parents[4] / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"
PUSHT_MISSING = ("needs Diffusion Policy's Push-T data (pusht_cchi_v7_replay.zarr from the data/pusht folder of the "
                 "Diffusion Policy release) at ../shared/data/pusht/")
BIN = Path(sys.executable).parent
# A tiny image policy (the pusht-image recipe, shrunk): trains in seconds on a CPU.
TINY = ["model.d_model=32", "model.n_heads=2", "model.n_layers=1", "model.expert_hidden=32", "model.vision_channels=[8,8,8]",
        "model.vision_keypoints=4", "model.image_size=64", "train.warmup_steps=3", "train.lr=1e-3"]


def run(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out


def dp(*args: str) -> None:
    """A dp command, run by $DP_PYTHON (dp's data commands need dp's full dependencies)."""
    python = os.environ.get("DP_PYTHON", sys.executable)
    out = subprocess.run([python, "-m", "dp", *args], capture_output=True, text=True, timeout=600)
    if out.returncode != 0 and "ModuleNotFoundError" in out.stderr and "DP_PYTHON" not in os.environ:
        pytest.skip("dp's data commands need dp's own dependencies: set DP_PYTHON to the python of dp's environment")
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Diffusion Policy's first 3 Push-T demonstrations as dp stores (image and keypoint cards) and as
    LeRobot datasets written by ``dp export-data lerobot`` (the view as ``observation.image``, as
    LeRobot's Push-T environment names it)."""
    if not PUSHT.is_dir():
        pytest.skip(PUSHT_MISSING)
    import zarr

    tmp = tmp_path_factory.mktemp("pusht")
    src = zarr.open_group(str(PUSHT), mode="r")
    stop = int(src["meta/episode_ends"][2])
    small = zarr.open_group(str(tmp / "src.zarr"), mode="w", zarr_format=2)
    for key in ("img", "state", "keypoint", "action"):
        small.create_array(f"data/{key}", data=src[f"data/{key}"][:stop])
    small.create_array("meta/episode_ends", data=src["meta/episode_ends"][:3])
    d = SimpleNamespace(tmp=tmp, img=tmp / "img.zarr", kp=tmp / "kp.zarr", ds_img=tmp / "ds_img", ds_kp=tmp / "ds_kp")
    for card, store in (("pusht", d.img), ("pusht_keypoints", d.kp)):
        dp("import", "dp-zarr", str(tmp / "src.zarr"), "--card", card, "--out", str(store), "--workers", "0", "--no-progress")
    dp("export-data", "lerobot", str(d.img), "--out", str(d.ds_img), "--map", "img=observation.image", "--no-progress")
    dp("export-data", "lerobot", str(d.kp), "--out", str(d.ds_kp), "--no-progress")
    return d


def fresh_policy(root: Path, preset: str, overrides: list[str]) -> tuple[ModePolicy, LeRobotDatasetMetadata]:
    """A new policy on a dataset's features, as lerobot-train's make_policy builds it."""
    meta = LeRobotDatasetMetadata("local/pusht", root=root)
    features = dataset_to_policy_features(meta.features)
    cfg = ModeConfig(preset=preset, overrides=overrides, device="cpu")
    cfg.output_features = {k: f for k, f in features.items() if f.type is FeatureType.ACTION}
    cfg.input_features = {k: f for k, f in features.items() if k not in cfg.output_features}
    return ModePolicy(cfg, dataset_stats=meta.stats, dataset_meta=meta), meta


@pytest.fixture(scope="module")
def trained(data):
    """30 steps of lerobot-train on the image dataset; (run folder, logged losses)."""
    out = data.tmp / "lerobot_run"
    overrides = "[" + ", ".join(f'"{o}"' for o in TINY) + "]"
    log = run([str(BIN / "lerobot-train"), "--policy.type=mode", "--policy.preset=pusht-image", f"--policy.overrides={overrides}",
               "--policy.device=cpu", "--dataset.repo_id=local/pusht", f"--dataset.root={data.ds_img}", "--dataset.video_backend=pyav",
               "--steps=30", "--batch_size=8", "--num_workers=0", "--log_freq=5", "--save_freq=30", "--eval_freq=0", "--seed=0",
               f"--output_dir={out}", "--wandb.enable=false"])
    losses = [float(v) for v in re.findall(r"\bloss:([0-9.]+)", log.stdout + log.stderr)]
    return out, losses


def test_registers_as_a_plugin():
    from lerobot.policies.factory import get_policy_class, make_policy_config
    from lerobot.utils.import_utils import register_third_party_plugins

    register_third_party_plugins()
    assert "mode" in PreTrainedConfig.get_known_choices()
    assert get_policy_class("mode") is ModePolicy
    assert isinstance(make_policy_config("mode", device="cpu"), ModeConfig)


def test_unknown_preset_fails_at_config_time():
    with pytest.raises(ValueError, match=r"unknown preset 'nope'; known presets: .*pusht"):
        ModeConfig(preset="nope", device="cpu")
    with pytest.raises(ValueError, match=r"model: unknown key\(s\) \['n_layerz'\]"):
        ModeConfig(preset="tiny", overrides=["model.n_layerz=2"], device="cpu")


def test_privileged_keys_are_a_dp_train_aid_dropped_with_a_warning(data):
    """A preset that trains its cameras on privileged state (dp stores only) builds through LeRobot without it."""
    with pytest.warns(UserWarning, match=r"data.privileged_keys \['keypoint'\] are trained by `dp train`"):
        policy, _ = fresh_policy(data.ds_img, "pusht-image", [*TINY, "data.privileged_keys=[keypoint]"])
    assert policy.dp_cfg.data.privileged_keys == [] and policy.model.net.privileged is None


def test_normalisation_is_dps():
    """LeRobot's normaliser with the plugin's statistics maps like dp's Normalizer, also where dp departs
    from min-max: a flat dimension (centred), a two-level one at -1/+1 (passed through), one at 0/1."""
    from lerobot.configs.types import PolicyFeature

    from dp.data.normalize import Normalizer
    from lerobot_policy_mode.bridge import split_stats

    cfg = ModeConfig(preset="tiny", device="cpu", key_map={"pos": "observation.state[0:3]", "grip": "observation.state[3:5]", "action": "action"},
                     discrete_dims={"grip": [0, 1], "action": [1]}, input_features={"observation.state": PolicyFeature(FeatureType.STATE, (5,))},
                     output_features={"action": PolicyFeature(FeatureType.ACTION, (2,))})
    stats = {"observation.state": {"min": np.array([0.0, 5.0, 2.0, -1.0, 0.0]), "max": np.array([10.0, 5.0, 4.0, -1.0, 1.0])},
             "action": {"min": np.array([-3.0, -1.0]), "max": np.array([3.0, 1.0])}}
    pre, post = make_mode_pre_post_processors(cfg, stats)
    rng = np.random.default_rng(0)
    state = rng.uniform(stats["observation.state"]["min"], stats["observation.state"]["max"], (4, 5)).astype(np.float32)
    action = rng.uniform(-3, 3, (4, 2)).astype(np.float32)
    out = pre({"observation.state": torch.from_numpy(state), "action": torch.from_numpy(action)})
    norm = Normalizer({k: {s: np.asarray(v) for s, v in st.items()} for k, st in split_stats(stats, cfg.key_map).items()}, cfg.discrete_dims)
    ours = np.concatenate([norm.normalize("pos", state[:, :3]), norm.normalize("grip", state[:, 3:])], axis=1)
    np.testing.assert_allclose(out["observation.state"].numpy(), ours, atol=1e-5)
    np.testing.assert_allclose(out["action"].numpy(), norm.normalize("action", action), atol=1e-5)
    np.testing.assert_allclose(post(out["action"]).numpy(), action, atol=1e-5)


def test_dataset_without_the_keys_the_preset_reads(data):
    with pytest.raises(ValueError, match=r"no key\(s\) \['img'\].*data\.obs_keys"):
        fresh_policy(data.ds_kp, "pusht-image", [])


def test_lerobot_train_loss_falls(trained):
    out, losses = trained
    assert len(losses) == 6, losses
    assert sum(losses[-3:]) / 3 < losses[0], losses  # batches of 8: single logs are noisy
    saved = out / "checkpoints" / "last" / "pretrained_model"
    config = json.loads((saved / "config.json").read_text())
    assert config["type"] == "mode" and config["key_map"] == {"agent_pos": "observation.state", "img": "observation.image", "action": "action"}
    assert sorted(config["dp_stats"]) == ["action", "agent_pos"]


def test_forward_is_dps_loss(data):
    """The plugin's loss on LeRobot's batch equals dp's compute_loss on dp's own windows of the same
    frames (same noise): one model, and the same data through both front doors."""
    from dp.data.normalize import Normalizer
    from dp.data.store import EpisodeStore
    from dp.data.windows import WindowDataset

    policy, meta = fresh_policy(data.ds_kp, "pusht", ["model.d_model=32", "model.n_heads=2", "model.n_layers=1", "model.expert_hidden=32"])
    cfg = policy.config
    assert cfg.key_map == {"agent_pos": "observation.state[0:2]", "keypoint": "observation.state[2:20]", "action": "action"}
    pre, _ = make_mode_pre_post_processors(cfg, meta.stats)
    deltas = {k: [i / meta.fps for i in cfg.observation_delta_indices] for k in cfg.input_features}
    deltas["action"] = [i / meta.fps for i in cfg.action_delta_indices]
    dataset = LeRobotDataset("local/pusht", root=data.ds_kp, delta_timestamps=deltas)
    frames = [0, 1, 57, 138, 139, 140, 300, 419]  # episode starts and ends: both pad alike
    batch = pre(torch.utils.data.default_collate([dataset[i] for i in frames]))
    store = EpisodeStore.open(data.kp, "r")
    normalizer = Normalizer.fit([store], ["agent_pos", "keypoint", "action"])
    windows = WindowDataset([store], ["agent_pos", "keypoint"], "action", 2, 16, normalizer=normalizer)
    ours = windows.__getitems__(frames)
    theirs = policy.dp_batch(batch)
    for key in ("agent_pos", "keypoint"):
        torch.testing.assert_close(theirs["obs"][key], ours["obs"][key], atol=2e-6, rtol=0)
    torch.testing.assert_close(theirs["action"], ours["action"], atol=2e-6, rtol=0)
    policy.train()
    torch.manual_seed(3)
    loss, parts = policy.forward(batch)
    torch.manual_seed(3)
    ref, ref_parts = policy.model.compute_loss({**ours, "task_id": torch.zeros(len(frames), dtype=torch.long)})
    assert abs(loss.item() - ref.item()) < 1e-5 and abs(parts["diffusion_loss"] - ref_parts["diffusion_loss"].item()) < 1e-5


def test_dp_run_round_trip(data):
    """dp run -> LeRobot folder -> dp folder: the same configuration, weights and normaliser, the same
    chunk from the same noise; and the plugin's chunk is dp's."""
    from safetensors.torch import load_file

    from dp.infer.policy import Policy
    from dp.models.checkpoint_files import load_checkpoint_config, resolve_checkpoint

    run_dir = data.tmp / "dp_run"
    dp("train", "--data", str(data.kp), "--preset", "tiny", "--out", str(run_dir), "--no-progress", "train.steps=2", "train.batch_size=8",
       "train.val_every=2", "train.ckpt_every=2", "train.num_workers=0", "data.obs_keys=[agent_pos,keypoint]", "data.obs_horizon=2",
       "data.action_horizon=16")
    to_lerobot(run_dir, data.tmp / "as_lerobot")
    to_dp(data.tmp / "as_lerobot", data.tmp / "back")
    original = resolve_checkpoint(run_dir)
    assert load_checkpoint_config(data.tmp / "back") == load_checkpoint_config(original)
    for name in ("model.safetensors", "normalizer.safetensors"):
        a, b = load_file(str(original / name)), load_file(str(data.tmp / "back" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    obs = {"agent_pos": np.array([200.0, 300.0], np.float32), "keypoint": np.linspace(100, 400, 18, dtype=np.float32)}
    noise = np.random.default_rng(0).standard_normal((16, 2), dtype=np.float32)
    chunk = Policy.load(run_dir).predict_chunk(obs, noise)
    np.testing.assert_array_equal(Policy.load(data.tmp / "back").predict_chunk(obs, noise), chunk)
    plugin = ModePolicy.from_pretrained(data.tmp / "as_lerobot")
    pre, post = make_mode_pre_post_processors(plugin.config)
    state = torch.from_numpy(np.concatenate([obs["agent_pos"], obs["keypoint"]]))
    ours = post(plugin.predict_action_chunk(pre({"observation.state": state}), torch.from_numpy(noise)[None]))
    np.testing.assert_allclose(ours[0].numpy(), chunk, rtol=0, atol=1e-3)  # pixels; float32 normalisation order differs


def test_lerobot_train_to_dp(trained, data):
    """The plugin's trained policy as a dp checkpoint: dp's runtime loads it and acts as the plugin does."""
    from dp.infer.policy import Policy

    out, _ = trained
    to_dp(out, data.tmp / "trained_dp")
    policy = Policy.load(data.tmp / "trained_dp")
    assert policy.image_keys == ["img"] and policy.lowdim_keys == ["agent_pos"]
    plugin = ModePolicy.from_pretrained(out / "checkpoints" / "last" / "pretrained_model")
    pre, post = make_mode_pre_post_processors(plugin.config, None)
    rng = np.random.default_rng(1)
    img, pos = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), np.array([250.0, 250.0], np.float32)
    noise = rng.standard_normal((16, 2), dtype=np.float32)
    chunk = policy.predict_chunk({"img": img, "agent_pos": pos}, noise)
    frame = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    ours = post(plugin.predict_action_chunk(pre({"observation.state": torch.from_numpy(pos), "observation.image": frame}),
                                            torch.from_numpy(noise)[None]))
    np.testing.assert_allclose(ours[0].numpy(), chunk, rtol=0, atol=1e-3)


def test_lerobot_eval_pusht(trained, data):
    """lerobot-eval in LeRobot's own Push-T environment, with RTI warm starts and cached experts."""
    out, _ = trained
    eval_dir = data.tmp / "eval"
    run([str(BIN / "lerobot-eval"), f"--policy.path={out / 'checkpoints' / 'last' / 'pretrained_model'}", "--policy.device=cpu",
         "--policy.rti=true", "--env.type=pusht", "--eval.n_episodes=2", "--eval.batch_size=2", "--seed=0", f"--output_dir={eval_dir}"])
    info = json.loads((eval_dir / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 2
