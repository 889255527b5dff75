"""Diffusion Policy zarr's worker side: read a frame range of a source store into our keys."""

from __future__ import annotations

from typing import Any

from dp.data.formats.cards import KeySpec
from dp.data.formats.convert import Episode, finish

_OPEN_STORES: dict[str, Any] = {}  # per worker process: zarr sources opened once


def _open_store(path: str) -> Any:
    if path not in _OPEN_STORES:
        from dp.data.formats.dp_zarr import open_source  # only the dp-zarr job needs zarr

        _OPEN_STORES[path] = open_source(path)
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
