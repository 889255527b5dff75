"""LIBERO HDF5 (FORMATS.md §3): export an episode store as one task file per task.

One ``<task>_demo.hdf5`` per task, as LIBERO writes it: ``data`` attributes (env_name,
problem_info, macros_image_convention="opengl", bddl_file_name, bddl_file_content, env_args,
num_demos, total), per demo ``obs/`` (images flipped back), ``actions``, ``states``,
``robot_states``, ``rewards``, ``dones`` and attributes num_samples, model_file, init_state; keys of
our store that LIBERO has no field for go to ``obs/<key>``. ``data.attrs["dp_card"]`` holds the card
of the export and each demo's ``dp_meta`` attribute its episode metadata, so that importing the
files gives back the same store. What the store cannot supply is filled deterministically and
listed in ``data.attrs["dp_filled"]``:

- ``obs/ee_ori`` = axis-angle of ``robot0_eef_quat`` (robosuite's rule, as LIBERO made it),
  ``obs/ee_states`` = ee_pos + ee_ori, ``robot_states`` = gripper_states + ee_pos + quaternion;
  parts without a source are 0 (quaternion: identity).
- ``obs/joint_states``, ``states`` (MuJoCo state; ``init_state`` = its first row): zeros.
- ``obs/agentview_rgb`` / ``obs/eye_in_hand_rgb`` without an image key: black 128x128 frames.
- ``rewards``: 0 except 1 at the last step unless the episode's ``success`` is False;
  ``dones``: 1 at the last step. ``model_file``, ``bddl_file_content``: empty.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from dp.data.formats.cards import DatasetCard, KeySpec, SourceRef, card_for_export
from dp.data.formats.pipeline import role_ordered_keys
from dp.data.formats.poses import quat_to_axis_angle
from dp.data.store import EpisodeStore
from dp.errors import DpError

LIBERO_GRIPPER_CLOSE = 1.0
FILLER_IMAGE_SIZE = 128
SIM_EEF_QUAT = "robot0_eef_quat"  # the project's simulator key that obs/ee_ori and robot_states come from


def export_store(
    store: EpisodeStore,
    out: str | Path,
    *,
    card: DatasetCard | None = None,
    mapping: dict[str, str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``store`` as one LIBERO task file per task under ``out``; returns a summary."""
    if len(store) == 0:
        raise DpError(f"{store.path}: no episodes to export")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DpError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = _ExportPlan(store, card_for_export(store.attrs.get("dataset_card"), f"{store.path}: dataset_card attribute", card, "libero"), mapping or {})
    groups: dict[str, list[int]] = {}
    metas = [store.episode_meta(i) for i in range(len(store))]
    for i, meta in enumerate(metas):
        groups.setdefault(str(meta.get("task") or meta.get("instruction") or "task"), []).append(i)
    files = []
    bar = tqdm(total=store.n_frames, unit="frame", unit_scale=True, desc="export libero", disable=not progress)
    try:
        used_names: set[str] = set()
        for task, episodes in groups.items():
            name = _file_name(task, used_names)
            path = out / name
            _write_task_file(path, store, plan, task, episodes, metas, bar)
            files.append(str(path))
    finally:
        bar.close()
    return {"dir": str(out), "files": files, "episodes": len(store), "frames": store.n_frames, "filled": plan.filled}


def _file_name(task: str, used: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", task).strip("_") or "task"
    name, k = f"{stem}_demo.hdf5", 1
    while name in used:
        k += 1
        name = f"{stem}_{k}_demo.hdf5"
    used.add(name)
    return name


class _ExportPlan:
    """Which store key goes to which HDF5 path in a demo, and what must be filled."""

    def __init__(self, store: EpisodeStore, base: DatasetCard, overrides: dict[str, str]):
        self.store, self.base = store, base
        self.role_of = {k: r for r, keys in store.roles.items() for k in keys}
        unknown = sorted(set(overrides) - set(store.keys))
        if unknown:
            raise DpError(f"--map: the store has no key(s) {', '.join(unknown)} (keys: {', '.join(store.keys)})")
        self.path_of: dict[str, str] = {}
        self.spec_of: dict[str, KeySpec | None] = {}
        for key in role_ordered_keys(store):
            spec = base.spec_for_store_key(key)
            self.spec_of[key] = spec
            target = overrides.get(key) or (spec.export_field if spec else None) or f"obs/{key}"
            self.path_of[key] = target
        targets = list(self.path_of.values())
        if len(set(targets)) != len(targets):
            raise DpError(f"export mapping sends two keys to one HDF5 path: {self.path_of}")
        self.action_key = next((k for k, p in self.path_of.items() if p == "actions"), None)
        if self.action_key is None:
            self.action_key = next(iter(store.roles.get("action", [])), None)
            if self.action_key is None:
                raise DpError(f"{store.path}: no action key to export (roles: {store.roles})")
            self.path_of[self.action_key] = "actions"
        store_close = store.attrs.get("gripper_close")
        self.store_close = 1.0 if store_close is None else float(store_close)
        libero_close = base.gripper_close if base.gripper_close is not None else LIBERO_GRIPPER_CLOSE
        self.flip = self.store_close != libero_close
        dims = list(store.discrete_dims.get(self.action_key, []))
        self.gripper_dims = dims or [store.array(self.action_key).shape[-1] - 1]
        present = set(self.path_of.values())
        self.quat_key = next((k for k, p in self.path_of.items() if k == SIM_EEF_QUAT or p == f"obs/{SIM_EEF_QUAT}"), None)
        quat = "robot0_eef_quat" if self.quat_key else "the identity quaternion (no quaternion key)"
        why = {
            "obs/agentview_rgb": "black frames (no image key maps to it)",
            "obs/eye_in_hand_rgb": "black frames (no image key maps to it)",
            "obs/gripper_states": "zeros", "obs/joint_states": "zeros", "obs/ee_pos": "zeros",
            "obs/ee_ori": f"axis-angle of {quat}", "obs/ee_states": "ee_pos + ee_ori",
            "robot_states": f"gripper_states + ee_pos + {quat}", "states": "zeros (no MuJoCo state); init_state = its first row",
            "rewards": "1 at the last step unless success is False, else 0", "dones": "1 at the last step",
        }
        self.filled = [f"{path}: {reason}" for path, reason in why.items() if path not in present]
        self.filled += ["model_file, bddl_file_content: empty"]

    def demo_arrays(self, episode: dict[str, np.ndarray], success: bool | None) -> dict[str, np.ndarray]:
        """HDF5 path (inside the demo group) -> array, images flipped to the OpenGL convention."""
        out: dict[str, np.ndarray] = {}
        for key, value in episode.items():
            if self.role_of.get(key) == "image":
                value = value[:, ::-1]
            if key == self.action_key and self.flip:
                value = np.array(value, dtype=np.float32)
                value[:, self.gripper_dims] *= -1
            out[self.path_of[key]] = value
        T = len(episode[self.action_key])
        for name in ("agentview_rgb", "eye_in_hand_rgb"):
            out.setdefault(f"obs/{name}", np.zeros((T, FILLER_IMAGE_SIZE, FILLER_IMAGE_SIZE, 3), np.uint8))
        pos = np.asarray(out.get("obs/ee_pos", np.zeros((T, 3))), dtype=np.float64)
        quat = np.asarray(episode[self.quat_key], np.float64) if self.quat_key else np.tile([0.0, 0.0, 0.0, 1.0], (T, 1))
        out.setdefault("obs/ee_pos", pos)
        out.setdefault("obs/ee_ori", quat_to_axis_angle(quat))
        out.setdefault("obs/ee_states", np.concatenate([pos, np.asarray(out["obs/ee_ori"], np.float64)], axis=1))
        out.setdefault("obs/gripper_states", np.zeros((T, 2)))
        out.setdefault("obs/joint_states", np.zeros((T, 7)))
        out.setdefault("robot_states", np.concatenate([np.asarray(out["obs/gripper_states"], np.float64)[:, :2], pos, quat], axis=1))
        out.setdefault("states", np.zeros((T, 1)))
        rewards = np.zeros(T, np.uint8)
        rewards[-1] = 0 if success is False else 1
        dones = np.zeros(T, np.uint8)
        dones[-1] = 1
        out.setdefault("rewards", rewards)
        out.setdefault("dones", dones)
        return out

    def export_card(self) -> DatasetCard:
        keys = []
        for key, target in self.path_of.items():
            spec = self.spec_of.get(key)
            keys.append(KeySpec(
                key=key, sources=(SourceRef(target),), role=self.role_of.get(key, "lowdim"),
                camera=spec.camera if spec else None,
                negate_dims=tuple(self.gripper_dims) if self.flip and key == self.action_key else (),
                discrete_dims=tuple(self.store.discrete_dims.get(key, [])),
            ))
        return DatasetCard(name=self.base.name, format="libero", keys=tuple(keys),
                           description=f"export of {self.store.path.name} by dp export-data libero",
                           robot=self.store.robot, control_freq=self.store.control_freq, gripper_close=self.store_close)


def _write_task_file(path: Path, store: EpisodeStore, plan: _ExportPlan, task: str, episodes: list[int],
                     metas: list[dict[str, Any]], bar: tqdm) -> None:
    instruction = next((str(metas[i]["instruction"]) for i in episodes if metas[i].get("instruction")), task)
    env_name = str(store.attrs.get("env_name") or store.robot or "dp")
    problem = {"problem_name": task, "domain_name": store.robot or "dp", "language_instruction": instruction}
    total = 0
    tmp = path.with_suffix(".hdf5.partial")
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        for j, i in enumerate(episodes):
            arrays = plan.demo_arrays(store.get_episode(i), metas[i].get("success"))
            demo = data.create_group(f"demo_{j}")
            for name, value in arrays.items():
                demo.create_dataset(name, data=value)
            T = len(arrays["actions"])
            demo.attrs["num_samples"] = T
            demo.attrs["model_file"] = ""
            demo.attrs["init_state"] = np.asarray(arrays["states"][0])
            demo.attrs["dp_meta"] = json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in metas[i].items()})
            demo.attrs["dp_episode"] = i  # the episode's index in the exported store: import restores the order
            total += T
            bar.update(T)
        data.attrs["env_name"] = env_name
        data.attrs["problem_info"] = json.dumps(problem)
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["bddl_file_name"] = f"{task}.bddl"
        data.attrs["bddl_file_content"] = ""
        data.attrs["env_args"] = json.dumps({"type": 1, "env_name": env_name, "problem_name": task, "bddl_file": f"{task}.bddl",
                                             "env_kwargs": {"control_freq": store.control_freq}})
        data.attrs["num_demos"] = len(episodes)
        data.attrs["total"] = total
        data.attrs["dp_card"] = json.dumps(plan.export_card().to_dict())
        data.attrs["dp_filled"] = json.dumps(plan.filled)
    tmp.replace(path)
