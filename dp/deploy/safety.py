"""Clamping: every control period's motion is forced inside the robot file's limits before it
reaches the driver. Nothing is executed as sent if it leaves the limits; what was clamped is
reported (``State.faults`` holds ``clamped:<what>`` for that tick)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from dp.deploy.drivers.base import ArmTarget
from dp.deploy.robot_config import LimitsConfig


def rotation_delta(quat_from: np.ndarray, quat_to: np.ndarray) -> np.ndarray:
    """Axis-angle (reference-frame axes) of the rotation taking orientation ``from`` to ``to``
    (quaternions x, y, z, w): ``R_to = exp(delta) @ R_from``, as OSC_POSE applies deltas."""
    return (Rotation.from_quat(quat_to) * Rotation.from_quat(quat_from).inv()).as_rotvec()


@dataclass
class Limits:
    """The robot file's limits at one control rate."""

    box_min: np.ndarray
    box_max: np.ndarray
    step_translation: float  # metres per control step (speed limit included)
    step_rotation: float  # radians per control step
    joint_min: np.ndarray  # empty: no joint limits configured
    joint_max: np.ndarray
    step_joint: float  # radians per control step

    @classmethod
    def from_config(cls, limits: LimitsConfig, control_hz: float) -> Limits:
        return cls(
            box_min=np.asarray(limits.workspace_min, float), box_max=np.asarray(limits.workspace_max, float),
            step_translation=limits.step_translation(control_hz), step_rotation=limits.step_rotation(control_hz),
            joint_min=np.asarray(limits.joint_min, float), joint_max=np.asarray(limits.joint_max, float),
            step_joint=limits.max_joint_speed / control_hz,
        )

    def clamp_delta(self, ee_pos: np.ndarray, dpos: np.ndarray, drot: np.ndarray, gripper: float) -> tuple[ArmTarget, list[str]]:
        """Clamp one step: target position into the workspace box, then translation and rotation
        to their per-step limits (direction kept), gripper into [-1, 1]."""
        clamped = []
        target = np.clip(ee_pos + dpos, self.box_min, self.box_max)
        if not np.allclose(target, ee_pos + dpos, rtol=0.0, atol=1e-12):
            clamped.append("workspace")
        dpos = target - ee_pos
        norm = float(np.linalg.norm(dpos))
        if norm > self.step_translation:
            dpos = dpos * (self.step_translation / norm)
            clamped.append("translation")
        angle = float(np.linalg.norm(drot))
        if angle > self.step_rotation:
            drot = drot * (self.step_rotation / angle)
            clamped.append("rotation")
        if not -1.0 <= gripper <= 1.0:
            gripper = float(np.clip(gripper, -1.0, 1.0))
            clamped.append("gripper")
        return ArmTarget(np.asarray(dpos, float), np.asarray(drot, float), float(gripper)), clamped

    def clamp_pose(self, ee_pos, ee_quat, target_pos, target_quat, gripper: float) -> tuple[ArmTarget, list[str]]:
        """An absolute pose target as one clamped step from the current pose."""
        return self.clamp_delta(ee_pos, np.asarray(target_pos) - ee_pos, rotation_delta(ee_quat, target_quat), gripper)

    def clamp_joints(
        self, q: np.ndarray, q_target: np.ndarray, gripper: float, ee_pos: np.ndarray, ee_quat: np.ndarray,
        fk: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    ) -> tuple[ArmTarget, list[str]]:
        """A joint target clamped to joint limits and the joint step, then shortened (same direction in
        joint space) until the end effector's step also respects the workspace and Cartesian limits."""
        clamped = []
        if self.joint_min.size:
            inside = np.clip(q_target, self.joint_min, self.joint_max)
            if not np.array_equal(inside, q_target):
                clamped.append("joint_limits")
            q_target = inside
        step = q_target - q
        biggest = float(np.abs(step).max(initial=0.0))
        if biggest > self.step_joint:
            step *= self.step_joint / biggest
            clamped.append("joint_step")

        def ee_ok(fraction: float) -> tuple[bool, np.ndarray, np.ndarray]:
            pos, quat = fk(q + fraction * step)
            d, r = pos - ee_pos, rotation_delta(ee_quat, quat)
            inside_box = bool(((pos >= self.box_min - 1e-9) & (pos <= self.box_max + 1e-9)).all())
            ok = inside_box and np.linalg.norm(d) <= self.step_translation + 1e-12 and np.linalg.norm(r) <= self.step_rotation + 1e-12
            return ok, d, r

        fraction = 1.0
        ok, dpos, drot = ee_ok(fraction)
        if not ok:  # bisect the largest admissible fraction of the joint step
            clamped.append("joint_cartesian")
            lo, hi = 0.0, 1.0
            for _ in range(12):
                mid = (lo + hi) / 2
                if ee_ok(mid)[0]:
                    lo = mid
                else:
                    hi = mid
            fraction = lo
            ok, dpos, drot = ee_ok(fraction)
            if not ok:  # even a zero step is outside (the arm starts outside the box): do not move
                fraction, dpos, drot = 0.0, np.zeros(3), np.zeros(3)
        if not -1.0 <= gripper <= 1.0:
            gripper = float(np.clip(gripper, -1.0, 1.0))
            clamped.append("gripper")
        return ArmTarget(dpos, drot, float(gripper), joints=q + fraction * step), clamped
