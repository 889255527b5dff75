"""The scripted experts' machinery: waypoint controllers that drive OSC_POSE deltas from the observation alone.

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
With ``labels="intended"`` every step is recorded as the expert's noise-free command while the
noisy one is executed (DART proper: the noise widens the states a policy learns from, not its
labels); ``"executed"`` records what ran, noise included.

The per-task plans are in :mod:`dp.sim.experts`. A plan is a list of :class:`Waypoint`; targets
may be callables of the observation so a waypoint can track a moving object (or the object held in
the hand). The servo is proportional in position and orientation, clipped to a speed limit: the OSC
controller then tracks the commanded delta.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, Union

import numpy as np
from scipy.spatial.transform import Rotation

from dp.errors import DpError
from dp.sim.tasks import TaskSpec

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
LABELS = ("executed", "intended")  # which action an expert's demonstrations record


class ScriptedExpert:
    """Base class: subclasses build the plan for one episode in :meth:`plan`."""

    noise = 0.05  # std of the Gaussian noise on arm actions (action units)

    def __init__(self, spec: TaskSpec, seed: int = 0, strategies: str = "random", release_slips: float = 0.0, labels: str = "executed"):
        if strategies not in STRATEGIES:
            raise DpError(f"expert strategies must be one of {', '.join(STRATEGIES)}, got {strategies!r}")
        check_release_slips(release_slips)
        check_labels(labels)
        self.spec = spec
        self.labels = labels
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
        intended = np.clip(action, -1.0, 1.0).astype(np.float32)
        action[:6] += self.rng.normal(0.0, self.noise, size=6)
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        if self.labels == "intended":
            self.recorded_action = intended
        else:
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


def check_labels(labels: str) -> None:
    """A DpError unless ``labels`` names which action demonstrations record (:data:`LABELS`)."""
    if labels not in LABELS:
        raise DpError(f"expert labels must be one of {', '.join(LABELS)}, got {labels!r}")


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
