"""Teleoperation: robosuite's input devices (``robosuite.devices.Keyboard`` / ``SpaceMouse``) as an
action source for the collector.

A device is anything with robosuite's ``Device`` interface: ``start_control()`` at the start of an
episode and ``input2action()`` returning ``{"right_delta": (6,), "right_gripper": (1,), ...}`` (or
None when the operator asks for a reset, which ends the episode). The operator watches robosuite's
on-screen viewer, so teleoperation needs a display.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Protocol

import numpy as np

from dp.errors import DpError
from dp.sim.rollout import EndEpisode
from dp.sim.tasks import SimEnv

DEVICES = ("keyboard", "spacemouse")
SUCCESS_HOLD = 10  # a teleoperated episode ends after the task has stayed solved this many steps


class Device(Protocol):
    def start_control(self) -> None: ...

    def input2action(self) -> dict[str, np.ndarray] | None: ...


class TeleopSource:
    """Policy runtime API over an input device: each step reads the device and builds the 7-d action."""

    def __init__(self, device: Device, env: SimEnv, arm: str = "right"):
        self.device = device
        self.env = env
        self.arm = arm

    def reset(self, instruction: str | None = None) -> None:
        if instruction:
            print(f"teleop: {instruction}")
        self.device.start_control()

    def select_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        command = self.device.input2action()
        if command is None:
            raise EndEpisode
        robot = self.env.env.robots[0]
        parts = {self.arm: np.asarray(command[f"{self.arm}_delta"]), f"{self.arm}_gripper": np.asarray(command[f"{self.arm}_gripper"])}
        return np.asarray(robot.create_action_vector(parts), dtype=np.float32)


def check_display() -> None:
    """Teleoperation shows robosuite's viewer and listens to the keyboard: both need a display."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise DpError(
            "teleoperation needs a display (robosuite's viewer and keyboard listener use X11); "
            "$DISPLAY is not set. Run on a desktop session or with X forwarding (ssh -X)."
        )


def make_device(kind: str, env: SimEnv, pos_sensitivity: float = 1.0, rot_sensitivity: float = 1.0) -> Device:
    """Open a robosuite input device bound to ``env`` ("keyboard" or "spacemouse")."""
    check_display()
    try:
        if kind == "keyboard":
            from robosuite.devices import Keyboard

            return Keyboard(env=env.env, pos_sensitivity=pos_sensitivity, rot_sensitivity=rot_sensitivity)
        if kind == "spacemouse":
            from robosuite.devices import SpaceMouse

            return SpaceMouse(env=env.env, pos_sensitivity=pos_sensitivity, rot_sensitivity=rot_sensitivity)
    except ImportError as exc:  # pynput without an X server, or hidapi missing for the SpaceMouse
        raise DpError(f"--teleop {kind}: the device driver cannot load ({exc})") from None
    except OSError as exc:  # hid.device().open(): no SpaceMouse plugged in / no permission
        raise DpError(f"--teleop {kind}: cannot open the device ({exc}); is it plugged in and readable?") from None
    raise DpError(f"unknown teleoperation device {kind!r} (known: {', '.join(DEVICES)})")


def teleop_source(kind: str) -> Any:
    """A collector source factory for a device kind (runs in the collecting process only)."""
    if kind not in DEVICES:
        raise DpError(f"unknown teleoperation device {kind!r} (known: {', '.join(DEVICES)})")
    check_display()
    return functools.partial(_open, kind)


def _open(kind: str, env: SimEnv) -> TeleopSource:
    return TeleopSource(make_device(kind, env), env)
