"""The waypoints a controller follows: successive commands spliced into one timeline.

A new command keeps the older waypoints that come before its own first one (the node's previous
chunk still covers the time until the new one starts) and replaces the rest; waypoints already in
the past are dropped. ``ee_delta`` waypoints are used at most once each, by the tick nearest
their time; ``ee_pose`` and ``joint`` waypoints are interpolated (slerp for orientations), from
the pose the robot was commanded to when the command arrived.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from dp.link.protocol import MODE_EE_DELTA, MODE_EE_POSE, Command


@dataclass
class Setpoint:
    """What one control tick should do: ``value`` is a delta (6,), a pose (7,) or joints (n,)."""

    mode: str
    value: np.ndarray
    gripper: float


class CommandBuffer:
    def __init__(self, control_hz: float):
        self.half = 0.5 / control_hz
        self.clear()

    def clear(self) -> None:
        self.mode: str | None = None
        self.times = np.zeros(0)
        self.values = np.zeros((0, 0))
        self.gripper = np.zeros(0)
        self.expires = -np.inf
        self.sender: int | None = None

    def active(self, now: float) -> bool:
        return self.mode is not None and now <= self.expires

    def accept(self, cmd: Command, now: float, start: np.ndarray | None, start_gripper: float, max_horizon: float) -> int:
        """Splice ``cmd`` in at time ``now``; ``start`` is the current pose/joints (for interpolated
        modes) used when the robot was not already following a waypoint of that mode. Returns the
        number of the command's waypoints dropped for being in the past."""
        keep = cmd.times >= now - self.half
        dropped = int((~keep).sum())
        times, values, gripper = cmd.times[keep], cmd.waypoints[keep], cmd.gripper[keep]
        if times.size == 0:
            return dropped
        if cmd.mode != MODE_EE_DELTA:
            current = self.setpoint(now) if (self.mode == cmd.mode and self.active(now)) else None
            if times[0] > now:  # start the interpolation from where the robot is commanded to be now
                value = current.value if current is not None else start
                g = current.gripper if current is not None else start_gripper
                times = np.concatenate([[now], times])
                values = np.concatenate([value[None], values])
                gripper = np.concatenate([[g], gripper])
        if self.mode == cmd.mode and self.active(now):
            older = self.times < times[0] - self.half
            times = np.concatenate([self.times[older], times])
            values = np.concatenate([self.values[older], values])
            gripper = np.concatenate([self.gripper[older], gripper])
        self.mode, self.times, self.values, self.gripper = cmd.mode, times, values, gripper
        self.expires = min(cmd.expires, now + max_horizon)
        self.sender = cmd.sender
        return dropped

    def setpoint(self, t: float) -> Setpoint | None:
        """What to do at time ``t`` (None: nothing scheduled, hold). Consumes past waypoints."""
        if not self.active(t) or self.times.size == 0:
            return None
        if self.mode == MODE_EE_DELTA:
            late = self.times < t - self.half
            self._drop(int(late.sum()))
            if self.times.size == 0 or self.times[0] > t + self.half:
                return None
            sp = Setpoint(self.mode, self.values[0], float(self.gripper[0]))
            self._drop(1)
            return sp
        i = int(np.searchsorted(self.times, t, side="right"))  # times[i-1] <= t < times[i]
        if i == 0:
            return None
        if i >= self.times.size:  # past the last waypoint: stay there until the command expires
            return Setpoint(self.mode, self.values[-1], float(self.gripper[-1]))
        self._drop(i - 1)  # keep the waypoint before t as the interpolation start
        t0, t1 = self.times[0], self.times[1]
        a = (t - t0) / (t1 - t0)
        v0, v1 = self.values[0], self.values[1]
        if self.mode == MODE_EE_POSE:
            rot = Slerp([0.0, 1.0], Rotation.from_quat([v0[3:], v1[3:]]))([a]).as_quat()[0]
            value = np.concatenate([(1 - a) * v0[:3] + a * v1[:3], rot])
        else:
            value = (1 - a) * v0 + a * v1
        return Setpoint(self.mode, value, float(self.gripper[0] if a < 0.5 else self.gripper[1]))

    def _drop(self, n: int) -> None:
        if n:
            self.times, self.values, self.gripper = self.times[n:], self.values[n:], self.gripper[n:]
