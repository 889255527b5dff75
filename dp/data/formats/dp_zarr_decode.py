"""Diffusion Policy zarr's worker side: open a source store, read a frame range of it into our keys."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from dp.data.formats.cards import KeySpec
from dp.data.formats.convert import Episode, finish
from dp.data.store import EpisodeStore

_OPEN_STORES: dict[str, Any] = {}  # per worker process: zarr sources opened once


def open_source(src: str | Path) -> EpisodeStore:
    """The source store, read-only, without the store's warning about inconsistent episode ends
    (the import checks the raw ends itself and says which entries are wrong)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*meta/episode_ends is inconsistent")
        return EpisodeStore.open(src, mode="r")


def _open_store(path: str) -> Any:
    if path not in _OPEN_STORES:
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
