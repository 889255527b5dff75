"""Clamping: every control period's motion is forced inside the robot file's limits before it
reaches the driver. Nothing is executed as sent if it leaves the limits; what was clamped is
reported (``State.faults`` holds ``clamped:<what>`` for that tick).

The workspace box bounds the state the robot reaches, not only the commanded translation: a
rotation moves the end effector too as the arm's controller executes it (tracking error, a tool
offset), by at most ``rotation_drift`` metres per radian, so a step may rotate only as far as keeps
that reach inside the box. An end effector found outside the box is driven straight back toward it,
without rotating (``outside`` is reported: the fault ``outside_workspace``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from dp.deploy.drivers.base import ArmTarget
from dp.deploy.robot_config import LimitsConfig

COAST_STEPS = 2.0  # an arm drifting under impedance control goes on about this many steps more
RETURN_MARGIN = 0.02  # metres: an end effector outside the box is sent back this far inside it


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
    rotation_drift: float = 0.0  # metres the end effector may move per radian of rotation

    @classmethod
    def from_config(cls, limits: LimitsConfig, control_hz: float) -> Limits:
        return cls(
            box_min=np.asarray(limits.workspace_min, float), box_max=np.asarray(limits.workspace_max, float),
            step_translation=limits.step_translation(control_hz), step_rotation=limits.step_rotation(control_hz),
            joint_min=np.asarray(limits.joint_min, float), joint_max=np.asarray(limits.joint_max, float),
            step_joint=limits.max_joint_speed / control_hz, rotation_drift=limits.rotation_drift,
        )

    def outside(self, pos: np.ndarray) -> bool:
        """True if ``pos`` lies outside the workspace box."""
        return bool(((pos < self.box_min - 1e-9) | (pos > self.box_max + 1e-9)).any())

    def rotation_room(self, pos: np.ndarray) -> float:
        """The largest rotation (radians) whose drift keeps an end effector at ``pos`` inside the box."""
        room = max(0.0, float(min((pos - self.box_min).min(), (self.box_max - pos).min())))
        return room / self.rotation_drift if self.rotation_drift > 0 else np.inf

    def clamp_delta(
        self, ee_pos: np.ndarray, dpos: np.ndarray, drot: np.ndarray, gripper: float, drift: np.ndarray | None = None,
    ) -> tuple[ArmTarget, list[str]]:
        """Clamp one step: the position the end effector is predicted to reach into the workspace box,
        then translation and rotation to their per-step limits (direction kept), the rotation also to
        what keeps its reach inside the box, gripper into [-1, 1]. An end effector outside the box goes
        straight back (to RETURN_MARGIN inside), without rotating. ``drift``: how far the end effector
        moved during the last step beyond what was commanded; it is expected to go on for COAST_STEPS."""
        coast = np.zeros(3) if drift is None else COAST_STEPS * np.asarray(drift, float)
        outside = self.outside(ee_pos)
        clamped = ["outside"] if outside else []
        if outside:
            margin = np.minimum(RETURN_MARGIN, (self.box_max - self.box_min) / 2)
            dpos, drot = np.clip(ee_pos, self.box_min + margin, self.box_max - margin) - ee_pos - coast, np.zeros(3)
        predicted = ee_pos + dpos + coast
        inside = np.clip(predicted, self.box_min, self.box_max)
        if not np.allclose(inside, predicted, rtol=0.0, atol=1e-12):
            clamped.append("workspace")
        dpos = np.clip(inside - coast, self.box_min, self.box_max) - ee_pos  # the target itself stays inside too
        norm = float(np.linalg.norm(dpos))
        if norm > self.step_translation:
            dpos = dpos * (self.step_translation / norm)
            clamped.append("translation")
        angle = float(np.linalg.norm(drot))
        if angle > self.step_rotation:
            drot = drot * (self.step_rotation / angle)
            clamped.append("rotation")
            angle = self.step_rotation
        room = min(self.rotation_room(ee_pos + dpos), self.rotation_room(ee_pos + dpos + coast))
        if angle > room:
            drot = drot * (room / angle)
            clamped.append("workspace_rotation")
        if not -1.0 <= gripper <= 1.0:
            gripper = float(np.clip(gripper, -1.0, 1.0))
            clamped.append("gripper")
        return ArmTarget(np.asarray(dpos, float), np.asarray(drot, float), float(gripper)), clamped

    def clamp_pose(self, ee_pos, ee_quat, target_pos, target_quat, gripper: float, drift=None) -> tuple[ArmTarget, list[str]]:
        """An absolute pose target as one clamped step from the current pose."""
        return self.clamp_delta(ee_pos, np.asarray(target_pos) - ee_pos, rotation_delta(ee_quat, target_quat), gripper, drift)

    def clamp_joints(
        self, q: np.ndarray, q_target: np.ndarray, gripper: float, ee_pos: np.ndarray, ee_quat: np.ndarray,
        fk: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    ) -> tuple[ArmTarget, list[str]]:
        """A joint target clamped to joint limits and the joint step, then shortened (same direction in
        joint space) until the end effector's step also respects the workspace and Cartesian limits."""
        clamped = ["outside"] if self.outside(ee_pos) else []
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
            angle = float(np.linalg.norm(r))
            ok = (not self.outside(pos) and np.linalg.norm(d) <= self.step_translation + 1e-12 and angle <= self.step_rotation + 1e-12
                  and (angle < 1e-12 or angle <= self.rotation_room(pos) + 1e-12))
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
