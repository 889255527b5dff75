"""LIBERO and robomimic HDF5 (FORMATS.md §3): import task files into an episode store.

Every ``data/demo_<i>`` of every file is an episode; the task is the file name without
``_demo.hdf5`` (robomimic files without ``problem_info``: ``env_args.env_name``), the instruction
comes from ``problem_info.language_instruction``. Images are stored in the OpenGL convention
(upside down) unless ``macros_image_convention`` says ``opencv``; they are flipped upright. Keys map
through the card (``datasets/libero.yaml``), whose alternatives also cover robomimic's key names;
demo length is checked against ``num_samples``; ``--filter-key`` takes a robomimic ``mask/<key>``.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dp.data.formats.cards import DatasetCard, card_from_dict, load_card
from dp.data.formats.libero_decode import libero_demo
from dp.data.formats.pipeline import ImportItem
from dp.errors import DpError

DEMO_RE = re.compile(r"^demo_(\d+)$")


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
            job=libero_demo,
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
