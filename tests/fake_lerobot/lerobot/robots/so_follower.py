"""A fake SO-100/SO-101 follower: LeRobot's ``SOFollower`` interface over simulated servos.

Each ``send_action`` is one control period of the servos: every joint moves toward its goal with
a first-order lag and carries on a little of its last motion (it coasts past a goal it stops at);
positions read back in LeRobot's units (arm joints in degrees with ``use_degrees``, the gripper
0..100) at the servos' resolution of 4096 steps a turn. ``cameras`` give small uint8 frames. The
fake's own config knobs: ``motors`` (the motor names it has), ``calibrated``, ``start`` (degrees),
``record`` (a file every goal sent is appended to, one JSON line each: what a test reads of a fake
inside a `dp robot` process). Every instance keeps what it was asked to do in ``calls``;
``SOFollower.instances`` lists them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from lerobot.cameras import CameraConfig
from lerobot.robots import ROBOTS, RobotConfig

MOTORS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
START = {"shoulder_pan": 0.0, "shoulder_lift": -30.0, "elbow_flex": 30.0, "wrist_flex": 60.0, "wrist_roll": 0.0, "gripper": 50.0}
LAG = 0.5  # fraction of the distance to the goal a joint covers per period
COAST = 0.2  # fraction of its last period's motion a joint carries on with
RESOLUTION = 360.0 / 4096  # degrees per servo step


class DeviceNotConnectedError(ConnectionError):
    pass


@RobotConfig.register_subclass("so101_follower")
@RobotConfig.register_subclass("so100_follower")
@dataclass(kw_only=True)
class SOFollowerConfig(RobotConfig):
    port: str
    disable_torque_on_disconnect: bool = True
    max_relative_target: float | None = None
    cameras: dict = field(default_factory=dict, metadata={"choices": CameraConfig})
    use_degrees: bool = True
    motors: list = field(default_factory=lambda: list(MOTORS))
    calibrated: bool = True
    start: dict = field(default_factory=lambda: dict(START))
    record: str | None = None


class SOFollower:
    instances: list[SOFollower] = []

    def __init__(self, config: SOFollowerConfig):
        self.config = config
        self.q = np.array([float(config.start.get(m, 0.0)) for m in config.motors])
        self.v = np.zeros_like(self.q)
        self.goal = self.q.copy()
        self.connected = False
        self.periods = 0
        self.calls: list[tuple] = []
        self.record = open(config.record, "a", buffering=1) if config.record else None  # line-buffered: read live
        SOFollower.instances.append(self)

    @property
    def observation_features(self) -> dict:
        cams = {name: (cam.height, cam.width, 3) for name, cam in self.config.cameras.items()}
        return {**{f"{m}.pos": float for m in self.config.motors}, **cams}

    @property
    def action_features(self) -> dict:
        return {f"{m}.pos": float for m in self.config.motors}

    @property
    def is_connected(self) -> bool:
        return self.connected

    @property
    def is_calibrated(self) -> bool:
        self._check()  # LeRobot reads the motors' calibration to compare it with its file
        return self.config.calibrated

    def connect(self, calibrate: bool = True) -> None:
        self.calls.append(("connect", calibrate))
        if not os.path.exists(self.config.port):
            raise ConnectionError(f"\nCould not connect on port '{self.config.port}'. Make sure you are using the correct port.")
        self.connected = True
        if calibrate and not self.config.calibrated:
            self.calibrate()

    def calibrate(self) -> None:
        raise AssertionError("LeRobot's calibration asks questions on the terminal: never from a controller")

    def get_observation(self) -> dict:
        self._check()
        shown = np.round(self.q / RESOLUTION) * RESOLUTION
        obs = {f"{m}.pos": float(v) for m, v in zip(self.config.motors, shown)}
        for name, cam in self.config.cameras.items():
            obs[name] = np.full((cam.height, cam.width, 3), self.periods % 256, dtype=np.uint8)
        return obs

    def send_action(self, action: dict) -> dict:
        self._check()
        self.calls.append(("send_action", dict(action)))
        if self.record:
            self.record.write(json.dumps(action) + "\n")
        for key, value in action.items():
            self.goal[self.config.motors.index(key.removesuffix(".pos"))] = float(value)
        self.v = LAG * (self.goal - self.q) + COAST * self.v
        self.q = self.q + self.v
        self.periods += 1
        return dict(action)

    def disconnect(self) -> None:
        self._check()
        self.calls.append(("disconnect",))
        self.connected = False
        if self.record:
            self.record.close()

    def _check(self) -> None:
        if not self.connected:
            raise DeviceNotConnectedError(f"{type(self).__name__} is not connected. Run `.connect()` first.")


ROBOTS["so101_follower"] = ROBOTS["so100_follower"] = SOFollower
