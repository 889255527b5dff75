"""The simulated robot: a robosuite task (``dp.sim.tasks``) with a Panda under OSC_POSE.

Options (``driver.options`` in the robot file): ``task`` (default ``lift``), ``cameras`` (default
none), ``image_size`` (84), ``seed`` (first episode's seed; a reset without a seed takes the next).
Each :meth:`apply` / :meth:`hold` advances the physics by one control period; the controller paces
the calls to wall-clock time. Motion arrives in metres / radians and is turned back into the
OSC_POSE action that `dp eval` would send (divided by the robot file's ``action_scale``).
"""

from __future__ import annotations

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from dp.deploy.drivers.base import ArmTarget, DriverInfo, Reading, SimulatedDriver
from dp.link.protocol import MODE_EE_DELTA, MODE_EE_POSE, MODE_JOINT
from dp.deploy.robot_config import RobotConfig
from dp.errors import DpError

OPTIONS = {"task", "cameras", "image_size", "seed"}


class SimDriver(SimulatedDriver):
    def __init__(self, config: RobotConfig):
        super().__init__(config, OPTIONS, "sim")
        self.task = str(self.options.get("task", "lift"))
        self.cameras = list(self.options.get("cameras") or [])
        self.image_size = int(self.options.get("image_size", 84))
        self.scale = np.array([config.action_scale.translation] * 3 + [config.action_scale.rotation] * 3)
        self._obs: dict[str, np.ndarray] = {}
        self._gripper = -1.0

    def connect(self) -> DriverInfo:
        from dp.sim.tasks import get_task  # robosuite loads only when a sim controller starts

        spec = get_task(self.task)
        if abs(spec.control_freq - self.control_hz) > 1e-9:
            raise DpError(f"rates.control_hz {self.control_hz} does not match task {self.task!r} ({spec.control_freq} Hz)")
        self.env = spec.make_env(self.cameras, self.image_size)
        rs = self.env.env
        self._robot = rs.robots[0]
        arm = self._robot.part_controllers["right"]
        osc_max = np.asarray(arm.output_max, dtype=float)
        if not np.allclose(osc_max, self.scale):
            raise DpError(f"action_scale {self.scale[[0, 3]].tolist()} does not match the OSC controller's output_max {osc_max.tolist()}")
        base_quat = rs.sim.data.get_body_xquat(self._robot.robot_model.root_body)  # w, x, y, z
        self._to_base = Rotation.from_quat(np.roll(base_quat, -1)).inv()  # reference-frame axes -> OSC base axes
        self._fk_data = mujoco.MjData(rs.sim.model._model)
        self._obs = self.env.reset(self.seed)
        self._gripper = -1.0
        return DriverInfo(
            n_joints=len(self._robot._ref_joint_pos_indexes), modes=[MODE_EE_DELTA, MODE_EE_POSE, MODE_JOINT],
            cameras=list(self.cameras), extra={"object": int(self._obs["object"].size)},
            task=spec.name, instruction=spec.instruction, horizon=spec.horizon, seed=self.seed,
        )

    def read_state(self) -> Reading:
        obs = self._obs
        return Reading(
            q=np.array(self._robot._joint_positions, dtype=np.float64),
            dq=np.array(self._robot._joint_velocities, dtype=np.float64),
            ee_pos=obs["robot0_eef_pos"].astype(np.float64), ee_quat=obs["robot0_eef_quat"].astype(np.float64),
            gripper=obs["robot0_gripper_qpos"].astype(np.float64), extra={"object": obs["object"]},
            images={cam: obs[f"{cam}_image"] for cam in self.cameras}, success=self.env.success(),
        )

    def apply(self, target: ArmTarget) -> None:
        dpos = self._to_base.apply(target.dpos)
        drot = self._to_base.apply(target.drot)
        self._gripper = float(target.gripper)
        self._step(np.concatenate([dpos, drot]) / self.scale)

    def hold(self) -> None:
        self._step(np.zeros(6))  # OSC goal = the current pose

    def _on_reset(self, obs: dict[str, np.ndarray]) -> None:
        self._obs = obs
        self._gripper = -1.0

    def forward_kinematics(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rs, data = self.env.env, self._fk_data
        data.qpos[:] = rs.sim.data.qpos
        data.qpos[self._robot._ref_joint_pos_indexes] = q
        mujoco.mj_kinematics(rs.sim.model._model, data)
        pos = data.site_xpos[self._robot.eef_site_id["right"]].copy()
        body = rs.sim.model.body_name2id(self._robot.robot_model.eef_name["right"])
        return pos, np.roll(data.xquat[body], -1)  # w,x,y,z -> x,y,z,w as robosuite's eef_quat

    def _step(self, arm: np.ndarray) -> None:
        self._obs, _ = self.env.step(np.concatenate([arm, [self._gripper]]))
