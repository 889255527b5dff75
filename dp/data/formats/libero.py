"""LIBERO and robomimic HDF5 (FORMATS.md §3): import task files into a store, export a store.

Import. Every ``data/demo_<i>`` of every file is an episode; the task is the file name without
``_demo.hdf5`` (robomimic files without ``problem_info``: ``env_args.env_name``), the instruction
comes from ``problem_info.language_instruction``. Images are stored in the OpenGL convention
(upside down) unless ``macros_image_convention`` says ``opencv``; they are flipped upright. Keys map
through the card (``datasets/libero.yaml``), whose alternatives also cover robomimic's key names;
demo length is checked against ``num_samples``; ``--filter-key`` takes a robomimic ``mask/<key>``.

Export. One ``<task>_demo.hdf5`` per task, as LIBERO writes it: ``data`` attributes (env_name,
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from dp.data.formats import decode
from dp.data.formats.cards import DatasetCard, KeySpec, SourceRef, card_from_dict, load_card
from dp.data.formats.pipeline import ImportItem, role_ordered_keys
from dp.data.formats.poses import quat_to_axis_angle
from dp.data.store import EpisodeStore
from dp.errors import DpError

DEMO_RE = re.compile(r"^demo_(\d+)$")
LIBERO_GRIPPER_CLOSE = 1.0
FILLER_IMAGE_SIZE = 128
SIM_EEF_POS, SIM_EEF_QUAT, SIM_GRIPPER_QPOS = "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"


# ====================================================================== import
def _attr_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json_attr(attrs: Any, name: str, where: str) -> Any:
    if name not in attrs:
        return None
    try:
        return json.loads(_attr_text(attrs[name]))
    except json.JSONDecodeError as exc:
        raise DpError(f"{where}.attrs[{name!r}] is not valid JSON ({exc})") from exc


def expand_inputs(paths: list[str | Path]) -> list[Path]:
    """Files as given, directories searched for ``*.hdf5`` (sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.hdf5"))
            if not found:
                raise DpError(f"{p}: no .hdf5 files in this directory")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DpError(f"{p}: no such file or directory")
    return files


def plan_import(
    paths: list[str | Path],
    *,
    card: DatasetCard | None = None,
    cameras: list[str] | None = None,
    image_size: int | None = None,
    filter_key: str | None = None,
    skip_bad: bool = False,
    skipped: list[str] | None = None,
) -> tuple[DatasetCard, list[ImportItem]]:
    """The card in use and one item per demo of every file; unreadable files raise or go to ``skipped``."""
    files = expand_inputs(paths)
    items: list[ImportItem] = []
    used: DatasetCard | None = None
    for path in files:
        try:
            file_card, file_items = _plan_file(path, card, cameras, image_size, filter_key)
        except DpError as exc:
            if not skip_bad:
                raise
            if skipped is not None:
                skipped.append(str(exc))
            continue
        used = used or file_card
        items += file_items
    if used is None:
        used = (card or load_card("libero")).select(cameras=cameras)
    if items and all(it.order is not None for it in items):  # files of our export: the store's episode order
        items.sort(key=lambda it: it.order)
    return used, items


def _plan_file(path: Path, card: DatasetCard | None, cameras: list[str] | None, image_size: int | None,
               filter_key: str | None) -> tuple[DatasetCard, list[ImportItem]]:
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DpError(f"{path}: cannot open as HDF5 (truncated or not an HDF5 file: {exc})") from exc
    try:
        with f:
            return _plan_open_file(f, path, card, cameras, image_size, filter_key)
    except (OSError, KeyError) as exc:  # h5py's errors for damaged groups and attributes
        raise DpError(f"{path}: cannot read (truncated or corrupt HDF5: {exc})") from exc


def _plan_open_file(f: h5py.File, path: Path, card: DatasetCard | None, cameras: list[str] | None, image_size: int | None,
                    filter_key: str | None) -> tuple[DatasetCard, list[ImportItem]]:
    if "data" not in f:
        raise DpError(f"{path}: no 'data' group (not a LIBERO/robomimic file)")
    attrs = f["data"].attrs
    recorded = _json_attr(attrs, "dp_card", f"{path}: data")
    if card is None:  # robomimic files (no problem_info) by robomimic's own key names
        card = card_from_dict(recorded, f"{path}: data.attrs['dp_card']") if recorded else load_card("libero" if "problem_info" in attrs else "robomimic")
    if card.format != "libero":
        raise DpError(f"{card.origin}: a {card.format} card, not a libero one")
    card = card.select(cameras=cameras)
    problem = _json_attr(attrs, "problem_info", f"{path}: data") or {}
    env_args = _json_attr(attrs, "env_args", f"{path}: data") or {}
    for name, value in (("problem_info", problem), ("env_args", env_args)):
        if not isinstance(value, dict):
            raise DpError(f"{path}: data.attrs[{name!r}] must be a JSON object, got {type(value).__name__}")
    convention = _attr_text(attrs.get("macros_image_convention", "opengl")).lower()
    if convention not in ("opengl", "opencv"):
        raise DpError(f"{path}: macros_image_convention {convention!r} is neither 'opengl' nor 'opencv'")
    flip = convention == "opengl"
    names = _demo_names(f, path, filter_key)
    if cameras is None and names:  # no cameras asked for: those the file has (a low-dim file has none)
        card = _present_cameras(card, [f["data"][n] for n in names])
    task = path.name.removesuffix(".hdf5").removesuffix("_demo") if "problem_info" in attrs else env_args.get("env_name") or path.stem
    base_meta: dict[str, Any] = {"source": "libero" if "problem_info" in attrs else "robomimic", "task": str(task)}
    if problem.get("language_instruction"):
        base_meta["instruction"] = str(problem["language_instruction"])
    items = []
    for name in names:
        demo = f["data"][name]
        recorded_meta = _json_attr(demo.attrs, "dp_meta", f"{path}: data/{name}")
        if recorded_meta is not None:  # our export: the episode's metadata exactly as it was
            meta = _meta_from_json(recorded_meta)
        else:
            meta = dict(base_meta)
            if "rewards" in demo and demo["rewards"].shape and demo["rewards"].shape[0]:
                meta["success"] = bool(demo["rewards"][-1] > 0)
        n = int(demo["actions"].shape[0]) if "actions" in demo else int(demo.attrs.get("num_samples", 0))
        order = demo.attrs.get("dp_episode")
        items.append(ImportItem(
            source_file=f"{path.parent.name}/{path.name}",
            source_index=int(DEMO_RE.match(name).group(1)),
            label=f"{path}: data/{name}",
            n_frames=n,
            job=decode.libero_demo,
            args=(str(path), name, card.keys, flip, image_size),
            meta=meta,
            order=None if order is None else int(order),
        ))
    return card, items


def _present_cameras(card: DatasetCard, demos: list[h5py.Group]) -> DatasetCard:
    """The card without the image keys that no demo holds (a demo lacking one that others hold stays an error)."""
    keys = tuple(k for k in card.keys if k.role != "image" or any(s.field in demo for demo in demos for s in k.sources))
    return replace(card, keys=keys)


def _demo_names(f: h5py.File, path: Path, filter_key: str | None) -> list[str]:
    names = [k for k in f["data"].keys() if DEMO_RE.match(k)]
    if filter_key is not None:
        if "mask" not in f or filter_key not in f["mask"]:
            have = sorted(f["mask"].keys()) if "mask" in f else []
            raise DpError(f"{path}: no mask/{filter_key} (filter keys: {', '.join(have) or 'none'})")
        wanted = {_attr_text(v) for v in f["mask"][filter_key][()]}
        missing = sorted(wanted - set(names))
        if missing:
            raise DpError(f"{path}: mask/{filter_key} names demos that do not exist: {', '.join(missing)}")
        names = [n for n in names if n in wanted]
    return sorted(names, key=lambda n: int(DEMO_RE.match(n).group(1)))


def _meta_from_json(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: (np.asarray(v, dtype=np.float32) if isinstance(v, list) else v) for k, v in meta.items()
            if k not in ("source_file", "source_index")}


# ====================================================================== export
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
    plan = _ExportPlan(store, _base_card(store, card), mapping or {})
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


def _base_card(store: EpisodeStore, card: DatasetCard | None) -> DatasetCard:
    if card is not None:
        return card
    recorded = store.attrs.get("dataset_card")
    if isinstance(recorded, dict) and recorded.get("format") == "libero":
        return card_from_dict(recorded, f"{store.path}: dataset_card attribute")
    return load_card("libero")


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
