"""The simulated Push-T robot: gym-pusht's agent as a 2-axis Cartesian (gantry) robot.

Its two joints are the agent's x and y in pixels, so joint mode is the 2-D position action mode: a
joint waypoint is the target agent position a Push-T policy outputs, clamped by the controller to
``limits.joint_min/max`` (the arena) and ``limits.max_joint_speed`` (pixels per second) as any arm's
joint command is. The end effector is (x, y, 0) with no rotation, so the workspace box and the
Cartesian step limits apply in pixels too. The State's ``extra`` carries the observation keys of the
Push-T stores (``agent_pos``, ``keypoint``, ``state``) and ``score`` (min(coverage / 0.95, 1) now: the
protocol's per-step score, whose maximum over an episode the node reports).

With ``cameras: [top]`` the State also carries the top view (``image_size`` pixels square, 96 by
default: what Diffusion Policy's image policies see) as camera ``top``, whose observation key is ``img``
(the Push-T stores' image key, named in the Info's ``camera_keys``), so an image policy runs too.

Options (``driver.options``): ``seed`` (first episode's seed; a reset without a seed takes the next),
``cameras`` (none by default, or ``[top]``), ``image_size`` (96).
Each :meth:`apply` / :meth:`hold` advances the physics by one control period (0.1 s).
"""

from __future__ import annotations

import numpy as np

from dp.deploy.drivers.base import ArmTarget, DriverInfo, Reading, SimulatedDriver
from dp.link.protocol import MODE_JOINT
from dp.deploy.robot_config import RobotConfig
from dp.errors import DpError

OPTIONS = {"seed", "cameras", "image_size"}
EXTRA = {"agent_pos": 2, "keypoint": 18, "state": 5, "score": 1}


class PushTDriver(SimulatedDriver):
    def __init__(self, config: RobotConfig):
        super().__init__(config, OPTIONS, "pusht")
        if len(config.limits.joint_min) != 2:
            raise DpError("limits.joint_min/max: the pusht robot has 2 joints (agent x, y in pixels)")
        self.cameras = list(self.options.get("cameras") or [])
        self.image_size = int(self.options.get("image_size", 96))

    def connect(self) -> DriverInfo:
        from dp.sim.tasks import get_task  # gym-pusht loads only when the controller starts

        spec = get_task("pusht")
        if abs(spec.control_freq - self.control_hz) > 1e-9:
            raise DpError(f"rates.control_hz {self.control_hz} does not match task 'pusht' ({spec.control_freq} Hz)")
        self.env = spec.make_env(self.cameras, self.image_size)  # checks the camera names
        self.env.reset(self.seed)
        self.camera_keys = dict(zip(self.cameras, spec.image_keys(self.cameras)))
        return DriverInfo(n_joints=2, modes=[MODE_JOINT], cameras=list(self.cameras), extra=dict(EXTRA), task=spec.name,
                          instruction=spec.instruction, horizon=spec.horizon, seed=self.seed, camera_keys=dict(self.camera_keys))

    def read_state(self) -> Reading:
        obs = self.env.observation()
        agent = obs["agent_pos"].astype(np.float64)
        return Reading(
            q=agent, dq=np.asarray(self.env.env.agent.velocity, dtype=np.float64),
            ee_pos=np.array([agent[0], agent[1], 0.0]), ee_quat=np.array([0.0, 0.0, 0.0, 1.0]), gripper=np.zeros(1),
            extra={**{k: obs[k] for k in ("agent_pos", "keypoint", "state")}, "score": np.array([self.env.score()], np.float32)},
            images={cam: obs[key] for cam, key in self.camera_keys.items()},
            success=self.env.success(),
        )

    def apply(self, target: ArmTarget) -> None:
        if target.joints is None:
            raise DpError("the pusht robot takes joint (x, y position) targets only")
        self.env.step(np.asarray(target.joints, dtype=np.float64))

    def hold(self) -> None:
        self.env.step(self.env.observation()["agent_pos"].astype(np.float64))  # target = where the agent is

    def forward_kinematics(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.array([q[0], q[1], 0.0]), np.array([0.0, 0.0, 0.0, 1.0])
