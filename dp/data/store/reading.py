"""Reading a store: opening it, its attributes, frames, episodes and metadata; dropping a torn tail."""

from __future__ import annotations

import asyncio
import os
import warnings
from pathlib import Path
from typing import Any, Self

import numpy as np
import zarr
from zarr.core.sync import sync

from dp.data.store.layout import decode_meta, infer_roles, take_lock
from dp.errors import DpError
from dp.files import release_lock

SETTLE_S = 30.0  # how long a failed read waits for the rest of its chunk tasks


async def _others_done(timeout: float) -> None:
    """Wait (up to ``timeout`` s) until no other task runs on this event loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (others := asyncio.all_tasks() - {asyncio.current_task()}) and loop.time() < deadline:
        await asyncio.wait(others, timeout=deadline - loop.time())


def settle_zarr() -> None:
    """Let the chunk tasks of a failed zarr read finish.

    zarr 3 reads chunks in concurrent tasks on its own event loop; when one chunk fails, the read
    raises and leaves the others pending. At exit zarr closes that loop, and every task still
    pending prints "Task was destroyed but it is pending!" (and "Event loop is closed" tracebacks).
    """
    sync(_others_done(SETTLE_S))


def read_chunks(arr: zarr.Array, selection: Any, where: str, chunks: str = "") -> np.ndarray:
    """``arr[selection]``, or a one-line DpError naming ``where`` (store and array) and ``chunks``
    (which ones, if known) when a chunk cannot be read."""
    try:
        return arr[selection]
    except Exception as exc:  # zarr and its codecs raise many types for a corrupt chunk
        settle_zarr()
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise DpError(f"{where} ({chunks}corrupt or truncated?): {reason}") from exc


class StoreReader:
    """An opened store's read side; :class:`dp.data.store.EpisodeStore` adds writing."""

    def __init__(self, group: zarr.Group, path: Path, mode: str, lock_fd: int | None):
        self._group = group
        self.path = path
        self.mode = mode
        self._lock_fd = lock_fd
        self._layouts: dict[str, dict | None] = {}  # image keys written by dp.data.shards
        # A writer holds the lock, so nobody else changes the layout: it keeps the array handles
        # (opening one reads its zarr.json) and each str column's vocabulary instead of re-reading them.
        self._arrays: dict[str, zarr.Array] | None = None
        self._meta_arrays: dict[str, zarr.Array] | None = None
        self._vocab_index: dict[str, dict[str, int]] = {}
        self._staged: list[tuple[dict[str, np.ndarray], dict[str, Any], int]] = []  # low-dim, meta, end: see stage_episode
        self._staged_kinds: dict[str, tuple[str, int | None]] = {}
        self._staged_stop = 0
        if "meta" not in group or "episode_ends" not in group["meta"]:
            self.close()
            raise DpError(f"{path}: not an episode store: 'meta/episode_ends' is missing")
        self._ends_array = group["meta/episode_ends"]
        self._data = group["data"] if "data" in group else None
        try:
            raw_ends = self.raw_episode_ends()
        except DpError:
            self.close()
            raise
        self._ends = self._valid_prefix(raw_ends)
        if mode == "a":
            self._drop_torn_tail(len(raw_ends))
            self._arrays = {k: self._data[k] for k in self.keys}
            meta = self._group["meta"]
            self._meta_arrays = {k: meta[k] for k in meta.array_keys() if k != "episode_ends"}

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> Self:
        """Open an existing store: ``mode="r"`` to read (never blocked), ``"a"`` to append (exclusive)."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        if not path.is_dir():
            raise DpError(f"{path}: no episode store there (not a directory)")
        lock_fd = take_lock(path) if mode == "a" else None
        try:
            group = zarr.open_group(zarr.storage.LocalStore(path, read_only=mode == "r"), mode="r" if mode == "r" else "r+")
        except Exception as exc:  # zarr raises several types for a missing or unreadable group
            release_lock(lock_fd)
            raise DpError(f"{path}: not a readable Zarr group ({type(exc).__name__}: {exc})") from exc
        if mode == "a" and group.metadata.zarr_format != 3:
            release_lock(lock_fd)
            raise DpError(f"{path}: a zarr format-2 store is read-only here; convert it with `dp import dp-zarr`")
        return cls(group, path, mode, lock_fd)

    def close(self) -> None:
        """Release the writer lock (if held). Safe to call twice."""
        release_lock(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_lock_fd"):
            self.close()

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._ends)

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.path)!r}, episodes={len(self)}, frames={self.n_frames}, mode={self.mode!r})"

    @property
    def n_frames(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()

    def raw_episode_ends(self) -> np.ndarray:
        """``meta/episode_ends`` as stored, unchecked (:attr:`episode_ends` keeps only its consistent
        prefix): for importers that check a foreign store's structure before reading it."""
        return np.asarray(read_chunks(self._ends_array, slice(None), f"{self.path}: meta/episode_ends: cannot read"), dtype=np.int64)

    def raw_episode_meta(self, i: int) -> dict[str, Any]:
        """Row ``i`` of the metadata columns, whether or not episode ``i`` is in the consistent prefix
        (the companion of :meth:`raw_episode_ends`); absent fields are left out."""
        return {name: value for name in self.meta_keys if (value := self._meta_value(name, i)) is not None}

    @property
    def keys(self) -> list[str]:
        if self._arrays is not None:
            return sorted(self._arrays)
        return sorted(self._data.array_keys()) if self._data is not None else []

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    @property
    def zarr_format(self) -> int:
        return self._group.metadata.zarr_format

    @property
    def roles(self) -> dict[str, list[str]]:
        """Key roles: ``{"lowdim": [...], "image": [...], "action": [...]}`` (inferred if not declared)."""
        declared = self._group.attrs.get("roles") or {}
        inferred = infer_roles({k: self._data[k] for k in self.keys})
        return {role: list(declared.get(role, inferred[role])) for role in ("lowdim", "image", "action")}

    @property
    def discrete_dims(self) -> dict[str, list[int]]:
        return dict(self._group.attrs.get("discrete_dims") or {})

    @property
    def control_freq(self) -> float | None:
        return self._group.attrs.get("control_freq")

    @property
    def robot(self) -> str | None:
        return self._group.attrs.get("robot")

    def array(self, key: str) -> zarr.Array:
        """The zarr array behind a data key (for lazy, chunked reads)."""
        if self._arrays is not None and key in self._arrays:
            return self._arrays[key]
        if key not in self.keys:
            raise DpError(f"{self.path}: no data key {key!r} (keys: {', '.join(self.keys) or 'none'})")
        return self._data[key]

    def episode_bounds(self, i: int) -> tuple[int, int]:
        """Global frame range ``[start, stop)`` of episode ``i``."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: episode {i} out of range (store has {n})")
        i %= n
        return (int(self._ends[i - 1]) if i else 0), int(self._ends[i])

    def read(self, key: str, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` of one key, in global frame indices."""
        arr = self.array(key)
        chunk = arr.shards[0] if arr.shards else arr.chunks[0]
        first, last = start // chunk, max(start, stop - 1) // chunk
        return read_chunks(arr, slice(start, stop), f"{self.path}: data/{key}: cannot read frames [{start}, {stop})",
                           f"chunks {first}..{last} along time; ")

    def get_episode(self, i: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """All frames of episode ``i`` for the given keys (default: every key)."""
        start, stop = self.episode_bounds(i)
        return {k: self.read(k, start, stop) for k in (keys or self.keys)}

    def episode_meta(self, i: int) -> dict[str, Any]:
        """Per-episode metadata given at :meth:`add_episode` (absent keys are left out)."""
        self.episode_bounds(i)  # range check
        i %= len(self)
        return {name: value for name in self.meta_keys if (value := self._meta_value(name, i)) is not None}

    @property
    def meta_keys(self) -> list[str]:
        if self._meta_arrays is not None:
            return sorted(self._meta_arrays)
        return sorted(k for k in self._group["meta"].array_keys() if k != "episode_ends")

    def _meta_array(self, name: str) -> zarr.Array:
        if self._meta_arrays is not None:
            return self._meta_arrays[name]
        return self._group["meta"][name]

    def meta_column(self, name: str) -> list[Any]:
        """One metadata field for every episode (None where an episode lacks it)."""
        if name not in self.meta_keys:
            return [None] * len(self)
        arr = self._meta_array(name)
        kind = arr.attrs["kind"]
        values = [decode_meta(kind, arr.attrs, v) for v in read_chunks(arr, slice(0, len(self)), f"{self.path}: meta/{name}: cannot read")]
        return values + [None] * (len(self) - len(values))  # later episodes without this field

    def _meta_value(self, name: str, i: int) -> Any:
        arr = self._meta_array(name)
        if i >= arr.shape[0]:
            return None
        return decode_meta(arr.attrs["kind"], arr.attrs, read_chunks(arr, i, f"{self.path}: meta/{name}: cannot read entry {i}"))

    # ------------------------------------------------------------------ crash recovery
    def _valid_prefix(self, ends: np.ndarray) -> np.ndarray:
        """The committed episodes: strictly increasing ends, within the data actually present."""
        limit = min((self._data[k].shape[0] for k in self.keys), default=0)
        n = 0
        prev = 0
        for end in ends:
            if end <= prev or end > limit:
                break
            prev, n = end, n + 1
        if n < len(ends) and self.zarr_format == 2:
            warnings.warn(f"{self.path}: meta/episode_ends is inconsistent from entry {n} on (ends must increase and stay within the data); reading the first {n} episodes", stacklevel=3)
        return ends[:n].copy()

    def _drop_torn_tail(self, n_raw_ends: int) -> None:
        n, frames = len(self._ends), self.n_frames
        dropped = 0
        for key in self.keys:
            arr = self._data[key]
            if arr.shape[0] > frames:
                dropped = max(dropped, arr.shape[0] - frames)
                arr.resize((frames, *arr.shape[1:]))
        for name in self.meta_keys:
            arr = self._group["meta"][name]
            if arr.shape[0] > n:
                arr.resize((n, *arr.shape[1:]))
        if n_raw_ends > n:
            self._ends_array.resize((n,))
        for partial in self.path.rglob("*.partial"):  # temp files of writes cut short
            partial.unlink(missing_ok=True)
        if dropped or n_raw_ends > n:
            warnings.warn(f"{self.path}: dropped a torn write at the end ({dropped} frames of an incomplete episode)", stacklevel=3)
