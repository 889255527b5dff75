"""Hostile targets for attacks on the workspace box, shared by the box tests and ``bench/abuse_box.py``."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from dp.deploy.safety import Limits


def flipped(quat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``quat`` turned half a turn about a random axis."""
    axis = rng.normal(size=3)
    return (Rotation.from_rotvec(np.pi * axis / np.linalg.norm(axis)) * Rotation.from_quat(quat)).as_quat()


def beyond_a_wall(limits: Limits, rng: np.random.Generator) -> np.ndarray:
    """A point half a metre beyond a random face of the box, elsewhere anywhere within the box."""
    point = rng.uniform(limits.box_min, limits.box_max)
    axis = rng.integers(3)
    point[axis] = limits.box_max[axis] + 0.5 if rng.random() < 0.5 else limits.box_min[axis] - 0.5
    return point
