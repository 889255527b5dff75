"""The messages (State, Info, Command, Heartbeat, Stop, Release, Reset) and camera frames: to and from wire maps.

Each message's ``from_wire`` validates every field (see :mod:`dp.link.protocol` for what the
messages mean and how their stamps and modes work).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import cv2
import numpy as np

from dp.link.protocol.fields import (
    bool_field,
    float_field,
    int_field,
    map_field,
    optional_bool_field,
    pack_array,
    required,
    str_field,
    strings_field,
    unpack_array,
)
from dp.link.protocol.schema import (
    MAX_CAMERAS,
    MAX_EXTRA_KEYS,
    MAX_EXTRA_SIZE,
    MAX_FAULTS,
    MAX_GRIPPER_DIMS,
    MAX_IMAGE_SIDE,
    MAX_JOINTS,
    MAX_WAYPOINTS,
    MODE_EE_POSE,
    MODE_JOINT,
    MODE_WIDTH,
    MODES,
    ROBOT_MODES,
    ProtocolError,
)
from dp.link.protocol.state_key import StateKey


@dataclass
class CameraFrame:
    """One camera image, uint8 (H, W, 3) RGB. ``payload`` holds the JPEG bytes when encoded."""

    pixels: np.ndarray
    encoding: str = "raw"  # "jpeg" | "raw"
    payload: bytes | None = None

    @classmethod
    def jpeg(cls, pixels: np.ndarray, quality: int = 90) -> CameraFrame:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise ValueError("opencv could not JPEG-encode the frame")
        return cls(pixels, "jpeg", buf.tobytes())

    def to_wire(self) -> dict:
        if self.encoding == "jpeg":
            return {"enc": "jpeg", "shape": list(self.pixels.shape), "data": self.payload}
        return {"enc": "raw", "data": pack_array(self.pixels)}

    @classmethod
    def from_wire(cls, value: Any, name: str) -> CameraFrame:
        if not isinstance(value, dict):
            raise ProtocolError(name, "expected a map {enc, data[, shape]}")
        enc = str_field(value, "enc", name, ("jpeg", "raw"))
        if enc == "raw":
            pixels = unpack_array(required(value, "data", name), f"{name}.data", kind="u", shape=(None, None, 3))
            if not (0 < pixels.shape[0] <= MAX_IMAGE_SIDE and 0 < pixels.shape[1] <= MAX_IMAGE_SIDE):
                raise ProtocolError(f"{name}.data", f"image side out of range: {pixels.shape}")
            return cls(pixels, "raw")
        dims = required(value, "shape", name)
        if not (isinstance(dims, list) and len(dims) == 3 and dims[2] == 3
                and all(type(x) is int and 0 < x <= MAX_IMAGE_SIDE for x in dims)):
            raise ProtocolError(f"{name}.shape", f"expected [H, W, 3] with sides <= {MAX_IMAGE_SIDE}, got {dims!r}")
        data = required(value, "data", name)
        if not isinstance(data, bytes) or not data.startswith(b"\xff\xd8"):
            raise ProtocolError(f"{name}.data", "expected JPEG bytes")
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None or list(decoded.shape) != dims:
            got = None if decoded is None else list(decoded.shape)
            raise ProtocolError(f"{name}.data", f"JPEG does not decode to {dims} (got {got})")
        return cls(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), "jpeg", data)


@dataclass
class State:
    """The robot as the controller sees it, published at >= 100 Hz.

    ``tick`` counts control periods (a new observation each); between ticks the latest observation
    is republished with a fresh ``seq`` and ``stamp``. ``applied`` is what the last tick executed
    after clamping: ``[dx, dy, dz, rx, ry, rz, gripper]`` in metres / radians (base frame).
    ``cmd_latency``: how long after its observation was ready the last accepted command arrived
    (s, -1 if none): transport + node, the observation-to-command latency.
    """

    TYPE: ClassVar[str] = "state"
    boot: int
    seq: int
    stamp: float
    obs_stamp: float
    tick: int
    episode: int
    mode: str
    q: np.ndarray
    dq: np.ndarray
    ee_pos: np.ndarray
    ee_quat: np.ndarray  # x, y, z, w (robosuite's convention)
    gripper: np.ndarray  # finger joint positions
    applied: np.ndarray
    held: bool = True  # the last tick held (no setpoint: no command, expired, stopped) instead of following one
    command_seq: int = -1
    cmd_latency: float = -1.0
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # task state by name, e.g. "object"
    images: dict[str, CameraFrame] = field(default_factory=dict)  # camera name -> frame
    faults: list[str] = field(default_factory=list)
    success: bool | None = None  # the task's success check, where the driver has one (simulation)
    rejected: int = 0  # malformed or out-of-order messages this controller has dropped

    def to_wire(self) -> dict:
        return {
            "boot": self.boot, "seq": self.seq, "stamp": self.stamp, "obs_stamp": self.obs_stamp,
            "tick": self.tick, "episode": self.episode, "mode": self.mode,
            "q": pack_array(self.q), "dq": pack_array(self.dq), "ee_pos": pack_array(self.ee_pos),
            "ee_quat": pack_array(self.ee_quat), "gripper": pack_array(self.gripper), "applied": pack_array(self.applied),
            "held": self.held, "command_seq": self.command_seq, "cmd_latency": self.cmd_latency,
            "extra": {k: pack_array(v) for k, v in self.extra.items()},
            "images": {k: v.to_wire() for k, v in self.images.items()},
            "faults": list(self.faults), "success": self.success, "rejected": self.rejected,
        }

    @classmethod
    def from_wire(cls, d: dict) -> State:
        n = "state"
        q = unpack_array(required(d, "q", n), f"{n}.q", shape=(None,), max_size=MAX_JOINTS)
        dq = unpack_array(required(d, "dq", n), f"{n}.dq", shape=q.shape, max_size=MAX_JOINTS)
        extra = {k: unpack_array(v, f"{n}.extra.{k}", shape=(None,), max_size=MAX_EXTRA_SIZE)
                 for k, v in map_field(d, "extra", n, MAX_EXTRA_KEYS).items()}
        images = {k: CameraFrame.from_wire(v, f"{n}.images.{k}") for k, v in map_field(d, "images", n, MAX_CAMERAS).items()}
        return cls(
            boot=int_field(d, "boot", n), seq=int_field(d, "seq", n), stamp=float_field(d, "stamp", n),
            obs_stamp=float_field(d, "obs_stamp", n), tick=int_field(d, "tick", n), episode=int_field(d, "episode", n),
            mode=str_field(d, "mode", n, ROBOT_MODES), q=q, dq=dq,
            ee_pos=unpack_array(required(d, "ee_pos", n), f"{n}.ee_pos", shape=(3,)),
            ee_quat=unpack_array(required(d, "ee_quat", n), f"{n}.ee_quat", shape=(4,)),
            gripper=unpack_array(required(d, "gripper", n), f"{n}.gripper", shape=(None,), max_size=MAX_GRIPPER_DIMS),
            applied=unpack_array(required(d, "applied", n), f"{n}.applied", shape=(7,)), held=bool_field(d, "held", n),
            command_seq=int_field(d, "command_seq", n, lo=-1), cmd_latency=float_field(d, "cmd_latency", n, lo=-1.0),
            extra=extra, images=images, faults=strings_field(d, "faults", n, MAX_FAULTS),
            success=optional_bool_field(d, "success", n), rejected=int_field(d, "rejected", n),
        )


@dataclass
class Info:
    """What a node must know about the robot, published at 1 Hz and after every reset.

    ``action_scale`` = (metres, radians) of one unit of a policy's delta action per control step;
    ``command_port`` is where the controller takes commands (same host as the state endpoint);
    ``state_key``, where the robot has one, the key its policies' data gives its joints and gripper,
    in that data's units (:class:`StateKey`).
    """

    TYPE: ClassVar[str] = "info"
    boot: int
    robot: str
    control_hz: float
    state_hz: float
    n_joints: int
    modes: list[str]
    action_scale: tuple[float, float]
    command_port: int
    cameras: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)  # extra key -> length
    task: str | None = None
    instruction: str | None = None
    horizon: int = 0  # steps per episode where the driver has an episode length (simulation), else 0
    seed: int = 0  # seed of the current episode
    camera_keys: dict[str, str] = field(default_factory=dict)  # camera -> its observation key, where not "<camera>_image"
    state_key: StateKey | None = None

    def to_wire(self) -> dict:
        return {
            "boot": self.boot, "robot": self.robot, "control_hz": self.control_hz, "state_hz": self.state_hz,
            "n_joints": self.n_joints, "modes": list(self.modes), "action_scale": list(self.action_scale),
            "command_port": self.command_port, "cameras": list(self.cameras), "extra": dict(self.extra),
            "task": self.task, "instruction": self.instruction, "horizon": self.horizon, "seed": self.seed,
            "camera_keys": dict(self.camera_keys), "state_key": None if self.state_key is None else self.state_key.to_wire(),
        }

    @classmethod
    def from_wire(cls, d: dict) -> Info:
        n = "info"
        scale = required(d, "action_scale", n)
        if not (isinstance(scale, list) and len(scale) == 2 and all(type(x) in (int, float) and 0 < x < 100 for x in scale)):
            raise ProtocolError(f"{n}.action_scale", f"expected [metres, radians] > 0, got {scale!r}")
        modes = strings_field(d, "modes", n, len(MODES))
        if not modes or any(m not in MODES for m in modes):
            raise ProtocolError(f"{n}.modes", f"expected a non-empty subset of {list(MODES)}, got {modes}")
        extra = map_field(d, "extra", n, MAX_EXTRA_KEYS)
        if not all(type(v) is int and 0 < v <= MAX_EXTRA_SIZE for v in extra.values()):
            raise ProtocolError(f"{n}.extra", "expected key -> length")
        cameras = strings_field(d, "cameras", n, MAX_CAMERAS)
        camera_keys = map_field(d, "camera_keys", n, MAX_CAMERAS) if d.get("camera_keys") is not None else {}
        if not all(k in cameras and isinstance(v, str) and 0 < len(v) <= 64 for k, v in camera_keys.items()):
            raise ProtocolError(f"{n}.camera_keys", f"expected camera -> observation key for cameras of {cameras}, got {camera_keys!r}")
        state_key = None if d.get("state_key") is None else StateKey.from_wire(d["state_key"], f"{n}.state_key")
        info = cls(
            boot=int_field(d, "boot", n), robot=str_field(d, "robot", n), control_hz=float_field(d, "control_hz", n, 0.1, 10_000),
            state_hz=float_field(d, "state_hz", n, 0.1, 100_000), n_joints=int_field(d, "n_joints", n, 0, MAX_JOINTS),
            modes=modes, action_scale=(float(scale[0]), float(scale[1])), command_port=int_field(d, "command_port", n, 1, 65535),
            cameras=cameras, extra=extra, task=str_field(d, "task", n, optional=True),
            instruction=str_field(d, "instruction", n, optional=True), horizon=int_field(d, "horizon", n, 0, 10**9),
            seed=int_field(d, "seed", n, 0, (1 << 32) - 1), camera_keys=camera_keys, state_key=state_key,
        )
        keys = info.observation_keys()
        if state_key is not None and keys.count(state_key.key) > 1:
            keys.remove(state_key.key)  # its own entry: the others are the robot's other keys
            raise ProtocolError(f"{n}.state_key.key", f"{state_key.key!r} is already an observation key of this robot ({keys})")
        return info

    def observation_keys(self) -> list[str]:
        """The keys :func:`observation_from_state` gives for this robot's States."""
        own = [] if self.state_key is None else [self.state_key.key]
        return [*STATE_KEYS, *self.extra, *own, *(camera_key(cam, self.camera_keys) for cam in self.cameras)]

    def offers(self) -> str:
        """The robot's cameras (with their observation keys), extra keys and state key, in words."""
        cameras = ", ".join(f"{cam} (as {camera_key(cam, self.camera_keys)})" for cam in self.cameras) or "none"
        state = "none" if self.state_key is None else self.state_key.describe(self.n_joints)
        return f"its cameras: {cameras}; its extra keys: {', '.join(self.extra) or 'none'}; its state key: {state}"


@dataclass
class Command:
    """Timestamped waypoints for the controller to follow (see the module docstring for modes).

    ``times`` (N,) are strictly increasing controller times; ``waypoints`` (N, D); ``gripper`` (N,).
    The command is not executed after ``expires`` (controller time).
    """

    TYPE: ClassVar[str] = "command"
    sender: int
    seq: int
    boot: int  # the controller run whose State the command was computed from
    obs_stamp: float
    mode: str
    times: np.ndarray
    waypoints: np.ndarray
    gripper: np.ndarray
    expires: float

    def to_wire(self) -> dict:
        return {
            "sender": self.sender, "seq": self.seq, "boot": self.boot, "obs_stamp": self.obs_stamp, "mode": self.mode,
            "times": pack_array(np.asarray(self.times, np.float64)),
            "waypoints": pack_array(np.asarray(self.waypoints, np.float64)),
            "gripper": pack_array(np.asarray(self.gripper, np.float64)), "expires": self.expires,
        }

    @classmethod
    def from_wire(cls, d: dict) -> Command:
        n = "command"
        mode = str_field(d, "mode", n, MODES)
        times = unpack_array(required(d, "times", n), f"{n}.times", shape=(None,), max_size=MAX_WAYPOINTS)
        if times.size == 0:
            raise ProtocolError(f"{n}.times", "needs at least one waypoint")
        if times.size > 1 and not (np.diff(times) > 0).all():
            raise ProtocolError(f"{n}.times", "must be strictly increasing")
        width = MODE_WIDTH.get(mode)
        wps = unpack_array(required(d, "waypoints", n), f"{n}.waypoints", shape=(times.size, width), max_size=MAX_WAYPOINTS * MAX_JOINTS)
        if mode == MODE_JOINT and not 0 < wps.shape[1] <= MAX_JOINTS:
            raise ProtocolError(f"{n}.waypoints", f"joint waypoints need 1..{MAX_JOINTS} columns, got {wps.shape[1]}")
        if mode == MODE_EE_POSE and not (np.abs(np.linalg.norm(wps[:, 3:], axis=1) - 1.0) < 1e-3).all():
            raise ProtocolError(f"{n}.waypoints", "ee_pose quaternions (columns 3..6) must have unit norm")
        gripper = unpack_array(required(d, "gripper", n), f"{n}.gripper", shape=(times.size,))
        obs_stamp = float_field(d, "obs_stamp", n)
        expires = float_field(d, "expires", n)
        if expires < times[0]:
            raise ProtocolError(f"{n}.expires", f"expires ({expires:.3f}) before the first waypoint ({times[0]:.3f})")
        return cls(sender=int_field(d, "sender", n), seq=int_field(d, "seq", n), boot=int_field(d, "boot", n), obs_stamp=obs_stamp, mode=mode,
                   times=times, waypoints=wps, gripper=gripper, expires=expires)


def _addressed(d: dict, name: str) -> dict[str, Any]:
    """The fields every message to a controller carries besides a Command: sender, seq, boot, stamp."""
    return {"sender": int_field(d, "sender", name), "seq": int_field(d, "seq", name), "boot": int_field(d, "boot", name),
            "stamp": float_field(d, "stamp", name)}


@dataclass
class Heartbeat:
    """"I am alive and still in charge" from a node; commands count as heartbeats too.

    Like :class:`Stop`, :class:`Release` and :class:`Reset` it names the controller run (``boot``)
    and carries ``stamp``, the ``stamp`` of the newest State its sender had seen (controller clock):
    the controller refuses one from another run or older than its replay window, so a recording
    replayed later is refused even after its sender left the controller's sender table."""

    TYPE: ClassVar[str] = "heartbeat"
    sender: int
    seq: int
    boot: int
    stamp: float

    def to_wire(self) -> dict:
        return {"sender": self.sender, "seq": self.seq, "boot": self.boot, "stamp": self.stamp}

    @classmethod
    def from_wire(cls, d: dict) -> Heartbeat:
        return cls(**_addressed(d, cls.TYPE))


@dataclass
class _OperatorMessage:
    """The fields of :class:`Stop` and :class:`Release`: an addressed message with a reason."""

    TYPE: ClassVar[str]
    sender: int
    seq: int
    boot: int
    stamp: float
    reason: str = ""

    def to_wire(self) -> dict:
        return {"sender": self.sender, "seq": self.seq, "boot": self.boot, "stamp": self.stamp, "reason": self.reason}

    @classmethod
    def from_wire(cls, d: dict):
        return cls(**_addressed(d, cls.TYPE), reason=str_field(d, "reason", cls.TYPE))


@dataclass
class Stop(_OperatorMessage):
    """Stop now and stay stopped: commands and Resets are refused until a :class:`Release`. Accepted
    from any sender the transport admits, however many senders the controller is tracking."""

    TYPE: ClassVar[str] = "stop"


@dataclass
class Release(_OperatorMessage):
    """An operator's release of a Stop (``dp stop --release``): the robot holds, and commands are
    followed again. Nothing else clears a Stop; a Release when not stopped changes nothing."""

    TYPE: ClassVar[str] = "release"


@dataclass
class Reset:
    """Start a new episode (the sim driver resets its scene with ``seed``); refused while stopped."""

    TYPE: ClassVar[str] = "reset"
    sender: int
    seq: int
    boot: int
    stamp: float
    seed: int | None = None

    def to_wire(self) -> dict:
        return {"sender": self.sender, "seq": self.seq, "boot": self.boot, "stamp": self.stamp, "seed": self.seed}

    @classmethod
    def from_wire(cls, d: dict) -> Reset:
        seed = d.get("seed")
        if seed is not None:
            seed = int_field(d, "seed", cls.TYPE, 0, (1 << 32) - 1)
        return cls(**_addressed(d, cls.TYPE), seed=seed)


STATE_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos", "robot0_joint_vel")  # every State's


def camera_key(camera: str, camera_keys: dict[str, str] | None = None) -> str:
    """A camera's observation key: what the robot's Info names (``camera_keys``), else ``<camera>_image``."""
    return (camera_keys or {}).get(camera, f"{camera}_image")


def observation_from_state(state: State, camera_keys: dict[str, str] | None = None,
                           state_key: StateKey | None = None) -> dict[str, np.ndarray]:
    """A State as one time step of a policy's observation, in the project's key conventions:
    ``robot0_eef_pos``, ``robot0_eef_quat``, ``robot0_gripper_qpos``, ``robot0_joint_pos``,
    ``robot0_joint_vel`` (float32), every ``extra`` key as it is (e.g. ``object``), the robot's
    ``Info.state_key`` in its data's units, and each camera under :func:`camera_key` (uint8
    H x W x 3; ``camera_keys``: the robot's ``Info.camera_keys``)."""
    obs = {key: value.astype(np.float32) for key, value in zip(STATE_KEYS, (state.ee_pos, state.ee_quat, state.gripper, state.q, state.dq))}
    obs.update({k: v.astype(np.float32) for k, v in state.extra.items()})
    if state_key is not None:
        obs[state_key.key] = state_key.observe(state.q, state.gripper)
    obs.update({camera_key(cam, camera_keys): frame.pixels for cam, frame in state.images.items()})
    return obs

Message = Union[State, Info, Command, Heartbeat, Stop, Release, Reset]
MESSAGE_TYPES: dict[str, type] = {cls.TYPE: cls for cls in (State, Info, Command, Heartbeat, Stop, Release, Reset)}
CONTROL_TYPES = (Command, Heartbeat, Stop, Release, Reset)  # what a controller accepts
