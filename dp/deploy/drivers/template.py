"""Template for a real arm's driver: copy this file into your own package, fill in the marked
places with your arm's SDK calls, and name the class in the robot file::

    driver:
      type: my_robot.driver:MyArmDriver      # package.module:Class
      options: {host: 172.16.0.2}

What the controller guarantees, so the driver stays small:

- calls come from one thread, in order: ``connect`` once, then per control period
  (``rates.control_hz``) exactly one of ``apply`` / ``hold``, each followed by ``read_state``;
  ``stop`` when a Stop message arrives or the controller exits, ``disconnect`` last (also after errors);
- every ``ArmTarget`` is already clamped to the robot file's limits (workspace box, per-step
  translation/rotation, speed, joint limits): the driver must not widen it, and should still keep
  the arm's own safety layer (e.g. libfranka's collision behaviour, a UR protective stop) on;
- ``apply`` must not block for longer than a fraction of the control period: hand the target to
  the SDK's streaming / servo interface and return;
- the end-effector frame and units must match the data the policy was trained on: positions in
  metres in the frame of ``robots/<robot>.yaml``'s workspace box, quaternions x, y, z, w, deltas
  along that frame's axes, gripper -1 open .. +1 closed.

The template runs without hardware (a driver whose arm never moves) so that the robot file and
the controller can be exercised, but its ``connect`` refuses unless ``options.dry_run`` is true.
"""

from __future__ import annotations

import numpy as np

from dp.deploy.drivers.base import ArmTarget, Driver, DriverInfo, Reading
from dp.link.protocol import MODE_EE_DELTA, MODE_EE_POSE
from dp.deploy.robot_config import RobotConfig
from dp.errors import DpError


class TemplateDriver(Driver):
    def __init__(self, config: RobotConfig):
        self.options = dict(config.driver.options)
        self.dt = 1.0 / config.rates.control_hz
        # SDK: keep the connection parameters, e.g. self.host = self.options["host"]
        self._pose = (np.array([0.5, 0.0, 0.3]), np.array([1.0, 0.0, 0.0, 0.0]))
        self._gripper = -1.0

    def connect(self) -> DriverInfo:
        if not self.options.get("dry_run"):
            raise DpError("the template driver talks to no robot: copy dp/deploy/drivers/template.py, fill in your "
                          "arm's SDK calls, or set driver.options.dry_run=true to exercise the controller")
        # SDK: open the connection, switch the arm to its Cartesian (or joint) streaming mode,
        # start the gripper; read the first state so read_state() has something to return.
        return DriverInfo(n_joints=7, modes=[MODE_EE_DELTA, MODE_EE_POSE], cameras=[], extra={})

    def read_state(self) -> Reading:
        # SDK: the latest joint positions/velocities, end-effector pose (in the robot file's frame)
        # and finger positions; cameras, if the controller owns them, as uint8 RGB arrays.
        pos, quat = self._pose
        return Reading(q=np.zeros(7), dq=np.zeros(7), ee_pos=pos.copy(), ee_quat=quat.copy(),
                       gripper=np.full(2, 0.04 if self._gripper < 0 else 0.0))

    def apply(self, target: ArmTarget) -> None:
        # SDK: send the new end-effector goal (current pose + target.dpos, rotated by target.drot)
        # or target.joints to the streaming interface; command the gripper from target.gripper.
        self._gripper = target.gripper

    def hold(self) -> None:
        # SDK: keep the last goal (most arms hold a pose when the stream repeats it).
        pass

    def stop(self) -> None:
        # SDK: stop the motion now (e.g. a stop/brake call); the controller holds until an operator's Release.
        pass

    def disconnect(self) -> None:
        # SDK: leave streaming mode and close the connection.
        pass
