"""Checks of what a caller hands a policy runtime: one raw observation, and optional sampler noise.

Numpy only (no torch here: robots import this).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dp.errors import DpError


def check_observation(
    obs: Any, lowdim_keys: list[str], image_keys: list[str], shapes: dict[str, list[int]], pad_lowdim: bool = False
) -> dict[str, np.ndarray]:
    """One time step of raw observations, checked and converted: low-dim float32 in the trained
    shape, images uint8 HxWxC. ``pad_lowdim`` (a policy trained with ``data.pad_lowdim``): narrower
    low-dim vectors are zero-padded at the end, as in training. A DpError names the key and what was
    expected."""
    if not isinstance(obs, dict):
        raise DpError(f"observation must be a dict of key -> array, got {type(obs).__name__}")
    out = {}
    for key in [*lowdim_keys, *image_keys]:
        if key not in obs:
            raise DpError(f"observation has no key {key!r}; the policy needs {[*lowdim_keys, *image_keys]} (got {sorted(obs)})")
        value = np.asarray(obs[key])
        expected = tuple(int(s) for s in shapes[key])
        if key in image_keys:
            if value.dtype != np.uint8 or value.shape != expected:
                raise DpError(f"observation {key!r}: expected a uint8 image of shape {expected}, got {value.dtype} {value.shape}")
        else:
            if value.dtype.kind not in "fiu":
                raise DpError(f"observation {key!r}: expected numbers (float), got dtype {value.dtype}")
            if pad_lowdim and len(expected) == 1 and value.ndim <= 1 and value.size < expected[0]:
                value = np.pad(value.reshape(-1), (0, expected[0] - value.size))
            if value.size != int(np.prod(expected)):
                raise DpError(f"observation {key!r}: expected shape {expected}, got {value.shape}")
            value = value.reshape(expected).astype(np.float32)
            if not np.isfinite(value).all():
                raise DpError(f"observation {key!r} holds NaN or inf: {value.tolist()}")
        out[key] = value
    return out


def check_noise(noise: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Caller-given sampler noise as float32 of ``shape`` (any layout with as many finite values)."""
    value = np.asarray(noise, dtype=np.float32)
    if value.size != int(np.prod(shape)):
        raise DpError(f"noise: expected {int(np.prod(shape))} values (shape {shape}), got shape {value.shape}")
    if not np.isfinite(value).all():
        raise DpError("noise holds NaN or inf")
    return value.reshape(shape)
