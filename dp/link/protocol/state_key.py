"""``Info.state_key``: how a robot's State reads as one low-dim key of its policies' data, and how
their joint actions come back, in that data's units.

A LeRobot arm (dp/deploy/drivers/lerobot.py) announces ``{"key": "state", "joint_scale":
57.29..., "gripper": [100, 0]}``: the key ``state`` (what `dp import lerobot` names LeRobot's
``observation.state``) holds the joints times ``joint_scale`` (degrees per radian), then the gripper
on the data's scale (``gripper[0]`` for dp's -1, open; ``gripper[1]`` for +1, closed). A policy's
joint actions in that layout go back as radians and dp's -1 .. +1, the scale of every Command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dp.link.protocol.schema import ProtocolError

SCALES = (1e-6, 1e6)  # joint units from a million times the robot's to a millionth of it: conversions stay finite


@dataclass(frozen=True)
class StateKey:
    """The observation key ``key``: the joints times ``joint_scale``, then the gripper with
    ``gripper_open`` for dp's -1 and ``gripper_closed`` for +1."""

    key: str
    joint_scale: float
    gripper_open: float
    gripper_closed: float

    def to_wire(self) -> dict:
        return {"key": self.key, "joint_scale": self.joint_scale, "gripper": [self.gripper_open, self.gripper_closed]}

    @classmethod
    def from_wire(cls, value: Any, name: str) -> StateKey:
        if not isinstance(value, dict):
            raise ProtocolError(name, "expected a map {key, joint_scale, gripper}")
        key, scale, gripper = value.get("key"), value.get("joint_scale"), value.get("gripper")
        if not (isinstance(key, str) and 0 < len(key) <= 64):
            raise ProtocolError(f"{name}.key", f"expected an observation key of 1..64 characters, got {key!r}")
        if not (type(scale) in (int, float) and SCALES[0] <= scale <= SCALES[1]):
            raise ProtocolError(f"{name}.joint_scale", f"expected a number in [{SCALES[0]:g}, {SCALES[1]:g}], got {scale!r}")
        if not (isinstance(gripper, list) and len(gripper) == 2 and all(type(v) in (int, float) and math.isfinite(v) for v in gripper)
                and gripper[0] != gripper[1]):
            raise ProtocolError(f"{name}.gripper", f"expected [open, closed]: two different finite numbers, got {gripper!r}")
        return cls(key, float(scale), float(gripper[0]), float(gripper[1]))

    def observe(self, q: np.ndarray, gripper: np.ndarray) -> np.ndarray:
        """The key's value (float32) for joints ``q`` (the robot's units) and ``gripper`` (dp's -1 .. +1)."""
        return np.concatenate([self.joints_to_data(q), self.gripper_to_data(gripper)]).astype(np.float32)

    def joints_to_data(self, q: np.ndarray) -> np.ndarray:
        """Joint values in the robot's units -> the data's."""
        return q * self.joint_scale

    def joints_from_data(self, values: np.ndarray) -> np.ndarray:
        """Joint values in the data's units -> the robot's."""
        return values / self.joint_scale

    def gripper_to_data(self, gripper: np.ndarray) -> np.ndarray:
        """dp's -1 (open) .. +1 (closed) -> the data's scale."""
        return self.gripper_open + (gripper + 1.0) / 2.0 * (self.gripper_closed - self.gripper_open)

    def gripper_from_data(self, values: np.ndarray) -> np.ndarray:
        """Gripper values on the data's scale -> dp's -1 (open) .. +1 (closed), not clamped (the controller clamps)."""
        return (values - self.gripper_open) / (self.gripper_closed - self.gripper_open) * 2.0 - 1.0  # finite for any finite value

    def describe(self, n_joints: int) -> str:
        """The key in words, e.g. ``state (5 joints x 57.3, then the gripper: open 100, closed 0)``."""
        return (f"{self.key} ({n_joints} joints x {self.joint_scale:.4g}, then the gripper: "
                f"open {self.gripper_open:g}, closed {self.gripper_closed:g})")
