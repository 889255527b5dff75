"""Robot files (``robots/<robot>.yaml``): a robot described as data — driver, rates, limits, network.

Loaded into :class:`RobotConfig` with unknown keys and wrong types refused (the error names the
file and the key); ``key=value`` overrides on the command line use the same checks
(``driver.options.task=can``, ``limits.max_speed=0.5``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dp.config import apply_overrides, from_dict
from dp.errors import DpError
from dp.files import read_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DriverConfig:
    """Which driver owns the robot: ``sim``, ``template``, ``lerobot`` or ``package.module:Class``, and its options."""

    type: str = "sim"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RatesConfig:
    control_hz: float = 20.0  # control ticks per second: the rate the policy's actions were recorded at
    state_hz: float = 100.0  # State messages per second (the latest observation is republished between ticks)


@dataclass
class ActionScaleConfig:
    """What one unit of a policy's delta action means per control step (robosuite OSC_POSE: 5 cm, 0.5 rad)."""

    translation: float = 0.05  # metres
    rotation: float = 0.5  # radians


@dataclass
class LimitsConfig:
    """Every command is clamped to these before it reaches the driver."""

    workspace_min: list[float] = field(default_factory=lambda: [-0.3, -0.3, 0.8])  # end-effector box, metres, base frame
    workspace_max: list[float] = field(default_factory=lambda: [0.3, 0.3, 1.3])
    max_step_translation: float = 0.05  # metres per control step
    max_step_rotation: float = 0.5  # radians per control step
    max_speed: float = 1.0  # metres per second
    max_angular_speed: float = 10.0  # radians per second
    joint_min: list[float] = field(default_factory=list)  # joint mode: position limits (empty: no joint mode)
    joint_max: list[float] = field(default_factory=list)
    max_joint_speed: float = 1.0  # radians per second, joint mode
    # metres the end effector may move per radian of commanded rotation as the arm's controller executes
    # it (tracking error, tool offset): a step rotates only as far as keeps that inside the box
    rotation_drift: float = 0.1
    # metres the end effector may stray across its path per metre of commanded step (the arm's controller
    # couples the axes): near a wall a step is only as long as keeps that inside the box
    translation_drift: float = 0.1
    # how far the arm goes on past its target, in its last tick's motion (and its turn's drift): targets
    # stay that far back from a wall the arm moves toward, and an arm closer than that brakes (0: the
    # walls stop the robot by themselves)
    coast_steps: float = 2.0
    wall_margin: float = 0.002  # metres: targets stay this far inside the box (room to move along a wall)

    def step_translation(self, control_hz: float) -> float:
        return min(self.max_step_translation, self.max_speed / control_hz)

    def step_rotation(self, control_hz: float) -> float:
        return min(self.max_step_rotation, self.max_angular_speed / control_hz)


@dataclass
class SafetyConfig:
    heartbeat_timeout: float = 0.25  # seconds without a heartbeat or command from the commanding node -> hold
    max_command_horizon: float = 2.0  # seconds: a command is never executed longer than this after it arrived


@dataclass
class NetworkConfig:
    bind: str = "tcp://127.0.0.1:5555"  # State endpoint; port 0 picks a free port
    command_port: int = -1  # -1: the state port + 1 (0: a free port)
    camera_encoding: str = "jpeg"  # "jpeg" or "raw"
    jpeg_quality: int = 90


@dataclass
class RobotConfig:
    name: str = "robot"
    driver: DriverConfig = field(default_factory=DriverConfig)
    rates: RatesConfig = field(default_factory=RatesConfig)
    action_scale: ActionScaleConfig = field(default_factory=ActionScaleConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)

    def validate(self, where: str) -> RobotConfig:
        """Check values (not only types); a DpError naming ``where`` and the key otherwise."""
        lim, problems = self.limits, []
        lo, hi = np.asarray(lim.workspace_min, float), np.asarray(lim.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not (lo < hi).all():
            problems.append(f"limits.workspace_min/max: expected two [x, y, z] with min < max, got {lim.workspace_min}, {lim.workspace_max}")
        if len(lim.joint_min) != len(lim.joint_max) or any(a >= b for a, b in zip(lim.joint_min, lim.joint_max)):
            problems.append("limits.joint_min/max: expected lists of equal length with min < max")
        for key in ("max_step_translation", "max_step_rotation", "max_speed", "max_angular_speed", "max_joint_speed"):
            if not getattr(lim, key) > 0:
                problems.append(f"limits.{key}: must be > 0")
        for key in ("rotation_drift", "translation_drift", "coast_steps", "wall_margin"):
            if not getattr(lim, key) >= 0:
                problems.append(f"limits.{key}: must be >= 0")
        if lim.translation_drift > 0 and not lim.wall_margin > 0:
            problems.append("limits.wall_margin: must be > 0 with translation_drift > 0 (a target on a wall leaves no room along it)")
        if not (0 < self.rates.control_hz <= self.rates.state_hz):
            problems.append(f"rates: need 0 < control_hz <= state_hz, got {self.rates.control_hz}, {self.rates.state_hz}")
        if not (self.safety.heartbeat_timeout > 0 and self.safety.max_command_horizon > 0):
            problems.append("safety: heartbeat_timeout and max_command_horizon must be > 0")
        if self.network.camera_encoding not in ("jpeg", "raw"):
            problems.append(f"network.camera_encoding: expected jpeg or raw, got {self.network.camera_encoding!r}")
        if not 1 <= self.network.jpeg_quality <= 100:
            problems.append("network.jpeg_quality: expected 1..100")
        if self.action_scale.translation <= 0 or self.action_scale.rotation <= 0:
            problems.append("action_scale: translation and rotation must be > 0")
        if problems:
            raise DpError(f"{where}: " + "; ".join(problems))
        return self


def resolve_file(path: str | Path, folder: str) -> Path:
    """``path`` as given, else relative to the repository's ``folder`` (``robots``, ``launch``);
    a bare name gets ``.yaml`` appended (``panda_sim`` -> ``robots/panda_sim.yaml``)."""
    p = Path(path)
    candidates = [p, REPO_ROOT / p, REPO_ROOT / folder / p]
    if not p.suffix:
        candidates += [REPO_ROOT / folder / f"{p}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise DpError(f"{path}: no such file (also looked in {REPO_ROOT / folder})")


def load_robot(path: str | Path, overrides: list[str] | None = None) -> RobotConfig:
    """Read and check a robot file; ``overrides`` are ``key=value`` strings."""
    file = resolve_file(path, "robots")
    raw = read_yaml(file)
    try:
        config = from_dict(RobotConfig, raw or {})
        if overrides:
            config = apply_overrides(config, overrides)
    except DpError as exc:
        raise DpError(f"{file}: {exc}") from None
    return config.validate(str(file))
