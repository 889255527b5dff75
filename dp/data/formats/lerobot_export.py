"""Write an episode store as a LeRobotDataset v3.0 folder (`dp export-data lerobot`).

Features, as LeRobot names them: the low-dim keys, concatenated in the store's role order, become
``observation.state`` (keys whose card entry feeds no encoder, privileged simulator state, become
``observation.environment_state``); the action key becomes ``action``; each camera
``observation.images.<camera>`` (the card's camera name, else the key without ``_image``), an
H.264 MP4 (yuv420p, libx264 ``--crf``, GOP 2) per camera. ``--map KEY=FEATURE`` sends a key to
another feature (low-dim keys sent to one feature are concatenated). Every frame row has
``timestamp`` = frame_index / fps, ``frame_index``, ``episode_index``, ``index``, ``task_index``; the
task is the episode's instruction (else its task name). ``meta/stats.json`` and each episode's
``stats/...`` columns hold min, max, mean, std, count and the q01/q10/q50/q90/q99 quantiles (images:
per channel in 0..1, over the frames LeRobot samples: all of a short episode, n**0.75 of a long
one; quantiles exact here, from histograms in LeRobot); the dataset figures aggregate the
episodes' as LeRobot 0.4 does: counts weight means, variances and quantiles.
``meta/dp.json`` (ignored by LeRobot) records the card of the export and every episode's metadata,
so ``dp import lerobot`` gives back the same episodes (images within video-codec tolerance).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dp.data.formats.cards import DatasetCard, KeySpec, SourceRef, card_from_dict
from dp.data.formats.lerobot import (
    CHUNKS_SIZE, CODEBASE_VERSION, DATA_FILE_MB, DATA_PATH, DP_RECORD, EPISODES_PATH, INFO_PATH, STATS_PATH,
    TASKS_PATH, VIDEO_FILE_MB, VIDEO_PATH, Mp4Writer, next_file, require, video_info,
)
from dp.data.formats.pipeline import role_ordered_keys
from dp.data.store import EpisodeStore
from dp.errors import DpError

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # LeRobot's DEFAULT_QUANTILES


def export_store(store: EpisodeStore, out: str | Path, *, card: DatasetCard | None = None, mapping: dict[str, str] | None = None,
                 fps: float | None = None, crf: int = 23, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write ``store`` as a LeRobotDataset v3.0 folder at ``out``; returns a summary."""
    require("pyarrow")
    require("av")
    if len(store) == 0:
        raise DpError(f"{store.path}: no episodes to export")
    fps = fps or store.control_freq
    if not fps or fps <= 0:
        raise DpError(f"{store.path}: the store has no control frequency; give the frame rate with --fps")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DpError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    plan = _Plan(store, _base_card(store, card), mapping or {})
    partial = out.with_name(out.name + ".partial")  # the old output stays until the new one is complete
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        summary = _write(partial, store, plan, int(fps) if float(fps).is_integer() else float(fps), crf, progress)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    partial.rename(out)
    return {"dir": str(out), **summary, "filled": []}


def _base_card(store: EpisodeStore, card: DatasetCard | None) -> DatasetCard | None:
    if card is not None:
        return card
    recorded = store.attrs.get("dataset_card")
    return card_from_dict(recorded, f"{store.path}: dataset_card attribute") if isinstance(recorded, dict) else None


class _Plan:
    """Which store keys make which LeRobot feature."""

    def __init__(self, store: EpisodeStore, base: DatasetCard | None, overrides: dict[str, str]):
        unknown = sorted(set(overrides) - set(store.keys))
        if unknown:
            raise DpError(f"--map: the store has no key(s) {', '.join(unknown)} (keys: {', '.join(store.keys)})")
        self.role_of = {k: r for r, keys in store.roles.items() for k in keys}
        actions = [k for k in store.roles.get("action", []) if k in store.keys]
        if len(actions) != 1:
            raise DpError(f"{store.path}: LeRobot datasets have one 'action' feature; the store has action keys {actions or 'none'}")
        self.groups: dict[str, list[str]] = {}  # feature -> store keys (low-dim: concatenated in this order)
        self.image_features: dict[str, str] = {}  # feature -> image key
        self.camera_of: dict[str, str | None] = {}
        for key in role_ordered_keys(store):
            spec = base.spec_for_store_key(key) if base else None
            self.camera_of[key] = spec.camera if spec else None
            role = self.role_of.get(key) or ("image" if store.array(key).dtype == np.uint8 and store.array(key).ndim == 4 else "lowdim")
            self.role_of[key] = role
            if role == "image":
                feature = overrides.get(key) or f"observation.images.{self.camera_of[key] or key.removesuffix('_image').removesuffix('_rgb')}"
                if feature in self.image_features or feature in self.groups:
                    raise DpError(f"export mapping sends two keys to the feature {feature!r}; choose names with --map KEY=FEATURE")
                self.image_features[feature] = key
                continue
            default = "action" if role == "action" else (
                "observation.environment_state" if spec is not None and spec.policy_encoder == "none" else "observation.state")
            feature = overrides.get(key) or default
            if feature in self.image_features or (feature == "action") != (role == "action"):
                raise DpError(f"--map {key}={feature}: the action key alone makes 'action', and a low-dim key cannot share a camera's feature")
            self.groups.setdefault(feature, []).append(key)
        self.action_key = actions[0]
        self.dims = {k: int(np.prod(store.array(k).shape[1:], dtype=np.int64)) for keys in self.groups.values() for k in keys}
        self.discrete = store.discrete_dims
        self.store, self.base = store, base

    def names(self, feature: str) -> list[str]:
        out = []
        for key in self.groups[feature]:
            d = self.dims[key]
            out += [key] if d == 1 and self.store.array(key).ndim == 1 else [f"{key}_{i}" for i in range(d)]
        return out

    def columns(self, episode: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """feature -> (T, D) float32 for every low-dim feature of one episode."""
        T = len(episode[self.action_key])
        return {f: np.concatenate([np.asarray(episode[k], np.float32).reshape(T, -1) for k in keys], axis=1)
                for f, keys in self.groups.items()}

    def export_card(self, fps: float) -> DatasetCard:
        keys = []
        for feature, members in self.groups.items():
            start = 0
            for key in members:
                d = self.dims[key]
                src = SourceRef(feature) if len(members) == 1 else SourceRef(feature, start, start + d)
                keys.append(self._spec(key, src))
                start += d
        keys += [self._spec(key, SourceRef(feature)) for feature, key in self.image_features.items()]
        order = {k: i for i, k in enumerate(role_ordered_keys(self.store))}
        keys.sort(key=lambda s: order[s.key])
        name = self.base.name if self.base else self.store.path.name.removesuffix(".zarr")
        return DatasetCard(name=name, format="lerobot", keys=tuple(keys), description=f"export of {self.store.path.name} by dp export-data lerobot",
                           robot=self.store.robot, control_freq=fps, gripper_close=self.store.attrs.get("gripper_close"))

    def _spec(self, key: str, src: SourceRef) -> KeySpec:
        spec = self.base.spec_for_store_key(key) if self.base else None
        return KeySpec(key=key, sources=(src,), role=self.role_of[key], camera=self.camera_of.get(key),
                       discrete_dims=tuple(self.discrete.get(key, [])), encoder=spec.encoder if spec else None,
                       resize=spec.resize if spec else None, description=spec.description if spec else "")


# ====================================================================== writing
def _write(root: Path, store: EpisodeStore, plan: _Plan, fps: float, crf: int, progress: bool) -> dict[str, Any]:
    pa = require("pyarrow")
    pq = require("pyarrow.parquet")
    metas = [store.episode_meta(i) for i in range(len(store))]
    task_texts = [str(m.get("instruction") or m.get("task") or "task") for m in metas]
    tasks = list(dict.fromkeys(task_texts))
    task_index = {t: i for i, t in enumerate(tasks)}
    image_shape = {f: tuple(store.array(k).shape[1:]) for f, k in plan.image_features.items()}
    for f, shape in image_shape.items():
        if len(shape) != 3 or shape[2] != 3:
            raise DpError(f"{store.path}: image key {plan.image_features[f]!r} has frames {shape}; LeRobot videos are RGB (H, W, 3)")
    features = _features(plan, fps, image_shape)
    writers: dict[str, Mp4Writer] = {}
    video_file = {f: (0, 0) for f in plan.image_features}
    data_file, data_writer, data_bytes = (0, 0), None, 0
    rows, episode_stats = [], []
    first = 0
    bar = tqdm(total=store.n_frames, unit="frame", unit_scale=True, desc="export lerobot", disable=not progress)
    try:
        for i in range(len(store)):
            episode = store.get_episode(i)
            T = len(episode[plan.action_key])
            frame = np.arange(T, dtype=np.int64)
            columns: dict[str, np.ndarray] = {**plan.columns(episode), "timestamp": (frame / fps).astype(np.float32),
                                              "frame_index": frame, "episode_index": np.full(T, i, np.int64),
                                              "index": first + frame, "task_index": np.full(T, task_index[task_texts[i]], np.int64)}
            table = pa.table({name: _arrow(pa, value) for name, value in columns.items()})
            if data_writer is not None and data_bytes + table.nbytes > DATA_FILE_MB * 2**20:
                data_writer.close()
                data_writer, data_bytes, data_file = None, 0, next_file(*data_file)
            if data_writer is None:
                path = root / DATA_PATH.format(chunk_index=data_file[0], file_index=data_file[1])
                path.parent.mkdir(parents=True, exist_ok=True)
                data_writer = pq.ParquetWriter(path, table.schema, compression="snappy")
            data_writer.write_table(table)
            data_bytes += table.nbytes
            row: dict[str, Any] = {"episode_index": i, "tasks": [task_texts[i]], "length": T,
                                   "data/chunk_index": data_file[0], "data/file_index": data_file[1],
                                   "dataset_from_index": first, "dataset_to_index": first + T}
            stats = {name: _stats(value) for name, value in columns.items()}
            for feature, key in plan.image_features.items():
                writer = writers.get(feature)
                if writer is not None and writer.bytes > VIDEO_FILE_MB * 2**20:
                    writer.close()
                    writer, video_file[feature] = None, next_file(*video_file[feature])
                if writer is None:
                    H, W, _ = image_shape[feature]
                    chunk, file = video_file[feature]
                    writer = writers[feature] = Mp4Writer(root / VIDEO_PATH.format(video_key=feature, chunk_index=chunk, file_index=file), fps, W, H, crf)
                start = writer.frames / fps
                for img in episode[key]:
                    writer.write(img)
                row.update({f"videos/{feature}/chunk_index": video_file[feature][0], f"videos/{feature}/file_index": video_file[feature][1],
                            f"videos/{feature}/from_timestamp": start, f"videos/{feature}/to_timestamp": writer.frames / fps})
                stats[feature] = _image_stats(episode[key])
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            row.update({f"stats/{f}/{s}": v.tolist() for f, st in stats.items() for s, v in st.items()})
            rows.append(row)
            episode_stats.append(stats)
            first += T
            bar.update(T)
    finally:
        bar.close()
        if data_writer is not None:
            data_writer.close()
        for writer in writers.values():
            writer.close()
    if len(rows) > CHUNKS_SIZE * 100:  # meta/episodes is one file here; LeRobot caps files by size, not rows
        raise DpError(f"{store.path}: {len(rows)} episodes are more than this exporter writes into one episodes file")
    _write_parquet(pq, root / EPISODES_PATH.format(chunk_index=0, file_index=0), pa.Table.from_pylist(rows))
    _write_tasks(pa, pq, root / TASKS_PATH, tasks)
    _write_summary(root, store, plan, fps, features, episode_stats, metas, len(tasks), first)
    return {"episodes": len(rows), "frames": first, "tasks": len(tasks), "features": sorted(features),
            "videos": sorted(plan.image_features)}


def _write_summary(root: Path, store: EpisodeStore, plan: _Plan, fps: float, features: dict[str, Any],
                   episode_stats: list[dict[str, Any]], metas: list[dict[str, Any]], n_tasks: int, n_frames: int) -> None:
    """meta/stats.json, meta/info.json and our record of the card and each episode's metadata."""
    n_episodes = len(episode_stats)
    total = _aggregate(episode_stats)
    _write_json(root / STATS_PATH, {f: {s: v.tolist() for s, v in st.items()} for f, st in total.items()})
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": store.robot, "total_episodes": n_episodes, "total_frames": n_frames,
            "total_tasks": n_tasks, "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB,
            "video_files_size_in_mb": VIDEO_FILE_MB, "fps": fps, "splits": {"train": f"0:{n_episodes}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if plan.image_features else None, "features": features}
    _write_json(root / INFO_PATH, info)
    record = {"card": plan.export_card(float(fps)).to_dict(),
              "episodes": [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in m.items()} for m in metas]}
    _write_json(root / DP_RECORD, record)


def _features(plan: _Plan, fps: float, image_shape: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for feature in plan.groups:
        names = plan.names(feature)
        out[feature] = {"dtype": "float32", "shape": [len(names)], "names": names}
    for feature, (H, W, C) in image_shape.items():
        out[feature] = {"dtype": "video", "shape": [H, W, C], "names": ["height", "width", "channels"], "info": video_info(fps, W, H)}
    out.update({"timestamp": {"dtype": "float32", "shape": [1], "names": None},
                **{name: {"dtype": "int64", "shape": [1], "names": None} for name in ("frame_index", "episode_index", "index", "task_index")}})
    return out


def _arrow(pa: Any, value: np.ndarray) -> Any:
    """1-D: a plain column; 2-D: a fixed-size list column (what LeRobot's datasets.Sequence reads)."""
    if value.ndim == 1:
        return pa.array(value)
    values = pa.array(np.ascontiguousarray(value).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(values, type=pa.list_(pa.field("item", values.type), value.shape[1]))  # as datasets writes


def _stats(value: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's compute_episode_stats for a vector feature: over time, per dimension (1-D: shape (1,))."""
    a = np.asarray(value, np.float64)
    keep = a.ndim == 1
    out = {"min": a.min(0, keepdims=keep), "max": a.max(0, keepdims=keep), "mean": a.mean(0, keepdims=keep),
           "std": a.std(0, keepdims=keep), "count": np.array([len(a)])}
    out.update({name: np.quantile(a, q, axis=0, keepdims=keep) for name, q in QUANTILES.items()})
    return out


def _image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per channel, (3, 1, 1), in 0..1, over the frames LeRobot's sample_indices picks (100, or n**0.75 of long episodes)."""
    n = len(frames)
    samples = max(min(100, n), min(int(n**0.75), 10_000))
    picks = np.round(np.linspace(0, n - 1, samples)).astype(int)
    a = frames[picks].transpose(0, 3, 1, 2).astype(np.float64)  # (N, C, H, W)
    axes = (0, 2, 3)
    out = {"min": a.min(axes, keepdims=True), "max": a.max(axes, keepdims=True), "mean": a.mean(axes, keepdims=True),
           "std": a.std(axes, keepdims=True)}
    out.update({name: np.quantile(a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1), q, axis=1).reshape(1, -1, 1, 1)
                for name, q in QUANTILES.items()})
    out = {k: v[0] / 255.0 for k, v in out.items()}
    out["count"] = np.array([len(picks)])
    return out


def _aggregate(episodes: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """LeRobot's aggregate_stats: min of mins, max of maxes, count-weighted mean, pooled variance and quantiles."""
    out = {}
    for feature in episodes[0]:
        parts = [e[feature] for e in episodes]
        counts = np.stack([p["count"] for p in parts]).astype(np.float64)
        means = np.stack([p["mean"] for p in parts])
        w = counts.reshape(-1, *([1] * (means.ndim - 1)))
        total = counts.sum()
        mean = (means * w).sum(0) / total
        var = ((np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2) * w).sum(0) / total
        agg = {"min": np.stack([p["min"] for p in parts]).min(0), "max": np.stack([p["max"] for p in parts]).max(0),
               "mean": mean, "std": np.sqrt(var), "count": np.array([int(total)])}
        agg.update({name: (np.stack([p[name] for p in parts]) * w).sum(0) / total for name in QUANTILES})
        out[feature] = agg
    return out


def _write_parquet(pq: Any, path: Path, table: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")


def _write_tasks(pa: Any, pq: Any, path: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet as pandas writes LeRobot's tasks frame: column task_index, the task text as the index.

    The pandas metadata is written by hand (pandas is not a dependency) so that LeRobot's
    ``pd.read_parquet`` restores the text as the index, which it looks tasks up by.
    """
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3",
    }
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    _write_parquet(pq, path, table)


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=4, ensure_ascii=False, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
