"""Scripted experts, one per task: each a plan of waypoints (:mod:`dp.sim.waypoints`) built from the
episode's initial observation and a strategy drawn from its seed, and :func:`make_expert`.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from dp.sim.tasks import get_task
from dp.sim.waypoints import (
    CLOSE, OPEN, Obs, ScriptedExpert, Waypoint, carry_to, down, level, nearest_grasp_yaw, pick, release_and_retreat, wrap, yaw_of,
)


class LiftExpert(ScriptedExpert):
    """Grasp the cube from above across one of its two face pairs, lift it."""

    def plan(self, obs: Obs) -> list[Waypoint]:
        cube = lambda o: self.obj(o, "cube_pos")
        face = self.choose("faces", {"x": 0.0, "y": np.pi / 2})
        rot = down(nearest_grasp_yaw(yaw_of(self.obj(obs, "cube_quat")) + face, np.pi))
        height = self.choose("approach", {"low": 0.06, "high": 0.12})
        return [
            *pick(cube, rot, approach=height),
            Waypoint(lambda o: cube(o) * [1, 1, 0] + [0, 0, 1.0], rot, CLOSE, speed=0.4, max_steps=200, name="lift"),
        ]


class StackExpert(ScriptedExpert):
    """Pick the red cube (either face pair), carry it over the green cube, lower it on top, let go.

    With the cubes' centres closer than ``CLOSE_CUBES`` the face pair is not drawn: the hand's yaw is put
    nearer the line from the red cube to the green one, so that the open fingers stay off that line. The
    other face pair opened them toward the green cube: on 40 such starts (base seed 7 of the collect
    stream, which no store uses) it failed 18 times, the chosen one never."""

    CLOSE_CUBES = 0.09  # m: the red cube's half-width (0.02), an open finger's reach past it (~0.04), the green one's (0.025)

    def plan(self, obs: Obs) -> list[Waypoint]:
        cube_a = lambda o: self.obj(o, "cubeA_pos")
        cube_b = lambda o: self.obj(o, "cubeB_pos")
        yaw_a = yaw_of(self.obj(obs, "cubeA_quat"))
        yaws = {name: nearest_grasp_yaw(yaw_a + turn, np.pi) for name, turn in (("x", 0.0), ("y", np.pi / 2))}
        between = cube_b(obs)[:2] - cube_a(obs)[:2]
        if np.linalg.norm(between) < self.CLOSE_CUBES:  # only the face pair with the hand yaw nearest the line is open
            line = np.arctan2(between[1], between[0])
            nearest = min(yaws, key=lambda name: abs(wrap(yaws[name] - line, np.pi)))
            yaws = {nearest: yaws[nearest]}
        rot = down(self.choose("faces", yaws))
        carry = self.choose("carry", {"low": 0.08, "high": 0.14})
        on_b = lambda o: cube_b(o) + [0, 0, 0.05]  # half-heights 0.025 (B) + 0.02 (A) + a small gap
        return [
            *pick(cube_a, rot, approach=0.08),
            Waypoint(carry_to(cube_a, lambda o: cube_a(o) * [1, 1, 0] + [0, 0, cube_b(o)[2] + carry]), rot, CLOSE, tol=0.02, name="lift"),
            Waypoint(carry_to(cube_a, lambda o: on_b(o) + [0, 0, carry - 0.04]), rot, CLOSE, tol=0.012, name="over"),
            Waypoint(carry_to(cube_a, on_b), rot, CLOSE, tol=0.006, speed=0.25, name="lower"),
            *release_and_retreat(rot),
        ]


class CanExpert(ScriptedExpert):
    """Grasp the can from above (yaw drawn at random), carry it over the wall into its bin quarter
    (straight or by an arc through the middle), drop it."""

    bin_target = np.array([0.1975, 0.4025])  # PickPlace target_bin_placements[3], the can's quarter of bin 2
    carry_z = 1.05  # above the bin walls

    def plan(self, obs: Obs) -> list[Waypoint]:
        can = lambda o: self.obj(o, "Can_pos")
        rot = down(self.choose("grasp", {"along-x": 0.0, "along-y": np.pi / 2}) + self.rng.uniform(-0.3, 0.3))
        drop = self.bin_target + self.rng.uniform(-0.03, 0.03, size=2)
        mid = np.array([self.choose("route", {"direct": 0.1, "arc": -0.05}), 0.05, self.carry_z])
        return [
            *pick(can, rot, approach=0.1, grasp_dz=0.02),
            Waypoint(carry_to(can, lambda o: can(o) * [1, 1, 0] + [0, 0, self.carry_z]), rot, CLOSE, tol=0.03, name="lift"),
            Waypoint(carry_to(can, lambda o: mid), rot, CLOSE, tol=0.04, name="via"),
            Waypoint(carry_to(can, lambda o: np.array([*drop, self.carry_z])), rot, CLOSE, tol=0.03, name="over"),
            Waypoint(carry_to(can, lambda o: np.array([*drop, 0.85])), rot, CLOSE, tol=0.0, speed=0.4,
                     until=lambda o: can(o)[2] < 0.89, name="lower"),
            *release_and_retreat(rot),
        ]


class DoorExpert(ScriptedExpert):
    """Grasp the lever with the gripper level and fingers vertical (approaching straight from the
    front or from above), turn it down along its arc to free the latch, pull the door open around
    its hinge. Geometry from robosuite's door_lock.xml, in the door's frame (x along the panel, y
    its normal, the lever turning about y)."""

    site_from_door = np.array([-0.05, -0.10])  # handle site relative to the door body (x, y)
    site_from_pivot = np.array([0.125, -0.10, 0.0])  # handle site relative to the lever's pivot at angle 0
    opening = np.array([0.10, -0.305, 0.0])  # how the handle moves as the door opens: normal to hinge->handle (-0.305, -0.10)
    turn = 1.35  # lever angle (rad) at which the latch tip clears the frame post (from ~1.2 on)

    def plan(self, obs: Obs) -> list[Waypoint]:
        handle = lambda o: self.obj(o, "handle_pos")
        lever = lambda o: float(self.obj(o, "handle_qpos")[0])
        door_xy = (handle(obs) - self.obj(obs, "door_pos"))[:2]
        theta = np.arctan2(door_xy[1], door_xy[0]) - np.arctan2(self.site_from_door[1], self.site_from_door[0])
        to_world = Rotation.from_euler("z", theta)
        out = to_world.apply([0.0, -1.0, 0.0])  # where the lever sticks out of the panel
        radius = self.site_from_pivot[0] - self.choose("grip", {"tip": 0.0, "inner": 0.03})
        lift = self.choose("approach", {"front": [0.0, 0.0, 0.0], "above": [0.0, 0.0, 0.08]})
        base = level(theta - np.pi)  # pointing into the panel

        def on_lever(o: Obs, angle: float) -> np.ndarray:
            """The grasp point when the lever is turned down by ``angle``, 5 mm deep past the site."""
            pivot = handle(o) - to_world.apply(Rotation.from_euler("y", lever(o)).apply(self.site_from_pivot))
            return pivot + to_world.apply(Rotation.from_euler("y", angle).apply([radius, -0.095, 0.0]))

        def turned(angle: float) -> Rotation:
            return to_world * Rotation.from_euler("y", angle) * to_world.inv() * base

        grasp = lambda o: on_lever(o, lever(o))
        pre = lambda o: grasp(o) + out * 0.1 + lift

        def pull(o: Obs) -> np.ndarray:
            tangent = Rotation.from_euler("z", theta + float(self.obj(o, "hinge_qpos")[0])).apply(self.opening)
            return o["robot0_eef_pos"] + tangent / np.linalg.norm(tangent) * 0.04

        pull_rot = lambda o: Rotation.from_euler("z", float(self.obj(o, "hinge_qpos")[0])) * turned(self.turn)
        return [
            Waypoint(pre, base, OPEN, tol=0.015, max_steps=100, name="pre-grasp"),
            Waypoint(grasp, base, OPEN, tol=0.008, speed=0.4, name="reach"),
            Waypoint(grasp, base, CLOSE, tol=1.0, min_steps=10, name="grasp"),
            Waypoint(lambda o: on_lever(o, lever(o) + 0.3), lambda o: turned(min(lever(o) + 0.3, self.turn)), CLOSE,
                     tol=0.0, speed=0.5, until=lambda o: lever(o) > self.turn, name="turn"),
            Waypoint(pull, pull_rot, CLOSE, tol=0.0, speed=0.6, max_steps=200, name="pull"),
        ]


class SquareExpert(ScriptedExpert):
    """Grasp the square nut by its handle, carry it over the square peg with the handle toward the
    robot or toward its side (drawn at random among the turns the wrist can make), lower it around
    the peg and let it drop."""

    peg = np.array([0.23, 0.1])  # peg1 in robosuite's pegs_arena.xml; its top is at z 0.95
    handle_offset = np.array([0.054, 0.0, 0.0])  # handle site in the nut frame (square-nut.xml)
    carry_z = 1.02  # nut centre height that clears the peg top
    # nut yaws that keep the hand within reach: handle toward the robot (-x) or to either side
    place_yaws = {"robot": np.pi, "left": np.pi / 2, "right": -np.pi / 2}

    def plan(self, obs: Obs) -> list[Waypoint]:
        nut = lambda o: self.obj(o, "SquareNut_pos")
        nut_yaw = yaw_of(self.obj(obs, "SquareNut_quat"))
        handle = lambda o: nut(o) + Rotation.from_quat(self.obj(o, "SquareNut_quat")).apply(self.handle_offset)
        turns = {side: wrist_turn(nut_yaw, target) for side, target in self.place_yaws.items()}
        # whatever the nut's yaw, at least two of the three placements are within the wrist's range
        grip_yaw, place_yaw = self.choose("handle", {side: t for side, t in turns.items() if t is not None})
        grasp, place = down(grip_yaw), down(place_yaw)
        over_peg = lambda o: np.array([*self.peg, self.carry_z])
        return [
            *pick(handle, grasp, approach=0.08, grasp_dz=0.0),
            Waypoint(carry_to(nut, lambda o: nut(o) * [1, 1, 0] + [0, 0, self.carry_z]), grasp, CLOSE, tol=0.02, name="lift"),
            Waypoint(carry_to(nut, over_peg), place, CLOSE, tol=0.01, max_steps=120, name="over"),
            Waypoint(carry_to(nut, over_peg), place, CLOSE, tol=0.004, speed=0.3, settle=4, max_steps=40, name="align"),
            Waypoint(carry_to(nut, lambda o: np.array([*self.peg, 0.9])), place, CLOSE, tol=0.0, speed=0.3,
                     until=lambda o: nut(o)[2] < 0.93, name="lower"),
            *release_and_retreat(place),
        ]


WRIST_YAW = (-2.0, 2.5)  # gripper yaws the Panda wrist reaches comfortably from its home pose


def wrist_turn(object_yaw: float, target_yaw: float) -> tuple[float, float] | None:
    """(grasp yaw, place yaw) of a gripper that grasps across an object at ``object_yaw`` (fingers
    along the object's y axis) and turns it to ``target_yaw``, both inside :data:`WRIST_YAW`;
    the pair farthest from the limits, or None."""
    turn = wrap(target_yaw - object_yaw)
    best = None
    for grasp in (nearest_grasp_yaw(object_yaw, np.pi) + k * np.pi for k in (-1, 0, 1)):
        extreme = max(WRIST_YAW[0] - min(grasp, grasp + turn), max(grasp, grasp + turn) - WRIST_YAW[1])
        if extreme <= 0 and (best is None or extreme < best[0]):
            best = (extreme, (float(grasp), float(grasp + turn)))
    return None if best is None else best[1]


EXPERTS: dict[str, type[ScriptedExpert]] = {
    "lift": LiftExpert, "stack": StackExpert, "can": CanExpert, "door": DoorExpert, "square": SquareExpert,
}


def make_expert(task: str, seed: int = 0, strategies: str = "random", release_slips: float = 0.0, labels: str = "executed") -> ScriptedExpert:
    """The scripted expert of a task (a :class:`DpError` for an unknown task); ``strategies``,
    ``release_slips`` and ``labels`` as in :class:`ScriptedExpert`."""
    spec = get_task(task)
    return EXPERTS[spec.name](spec, seed, strategies, release_slips, labels)
