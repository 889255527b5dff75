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
