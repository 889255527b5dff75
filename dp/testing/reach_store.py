"""A small synthetic demonstration store: a point that reaches for (or retreats from) a target.

For smoke runs, tests and the training benchmark, where a real episode store with learnable
structure is needed without running the simulator. The actions are a deterministic function of the
observation and the task, in the simulator's conventions (7-D, last dimension a +-1 gripper).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dp.data.store import EpisodeStore

TASKS = {"reach": "reach the target", "retreat": "move away from the target"}


def _render(pos: np.ndarray, target: np.ndarray, size: int, view: int) -> np.ndarray:
    """A uint8 image (size, size, 3): the target as a red square, the point as a green one."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    axes = (0, 1) if view == 0 else (0, 2)
    for xyz, channel in ((target, 0), (pos, 1)):
        u, v = ((np.clip(xyz[list(axes)], -1.5, 1.5) + 1.5) / 3.0 * (size - 1)).astype(int)
        img[max(0, v - 2) : v + 3, max(0, u - 2) : u + 3, channel] = 255
    return img


def make_episode(rng: np.random.Generator, task: str, length: int, cameras: int, image_size: int) -> dict[str, np.ndarray]:
    pos = rng.uniform(-1, 1, 3).astype(np.float32)
    target = rng.uniform(-1, 1, 3).astype(np.float32)
    sign = 1.0 if task == "reach" else -1.0
    frames: dict[str, list[np.ndarray]] = {"robot0_eef_pos": [], "object": [], "robot0_gripper_qpos": [], "action": []}
    for c in range(cameras):
        frames[f"cam{c}_image"] = []
    grip = -1.0
    for _ in range(length):
        delta = np.clip(sign * (target - pos) * 2.0, -1, 1)
        grip = 1.0 if np.linalg.norm(target - pos) < 0.3 else grip
        action = np.concatenate([delta, np.zeros(3), [grip]]).astype(np.float32)
        frames["robot0_eef_pos"].append(pos.copy())
        frames["object"].append(target.copy())
        frames["robot0_gripper_qpos"].append(np.array([0.04, -0.04]) * (1 if grip < 0 else 0.2))
        frames["action"].append(action)
        for c in range(cameras):
            frames[f"cam{c}_image"].append(_render(pos, target, image_size, c))
        pos = (pos + 0.1 * delta).astype(np.float32)
    return {k: np.stack(v).astype(np.uint8 if k.endswith("_image") else np.float32) for k, v in frames.items()}


def make_store(
    path: str | Path,
    episodes: int = 8,
    length: int = 30,
    tasks: tuple[str, ...] = ("reach",),
    cameras: int = 0,
    image_size: int = 84,
    lang: bool = False,
    seed: int = 0,
) -> Path:
    """Write a store of ``episodes`` synthetic episodes (tasks cycled); returns its path."""
    rng = np.random.default_rng(seed)
    lang_rng = np.random.default_rng(12345)
    embeddings = {t: lang_rng.normal(size=384).astype(np.float32) for t in TASKS}
    image_keys = [f"cam{c}_image" for c in range(cameras)]
    roles = {"lowdim": ["robot0_eef_pos", "robot0_gripper_qpos", "object"], "image": image_keys, "action": ["action"]}
    with EpisodeStore.create(path, control_freq=20.0, robot="point", roles=roles, discrete_dims={"action": [6]}, overwrite=True) as store:
        for i in range(episodes):
            task = tasks[i % len(tasks)]
            meta = {"task": task, "instruction": TASKS[task], "success": True, "source": "synthetic", "seed": seed * 100_000 + i}
            if lang:
                meta["lang_emb"] = embeddings[task]
            store.add_episode(make_episode(rng, task, length, cameras, image_size), meta)
    return Path(path)
