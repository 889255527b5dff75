"""The decoding jobs that run in import/export worker processes.

Kept apart from the planners so a worker imports only numpy, opencv and h5py (not zarr, scipy or
the store): each job reads one episode's worth of foreign data and returns it in our keys, or
writes one episode's frame files.
"""

from __future__ import annotations

import zipfile
import zlib
from typing import Any

import h5py
import numpy as np

from dp.data.formats.cards import KeySpec, SourceRef
from dp.data.formats.convert import finish
from dp.errors import DpError

Episode = dict[str, np.ndarray]  # arrays by our key, (T, ...) each
_OPEN_STORES: dict[str, Any] = {}  # per worker process: zarr sources opened once


# ====================================================================== CALVIN
def calvin_frames(
    root: str, prefix: str, digits: int, start: int, end: int, specs: tuple[KeySpec, ...], image_size: int | None
) -> Episode:
    """Read frames start..end (inclusive) and map them to our keys (runs in a worker)."""
    n = end - start + 1
    raw: dict[str, np.ndarray] = {}
    chosen: dict[str, SourceRef] = {}
    for t in range(n):
        path = f"{root}/{prefix}{start + t:0{digits}d}.npz"
        try:
            with np.load(path, allow_pickle=False) as npz:
                names = set(npz.files)
                if t == 0:
                    chosen = _choose_npz_fields(specs, names, path)
                for key, src in chosen.items():
                    if src.field not in names:
                        raise DpError(f"{path}: no field {src.field!r} (earlier frames of frames {start}..{end} have it)")
                    value = src.take(npz[src.field])
                    if t == 0:
                        raw[key] = np.empty((n, *value.shape), value.dtype)
                    elif value.shape != raw[key].shape[1:]:
                        raise DpError(f"{path}: field {src} has shape {value.shape}, earlier frames {raw[key].shape[1:]}")
                    raw[key][t] = value
        except FileNotFoundError:
            raise DpError(f"{path}: frame file missing (frame {start + t} of the range {start}..{end})") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise DpError(f"{path}: unreadable frame file ({type(exc).__name__}: {exc})") from exc
    by_key = {s.key: s for s in specs}
    return {
        key: finish(by_key[key], arr, f"{root} frames {start}..{end}: {chosen[key]} -> {key}", image_size=image_size)
        for key, arr in raw.items()
    }


def _choose_npz_fields(specs: tuple[KeySpec, ...], names: set[str], path: str) -> dict[str, SourceRef]:
    chosen = {}
    for spec in specs:
        src = next((s for s in spec.sources if s.field in names), None)
        if src is not None:
            chosen[spec.key] = src
        elif not spec.optional:
            wanted = " or ".join(repr(s.field) for s in spec.sources)
            raise DpError(f"{path}: no field {wanted} for key {spec.key!r} (fields: {', '.join(sorted(names))})")
    return chosen


def write_calvin_frames(root: str, first: int, fields: dict[str, np.ndarray]) -> None:
    """Write one ``episode_NNNNNNN.npz`` per frame (runs in a worker)."""
    n = len(next(iter(fields.values())))
    for t in range(n):
        np.savez_compressed(f"{root}/episode_{first + t:07d}.npz", **{k: v[t] for k, v in fields.items()})


# ====================================================================== LIBERO / robomimic
def libero_demo(path: str, demo_name: str, specs: tuple[KeySpec, ...], flip: bool, image_size: int | None) -> Episode:
    """Read one demo and map it to our keys (runs in a worker)."""
    where = f"{path}: data/{demo_name}"
    try:
        with h5py.File(path, "r") as f:
            demo = f["data"][demo_name]
            raw: dict[str, tuple[SourceRef, np.ndarray]] = {}
            for spec in specs:
                src = next((s for s in spec.sources if s.field in demo and isinstance(demo[s.field], h5py.Dataset)), None)
                if src is None:
                    if spec.optional:
                        continue
                    wanted = " or ".join(repr(s.field) for s in spec.sources)
                    raise DpError(f"{where}: missing {wanted} (needed for key {spec.key!r})")
                raw[spec.key] = (src, src.take(demo[src.field][()]))
            num_samples = demo.attrs.get("num_samples")
    except OSError as exc:
        raise DpError(f"{where}: cannot read (truncated or corrupt HDF5: {exc})") from exc
    lengths = {str(src): len(arr) if arr.ndim else 0 for src, arr in raw.values()}
    if num_samples is not None:
        lengths["attrs.num_samples"] = int(num_samples)
    if len(set(lengths.values())) > 1:
        raise DpError(f"{where}: lengths disagree: {', '.join(f'{k} {v}' for k, v in lengths.items())}")
    by_key = {s.key: s for s in specs}
    return {
        key: finish(by_key[key], arr, f"{where}/{src} -> {key}", image_size=image_size, flip=flip)
        for key, (src, arr) in raw.items()
    }


# ====================================================================== Diffusion Policy zarr
def _open_store(path: str) -> Any:
    if path not in _OPEN_STORES:
        from dp.data.store import EpisodeStore  # only the dp-zarr job needs zarr

        _OPEN_STORES[path] = EpisodeStore.open(path, mode="r")
    return _OPEN_STORES[path]


def zarr_episode(path: str, start: int, stop: int, specs: tuple[KeySpec, ...], image_size: int | None) -> Episode:
    """Read frames [start, stop) of the source and map them to our keys (runs in a worker)."""
    source = _open_store(path)
    out = {}
    for spec in specs:
        src = next((s for s in spec.sources if s.field in source.keys), None)
        if src is None:
            continue  # optional (plan_import checked the required ones)
        arr = src.take(source.read(src.field, start, stop))
        out[spec.key] = finish(spec, arr, f"{path}: data/{src} frames {start}..{stop - 1} -> {spec.key}", image_size=image_size)
    return out
