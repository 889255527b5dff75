"""Writing a store: creating it and appending episodes, all or nothing, with metadata."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from dp.data.shards import append_frames, shard_layout
from dp.data.store.layout import (
    IMAGE_SHARD_BYTES,
    LOWDIM_CHUNK_BYTES,
    META_CHUNK,
    MISSING_INT,
    SCHEMA_VERSION,
    StoreWriteError,
    blosc_codec,
    in_any_role,
    infer_roles,
    is_image,
    meta_kind,
    os_reason,
    remove_store_contents,
    take_lock,
)
from dp.data.store.reading import StoreReader
from dp.errors import DpError
from dp.files import release_lock


class EpisodeStore(StoreReader):
    """Episodes in a Zarr group. Create with :meth:`create`, open with :meth:`open`."""

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
                lock_fd = take_lock(path)
                remove_store_contents(path)
            else:
                path.mkdir(parents=True)
                lock_fd = take_lock(path)
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
            release_lock(lock_fd)
            raise StoreWriteError(f"{path}: cannot create the store: {os_reason(exc)}") from exc
        return cls(root, path, "a", lock_fd)

    def close(self) -> None:
        """Release the writer lock (if held); staged episodes not committed are dropped. Safe to call twice."""
        if hasattr(self, "_staged"):
            self.discard()
        super().close()

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
            if key in image_keys and not is_image(value):
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
            kind = meta_kind(value)
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
            roles[role] = declared + [k for k in inferred[role] if k not in declared and not in_any_role(roles, k)]
        for key, value in arrays.items():
            frame_shape, frame_bytes = value.shape[1:], max(1, value[0].nbytes)
            if is_image(value):
                per_shard = max(1, min(256, IMAGE_SHARD_BYTES // frame_bytes))
                data.create_array(
                    key, shape=(0, *frame_shape), dtype=value.dtype, chunks=(1, *frame_shape),
                    shards=(per_shard, *frame_shape), compressors=blosc_codec(image=True),
                )
            else:
                per_chunk = max(1, LOWDIM_CHUNK_BYTES // frame_bytes)
                data.create_array(key, shape=(0, *frame_shape), dtype=value.dtype, chunks=(per_chunk, *frame_shape), compressors=blosc_codec())
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
                kind = meta_kind(next(meta[name] for meta in metas if name in meta))
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
