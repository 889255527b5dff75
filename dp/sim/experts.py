"""Scripted experts: waypoint controllers that drive OSC_POSE deltas from the observation alone.

Each expert implements the Policy runtime API (``reset``, ``select_action``) and reads only what a
learned policy would see (end-effector pose, gripper, the task's ``object`` vector), plus the
task's fixed scene geometry (bin and peg positions). Per episode it draws a strategy (grasp yaw,
approach side, ...) from its seed, so demonstrations are multimodal, and adds Gaussian action
noise to the arm dimensions. With ``strategies="first"`` it takes the first option open in the
episode's initial state instead: one strategy per initial state, unimodal demonstrations (to
measure what multimodality costs a policy).

With ``release_slips`` > 0 that share of episodes slips at the release (DART-style recovery data,
Laskey et al. 2017): after 1-3 open steps the executed gripper closes again for 2-6 steps while the
recorded action (``recorded_action``) keeps the expert's open command; then the release starts over.

A plan is a list of :class:`Waypoint`; targets may be callables of the observation so a waypoint
can track a moving object (or the object held in the hand). The servo is proportional in position
and orientation, clipped to a speed limit: the OSC controller then tracks the commanded delta.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, Union

import numpy as np
from scipy.spatial.transform import Rotation

from dp.errors import DpError
from dp.sim.tasks import TaskSpec, get_task

Obs = dict[str, np.ndarray]
Vec = Union[np.ndarray, Callable[[Obs], np.ndarray]]
Rot = Union[Rotation, Callable[[Obs], Rotation]]
T = TypeVar("T")

POS_SCALE = 0.05  # OSC_POSE: action 1.0 = 5 cm
ROT_SCALE = 0.5  # OSC_POSE: action 1.0 = 0.5 rad
OPEN, CLOSE = -1.0, 1.0
DOWN = Rotation.from_matrix(np.diag([1.0, -1.0, -1.0]))  # gripper pointing down, fingers closing along world y


@dataclass
class Waypoint:
    """Go to ``pos`` with the gripper orientation ``rot`` (see :func:`down`), gripper command ``grip``.

    Done when within ``tol`` metres (and 0.1 rad), or ``until(obs)`` holds, for ``settle``
    consecutive steps once ``min_steps`` have passed; or after ``max_steps`` in any case.
    """

    pos: Vec
    rot: Rot
    grip: float
    tol: float = 0.01
    speed: float = 1.0
    min_steps: int = 0
    settle: int = 1
    max_steps: int = 80
    name: str = ""
    until: Callable[[Obs], bool] | None = None


def _value(x, obs: Obs):
    return x(obs) if callable(x) else x


def yaw_of(quat_xyzw: np.ndarray) -> float:
    """Yaw of an object about world z (robosuite quaternions are x, y, z, w)."""
    return float(Rotation.from_quat(quat_xyzw).as_euler("xyz")[2])


def wrap(angle: float, period: float = 2 * np.pi) -> float:
    """``angle`` wrapped into [-period/2, period/2)."""
    return float((angle + period / 2) % period - period / 2)


def down(yaw: float) -> Rotation:
    """Gripper pointing down, turned by ``yaw`` about world z (yaw 0: fingers close along world y)."""
    return Rotation.from_euler("z", yaw) * DOWN


def level(yaw: float) -> Rotation:
    """Gripper horizontal, pointing along (sin yaw, -cos yaw, 0) (yaw 0: along -y), fingers closing vertically."""
    return Rotation.from_euler("z", yaw) * Rotation.from_euler("x", -np.pi / 2) * DOWN


STRATEGIES = ("random", "first")  # how an expert picks among the strategies open to it


class ScriptedExpert:
    """Base class: subclasses build the plan for one episode in :meth:`plan`."""

    noise = 0.05  # std of the Gaussian noise on arm actions (action units)

    def __init__(self, spec: TaskSpec, seed: int = 0, strategies: str = "random", release_slips: float = 0.0):
        if strategies not in STRATEGIES:
            raise DpError(f"expert strategies must be one of {', '.join(STRATEGIES)}, got {strategies!r}")
        check_release_slips(release_slips)
        self.spec = spec
        self.strategies = strategies
        self.release_slips = release_slips
        self.recorded_action: np.ndarray | None = None  # the action to record when it differs from the one executed
        self._slip: tuple[int, int] | None = None  # this episode's slip: (open steps before it, closed steps)
        self.rng = np.random.default_rng(seed)
        self.slices = spec.object_slices()
        self.waypoints: list[Waypoint] = []
        self.strategy: dict[str, str] = {}  # the options drawn this episode, by name
        self._index = 0
        self._steps = 0
        self._inside = 0

    # ------------------------------------------------------------------ Policy runtime API
    def seed(self, seed: int) -> None:
        """Reseed the strategy and noise draws (the collector seeds each episode)."""
        self.rng = np.random.default_rng(seed)

    def reset(self, instruction: str | None = None) -> None:
        """Start an episode: the plan (and strategy) is drawn at the first observation."""
        self.waypoints = []
        self.strategy = {}
        self.recorded_action = self._slip = None
        self._index = self._steps = self._inside = 0

    def select_action(self, obs: Obs) -> np.ndarray:
        """The next OSC_POSE action (7,) for one observation."""
        if not self.waypoints:
            self.waypoints = self.plan(obs)
            if self.release_slips and self.rng.random() < self.release_slips:  # no draw at 0: old seeds replay
                self._slip = (int(self.rng.integers(1, 4)), int(self.rng.integers(2, 7)))
        wp = self.waypoints[min(self._index, len(self.waypoints) - 1)]
        action, pos_err, rot_err = self._servo(obs, wp)
        slipping = self._slipping(wp)
        self._steps += 1
        reached = (pos_err < wp.tol and rot_err < 0.1) or (wp.until is not None and wp.until(obs))
        self._inside = self._inside + 1 if reached else 0
        if not slipping and self._index < len(self.waypoints) - 1 and (
            (self._inside >= wp.settle and self._steps >= wp.min_steps) or self._steps >= wp.max_steps
        ):
            self._index, self._steps, self._inside = self._index + 1, 0, 0
        action[:6] += self.rng.normal(0.0, self.noise, size=6)
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        self.recorded_action = action.copy() if slipping else None
        action[6] = CLOSE if slipping else action[6]
        return action

    def _slipping(self, wp: Waypoint) -> bool:
        """Whether this step of ``wp`` is a slipped release step; at the slip's end the release starts over."""
        if self._slip is None or wp.name != "release":
            return False
        opened, closed = self._slip
        if self._steps == opened + closed:
            self._slip, self._steps = None, 0
            return False
        return self._steps >= opened

    # ------------------------------------------------------------------ for subclasses
    def plan(self, obs: Obs) -> list[Waypoint]:
        raise NotImplementedError

    def obj(self, obs: Obs, name: str) -> np.ndarray:
        """One robosuite observable out of the ``object`` vector."""
        return obs["object"][self.slices[name]].astype(np.float64)

    def choose(self, name: str, options: dict[str, T]) -> T:
        """One of the labelled strategy options (drawn at random, or the first with
        ``strategies="first"``); its label is remembered."""
        label = list(options)[0 if self.strategies == "first" else int(self.rng.integers(len(options)))]
        self.strategy[name] = label
        return options[label]

    @property
    def strategy_label(self) -> str:
        """The strategy of the current episode, e.g. ``"face=x,approach=high"``."""
        return ",".join(f"{k}={v}" for k, v in self.strategy.items())

    @property
    def waypoint_name(self) -> str:
        return self.waypoints[min(self._index, len(self.waypoints) - 1)].name if self.waypoints else ""

    def _servo(self, obs: Obs, wp: Waypoint) -> tuple[np.ndarray, float, float]:
        target = np.asarray(_value(wp.pos, obs), dtype=np.float64)
        delta = target - obs["robot0_eef_pos"]
        step = delta / POS_SCALE
        norm = np.linalg.norm(step)
        if norm > wp.speed:
            step *= wp.speed / norm
        goal = _value(wp.rot, obs)
        err = (goal * Rotation.from_quat(obs["robot0_eef_quat"]).inv()).as_rotvec()
        rot = np.clip(err / ROT_SCALE, -1.0, 1.0)
        action = np.concatenate([step, rot, [wp.grip]])
        return action, float(np.linalg.norm(delta)), float(np.linalg.norm(err))


def check_release_slips(share: float) -> None:
    """A DpError unless ``share`` (of episodes whose release slips) is in [0, 1]."""
    if not 0.0 <= share <= 1.0:
        raise DpError(f"--release-slips must be a share of episodes in [0, 1], got {share}")


def nearest_grasp_yaw(object_yaw: float, symmetry: float) -> float:
    """The gripper yaw in [-pi/2, pi/2) equivalent to ``object_yaw`` under the object's symmetry
    (the gripper itself is symmetric under a half turn)."""
    return wrap(wrap(object_yaw, symmetry), np.pi)


def pick(obj: Callable[[Obs], np.ndarray], rot: Rot, approach: float, grasp_dz: float = 0.0) -> list[Waypoint]:
    """Above the object, down to it, close the gripper."""
    return [
        Waypoint(lambda o: obj(o) + [0, 0, approach], rot, OPEN, tol=0.015, name="above"),
        Waypoint(lambda o: obj(o) + [0, 0, grasp_dz], rot, OPEN, tol=0.006, speed=0.3, name="descend"),
        Waypoint(lambda o: obj(o) + [0, 0, grasp_dz], rot, CLOSE, tol=1.0, min_steps=8, name="grasp"),
    ]


def carry_to(obj: Callable[[Obs], np.ndarray], goal: Callable[[Obs], np.ndarray]) -> Callable[[Obs], np.ndarray]:
    """An end-effector target that brings the held object (not the hand) to ``goal``."""
    return lambda o: o["robot0_eef_pos"] + goal(o) - obj(o)


def hold(offset: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Callable[[Obs], np.ndarray]:
    """A fixed target: where the hand is when the waypoint starts, plus ``offset``."""
    where: list[np.ndarray] = []

    def target(o: Obs) -> np.ndarray:
        if not where:
            where.append(o["robot0_eef_pos"] + offset)
        return where[0]

    return target


def release_and_retreat(rot: Rot) -> list[Waypoint]:
    """Open the gripper in place, then move 10 cm up, away from the object."""
    return [
        Waypoint(hold(), rot, OPEN, tol=1.0, min_steps=8, name="release"),
        Waypoint(hold((0.0, 0.0, 0.1)), rot, OPEN, tol=0.01, max_steps=100, name="retreat"),
    ]


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
    """Pick the red cube (either face pair), carry it over the green cube, lower it on top, let go."""

    def plan(self, obs: Obs) -> list[Waypoint]:
        cube_a = lambda o: self.obj(o, "cubeA_pos")
        cube_b = lambda o: self.obj(o, "cubeB_pos")
        face = self.choose("faces", {"x": 0.0, "y": np.pi / 2})
        rot = down(nearest_grasp_yaw(yaw_of(self.obj(obs, "cubeA_quat")) + face, np.pi))
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


def make_expert(task: str, seed: int = 0, strategies: str = "random", release_slips: float = 0.0) -> ScriptedExpert:
    """The scripted expert of a task (a :class:`DpError` for an unknown task); ``strategies`` and
    ``release_slips`` as in :class:`ScriptedExpert`."""
    spec = get_task(task)
    return EXPERTS[spec.name](spec, seed, strategies, release_slips)
