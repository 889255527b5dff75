"""The episode store: episodes of time-first arrays in a Zarr group, safe against crashes.

Layout (compatible with Diffusion Policy's replay buffer, see FORMATS.md §1)::

    store.zarr/
      data/<key>          (T_total, ...) all episodes concatenated
      meta/episode_ends   int64 cumulative exclusive ends; written LAST, it is the commit
      meta/<name>         one entry per episode: task, instruction, success, seed, ...
      zarr.json           root attrs: schema version, control frequency, robot, key roles

Crash safety rests on two facts: zarr's LocalStore writes every file atomically (temp file +
rename), and an episode becomes visible only when ``meta/episode_ends`` grows, after its data and
metadata are written. A writer killed mid-append leaves data (and metadata entries) past the last
end; on the next open for writing that torn tail is dropped, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from dp.data.shards import append_frames, shard_layout
from dp.errors import DpError

SCHEMA_VERSION = 1
LOCK_FILE = ".dp-writer.lock"
LOWDIM_CHUNK_BYTES = 2 << 20  # Diffusion Policy aims at ~2 MB chunks for low-dim keys
IMAGE_SHARD_BYTES = 4 << 20  # frames are one chunk each, grouped into ~4 MB shards
META_CHUNK = 4096
MISSING_INT = np.iinfo(np.int64).min


class StoreWriteError(DpError):
    """An OS error (disk full, file too large, I/O error) while writing; the store keeps its
    complete episodes and reopens intact (the cut write is a torn tail, dropped on the next open)."""


def os_reason(exc: OSError) -> str:
    """``No space left on device [ENOSPC]``: an OSError's reason in a few words."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} [{name}]" if name else text


def _codec(image: bool = False) -> BloscCodec:
    # images: lz4 encodes a camera frame ~10x faster than zstd for ~8% more bytes (collection and
    # import are bound by it); low-dim: zstd, as Diffusion Policy
    if image:
        return BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def _is_image(arr: np.ndarray) -> bool:
    return arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] in (1, 3, 4)


def infer_roles(arrays: dict[str, Any]) -> dict[str, list[str]]:
    """Guess key roles from arrays (or zarr arrays): uint8 (T,H,W,C) -> image, `action*` -> action."""
    roles: dict[str, list[str]] = {"lowdim": [], "image": [], "action": []}
    for key, arr in sorted(arrays.items()):
        is_image = (arr.dtype == np.uint8 or "img" in key or "image" in key) and len(arr.shape) == 4
        if key.startswith("action"):
            roles["action"].append(key)
        elif is_image:
            roles["image"].append(key)
        else:
            roles["lowdim"].append(key)
    return roles


class EpisodeStore:
    """Episodes in a Zarr group. Create with :meth:`create`, open with :meth:`open`."""

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
        raw_ends = np.asarray(self._ends_array[:], dtype=np.int64)
        self._ends = self._valid_prefix(raw_ends)
        if mode == "a":
            self._drop_torn_tail(len(raw_ends))
            self._arrays = {k: self._data[k] for k in self.keys}
            meta = self._group["meta"]
            self._meta_arrays = {k: meta[k] for k in meta.array_keys() if k != "episode_ends"}

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        control_freq: float | None = None,
        robot: str | None = None,
        roles: dict[str, list[str]] | None = None,
        discrete_dims: dict[str, list[int]] | None = None,
        attrs: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> EpisodeStore:
        """Create a new, empty zarr-format-3 store and open it for writing."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise DpError(f"{path}: already exists (open it with mode='a', or pass overwrite)")
        lock_fd = None
        try:
            if path.exists():
                lock_fd = _take_lock(path)
                _remove_store_contents(path)
            else:
                path.mkdir(parents=True)
                lock_fd = _take_lock(path)
            root = zarr.create_group(zarr.storage.LocalStore(path), zarr_format=3)  # not mode="w": it would delete the lock file
            root.attrs.update(
                {
                    "schema_version": SCHEMA_VERSION,
                    "control_freq": control_freq,
                    "robot": robot,
                    "roles": roles or {},
                    "discrete_dims": discrete_dims or {},
                    **(attrs or {}),
                }
            )
            root.create_group("data")
            root.create_group("meta").create_array(
                "episode_ends", shape=(0,), dtype="int64", chunks=(META_CHUNK,), fill_value=0
            )
        except OSError as exc:
            _release_lock(lock_fd)
            raise StoreWriteError(f"{path}: cannot create the store: {os_reason(exc)}") from exc
        return cls(root, path, "a", lock_fd)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> EpisodeStore:
        """Open an existing store: ``mode="r"`` to read (never blocked), ``"a"`` to append (exclusive)."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        if not path.is_dir():
            raise DpError(f"{path}: no episode store there (not a directory)")
        lock_fd = _take_lock(path) if mode == "a" else None
        try:
            group = zarr.open_group(zarr.storage.LocalStore(path, read_only=mode == "r"), mode="r" if mode == "r" else "r+")
        except Exception as exc:  # zarr raises several types for a missing or unreadable group
            _release_lock(lock_fd)
            raise DpError(f"{path}: not a readable Zarr group ({type(exc).__name__}: {exc})") from exc
        if mode == "a" and group.metadata.zarr_format != 3:
            _release_lock(lock_fd)
            raise DpError(f"{path}: a zarr format-2 store is read-only here; convert it with `dp import dp-zarr`")
        return cls(group, path, mode, lock_fd)

    def close(self) -> None:
        """Release the writer lock (if held); staged episodes not committed are dropped. Safe to call twice."""
        if hasattr(self, "_staged"):
            self.discard()
        _release_lock(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> EpisodeStore:
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
        return np.asarray(self._ends_array[:], dtype=np.int64)

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
        try:
            return arr[start:stop]
        except Exception as exc:  # a codec error means a corrupt chunk: say which
            chunk = arr.shards[0] if arr.shards else arr.chunks[0]
            first, last = start // chunk, max(start, stop - 1) // chunk
            raise DpError(
                f"{self.path}: data/{key}: cannot read frames [{start}, {stop}) "
                f"(chunks {first}..{last} along time; corrupt or truncated?): {type(exc).__name__}: {exc}"
            ) from exc

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
        values = [_decode_meta(kind, arr.attrs, v) for v in arr[: len(self)]]
        return values + [None] * (len(self) - len(values))  # later episodes without this field

    def _meta_value(self, name: str, i: int) -> Any:
        arr = self._meta_array(name)
        return _decode_meta(arr.attrs["kind"], arr.attrs, arr[i]) if i < arr.shape[0] else None

    # ------------------------------------------------------------------ writing
    def add_episode(self, data: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> int:
        """Append one episode, all or nothing; returns its index.

        Every key must have the same length T >= 1; after the first episode the key set, trailing
        shapes and dtypes are fixed. Data and metadata are written first, ``meta/episode_ends`` last.
        """
        return self.add_episodes([(data, meta)])[0]

    def add_episodes(self, episodes: Sequence[tuple[dict[str, np.ndarray], dict[str, Any] | None]]) -> list[int]:
        """Append several ``(data, meta)`` episodes with one commit; returns their indices.

        The same contract as :meth:`add_episode` for each episode, at the cost of one resize per
        array and one write of each metadata column and of ``meta/episode_ends`` for the whole
        batch instead of per episode. Every episode is validated before anything is written: one
        bad episode refuses the batch and leaves the store as it was.
        """
        if self.mode != "a":
            raise DpError(f"{self.path}: opened read-only; open with mode='a' to append")
        first = len(self) + len(self._staged)
        checked: list[tuple[dict[str, np.ndarray], dict[str, Any]]] = []
        reference: dict[str, np.ndarray] | None = None
        kinds = dict(self._staged_kinds)
        for j, (data, meta) in enumerate(episodes):
            arrays = self._validate_episode(data, first + j, reference)
            reference = reference or arrays
            meta = dict(meta or {})
            self._validate_meta(meta, first + j, kinds)
            checked.append((arrays, meta))
        with self._writing():
            indices = [self._stage(arrays, meta) for arrays, meta in checked]
            self.commit()
        return indices

    def stage_episode(self, data: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> int:
        """Validate one episode and write its image frames now; it becomes visible at :meth:`commit`.

        Returns the index it will have. For a writer that receives episodes one by one (an import)
        and commits every few: each image frame is compressed and written as it arrives, and the
        commit writes the low-dim data, the metadata and ``meta/episode_ends`` of all staged
        episodes at once. Staged episodes that are never committed (a crash, :meth:`discard`,
        :meth:`close`) are not in the store: their frames lie past the arrays' shapes, where the
        next append overwrites them. A bad episode raises DpError and stages nothing.
        """
        if self.mode != "a":
            raise DpError(f"{self.path}: opened read-only; open with mode='a' to append")
        index = len(self) + len(self._staged)
        arrays = self._validate_episode(data, index)
        meta = dict(meta or {})
        kinds = dict(self._staged_kinds)
        self._validate_meta(meta, index, kinds)
        self._staged_kinds = kinds
        with self._writing():
            return self._stage(arrays, meta)

    def _stage(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> int:
        if not self._arrays:
            self._create_data_arrays(arrays)
        start = self._staged_stop if self._staged else self.n_frames
        stop = start + len(next(iter(arrays.values())))
        lowdim = {}
        for key, value in arrays.items():
            layout = self._shard_layout(key)
            if layout is not None:
                append_frames(self.path / "data" / key, layout, start, value)
            else:
                lowdim[key] = value
        self._staged.append((lowdim, meta, stop))
        self._staged_stop = stop
        return len(self) + len(self._staged) - 1

    def commit(self) -> list[int]:
        """Make the staged episodes visible (the arrays' shapes, low-dim data and metadata first,
        ``meta/episode_ends`` last); returns their indices. A crash before the last write keeps a
        prefix of them, possibly empty, and never part of an episode."""
        if not self._staged:
            return []
        with self._writing():
            return self._commit()

    def _commit(self) -> list[int]:
        staged, self._staged, self._staged_kinds = self._staged, [], {}
        first, start, stop = len(self), self.n_frames, self._staged_stop
        for key, arr in self._arrays.items():
            arr.resize((stop, *arr.shape[1:]))
            if self._shard_layout(key) is None:
                parts = [lowdim[key] for lowdim, _, _ in staged]
                arr[start:stop] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self._write_meta_rows([meta for _, meta, _ in staged], first)
        ends = np.array([end for _, _, end in staged], dtype=np.int64)
        n = first + len(staged)
        self._ends_array.resize((n,))
        self._ends_array[first:n] = ends  # the commit
        self._ends = np.concatenate([self._ends, ends])
        return list(range(first, n))

    def discard(self) -> None:
        """Drop the staged episodes (nothing of them is visible)."""
        self._staged, self._staged_kinds = [], {}

    @contextlib.contextmanager
    def _writing(self):
        """Turn an OSError of a write (disk full, file too large) into a one-line StoreWriteError that
        says what the store still holds; the staged episodes are dropped."""
        try:
            yield
        except OSError as exc:
            self.discard()
            n = len(self)
            holds = f"episodes 0..{n - 1} ({n} complete)" if n else "no complete episodes"
            raise StoreWriteError(
                f"{self.path}: write failed: {os_reason(exc)}; the store still holds {holds} and reopens intact, "
                "the episodes being written were dropped"
            ) from exc

    def _shard_layout(self, key: str) -> dict | None:
        if key not in self._layouts:
            self._layouts[key] = shard_layout(self.path / "data" / key)
        return self._layouts[key]

    def set_episode_meta(self, i: int, meta: dict[str, Any]) -> None:
        """Add or change metadata fields of an existing episode (e.g. a language embedding computed later)."""
        if self.mode != "a":
            raise DpError(f"{self.path}: opened read-only; open with mode='a' to change metadata")
        self.episode_bounds(i)  # range check
        i %= len(self)
        self._validate_meta(meta, i)
        with self._writing():
            self._write_meta_rows([meta], i)

    def set_attrs(self, **attrs: Any) -> None:
        """Update root attributes (control frequency, robot, roles, cached stats...)."""
        if self.mode != "a":
            raise DpError(f"{self.path}: opened read-only; open with mode='a' to change attributes")
        self._group.attrs.update(attrs)

    def _validate_episode(
        self, data: dict[str, np.ndarray], index: int, reference: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """The episode's arrays (cast to the store's dtypes), or DpError. ``reference``: the batch's
        first episode, which fixes keys, shapes and dtypes when the store has no arrays yet."""
        where = f"{self.path}: episode {index}"
        if not data:
            raise DpError(f"{where}: no data given")
        arrays = {k: np.asarray(v) for k, v in data.items()}
        stored = {k: self.array(k) for k in self.keys} or (reference or {})
        existing = set(stored)
        if existing and set(arrays) != existing:
            missing, extra = sorted(existing - set(arrays)), sorted(set(arrays) - existing)
            raise DpError(f"{where}: keys differ from the store's (missing: {missing or 'none'}, unexpected: {extra or 'none'})")
        lengths = {k: (v.shape[0] if v.ndim else 0) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise DpError(f"{where}: keys have different lengths {lengths}; every key needs one entry per frame")
        if next(iter(lengths.values())) == 0:
            raise DpError(f"{where}: episode has no frames")
        image_keys = set(self._group.attrs.get("roles", {}).get("image", []))
        for key, value in arrays.items():
            if "/" in key or not key:
                raise DpError(f"{where}: invalid key name {key!r}")
            if key in image_keys and not _is_image(value):
                raise DpError(f"{where}: image key {key!r} must be uint8 (T, H, W, C); got {value.dtype} {value.shape}")
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                bad = int(np.argwhere(~np.isfinite(value.reshape(len(value), -1)).all(axis=1))[0, 0])
                raise DpError(f"{where}: key {key!r} holds NaN or inf (first at frame {bad})")
            if value.dtype.kind not in "fiub":
                raise DpError(f"{where}: key {key!r} has unsupported dtype {value.dtype}")
            if key in existing:
                arr = stored[key]
                if tuple(value.shape[1:]) != tuple(arr.shape[1:]):
                    raise DpError(f"{where}: key {key!r} has frame shape {value.shape[1:]}, store has {tuple(arr.shape[1:])}")
                target = np.dtype(arr.dtype)
                if value.dtype != target:
                    if not np.can_cast(value.dtype, target, casting="same_kind"):
                        raise DpError(f"{where}: key {key!r} has dtype {value.dtype}, store has {target}")
                    arrays[key] = value.astype(target)
        return arrays

    def _validate_meta(self, meta: dict[str, Any], index: int, batch: dict[str, tuple[str, int | None]] | None = None) -> None:
        """DpError unless every value fits its column; ``batch`` (name -> kind, vector length) carries
        the columns that earlier episodes of the same batch create."""
        batch = {} if batch is None else batch
        for name, value in meta.items():
            kind = _meta_kind(value)
            if kind is None or name == "episode_ends" or "/" in name:
                raise DpError(
                    f"{self.path}: episode {index}: metadata {name!r} must be str, int, float, bool or a 1-D float array; got {type(value).__name__}"
                )
            if kind == "vector" and not np.isfinite(np.asarray(value, dtype=np.float64)).all():
                raise DpError(f"{self.path}: episode {index}: metadata {name!r} holds NaN or inf")
            if name in batch:
                have, length = batch[name]
            elif name in self.meta_keys:
                arr = self._meta_array(name)
                have, length = arr.attrs["kind"], (arr.shape[1] if arr.ndim > 1 else None)
            else:
                batch[name] = (kind, len(value) if kind == "vector" else None)
                continue
            if have != kind and not (have == "float" and kind == "int"):
                raise DpError(f"{self.path}: episode {index}: metadata {name!r} is {kind}, earlier episodes have {have}")
            if kind == "vector" and length != len(value):
                raise DpError(f"{self.path}: episode {index}: metadata {name!r} has length {len(value)}, earlier episodes have {length}")
            batch.setdefault(name, (have, length))

    def _create_data_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        data = self._group.require_group("data")
        roles = dict(self._group.attrs.get("roles") or {})
        inferred = infer_roles(arrays)
        for role in ("lowdim", "image", "action"):
            declared = roles.get(role, [])
            roles[role] = declared + [k for k in inferred[role] if k not in declared and not _in_any(roles, k)]
        for key, value in arrays.items():
            frame_shape, frame_bytes = value.shape[1:], max(1, value[0].nbytes)
            if _is_image(value):
                per_shard = max(1, min(256, IMAGE_SHARD_BYTES // frame_bytes))
                data.create_array(
                    key, shape=(0, *frame_shape), dtype=value.dtype, chunks=(1, *frame_shape),
                    shards=(per_shard, *frame_shape), compressors=_codec(image=True),
                )
            else:
                per_chunk = max(1, LOWDIM_CHUNK_BYTES // frame_bytes)
                data.create_array(key, shape=(0, *frame_shape), dtype=value.dtype, chunks=(per_chunk, *frame_shape), compressors=_codec())
        self._group.attrs["roles"] = roles
        self._data = data
        self._arrays = {k: data[k] for k in arrays}

    def _write_meta_rows(self, metas: list[dict[str, Any]], first: int) -> None:
        """Write the (validated) metadata of episodes ``first, first + 1, ...``: one resize and one
        write per column. Rows a column had no value for (here or, for a column that starts late,
        before) are written as missing, so nothing left behind by a torn write can show through."""
        group = self._group["meta"]
        names = sorted({name for meta in metas for name in meta})
        for name in names:
            if name not in self.meta_keys:
                kind = _meta_kind(next(meta[name] for meta in metas if name in meta))
                dtype, fill = {
                    "str": ("int32", -1), "bool": ("int8", -1), "int": ("int64", MISSING_INT),
                    "float": ("float64", np.nan), "vector": ("float32", np.nan),
                }[kind]
                value = next(meta[name] for meta in metas if name in meta)
                shape = (len(value),) if kind == "vector" else ()
                arr = group.create_array(name, shape=(0, *shape), dtype=dtype, chunks=(META_CHUNK, *shape), fill_value=fill)
                arr.attrs.update({"kind": kind, "vocab": []} if kind == "str" else {"kind": kind})
                if self._meta_arrays is not None:
                    self._meta_arrays[name] = arr
            arr = self._meta_array(name)
            kind = arr.attrs["kind"]
            old_len, stop = arr.shape[0], first + len(metas)
            lo = min(old_len, first)  # rows [lo, first) are gaps (missing) if the column starts late
            rows = np.full((stop - lo, *arr.shape[1:]), arr.fill_value, dtype=arr.dtype)
            if old_len > first:  # rows already there (set_episode_meta): keep the values not given
                rows[: min(old_len, stop) - first] = arr[first : min(old_len, stop)]
            if kind == "str":
                vocab = list(arr.attrs["vocab"])
                index = self._vocab_index.get(name)
                if index is None or len(index) != len(vocab):
                    index = {v: j for j, v in enumerate(vocab)}
                grew = False
                for meta in metas:
                    if name in meta and meta[name] not in index:
                        index[meta[name]] = len(vocab)
                        vocab.append(meta[name])
                        grew = True
                if grew:
                    arr.attrs["vocab"] = vocab  # written before the indices that refer to it
                self._vocab_index[name] = index
            for j, meta in enumerate(metas):
                if name in meta:
                    value = index[meta[name]] if kind == "str" else meta[name]
                    rows[first + j - lo] = np.asarray(value, dtype=arr.dtype)
            if arr.shape[0] < stop:
                arr.resize((stop, *arr.shape[1:]))
            arr[lo : lo + len(rows)] = rows

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


def _in_any(roles: dict[str, list[str]], key: str) -> bool:
    return any(key in keys for keys in roles.values())


def _meta_kind(value: Any) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, (np.ndarray, list, tuple)) and np.asarray(value).ndim == 1 and len(value):
        return "vector" if np.asarray(value).dtype.kind in "fiu" else None
    return None


def _decode_meta(kind: str, attrs: Any, raw: Any) -> Any:
    if kind == "str":
        return None if raw < 0 else attrs["vocab"][int(raw)]
    if kind == "bool":
        return None if raw < 0 else bool(raw)
    if kind == "int":
        return None if raw == MISSING_INT else int(raw)
    if kind == "float":
        return None if math.isnan(raw) else float(raw)
    raw = np.asarray(raw, dtype=np.float32)
    return None if np.isnan(raw).all() else raw


def _take_lock(path: Path) -> int:
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DpError(f"{path}: another process is writing to this store (writer lock held); readers may still open it with mode='r'") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid()}).encode())
    return fd


def _release_lock(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)  # closing the descriptor releases the flock
        except OSError:
            pass


def _remove_store_contents(path: Path) -> None:
    for child in path.iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
