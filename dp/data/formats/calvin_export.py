"""CALVIN (FORMATS.md §2): export an episode store as a split directory.

One ``<prefix>NNNNNNN.npz`` per frame (``np.savez_compressed``), ``ep_start_end_ids.npy``,
``ep_lens.npy``, ``lang_annotations/auto_lang_ann.npy`` (one annotation per episode with an
instruction), ``statistics.yaml``, ``scene_info.npy`` (training) or
``lang_annotations/embeddings.npy`` (validation), ``.hydra/merged_config.yaml``, and
``dp_card.json``: the card of this export (our key -> npz field, roles, conventions) plus each
episode's metadata, so that importing the directory gives back the same store. CALVIN fields the
store lacks are filled deterministically, and listed in ``dp_card.json`` under ``filled``:

- ``robot_obs`` (15) from the simulator keys: tcp xyz = ``robot0_eef_pos``, tcp Euler xyz from
  ``robot0_eef_quat``, gripper width = ``|q0| + |q1|`` of ``robot0_gripper_qpos``, joints =
  ``robot0_joint_pos``, gripper action = the previous step's action gripper (the first step's own),
  in CALVIN's sign; any part without a source is 0.
- ``scene_obs`` (24): zeros (our stores have no CALVIN scene).
- whichever of ``rel_actions`` / ``actions`` the store's action does not fill: ``actions`` = tcp
  pose of the next frame (the last frame repeats its own) + the gripper; ``rel_actions`` by CALVIN's
  rule ``clip(a - obs, +-0.02) / 0.02`` (position), ``clip(angle diff, +-0.05) / 0.05`` (orientation).
- ``rgb_static`` / ``rgb_gripper`` without an image key: black 200x200 / 84x84 frames.
- annotation ``emb`` of an episode without ``lang_emb``: zeros.
The gripper sign follows CALVIN (-1 closes); a store with the robosuite convention (+1 closes) is
negated on export and back on import (``negate_dims`` in the card).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from dp.data.formats.calvin_decode import write_calvin_frames
from dp.data.formats.calvin_import import LANG_FILE, SIDECAR
from dp.data.formats.cards import DatasetCard, KeySpec, SourceRef, card_for_export
from dp.data.formats.pipeline import role_ordered_keys
from dp.data.formats.poses import quat_to_euler_xyz, wrap_angle
from dp.data.formats.workers import ordered_map
from dp.data.store import EpisodeStore
from dp.errors import DpError

EMB_DIM = 384
CALVIN_GRIPPER_CLOSE = -1.0
# The project's simulator keys (see the shared conventions) that robot_obs is composed from.
SIM_EEF_POS, SIM_EEF_QUAT, SIM_GRIPPER_QPOS, SIM_JOINT_POS = "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos"
FILLER_IMAGE_SIZE = {"rgb_static": 200, "rgb_gripper": 84}


def export_store(
    store: EpisodeStore,
    out: str | Path,
    *,
    split: str = "training",
    card: DatasetCard | None = None,
    actions: str | None = None,
    mapping: dict[str, str] | None = None,
    workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``store`` as the CALVIN split ``out/<split>``; returns a summary (paths, counts, filled fields)."""
    if len(store) == 0:
        raise DpError(f"{store.path}: no episodes to export")
    root = Path(out) / split
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise DpError(f"{root}: exists and is not empty (pass --overwrite to replace it)")
        shutil.rmtree(root)
    base = card_for_export(store.attrs.get("dataset_card"), f"{store.path}: dataset_card attribute", card, "calvin").select(variant=actions)
    plan = _ExportPlan(store, base, mapping or {})
    (root / "lang_annotations").mkdir(parents=True, exist_ok=True)
    stats = _Stats()
    ranges, lang = [], {"indx": [], "ann": [], "task": [], "emb": []}
    episodes_meta, has_emb = [], []
    first = 0
    jobs = []
    for i in range(len(store)):
        n = store.episode_bounds(i)[1] - store.episode_bounds(i)[0]
        ranges.append((first, first + n - 1))
        meta = store.episode_meta(i)
        emb = meta.pop("lang_emb", None)
        has_emb.append(emb is not None)
        episodes_meta.append(_meta_to_json(meta))
        if meta.get("instruction"):
            lang["indx"].append((first, first + n - 1))
            lang["ann"].append(meta["instruction"])
            lang["task"].append(meta.get("task") or meta["instruction"])
            lang["emb"].append(np.zeros(EMB_DIM, np.float32) if emb is None else np.asarray(emb, np.float32))
        jobs.append((i, first))
        first += n

    def frames_jobs():
        for i, first_frame in jobs:
            fields = plan.fields(store.get_episode(i))
            stats.add(fields)
            yield (str(root), first_frame, fields)

    bar = tqdm(total=first, unit="frame", unit_scale=True, desc="export calvin", disable=not progress)
    futures = ordered_map(write_calvin_frames, frames_jobs(), workers)
    try:
        for (i, _), fut in zip(jobs, futures):
            fut.result()
            bar.update(ranges[i][1] - ranges[i][0] + 1)
    finally:
        futures.close()
        bar.close()

    np.save(root / "ep_start_end_ids.npy", np.asarray(ranges, dtype=np.int64).reshape(-1, 2))
    np.save(root / "ep_lens.npy", np.asarray([e - s + 1 for s, e in ranges], dtype=np.int64))
    _write_language(root, split, lang, store, first)
    (root / "statistics.yaml").write_text(yaml.safe_dump(stats.calvin_statistics(), sort_keys=False))
    (root / ".hydra").mkdir(exist_ok=True)
    (root / ".hydra" / "merged_config.yaml").write_text(yaml.safe_dump(_merged_config(store, plan), sort_keys=False))
    sidecar = {
        "card": plan.export_card().to_dict(),
        "filled": plan.filled,
        "episodes": episodes_meta,
        "has_lang_emb": has_emb,
        "note": "written by `dp export-data calvin`; `dp import calvin` reads it to restore our keys and metadata",
    }
    (root / SIDECAR).write_text(json.dumps(sidecar, indent=1))
    return {"dir": str(root), "episodes": len(ranges), "frames": first, "annotations": len(lang["ann"]), "filled": plan.filled}


def _write_language(root: Path, split: str, lang: dict[str, list], store: EpisodeStore, n_frames: int) -> None:
    """The annotations file, and the validation split's embeddings or the training split's scene info."""
    emb = np.stack(lang["emb"])[:, None, :] if lang["emb"] else np.zeros((0, 1, EMB_DIM), np.float32)
    annotations = {"info": {"indx": lang["indx"], "episodes": []}, "language": {"ann": lang["ann"], "task": lang["task"], "emb": emb}}
    np.save(root / LANG_FILE, np.array(annotations, dtype=object), allow_pickle=True)  # we produce it; readers use safe_pickle
    if split == "validation":
        by_task: dict[str, Any] = {}
        for ann, task, e in zip(lang["ann"], lang["task"], emb):
            by_task.setdefault(task, {"emb": e[None], "ann": ann})
        np.save(root / "lang_annotations" / "embeddings.npy", np.array(by_task, dtype=object), allow_pickle=True)
    else:
        np.save(root / "scene_info.npy", np.array({f"dp_{store.path.stem}": [0, n_frames - 1]}, dtype=object), allow_pickle=True)


class _ExportPlan:
    """Which store key goes to which npz field, and how the missing CALVIN fields are filled."""

    def __init__(self, store: EpisodeStore, base: DatasetCard, overrides: dict[str, str]):
        self.store, self.base = store, base
        roles = store.roles
        self.role_of = {k: r for r, keys in roles.items() for k in keys}
        unknown = sorted(set(overrides) - set(store.keys))
        if unknown:
            raise DpError(f"--map: the store has no key(s) {', '.join(unknown)} (keys: {', '.join(store.keys)})")
        self.field_of: dict[str, str] = {}
        self.spec_of: dict[str, KeySpec | None] = {}
        for key in role_ordered_keys(store):
            spec = base.spec_for_store_key(key)
            self.spec_of[key] = spec
            self.field_of[key] = overrides.get(key) or (spec.export_field if spec else None) or key
        fields = list(self.field_of.values())
        if len(set(fields)) != len(fields):
            raise DpError(f"export mapping sends two keys to one npz field: {self.field_of}")
        store_close = store.attrs.get("gripper_close")
        store_close = 1.0 if store_close is None else float(store_close)  # the project's robosuite convention
        calvin_close = base.gripper_close if base.gripper_close is not None else CALVIN_GRIPPER_CLOSE
        self.store_close, self.flip = store_close, store_close != calvin_close
        self.action_key = next((k for k, f in self.field_of.items() if f in ("rel_actions", "actions")), None)
        if self.action_key is None:
            self.action_key = next(iter(roles.get("action", [])), None)
            if self.action_key is not None:
                self.field_of[self.action_key] = "rel_actions"
        self.gripper_dims = list(store.discrete_dims.get(self.action_key, [])) if self.action_key else []
        if self.action_key and not self.gripper_dims:
            self.gripper_dims = [store.array(self.action_key).shape[-1] - 1]
        self.filled: list[str] = []
        present = set(self.field_of.values())
        for name, why in [
            ("rgb_static", "black frames (no image key maps to it)"),
            ("rgb_gripper", "black frames (no image key maps to it)"),
            ("robot_obs", "composed from robot0_eef_pos/eef_quat/gripper_qpos/joint_pos and the previous gripper action (missing parts 0)"),
            ("scene_obs", "zeros (no CALVIN scene state)"),
            ("actions", "next frame's tcp pose + the gripper action"),
            ("rel_actions", "CALVIN's rule from actions and robot_obs"),
        ]:
            if name not in present:
                self.filled.append(f"{name}: {why}")
        if not self.action_key:
            raise DpError(f"{store.path}: no action key to export (roles: {roles})")

    def fields(self, episode: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The npz fields of every frame of one episode, (T, ...) each."""
        out = {self.field_of[k]: v for k, v in episode.items()}
        action = np.array(episode[self.action_key], dtype=np.float32)
        if self.flip:
            action[:, self.gripper_dims] *= -1
            out[self.field_of[self.action_key]] = action
        T = len(action)
        gripper = action[:, self.gripper_dims[-1]]
        for name, size in FILLER_IMAGE_SIZE.items():
            if name not in out:
                out[name] = np.zeros((T, size, size, 3), np.uint8)
        if "robot_obs" not in out:
            out["robot_obs"] = self._robot_obs(episode, gripper)
        if "scene_obs" not in out:
            out["scene_obs"] = np.zeros((T, 24), np.float32)
        robot_obs = np.asarray(out["robot_obs"], dtype=np.float64)
        if "actions" not in out:
            nxt = np.concatenate([robot_obs[1:, :6], robot_obs[-1:, :6]])
            out["actions"] = np.concatenate([nxt, gripper[:, None]], axis=1).astype(np.float32)
        if "rel_actions" not in out:
            absolute = np.asarray(out["actions"], dtype=np.float64)
            pos = np.clip(absolute[:, :3] - robot_obs[:, :3], -0.02, 0.02) / 0.02
            ori = np.clip(wrap_angle(absolute[:, 3:6] - robot_obs[:, 3:6]), -0.05, 0.05) / 0.05
            out["rel_actions"] = np.concatenate([pos, ori, absolute[:, 6:7]], axis=1).astype(np.float32)
        return out

    def _robot_obs(self, episode: dict[str, np.ndarray], gripper: np.ndarray) -> np.ndarray:
        T = len(gripper)
        obs = np.zeros((T, 15), np.float32)
        if SIM_EEF_POS in episode:
            obs[:, 0:3] = episode[SIM_EEF_POS][:, :3]
        if SIM_EEF_QUAT in episode:
            obs[:, 3:6] = quat_to_euler_xyz(episode[SIM_EEF_QUAT][:, :4])
        if SIM_GRIPPER_QPOS in episode:
            obs[:, 6] = np.abs(episode[SIM_GRIPPER_QPOS][:, :2]).sum(axis=1)
        if SIM_JOINT_POS in episode:
            obs[:, 7:14] = episode[SIM_JOINT_POS][:, :7]
        obs[:, 14] = np.concatenate([gripper[:1], gripper[:-1]])
        return obs

    def export_card(self) -> DatasetCard:
        keys = []
        for key, field_name in self.field_of.items():
            spec = self.spec_of.get(key)
            keys.append(KeySpec(
                key=key,
                sources=(SourceRef(field_name),),
                role=self.role_of.get(key, "lowdim"),
                camera=spec.camera if spec else None,
                variant=spec.variant if spec and key == self.action_key else None,
                negate_dims=tuple(self.gripper_dims) if self.flip and key == self.action_key else (),
                discrete_dims=tuple(self.store.discrete_dims.get(key, [])),
            ))
        return DatasetCard(
            name=self.base.name, format="calvin", keys=tuple(keys),
            description=f"export of {self.store.path.name} by dp export-data calvin",
            robot=self.store.robot, control_freq=self.store.control_freq, gripper_close=self.store_close,
        )


def _merged_config(store: EpisodeStore, plan: _ExportPlan) -> dict[str, Any]:
    cams = {v: k for k, v in plan.field_of.items() if v in FILLER_IMAGE_SIZE}
    return {
        "note": "written by dp export-data calvin: not a calvin_env configuration (no scene to rebuild)",
        "robot": store.robot,
        "control_freq": store.control_freq,
        "cameras": {"static": cams.get("rgb_static"), "gripper": cams.get("rgb_gripper")},
    }


class _Stats:
    """Running mean/std of robot_obs and scene_obs and bounds of rel_actions (statistics.yaml)."""

    def __init__(self) -> None:
        self.sums: dict[str, list[np.ndarray]] = {}
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def add(self, fields: dict[str, np.ndarray]) -> None:
        for name in ("robot_obs", "scene_obs"):
            x = np.asarray(fields[name], np.float64)
            s = self.sums.setdefault(name, [np.zeros(x.shape[1]), np.zeros(x.shape[1]), np.zeros(1)])
            s[0] += x.sum(0)
            s[1] += (x * x).sum(0)
            s[2] += len(x)
        rel = np.asarray(fields["rel_actions"], np.float64)
        self.lo = rel.min(0) if self.lo is None else np.minimum(self.lo, rel.min(0))
        self.hi = rel.max(0) if self.hi is None else np.maximum(self.hi, rel.max(0))

    def calvin_statistics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (s, ss, n) in self.sums.items():
            mean = s / n
            std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
            out[name] = [{"_target_": "calvin_agent.utils.transforms.NormalizeVector",
                          "mean": np.round(mean, 6).tolist(), "std": np.round(std, 6).tolist()}]
        out["act_min_bound"] = np.round(self.lo, 6).tolist()
        out["act_max_bound"] = np.round(self.hi, 6).tolist()
        return out


def _meta_to_json(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in meta.items()}
