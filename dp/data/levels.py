"""The two levels of a discrete action dimension (a gripper's -1/+1, or 0/1): numpy only, so that the
ONNX Runtime policy reads them without the store's dependencies."""

from __future__ import annotations

import numpy as np


def discrete_levels(lo: np.ndarray, hi: np.ndarray, dims: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) float32 of each discrete dimension in ``dims``: -1/+1 where the data's levels (its
    min ``lo`` and max ``hi``) are within -1/+1, else the data's own two levels."""
    low, high = np.full(len(dims), -1.0, np.float32), np.full(len(dims), 1.0, np.float32)
    for i, d in enumerate(dims):
        if not {float(lo[d]), float(hi[d])} <= {-1.0, 1.0}:
            low[i], high[i] = lo[d], hi[d]
    return low, high
