"""Shared test setup: the CPU pinned, headless MuJoCo rendering and small helpers for building stores."""

from __future__ import annotations

import os

# The tests pin the CPU: no CUDA device is visible to torch or ONNX Runtime, here or in the processes
# the tests start (they inherit the environment), so `train.device=auto` and every figure a test
# compares are the CPU's on a machine with a GPU too. Set before torch is imported (pytest loads this
# file before the test modules); tests of the GPU paths simulate devices instead. robosuite picks its
# EGL rendering device from CUDA_VISIBLE_DEVICES unless MUJOCO_EGL_DEVICE_ID names one (an empty
# list breaks it): the first, as when neither is set.
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("MUJOCO_EGL_DEVICE_ID", "0")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np
import pytest

from dp.data.store import EpisodeStore


def make_episode(index: int, length: int | None = None, image: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """A deterministic synthetic episode: the same (index, seed) always gives the same arrays."""
    rng = np.random.default_rng(seed * 100_003 + index)
    T = length or int(rng.integers(5, 40))
    action = rng.uniform(-1, 1, size=(T, 7)).astype(np.float32)
    action[:, 6] = np.where(action[:, 6] > 0, 1.0, -1.0)
    data = {
        "robot0_eef_pos": rng.normal(size=(T, 3)).astype(np.float32),
        "robot0_gripper_qpos": rng.normal(size=(T, 2)).astype(np.float64).astype(np.float32),
        "step": np.arange(T, dtype=np.int64),
        "action": action,
    }
    if image:
        data["agentview_image"] = rng.integers(0, 256, size=(T, 16, 16, 3), dtype=np.uint8)
    return data


@pytest.fixture
def make_store(tmp_path):
    """Factory: a new store with ``n`` synthetic episodes."""

    def _make(n: int = 3, image: bool = True, name: str = "s.zarr", lengths: list[int] | None = None) -> EpisodeStore:
        store = EpisodeStore.create(tmp_path / name, control_freq=20.0, robot="panda", discrete_dims={"action": [6]})
        for i in range(n):
            store.add_episode(
                make_episode(i, None if lengths is None else lengths[i], image=image),
                meta={"task": ["lift", "can"][i % 2], "instruction": ["lift the cube", "pick the can"][i % 2], "success": i % 3 != 0, "seed": i, "source": "test"},
            )
        return store

    return _make


PUSHT_SRC = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "pusht", "pusht_cchi_v7_replay.zarr")
PUSHT_SRC_MISSING = ("needs Diffusion Policy's Push-T data (pusht_cchi_v7_replay.zarr from the data/pusht folder of the "
                     "Diffusion Policy release) at ../shared/data/pusht/")


@pytest.fixture(scope="session")
def pusht_image_run(tmp_path_factory):
    """A tiny image Push-T policy trained on Diffusion Policy's first 3 demonstrations (imported with the
    image card: the 96x96 view and the agent position), with the recipe's 84-pixel random crop and resize
    to 64; skipped where the shared data is absent."""
    if not os.path.isdir(PUSHT_SRC):
        pytest.skip(PUSHT_SRC_MISSING)
    import zarr

    from dp.cli import main

    tmp = tmp_path_factory.mktemp("pusht_image")
    src = zarr.open_group(PUSHT_SRC, mode="r")
    stop = int(src["meta/episode_ends"][2])
    small = zarr.open_group(str(tmp / "src.zarr"), mode="w", zarr_format=2)
    for key in ("img", "state", "keypoint", "action"):
        small.create_array(f"data/{key}", data=src[f"data/{key}"][:stop])
    small.create_array("meta/episode_ends", data=src["meta/episode_ends"][:3])
    store, run = tmp / "pusht_img.zarr", tmp / "run"
    assert main(["import", "dp-zarr", str(tmp / "src.zarr"), "--card", "pusht", "--out", str(store), "--workers", "0", "--no-progress"]) == 0
    assert main(["train", "--data", str(store), "--preset", "pusht-image", "--out", str(run), "--no-progress",
                 "train.steps=4", "train.batch_size=8", "train.val_every=4", "train.ckpt_every=4", "train.num_workers=0",
                 "model.d_model=32", "model.n_heads=2", "model.n_layers=1", "model.expert_hidden=32", "model.vision_channels=[8,8,8]",
                 "model.vision_keypoints=4", "model.aug_crop=84", "model.aug_shift=0", "model.image_size=64"]) == 0
    return run


@pytest.fixture(scope="session")
def pusht_image_export(pusht_image_run, tmp_path_factory):
    """:func:`pusht_image_run` exported to ONNX with 2 warm steps every 4 control steps."""
    from dp.cli import main

    out = tmp_path_factory.mktemp("pusht_image_export") / "onnx"
    assert main(["export", str(pusht_image_run), "--out", str(out), "--rti-steps", "2", "--rti-every", "4"]) == 0
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny tensors: they gain nothing from intra-op threads, and a
    second thread stalls on a busy machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
