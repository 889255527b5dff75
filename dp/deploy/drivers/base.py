"""The driver interface: how a robot controller owns a robot (simulated or real).

The controller calls the driver from one thread, once per control period, with motion that is
already clamped to the robot file's limits; the driver only talks to the robot.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dp.errors import DpError
from dp.link.protocol import StateKey

if TYPE_CHECKING:
    from dp.deploy.robot_config import RobotConfig


@dataclass
class Reading:
    """One observation of the robot. Positions are in the robot's reference frame (metres),
    quaternions x, y, z, w; ``gripper`` are finger joint positions."""

    q: np.ndarray  # joint positions (n,)
    dq: np.ndarray  # joint velocities (n,)
    ee_pos: np.ndarray  # (3,)
    ee_quat: np.ndarray  # (4,) x, y, z, w
    gripper: np.ndarray  # (k,)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # task state by name (e.g. "object")
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> uint8 (H, W, 3) RGB, upright
    success: bool | None = None  # the task's success check, if the driver has one
    faults: list[str] = field(default_factory=list)  # driver-side faults (joint limit, e-stop, ...)


@dataclass
class ArmTarget:
    """One control period's motion: an end-effector displacement (reference-frame axes) and the
    gripper; in joint mode also the joint-position target it corresponds to."""

    dpos: np.ndarray  # (3,) metres
    drot: np.ndarray  # (3,) axis-angle, radians
    gripper: float  # -1 open .. +1 closed
    joints: np.ndarray | None = None


@dataclass
class DriverInfo:
    """What the driver offers, filled in by :meth:`Driver.connect`."""

    n_joints: int
    modes: list[str]  # protocol modes this driver can execute
    cameras: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)  # extra key -> length
    task: str | None = None
    instruction: str | None = None
    horizon: int = 0  # steps per episode, if the driver has an episode length
    seed: int = 0
    camera_keys: dict[str, str] = field(default_factory=dict)  # camera -> observation key, where not "<camera>_image"
    state_key: StateKey | None = None  # the key of its policies' data for the joints and gripper, in that data's units


class Driver(ABC):
    """A robot, as the controller sees it. See ``dp/deploy/drivers/template.py`` for a real arm."""

    @abstractmethod
    def connect(self) -> DriverInfo:
        """Open the connection (or build the simulation) and return what the robot offers."""

    @abstractmethod
    def read_state(self) -> Reading:
        """The latest observation (cheap: called after every control period)."""

    @abstractmethod
    def apply(self, target: ArmTarget) -> None:
        """Execute one control period of clamped motion."""

    @abstractmethod
    def hold(self) -> None:
        """Keep the current pose and gripper for one control period."""

    @abstractmethod
    def stop(self) -> None:
        """Stop all motion now (the controller then calls :meth:`hold` until an operator's Release)."""

    @abstractmethod
    def disconnect(self) -> None:
        """Release the robot; called once, also after errors."""

    def reset(self, seed: int | None) -> int:
        """Start a new episode (a simulated scene is re-drawn from ``seed``; a real arm may home here);
        returns the episode's seed."""
        return 0 if seed is None else seed

    def forward_kinematics(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """End-effector (position, quaternion x,y,z,w) at joint positions ``q``; needed for joint mode."""
        raise NotImplementedError(f"{type(self).__name__} has no forward kinematics")


class SimulatedDriver(Driver):
    """A driver over a ``dp.sim`` environment (``reset(seed)``, ``close()``): the seed bookkeeping,
    reset and disconnect that every simulated robot shares. Subclasses set ``self.env`` in
    :meth:`connect` and may take the reset's first observation in :meth:`_on_reset`."""

    def __init__(self, config: RobotConfig, known_options: set[str], name: str):
        self.options = dict(config.driver.options)
        unknown = sorted(set(self.options) - known_options)
        if unknown:
            raise DpError(f"driver.options: unknown key(s) {unknown} for the {name} driver (known: {sorted(known_options)})")
        self.seed = int(self.options.get("seed", 0))
        self.control_hz = config.rates.control_hz
        self.env: Any = None

    def stop(self) -> None:
        """Nothing to cut in simulation: the controller holds from now on."""

    def reset(self, seed: int | None) -> int:
        self.seed = self.seed + 1 if seed is None else int(seed)
        self._on_reset(self.env.reset(self.seed))
        return self.seed

    def _on_reset(self, obs: Any) -> None:
        """The first observation of a new episode (ignored unless a subclass keeps it)."""

    def disconnect(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
