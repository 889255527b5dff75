"""LeRobot arms (SO-101, SO-100, Koch, OMX, ...) through LeRobot's own ``Robot`` classes, in joint mode.

Options (``driver.options``; ``robots/so101.yaml`` is a complete robot file)::

    robot_type: so101_follower              # LeRobot's name for the robot (its RobotConfig choice)
    robot: {port: /dev/ttyACM0, id: my_arm, use_degrees: true, cameras: {...}}   # LeRobot's config of it
    joints: [shoulder_pan, shoulder_lift, elbow_flex, wrist_flex, wrist_roll]   # arm motors, dp's joint order
    gripper: {name: gripper, open: 100, closed: 0}   # its motor; LeRobot's values for dp's -1 (open), +1 (closed)
    kinematics: {urdf: so101/so101_new_calib.urdf, frame: gripper_frame_link}   # + joints: URDF names, if others
    state_key: state                        # optional (default state): the policies' key for LeRobot's observation.state

``robot`` is decoded into the type's LeRobot config class as LeRobot's command line does (draccus),
cameras included; the driver reports the cameras the robot's observation features list. LeRobot
is imported only in :meth:`LeRobotDriver.connect`: dp runs inside LeRobot's virtualenv
(``pip install -e /path/to/dp`` there). Units: LeRobot's arm joints are degrees (``use_degrees``),
dp's are radians, converted here; LeRobot's degrees are the URDF's joint angles (as in LeRobot's
``RobotKinematics``), so the end-effector pose comes from the URDF chain, in its root link's frame.
The servos report no velocity: ``dq`` is the change of ``q`` over one control period. The gripper
is reported on dp's scale (-1 open .. +1 closed), as it is commanded.

Policies trained on LeRobot's data see it in LeRobot's units: the Info's ``state_key`` (see
:mod:`dp.link.protocol.state_key`) names the key `dp import lerobot` gives ``observation.state``
(``state``), the arm joints in degrees then the gripper on LeRobot's scale (``gripper``'s open and
closed values); `dp node` builds that key from each State and turns a policy's joint + gripper
actions in the same units back into radians and dp's -1 .. +1.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

import numpy as np

from dp.deploy.drivers.base import ArmTarget, Driver, DriverInfo, Reading
from dp.deploy.drivers.urdf_kinematics import UrdfChain
from dp.deploy.robot_config import RobotConfig, resolve_file
from dp.errors import DpError
from dp.link.protocol import MODE_JOINT, StateKey

OPTIONS = {"robot_type", "robot", "joints", "gripper", "kinematics", "state_key"}
REQUIRED = ("robot_type", "robot", "joints", "gripper", "kinematics")
INSTALL = "dp runs LeRobot arms from LeRobot's own virtualenv: activate it and install dp there (pip install -e /path/to/dp)"
EXTRAS = "install LeRobot's extra for the arm's motors (SO-100/SO-101: pip install 'lerobot[feetech]'; Koch, OMX: 'lerobot[dynamixel]')"


def _options(config: RobotConfig) -> dict[str, Any]:
    """``driver.options``, with unknown and missing keys refused (naming them)."""
    options = dict(config.driver.options)
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise DpError(f"driver.options: unknown key(s) {unknown} for the lerobot driver (known: {sorted(OPTIONS)})")
    missing = [key for key in REQUIRED if options.get(key) is None]
    if missing:
        raise DpError(f"driver.options: the lerobot driver needs {missing} (see robots/so101.yaml)")
    for key in ("robot", "gripper", "kinematics"):
        if not isinstance(options[key], dict):
            raise DpError(f"driver.options.{key}: expected a mapping, got {options[key]!r}")
    return options


def _said(exc: BaseException) -> str:
    """An exception's message on one line (LeRobot's start with a line break)."""
    return " ".join(str(exc).split())


def _import_lerobot() -> tuple[Any, Any, list[str]]:
    """(draccus, lerobot.robots, the modules that failed to import) with every robot and camera type of
    LeRobot and of installed plugins registered (LeRobot's scripts import them by name; a type
    registers when its module is imported)."""
    try:
        import lerobot.cameras
        import lerobot.robots
        import draccus
        from lerobot.utils.import_utils import register_third_party_plugins
    except ImportError as exc:
        raise DpError(f"the lerobot driver cannot import LeRobot ({exc}). {INSTALL}") from None
    failed = []
    for package in (lerobot.robots, lerobot.cameras):
        for module in pkgutil.iter_modules(package.__path__):
            try:
                importlib.import_module(f"{package.__name__}.{module.name}")
            except ImportError as exc:  # named if the type asked for is then unknown
                failed.append(f"{package.__name__}.{module.name} ({_said(exc)})")
    register_third_party_plugins()
    return draccus, lerobot.robots, failed


class LeRobotDriver(Driver):
    def __init__(self, config: RobotConfig):
        options = _options(config)
        self.robot_type = str(options["robot_type"])
        self.robot_options = dict(options["robot"])
        self.joints = [str(j) for j in options["joints"]]
        gripper = options["gripper"]
        if not {"name", "open", "closed"} <= set(gripper) or gripper["open"] == gripper["closed"]:
            raise DpError(f"driver.options.gripper: expected {{name, open, closed}} with open != closed, got {gripper}")
        self.gripper = str(gripper["name"])
        # LeRobot's units, for the driver's conversions and for policies trained on LeRobot's data
        self.state_key = StateKey(str(options.get("state_key") or "state"), float(np.degrees(1.0)), float(gripper["open"]),
                                  float(gripper["closed"]))
        self.keys = [f"{name}.pos" for name in [*self.joints, self.gripper]]
        kin = options["kinematics"]
        unknown = sorted(set(kin) - {"urdf", "frame", "joints"})
        if unknown or not {"urdf", "frame"} <= set(kin):
            raise DpError(f"driver.options.kinematics: expected urdf, frame and optionally joints, got {sorted(kin)}")
        names = [str(j) for j in kin.get("joints") or self.joints]
        if len(names) != len(self.joints):
            raise DpError(f"driver.options.kinematics.joints: {len(names)} names for {len(self.joints)} joints")
        self.chain = UrdfChain(resolve_file(kin["urdf"], "robots"), str(kin["frame"]), names)
        self.dt = 1.0 / config.rates.control_hz
        self.robot: Any = None
        self.cameras: list[str] = []
        self.goal: dict[str, float] | None = None  # the last position goal sent, in LeRobot's units
        self.q: np.ndarray | None = None

    # ------------------------------------------------------------------ connection
    def connect(self) -> DriverInfo:
        robot = self._make_robot()
        try:
            robot.connect(calibrate=False)  # LeRobot's calibration is interactive: never from the controller
        except Exception as exc:
            raise DpError(f"{self.robot_type} on {self.robot_options.get('port')}: LeRobot could not connect ({_said(exc)}); "
                          f"check the port (lerobot-find-port lists them), the cable and the arm's power") from None
        if not robot.is_calibrated:
            robot.disconnect()
            raise DpError(f"{self.robot_type} {self.robot_options.get('id')!r} is not calibrated (or its calibration file "
                          f"does not match the motors): calibrate it with LeRobot first: {self._calibrate_command()}")
        self.robot = robot
        self.cameras = [key for key, shape in robot.observation_features.items() if isinstance(shape, tuple)]
        return DriverInfo(n_joints=len(self.joints), modes=[MODE_JOINT], cameras=list(self.cameras), state_key=self.state_key)

    def _make_robot(self) -> Any:
        """LeRobot's robot of ``robot_type`` built from ``robot``, its units and features checked;
        nothing is connected yet."""
        draccus, robots, failed = _import_lerobot()
        try:
            config_class = robots.RobotConfig.get_choice_class(self.robot_type)
        except KeyError:
            known = sorted(robots.RobotConfig.get_known_choices())
            unloaded = f"; these did not import: {failed}" if failed else ""
            raise DpError(f"driver.options.robot_type: LeRobot has no robot {self.robot_type!r} (known: {known}{unloaded})") from None
        try:
            config = draccus.decode(config_class, self.robot_options)
        except Exception as exc:
            fields = [f.name for f in dataclasses.fields(config_class)]
            raise DpError(f"driver.options.robot: not a {self.robot_type} config ({_said(exc)}); its fields: {fields}") from None
        if not getattr(config, "use_degrees", True):
            raise DpError(f"driver.options.robot.use_degrees: must be true ({self.robot_type} then reports its arm "
                          f"joints in degrees, which the driver turns into dp's radians)")
        try:
            robot = robots.make_robot_from_config(config)
        except ImportError as exc:
            raise DpError(f"LeRobot cannot build {self.robot_type} ({_said(exc)}): {EXTRAS}") from None
        for kind, features in (("action", robot.action_features), ("observation", robot.observation_features)):
            missing = [key for key in self.keys if key not in features]
            if missing:
                offered = sorted(k for k, v in features.items() if not isinstance(v, tuple))
                raise DpError(f"driver.options.joints/gripper: {self.robot_type} has no {kind} feature {missing} "
                              f"(it offers {offered})")
        return robot

    def _calibrate_command(self) -> str:
        args = [f"--robot.type={self.robot_type}"] + [f"--robot.{key}={self.robot_options[key]}"
                                                       for key in ("port", "id") if key in self.robot_options]
        return "lerobot-calibrate " + " ".join(args)

    def disconnect(self) -> None:
        """LeRobot's disconnect (which by default switches the motors' torque off: the arm goes limp;
        ``robot.disable_torque_on_disconnect: false`` keeps it holding)."""
        robot, self.robot = self.robot, None
        if robot is not None and robot.is_connected:
            robot.disconnect()

    # ------------------------------------------------------------------ control
    def read_state(self) -> Reading:
        obs = self.robot.get_observation()
        q = self.state_key.joints_from_data(np.array([float(obs[f"{j}.pos"]) for j in self.joints]))
        dq = np.zeros_like(q) if self.q is None else (q - self.q) / self.dt
        self.q = q
        pos, quat = self.chain.pose(q)
        grip = self.state_key.gripper_from_data(np.array([float(obs[f"{self.gripper}.pos"])]))
        return Reading(q=q, dq=dq, ee_pos=pos, ee_quat=quat, gripper=grip,
                       images={cam: np.asarray(obs[cam], dtype=np.uint8) for cam in self.cameras})

    def apply(self, target: ArmTarget) -> None:
        key = self.state_key
        goal = dict(zip(self.keys, [*key.joints_to_data(target.joints).tolist(), float(key.gripper_to_data(target.gripper))]))
        self.goal = self.robot.send_action(goal)  # what LeRobot sent (its max_relative_target may cut it)

    def hold(self) -> None:
        """Re-send the last goal; with none yet, the measured position."""
        self.goal = self.robot.send_action(self.goal or self._measured())

    def stop(self) -> None:
        """The arm's goal becomes its present position, read now: the servos stop it where it is.
        The gripper keeps its goal (an object in its grip is not let go). LeRobot has no brake; its
        other way to stop, torque off, would let the arm fall."""
        if self.robot is None:
            return
        measured = self._measured()
        if self.goal is not None:
            measured[self.keys[-1]] = self.goal[self.keys[-1]]
        self.goal = self.robot.send_action(measured)

    def forward_kinematics(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.chain.pose(q)

    def _measured(self) -> dict[str, float]:
        obs = self.robot.get_observation()
        return {key: float(obs[key]) for key in self.keys}
