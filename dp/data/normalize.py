"""Per-key normalisation: min-max to [-1, 1] per dimension; discrete dimensions at their two levels.

A discrete dimension (a gripper open/closed) must hold two levels in the data. At -1/+1 it passes
through unchanged; at other levels (0/1, say) it is mapped min-max like the others, so the model
always sees -1/+1 and the runtimes snap its output back to the data's levels
(:func:`dp.data.levels.discrete_levels`).

Statistics are computed in one chunked pass over a store, cached in the store's root attributes
(keyed by the frame count they were computed on) and saved inside every checkpoint as safetensors.
Each key's map is affine (:meth:`Normalizer.affine`); :func:`apply_affine` and :func:`invert_affine`
are its one implementation, called by the training windows here and by the model's
:class:`dp.models.normalization.Normalization` (torch runtime and ONNX export).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from dp.data.levels import discrete_levels
from dp.data.store import EpisodeStore
from dp.errors import DpError

STAT_NAMES = ("min", "max", "mean", "std", "count")
MIN_RANGE = 1e-6  # dimensions flatter than this are centred, not scaled


def compute_stats(store: EpisodeStore, key: str, chunk_frames: int = 65536) -> dict[str, np.ndarray]:
    """min, max, mean, std (per dimension) and count of one low-dim key over the store's committed frames."""
    n = store.n_frames
    if n == 0:
        raise DpError(f"{store.path}: no frames to compute statistics of {key!r} from")
    lo = hi = None
    total = total_sq = 0.0
    for start in range(0, n, chunk_frames):
        x = store.read(key, start, min(n, start + chunk_frames)).astype(np.float64)
        x = x.reshape(len(x), -1)
        lo = x.min(0) if lo is None else np.minimum(lo, x.min(0))
        hi = x.max(0) if hi is None else np.maximum(hi, x.max(0))
        total = total + x.sum(0)
        total_sq = total_sq + (x * x).sum(0)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
    return {"min": lo, "max": hi, "mean": mean, "std": std, "count": np.array([n], dtype=np.float64)}


def store_stats(store: EpisodeStore, keys: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Statistics of ``keys``, from the store's cache when it is fresh; refreshes the cache if writable."""
    cached = store.attrs.get("stats") or {}
    fresh = cached.get("n_frames") == store.n_frames
    out, changed = {}, False
    for key in keys:
        if fresh and key in cached.get("keys", {}):
            out[key] = {k: np.asarray(v, dtype=np.float64) for k, v in cached["keys"][key].items()}
        else:
            out[key], changed = compute_stats(store, key), True
    if changed and store.mode == "a":
        previous = cached.get("keys", {}) if fresh else {}
        serial = {k: {s: v.tolist() for s, v in st.items()} for k, st in out.items()}
        store.set_attrs(stats={"n_frames": store.n_frames, "keys": {**previous, **serial}})
    return out


def pad_stats(stats: dict[str, np.ndarray], width: int) -> dict[str, np.ndarray]:
    """The statistics of a vector key zero-padded to ``width`` (the padding is a constant 0)."""
    extra = width - len(stats["min"])
    return {k: v if k == "count" else np.pad(v, (0, max(0, extra))) for k, v in stats.items()}


def apply_affine(x: Any, scale: Any, offset: Any) -> Any:
    """Raw values -> normalised: ``x * scale + offset`` (numpy arrays or torch tensors alike)."""
    return x * scale + offset


def invert_affine(x: Any, scale: Any, offset: Any) -> Any:
    """Normalised values -> raw: ``(x - offset) / scale``."""
    return (x - offset) / scale


def check_two_levels(stores: list[EpisodeStore], key: str, dims: list[int], chunk_frames: int = 65536) -> None:
    """A DpError naming the key and dimension when a discrete dimension holds more than two values
    over ``stores`` together (one pass over the key)."""
    seen: dict[int, set[float]] = {d: set() for d in dims}
    for store in stores:
        for start in range(0, store.n_frames, chunk_frames):
            x = store.read(key, start, min(store.n_frames, start + chunk_frames))
            x = x.reshape(len(x), -1)
            for d in (d for d in dims if d < x.shape[1]):
                seen[d].update(np.unique(x[:, d]).tolist())
                if len(seen[d]) > 2:
                    found = ", ".join(f"{v:g}" for v in sorted(seen[d])[:5])
                    raise DpError(f"{store.path}: {key!r} dimension {d} is declared discrete (two levels, such as a gripper's "
                                  f"-1/+1 or 0/1) but the data holds {found}{', ...' if len(seen[d]) > 5 else ''}; if it is "
                                  "continuous, remove it from the dataset card's discrete_dims and import again")


def merge_stats(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Combine the statistics of one key over several stores."""
    count = sum(float(p["count"][0]) for p in parts)
    mean = sum(p["mean"] * p["count"][0] for p in parts) / count
    second = sum((p["std"] ** 2 + p["mean"] ** 2) * p["count"][0] for p in parts) / count
    return {
        "min": np.min([p["min"] for p in parts], axis=0),
        "max": np.max([p["max"] for p in parts], axis=0),
        "mean": mean,
        "std": np.sqrt(np.maximum(second - mean * mean, 0.0)),
        "count": np.array([count]),
    }


class Normalizer:
    """Maps each key's values to [-1, 1] per dimension and back; discrete dimensions are untouched."""

    def __init__(self, stats: dict[str, dict[str, np.ndarray]], discrete_dims: dict[str, list[int]] | None = None):
        self.stats = {k: {s: np.asarray(v, dtype=np.float64) for s, v in st.items()} for k, st in stats.items()}
        self.discrete_dims = {k: sorted(int(d) for d in v) for k, v in (discrete_dims or {}).items()}
        self._affine = {k: self._make_affine(k) for k in self.stats}
        self._torch_cache: dict[tuple, Any] = {}

    @classmethod
    def fit(
        cls,
        stores: list[EpisodeStore],
        keys: list[str],
        discrete_dims: dict[str, list[int]] | None = None,
        widths: dict[str, int] | None = None,
    ) -> Normalizer:
        """Statistics of ``keys`` over all ``stores`` (one pass each, or their cached stats); keys in
        ``widths`` are vectors zero-padded to that width (``data.pad_lowdim``)."""
        widths = widths or {}
        per_store = [store_stats(s, keys) for s in stores]
        stats = {k: merge_stats([pad_stats(p[k], widths[k]) if k in widths else p[k] for p in per_store]) for k in keys}
        if discrete_dims is None:
            discrete_dims = {}
            for s in stores:
                for k, dims in s.discrete_dims.items():
                    if k in keys:
                        discrete_dims[k] = sorted(set(discrete_dims.get(k, [])) | set(dims))
        for k, dims in discrete_dims.items():
            check_two_levels(stores, k, [d for d in dims if d < len(stats[k]["min"])])
        return cls(stats, discrete_dims)

    def discrete_levels(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of ``key``'s discrete dimensions, in the order of ``discrete_dims[key]``."""
        return discrete_levels(self.stats[key]["min"], self.stats[key]["max"], self.discrete_dims.get(key, []))

    @property
    def keys(self) -> list[str]:
        return sorted(self.stats)

    def _make_affine(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.stats[key]["min"], self.stats[key]["max"]
        span = hi - lo
        flat = span < MIN_RANGE
        scale = np.where(flat, 1.0, 2.0 / np.where(flat, 1.0, span))
        offset = np.where(flat, -(hi + lo) / 2.0, -1.0 - lo * scale)
        dims = self.discrete_dims.get(key, [])
        for d in dims:
            if d >= len(scale):
                raise DpError(f"normalizer: discrete dimension {d} of {key!r} is out of range (key has {len(scale)} dims)")
        low, high = discrete_levels(lo, hi, dims)
        for d, a, b in zip(dims, low, high):
            if (a, b) == (-1.0, 1.0):  # -1/+1 passes through; other levels are mapped min-max (above) to -1/+1
                scale[d], offset[d] = 1.0, 0.0
        return scale.astype(np.float32), offset.astype(np.float32)

    def affine(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(scale, offset)`` float32 of ``key``'s map: normalised = raw * scale + offset."""
        if key not in self._affine:
            raise DpError(f"normalizer: no statistics for key {key!r} (has: {', '.join(self.keys)})")
        return self._affine[key]

    def _params(self, key: str, like: Any) -> tuple[Any, Any]:
        scale, offset = self.affine(key)
        if isinstance(like, np.ndarray):
            return scale, offset
        cache_key = (key, like.device, like.dtype)
        if cache_key not in self._torch_cache:
            import torch

            self._torch_cache[cache_key] = tuple(torch.as_tensor(a, device=like.device, dtype=like.dtype) for a in (scale, offset))
        return self._torch_cache[cache_key]

    def normalize(self, key: str, x: Any) -> Any:
        """Raw values -> [-1, 1] (numpy array or torch tensor; last axis = dimensions)."""
        return apply_affine(x, *self._params(key, x))

    def unnormalize(self, key: str, x: Any) -> Any:
        """[-1, 1] -> raw values."""
        return invert_affine(x, *self._params(key, x))

    # ------------------------------------------------------------------ persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat ``{"<key>/<stat>": array}`` (safetensors-ready); discrete dims as ``<key>/discrete``."""
        out = {f"{k}/{s}": np.ascontiguousarray(v) for k, st in self.stats.items() for s, v in st.items()}
        for k, dims in self.discrete_dims.items():
            out[f"{k}/discrete"] = np.asarray(dims, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Normalizer:
        stats: dict[str, dict[str, np.ndarray]] = {}
        discrete: dict[str, list[int]] = {}
        for name, value in arrays.items():
            key, _, stat = name.rpartition("/")
            if stat == "discrete":
                discrete[key] = value.tolist()
            else:
                stats.setdefault(key, {})[stat] = value
        for key, st in stats.items():
            missing = [s for s in ("min", "max") if s not in st]
            if missing:
                raise DpError(f"normalizer: key {key!r} lacks statistics {missing}")
        return cls(stats, discrete)

    def save(self, path: str | Path) -> None:
        save_file(self.to_arrays(), str(path))

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        path = Path(path)
        if not path.is_file():
            raise DpError(f"{path}: normalizer file not found")
        try:
            arrays = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise DpError(f"{path}: not a readable safetensors normalizer ({exc})") from exc
        return cls.from_arrays(arrays)
