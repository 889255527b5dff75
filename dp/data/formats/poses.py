"""Orientation conversions the exporters need to fill a format's derived fields.

Quaternions follow robosuite's (x, y, z, w) order.
"""

from __future__ import annotations

import numpy as np


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """(..., 4) xyzw -> (..., 3) axis * angle, by robosuite's ``quat2axisangle`` (how LIBERO's
    ``ee_ori`` was made): angle = 2 acos(w) in [0, 2 pi], zero vector for the identity."""
    quat = np.asarray(quat, dtype=np.float64)
    w = np.clip(quat[..., 3], -1.0, 1.0)
    den = np.sqrt(1.0 - w * w)
    scale = np.where(den > 1e-10, 2.0 * np.arccos(w) / np.where(den > 1e-10, den, 1.0), 0.0)
    return quat[..., :3] * scale[..., None]


def quat_to_euler_xyz(quat: np.ndarray) -> np.ndarray:
    """(..., 4) xyzw -> (..., 3) extrinsic x-y-z Euler angles (PyBullet's, as in CALVIN's tcp orientation)."""
    from scipy.spatial.transform import Rotation  # only exports need scipy; keep imports light

    quat = np.asarray(quat, dtype=np.float64)
    flat = quat.reshape(-1, 4)
    norms = np.linalg.norm(flat, axis=1)
    safe = np.where(norms[:, None] > 0, flat, np.array([0.0, 0.0, 0.0, 1.0]))  # a zero quaternion means "unknown": identity
    return Rotation.from_quat(safe).as_euler("xyz").reshape(*quat.shape[:-1], 3)


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi
