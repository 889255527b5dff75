"""Array conversions every importer applies: images to upright uint8 (T, H, W, C), low-dim to float32."""

from __future__ import annotations

import numpy as np

from dp.data.formats.cards import KeySpec
from dp.data.formats.workers import cv2_module
from dp.errors import DpError

Episode = dict[str, np.ndarray]  # arrays by our key, (T, ...) each: what every decode job returns


def to_image(arr: np.ndarray, where: str, *, size: int | None = None, flip: bool = False) -> np.ndarray:
    """(T, H, W, C) uint8, rows flipped if ``flip``, resized to ``size`` x ``size`` if given.

    Float images must hold 0..255 (Diffusion Policy's convention); they are rounded to uint8.
    """
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise DpError(f"{where}: expected images (T, H, W, C) with C in 1, 3, 4; got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or arr.min(initial=0) < -0.5 or arr.max(initial=0) > 255.5:
            raise DpError(f"{where}: float images must hold finite values in 0..255 (got {arr.min():.3g}..{arr.max():.3g})")
        arr = np.rint(arr).clip(0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise DpError(f"{where}: images must be uint8 (or float 0..255), got {arr.dtype}")
    if flip:
        arr = arr[:, ::-1]
    if size is not None and arr.shape[1:3] != (size, size):
        channels = arr.shape[-1]
        cv2 = cv2_module()
        arr = np.stack([cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA).reshape(size, size, channels) for frame in arr])
    return np.ascontiguousarray(arr)


def to_lowdim(arr: np.ndarray, where: str) -> np.ndarray:
    """float32 (the sources hold float32 or float64); non-numeric data is an error."""
    if arr.dtype.kind not in "fiub":
        raise DpError(f"{where}: expected numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def finish(spec: KeySpec, arr: np.ndarray, where: str, *, image_size: int | None = None, flip: bool = False) -> np.ndarray:
    """Apply the card entry's role (image / low-dim) and ``negate_dims`` to one key's frames."""
    if spec.role == "image":
        return to_image(arr, where, size=image_size, flip=flip)
    out = to_lowdim(arr, where)
    if spec.negate_dims:
        out = out.copy()
        out[..., list(spec.negate_dims)] *= -1
    return out
