"""Clamping: every control period's motion is forced inside the robot file's limits before it
reaches the driver. Nothing is executed as sent if it leaves the limits; what was clamped is
reported (``State.faults`` holds ``clamped:<what>`` for that tick). Commands whose targets are not
merely beyond the limits but absurd are refused before that (:meth:`Limits.refuse_absurd`).

The workspace box bounds the state the robot reaches, not only the commanded target; what the arm's
controller does with a target was measured on the simulated Panda under OSC_POSE (robots/panda_sim.yaml):

- it goes on past its target by up to 1.46 times its last tick's motion, so each tick's target stays
  inside the *reach box*: the box less ``wall_margin`` all round and less ``coast_steps`` times that
  motion on the side the arm moves toward. An end effector beyond the reach box brakes: on those axes
  alone, back as far inside it as it would otherwise coast;
- it strays across its path by up to 6% of a step (the controller couples the axes), so near a wall a
  step is only as long as keeps ``translation_drift`` times it inside the box;
- a rotation moves the end effector too (tracking error, a tool offset), by at most ``rotation_drift``
  metres per radian, so a step rotates only as far as keeps that inside the reach box, and a turning
  arm's reach box shrinks all round.

An end effector found outside the box is driven straight back toward it, without rotating
(``outside`` is reported: the fault ``outside_workspace``): every step it is given leads toward the
box, never away; in joint mode a joint step found through the kinematics (``fk``'s Jacobian).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from dp.deploy.drivers.base import ArmTarget
from dp.deploy.robot_config import LimitsConfig
from dp.link.protocol import MODE_EE_DELTA, MODE_EE_POSE, MODE_JOINT, ProtocolError

RETURN_MARGIN = 0.02  # metres: an end effector outside the box is sent back this far inside it
FAR_TARGETS = 2.0  # box diagonals: a target position (or a delta) further than this from the box is absurd
JOINT_SLACK = 1.0  # joint ranges: a joint target further than this beyond its configured limit is absurd
JACOBIAN_STEP = 1e-4  # joint units (radians): the finite-difference step of the kinematics' Jacobian
DAMPING = 1e-3  # damped least squares: the joint step toward the box stays bounded near a singularity


def rotation_delta(quat_from: np.ndarray, quat_to: np.ndarray) -> np.ndarray:
    """Axis-angle (reference-frame axes) of the rotation taking orientation ``from`` to ``to``
    (quaternions x, y, z, w): ``R_to = exp(delta) @ R_from``, as OSC_POSE applies deltas."""
    return (Rotation.from_quat(quat_to) * Rotation.from_quat(quat_from).inv()).as_rotvec()


def box_distance(pos: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Distance (metres) from ``pos`` to the box ``[lo, hi]``; 0 inside."""
    return float(np.linalg.norm(np.maximum(np.maximum(lo - pos, pos - hi), 0.0)))


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
    translation_drift: float = 0.0  # metres it may stray across its path per metre of step
    coast_steps: float = 0.0  # how far the arm goes on past its target, in its last tick's motion
    wall_margin: float = 0.0  # metres: targets stay this far inside the box

    @classmethod
    def from_config(cls, limits: LimitsConfig, control_hz: float) -> Limits:
        return cls(
            box_min=np.asarray(limits.workspace_min, float), box_max=np.asarray(limits.workspace_max, float),
            step_translation=limits.step_translation(control_hz), step_rotation=limits.step_rotation(control_hz),
            joint_min=np.asarray(limits.joint_min, float), joint_max=np.asarray(limits.joint_max, float),
            step_joint=limits.max_joint_speed / control_hz, rotation_drift=limits.rotation_drift,
            translation_drift=limits.translation_drift, coast_steps=limits.coast_steps, wall_margin=limits.wall_margin,
        )

    def outside(self, pos: np.ndarray) -> bool:
        """True if ``pos`` lies outside the workspace box."""
        return bool(((pos < self.box_min - 1e-9) | (pos > self.box_max + 1e-9)).any())

    def refuse_absurd(self, mode: str, waypoints: np.ndarray) -> None:
        """Refuse (a ProtocolError on ``command.waypoints``) waypoints that are nonsense rather than beyond
        the limits: a position (``ee_pose``) or a translation (``ee_delta``) more than FAR_TARGETS box
        diagonals from the box, a joint target more than JOINT_SLACK times its joint's range beyond a
        configured limit. (The codec refuses NaN, inf and quaternions of other than unit norm.)"""
        far = FAR_TARGETS * float(np.linalg.norm(self.box_max - self.box_min))
        refused = f"more than {far:.3g} m, {FAR_TARGETS:g} box diagonals, is refused"
        if mode == MODE_EE_POSE:
            worst = max(box_distance(p, self.box_min, self.box_max) for p in waypoints[:, :3])
            if worst > far:
                raise ProtocolError("command.waypoints", f"a position {worst:.3g} m from the workspace box ({refused})")
        elif mode == MODE_EE_DELTA:
            worst = float(np.linalg.norm(waypoints[:, :3], axis=1).max())
            if worst > far:
                raise ProtocolError("command.waypoints", f"a translation of {worst:.3g} m ({refused})")
        elif mode == MODE_JOINT and self.joint_min.size:
            beyond = np.maximum(self.joint_min - waypoints, waypoints - self.joint_max) / (self.joint_max - self.joint_min)
            if beyond.max() > JOINT_SLACK:
                raise ProtocolError("command.waypoints", f"a joint target {beyond.max():.3g} times its range beyond its limit "
                                                         f"(more than {JOINT_SLACK:g} is refused)")

    def reach_box(self, motion: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The box less ``wall_margin`` and, on each side, how far the arm may go on past its target:
        ``coast_steps`` times its last tick's ``motion`` ([dx, dy, dz, rx, ry, rz]) toward that side and
        the drift of its turn toward any side (never beyond the box's centre)."""
        motion = np.zeros(6) if motion is None else np.asarray(motion, float)
        spin = self.rotation_drift * float(np.linalg.norm(motion[3:6]))
        up = self.wall_margin + self.coast_steps * (np.maximum(motion[:3], 0.0) + spin)
        down = self.wall_margin + self.coast_steps * (np.maximum(-motion[:3], 0.0) + spin)
        centre = (self.box_min + self.box_max) / 2
        return np.minimum(self.box_min + down, centre), np.maximum(self.box_max - up, centre)

    def rotation_room(self, pos: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
        """The largest rotation (radians) whose drift keeps an end effector at ``pos`` inside ``[lo, hi]``."""
        room = max(0.0, float(min((pos - lo).min(), (hi - pos).min())))
        return room / self.rotation_drift if self.rotation_drift > 0 else np.inf

    def _goal_box(self, ee_pos: np.ndarray, motion: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, bool]:
        """Where this tick's target must lie: the reach box, less RETURN_MARGIN when the end effector
        is outside the box (then also True)."""
        lo, hi = self.reach_box(motion)
        if not self.outside(ee_pos):
            return lo, hi, False
        centre = (self.box_min + self.box_max) / 2
        return np.minimum(lo + RETURN_MARGIN, centre), np.maximum(hi - RETURN_MARGIN, centre), True

    def _braked(self, ee_pos: np.ndarray, goal: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                motion: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``goal``, and the axes the end effector brakes on: those it is beyond ``[lo, hi]`` on. There
        the goal is back in ``[lo, hi]`` at rest, and a pull the harder the further the arm would coast
        (``coast_steps`` times its last tick's motion), a full step once that reaches ``wall_margin``;
        the step moves on those axes alone. (Merely aiming at ``[lo, hi]`` let an arm steered along a
        wall, or one whose wrist still spun, go on through it.)"""
        coast = self.coast_steps * (np.zeros(3) if motion is None else np.asarray(motion, float)[:3])
        pull = self.step_translation * np.clip(np.abs(coast) / max(self.wall_margin, 1e-12), 0.0, 1.0)
        up, down = ee_pos > hi, ee_pos < lo
        braked = np.where(up, np.minimum(hi, ee_pos - pull * (coast > 0)), goal)
        return np.where(down, np.maximum(lo, ee_pos + pull * (coast < 0)), braked), up | down

    def _limit_step(self, dpos: np.ndarray, braking: np.ndarray) -> tuple[np.ndarray, bool]:
        """``dpos`` on the ``braking`` axes alone if there are any, shortened to the translation limit
        (True if it was)."""
        dpos = np.where(braking, dpos, 0.0) if braking.any() else dpos
        norm = float(np.linalg.norm(dpos))
        if norm <= self.step_translation:
            return dpos, False
        return dpos * (self.step_translation / norm), True

    def _strays_out(self, ee_pos: np.ndarray, dpos: np.ndarray) -> float:
        """The fraction of ``dpos`` (1: all of it) that keeps the end effector inside the box however far
        it strays across its path on the way: ``translation_drift`` times the step's part along the other
        axes, toward each wall, from where it starts and where it ends."""
        end = ee_pos + dpos
        room = np.maximum(np.minimum(np.minimum(ee_pos, end) - self.box_min, self.box_max - np.maximum(ee_pos, end)), 0.0)
        across = self.translation_drift * np.sqrt(np.maximum(float(dpos @ dpos) - dpos**2, 0.0))
        return float(np.min(np.where(across > room, room / np.maximum(across, 1e-300), 1.0)))

    def clamp_delta(
        self, ee_pos: np.ndarray, dpos: np.ndarray, drot: np.ndarray, gripper: float, motion: np.ndarray | None = None,
    ) -> tuple[ArmTarget, list[str]]:
        """Clamp one step: its target into the reach box (``motion``: the end effector's translation
        and rotation during the last tick; braking first), the translation to its per-step limit and to
        what it may stray, the rotation to its limit and to what its drift leaves inside the reach box,
        the gripper into [-1, 1]. An end effector outside the box goes straight back (to RETURN_MARGIN
        inside), whatever the command and without rotating: toward a point inside a convex box, a step
        never increases the distance to it."""
        lo, hi, outside = self._goal_box(ee_pos, motion)
        clamped = ["outside"] if outside else []
        goal = ee_pos if outside else ee_pos + dpos
        drot = np.zeros(3) if outside else np.asarray(drot, float)
        braked, braking = self._braked(ee_pos, goal, lo, hi, motion)
        target = np.clip(braked, lo, hi)
        if not outside and not np.allclose(target, goal, rtol=0.0, atol=1e-12):
            clamped.append("workspace")
        dpos, shortened = self._limit_step(target - ee_pos, braking)
        if shortened:
            clamped.append("translation")
        fraction = 1.0 if braking.any() else self._strays_out(ee_pos, dpos)  # braking goes first
        if fraction < 1.0:
            dpos = dpos * fraction
            clamped.append("workspace_translation")
        angle = float(np.linalg.norm(drot))
        if angle > self.step_rotation:
            drot = drot * (self.step_rotation / angle)
            clamped.append("rotation")
            angle = self.step_rotation
        room = min(self.rotation_room(ee_pos, lo, hi), self.rotation_room(ee_pos + dpos, lo, hi))
        if angle > room:
            drot = drot * (room / angle)
            clamped.append("workspace_rotation")
        gripper, clamped = self._clamp_gripper(gripper, clamped)
        return ArmTarget(np.asarray(dpos, float), drot, gripper), clamped

    def clamp_pose(self, ee_pos, ee_quat, target_pos, target_quat, gripper: float, motion=None) -> tuple[ArmTarget, list[str]]:
        """An absolute pose target as one clamped step from the current pose."""
        return self.clamp_delta(ee_pos, np.asarray(target_pos) - ee_pos, rotation_delta(ee_quat, target_quat), gripper, motion)

    def clamp_joints(
        self, q: np.ndarray, q_target: np.ndarray, gripper: float, ee_pos: np.ndarray, ee_quat: np.ndarray,
        fk: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], motion: np.ndarray | None = None,
    ) -> tuple[ArmTarget, list[str]]:
        """A joint target clamped to the joint limits and the joint step, then shortened (same
        direction in joint space) until the end effector's step also respects the reach box and the
        Cartesian limits. An end effector beyond the reach box (outside the box, or too fast toward
        a wall) is instead stepped back toward it through the kinematics, whatever the command."""
        lo, hi, outside = self._goal_box(ee_pos, motion)
        clamped = ["outside"] if outside else []
        away = box_distance(ee_pos, lo, hi)
        if away > 0:
            if not outside:
                clamped.append("workspace")
            q_target = q + self._joint_step_toward(q, fk, np.clip(self._braked(ee_pos, ee_pos, lo, hi, motion)[0], lo, hi) - ee_pos)
        if self.joint_min.size:
            inside = np.clip(q_target, self.joint_min, self.joint_max)
            if not np.allclose(inside, q_target, rtol=0.0, atol=1e-12):
                clamped.append("joint_limits")
            q_target = inside
        step = q_target - q
        biggest = float(np.abs(step).max(initial=0.0))
        if biggest > self.step_joint:
            step *= self.step_joint / biggest
            clamped.append("joint_step")
        out_now = box_distance(ee_pos, self.box_min, self.box_max)

        def ee_ok(fraction: float) -> tuple[bool, np.ndarray, np.ndarray]:
            """The step's fraction keeps its reach (its drift included) no further from the reach box,
            and from the box, than the end effector is now, within the Cartesian limits."""
            pos, quat = fk(q + fraction * step)
            d, r = pos - ee_pos, rotation_delta(ee_quat, quat)
            reach = self.rotation_drift * float(np.linalg.norm(r))
            ok = (box_distance(pos, lo + reach, hi - reach) <= away + 1e-12
                  and box_distance(pos, self.box_min, self.box_max) <= out_now + 1e-12
                  and (away > 0 or self._strays_out(ee_pos, d) == 1.0)
                  and np.linalg.norm(d) <= self.step_translation + 1e-12 and np.linalg.norm(r) <= self.step_rotation + 1e-12)
            return ok, d, r

        fraction = 1.0
        ok, dpos, drot = ee_ok(fraction)
        if not ok:  # bisect the largest admissible fraction of the joint step
            clamped.append("joint_cartesian")
            lo_f, hi_f = 0.0, 1.0
            for _ in range(12):
                mid = (lo_f + hi_f) / 2
                lo_f, hi_f = (mid, hi_f) if ee_ok(mid)[0] else (lo_f, mid)
            fraction = lo_f
            ok, dpos, drot = ee_ok(fraction)
            if not ok:  # no admissible step in this direction (e.g. at a singularity): do not move
                fraction, dpos, drot = 0.0, np.zeros(3), np.zeros(3)
        gripper, clamped = self._clamp_gripper(gripper, clamped)
        return ArmTarget(dpos, drot, gripper, joints=q + fraction * step), clamped

    def _joint_step_toward(self, q: np.ndarray, fk: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                           dx: np.ndarray) -> np.ndarray:
        """The joint step (at most the joint step limit) that moves the end effector by ``dx`` turning it
        as little as it can, to first order: damped least squares on the Jacobian of ``fk`` (finite
        differences), a radian of turn weighed as the ``rotation_drift`` it may cost."""
        pos0, quat0 = fk(q)
        columns = []
        for j in range(q.size):
            dq = np.zeros_like(q, dtype=float)
            dq[j] = JACOBIAN_STEP
            pos, quat = fk(q + dq)
            columns.append(np.concatenate([pos - pos0, self.rotation_drift * rotation_delta(quat0, quat)]) / JACOBIAN_STEP)
        jac = np.array(columns).T
        step = jac.T @ np.linalg.solve(jac @ jac.T + DAMPING**2 * np.eye(6), np.concatenate([dx, np.zeros(3)]))
        return step * min(1.0, self.step_joint / max(float(np.abs(step).max()), 1e-12))  # before the joint limits cut it

    @staticmethod
    def _clamp_gripper(gripper: float, clamped: list[str]) -> tuple[float, list[str]]:
        if -1.0 <= gripper <= 1.0:
            return float(gripper), clamped
        return float(np.clip(gripper, -1.0, 1.0)), [*clamped, "gripper"]
