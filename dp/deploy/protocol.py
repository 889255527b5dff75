"""The controller protocol: what a robot controller and an inference node say to each other.

Transport: ZeroMQ. The controller PUBlishes :class:`State` (>= 100 Hz) and :class:`Info` (1 Hz) on
its state endpoint and PULLs :class:`Command`, :class:`Heartbeat`, :class:`Stop` and :class:`Reset`
on its command endpoint (by default the state port + 1). Every message is one msgpack map with
``v`` (the schema version, :data:`VERSION`) and ``type``. A numpy array crosses as a 3-list
``[dtype, shape, bytes]`` (little-endian dtypes only). Camera frames cross JPEG-encoded (opencv)
or raw.

Every message is validated on receipt (:func:`decode`): size, version, types, dtypes, shapes,
finite numbers; per-sender sequence numbers are checked by :class:`SeqGuard`. A bad message raises
:class:`ProtocolError` naming the field; receivers count it and drop it, never crash. A Command
names the controller run (``boot``) whose State it was computed from; another run refuses it, so
nothing computed before a controller restart is ever executed after it. A Stop latches until a
Reset; a Reset starts a new episode (the sim driver re-draws its scene from the given seed).

Clocks. Every stamp is in the controller's clock (``time.monotonic()`` of the controller process):
``State.obs_stamp`` is the scheduled time of the control tick whose observation the State holds
(the driver reads the robot right after that tick's motion). A node computes from one State and
anchors its waypoints to that State's ``obs_stamp``, so its own latency is absorbed, not added:
waypoints the controller receives after their time are dropped, and the rest run on schedule.

Chunks of delta actions (mode ``ee_delta``). A policy trained on per-step OSC deltas gives a chunk
``a_0 .. a_{H-1}`` from the observation stamped ``t_obs``; ``a_k`` is the motion of one control
period. It becomes H waypoints at ``t_obs + (k + 1) / control_hz`` (``a_0`` drives the first
control tick after the observation, as in simulation), each ``[dx, dy, dz, rx, ry, rz]`` in metres
and axis-angle radians along the axes of the robot's reference frame (the frame of ``State.ee_pos``
and of the workspace box), i.e. the action times the robot's ``action_scale`` (:class:`Info`). At the tick scheduled at ``T`` the controller applies the
waypoint nearest ``T`` within half a period, at most once; a tick with no waypoint holds.
Modes ``ee_pose`` (``[x, y, z, qx, qy, qz, qw]`` targets) and ``joint`` (joint-position targets)
are interpolated linearly (slerp for the orientation) between waypoints. The gripper is one value
per waypoint, -1 open .. +1 closed. Whatever the mode, the controller clamps each tick's motion to
the robot file's limits before it reaches the driver.
"""

from __future__ import annotations

import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import cv2
import msgpack
import numpy as np

from dp.errors import DpError

VERSION = 1

MAX_MESSAGE_BYTES = 8 << 20  # a State with raw camera frames stays far below this
MAX_COMMAND_BYTES = 256 << 10
MAX_WAYPOINTS = 512
MAX_JOINTS = 32
MAX_GRIPPER_DIMS = 8
MAX_EXTRA_KEYS = 16
MAX_EXTRA_SIZE = 1024
MAX_CAMERAS = 8
MAX_IMAGE_SIDE = 2048
MAX_FAULTS = 32
MAX_TEXT = 256
MAX_ARRAY_LEN = 64  # the longest msgpack list in any message (faults: 32; a wire array: 3)
MAX_MAP_LEN = 64  # the largest msgpack map (a State has 22 entries)
MAX_CONTAINERS = 256  # msgpack lists and maps in one message (a State with 8 cameras and 16 extras: < 100)

MODE_EE_DELTA = "ee_delta"
MODE_EE_POSE = "ee_pose"
MODE_JOINT = "joint"
MODES = (MODE_EE_DELTA, MODE_EE_POSE, MODE_JOINT)
MODE_WIDTH = {MODE_EE_DELTA: 6, MODE_EE_POSE: 7}  # joint: the robot's joint count

# What the controller is doing, as State.mode reports it.
ROBOT_TRACK, ROBOT_HOLD, ROBOT_STOPPED = "track", "hold", "stopped"
ROBOT_MODES = (ROBOT_TRACK, ROBOT_HOLD, ROBOT_STOPPED)

_DTYPES = {"<f4", "<f8", "|u1", "<i4", "<i8", "|b1"}
_UINT63 = (1 << 63) - 1


class ProtocolError(DpError):
    """A message that breaks the schema; ``field`` names the offending field (``msgtype.field``)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


def new_id() -> int:
    """A random 63-bit id for a sender (node) or a controller run (boot)."""
    return secrets.randbits(63)


# --------------------------------------------------------------------------- arrays and fields
def pack_array(a: np.ndarray) -> list:
    """A numpy array as the wire's ``[dtype, shape, bytes]``."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return [a.dtype.str, list(a.shape), a.tobytes()]


def unpack_array(
    value: Any,
    name: str,
    *,
    kind: str = "f",
    shape: tuple[int | None, ...] | None = None,
    max_size: int = 1 << 24,
    finite: bool = True,
) -> np.ndarray:
    """Validate and decode a wire array: dtype kind (``f`` float, ``u`` uint8, ``i`` int, ``b``
    bool), shape (``None`` = any length on that axis), element count, finite values."""
    if not (isinstance(value, (list, tuple)) and len(value) == 3):
        raise ProtocolError(name, f"expected an array [dtype, shape, bytes], got {type(value).__name__}")
    dtype_str, dims, data = value
    if not isinstance(dtype_str, str) or dtype_str not in _DTYPES:
        raise ProtocolError(name, f"unsupported dtype {dtype_str!r} (expected one of {sorted(_DTYPES)})")
    dtype = np.dtype(dtype_str)
    if dtype.kind != kind:
        raise ProtocolError(name, f"expected dtype kind {kind!r}, got {dtype_str}")
    if not (isinstance(dims, (list, tuple)) and all(type(d) is int and 0 <= d <= max_size for d in dims)):
        raise ProtocolError(name, f"bad shape {dims!r}")
    if shape is not None:
        if len(dims) != len(shape) or any(s is not None and s != d for s, d in zip(shape, dims)):
            want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
            raise ProtocolError(name, f"expected shape {want}, got {tuple(dims)}")
    count = math.prod(dims)
    if count > max_size:
        raise ProtocolError(name, f"{count} elements, at most {max_size} allowed")
    if not isinstance(data, bytes) or len(data) != count * dtype.itemsize:
        got = len(data) if isinstance(data, bytes) else type(data).__name__
        raise ProtocolError(name, f"expected {count * dtype.itemsize} bytes for shape {tuple(dims)}, got {got}")
    out = np.frombuffer(data, dtype=dtype).reshape(dims)
    if finite and kind == "f" and not np.isfinite(out).all():
        raise ProtocolError(name, "holds NaN or inf")
    return out


def _get(d: dict, key: str, name: str) -> Any:
    if key not in d:
        raise ProtocolError(f"{name}.{key}", "missing")
    return d[key]


def _int(d: dict, key: str, name: str, lo: int = 0, hi: int = _UINT63) -> int:
    v = _get(d, key, name)
    if type(v) is not int or not lo <= v <= hi:
        raise ProtocolError(f"{name}.{key}", f"expected an integer in [{lo}, {hi}], got {v!r}")
    return v


def _float(d: dict, key: str, name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    v = _get(d, key, name)
    if type(v) not in (int, float) or not math.isfinite(v) or not lo <= v <= hi:
        raise ProtocolError(f"{name}.{key}", f"expected a finite number in [{lo}, {hi}], got {v!r}")
    return float(v)


def _str(d: dict, key: str, name: str, choices: tuple[str, ...] | None = None, optional: bool = False) -> str | None:
    v = d.get(key) if optional else _get(d, key, name)
    if v is None and optional:
        return None
    if not isinstance(v, str) or len(v) > MAX_TEXT or (choices is not None and v not in choices):
        want = f"one of {list(choices)}" if choices else f"a string of at most {MAX_TEXT} characters"
        raise ProtocolError(f"{name}.{key}", f"expected {want}, got {v!r}")
    return v


def _bool(d: dict, key: str, name: str) -> bool:
    v = _get(d, key, name)
    if type(v) is not bool:
        raise ProtocolError(f"{name}.{key}", f"expected true or false, got {v!r}")
    return v


def _bool_or_none(d: dict, key: str, name: str) -> bool | None:
    v = d.get(key)
    if v is not None and type(v) is not bool:
        raise ProtocolError(f"{name}.{key}", f"expected true, false or nil, got {v!r}")
    return v


def _strings(d: dict, key: str, name: str, max_items: int) -> list[str]:
    v = _get(d, key, name)
    if not isinstance(v, (list, tuple)) or len(v) > max_items or not all(isinstance(s, str) and len(s) <= MAX_TEXT for s in v):
        raise ProtocolError(f"{name}.{key}", f"expected a list of at most {max_items} short strings")
    return list(v)


def _map(d: dict, key: str, name: str, max_items: int) -> dict:
    v = _get(d, key, name)
    if not isinstance(v, dict) or len(v) > max_items or not all(isinstance(k, str) and 0 < len(k) <= 64 for k in v):
        raise ProtocolError(f"{name}.{key}", f"expected a map of at most {max_items} entries with short string keys")
    return v


# --------------------------------------------------------------------------- camera frames
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
        enc = _str(value, "enc", name, ("jpeg", "raw"))
        if enc == "raw":
            pixels = unpack_array(_get(value, "data", name), f"{name}.data", kind="u", shape=(None, None, 3))
            if not (0 < pixels.shape[0] <= MAX_IMAGE_SIDE and 0 < pixels.shape[1] <= MAX_IMAGE_SIDE):
                raise ProtocolError(f"{name}.data", f"image side out of range: {pixels.shape}")
            return cls(pixels, "raw")
        dims = _get(value, "shape", name)
        if not (isinstance(dims, list) and len(dims) == 3 and dims[2] == 3
                and all(type(x) is int and 0 < x <= MAX_IMAGE_SIDE for x in dims)):
            raise ProtocolError(f"{name}.shape", f"expected [H, W, 3] with sides <= {MAX_IMAGE_SIDE}, got {dims!r}")
        data = _get(value, "data", name)
        if not isinstance(data, bytes) or not data.startswith(b"\xff\xd8"):
            raise ProtocolError(f"{name}.data", "expected JPEG bytes")
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None or list(decoded.shape) != dims:
            got = None if decoded is None else list(decoded.shape)
            raise ProtocolError(f"{name}.data", f"JPEG does not decode to {dims} (got {got})")
        return cls(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), "jpeg", data)


# --------------------------------------------------------------------------- messages
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
        q = unpack_array(_get(d, "q", n), f"{n}.q", shape=(None,), max_size=MAX_JOINTS)
        dq = unpack_array(_get(d, "dq", n), f"{n}.dq", shape=q.shape, max_size=MAX_JOINTS)
        extra = {k: unpack_array(v, f"{n}.extra.{k}", shape=(None,), max_size=MAX_EXTRA_SIZE)
                 for k, v in _map(d, "extra", n, MAX_EXTRA_KEYS).items()}
        images = {k: CameraFrame.from_wire(v, f"{n}.images.{k}") for k, v in _map(d, "images", n, MAX_CAMERAS).items()}
        return cls(
            boot=_int(d, "boot", n), seq=_int(d, "seq", n), stamp=_float(d, "stamp", n),
            obs_stamp=_float(d, "obs_stamp", n), tick=_int(d, "tick", n), episode=_int(d, "episode", n),
            mode=_str(d, "mode", n, ROBOT_MODES), q=q, dq=dq,
            ee_pos=unpack_array(_get(d, "ee_pos", n), f"{n}.ee_pos", shape=(3,)),
            ee_quat=unpack_array(_get(d, "ee_quat", n), f"{n}.ee_quat", shape=(4,)),
            gripper=unpack_array(_get(d, "gripper", n), f"{n}.gripper", shape=(None,), max_size=MAX_GRIPPER_DIMS),
            applied=unpack_array(_get(d, "applied", n), f"{n}.applied", shape=(7,)), held=_bool(d, "held", n),
            command_seq=_int(d, "command_seq", n, lo=-1), cmd_latency=_float(d, "cmd_latency", n, lo=-1.0),
            extra=extra, images=images, faults=_strings(d, "faults", n, MAX_FAULTS),
            success=_bool_or_none(d, "success", n), rejected=_int(d, "rejected", n),
        )


@dataclass
class Info:
    """What a node must know about the robot, published at 1 Hz and after every reset.

    ``action_scale`` = (metres, radians) of one unit of a policy's delta action per control step;
    ``command_port`` is where the controller takes commands (same host as the state endpoint).
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

    def to_wire(self) -> dict:
        return {
            "boot": self.boot, "robot": self.robot, "control_hz": self.control_hz, "state_hz": self.state_hz,
            "n_joints": self.n_joints, "modes": list(self.modes), "action_scale": list(self.action_scale),
            "command_port": self.command_port, "cameras": list(self.cameras), "extra": dict(self.extra),
            "task": self.task, "instruction": self.instruction, "horizon": self.horizon, "seed": self.seed,
        }

    @classmethod
    def from_wire(cls, d: dict) -> Info:
        n = "info"
        scale = _get(d, "action_scale", n)
        if not (isinstance(scale, list) and len(scale) == 2 and all(type(x) in (int, float) and 0 < x < 100 for x in scale)):
            raise ProtocolError(f"{n}.action_scale", f"expected [metres, radians] > 0, got {scale!r}")
        modes = _strings(d, "modes", n, len(MODES))
        if not modes or any(m not in MODES for m in modes):
            raise ProtocolError(f"{n}.modes", f"expected a non-empty subset of {list(MODES)}, got {modes}")
        extra = _map(d, "extra", n, MAX_EXTRA_KEYS)
        if not all(type(v) is int and 0 < v <= MAX_EXTRA_SIZE for v in extra.values()):
            raise ProtocolError(f"{n}.extra", "expected key -> length")
        return cls(
            boot=_int(d, "boot", n), robot=_str(d, "robot", n), control_hz=_float(d, "control_hz", n, 0.1, 10_000),
            state_hz=_float(d, "state_hz", n, 0.1, 100_000), n_joints=_int(d, "n_joints", n, 0, MAX_JOINTS),
            modes=modes, action_scale=(float(scale[0]), float(scale[1])), command_port=_int(d, "command_port", n, 1, 65535),
            cameras=_strings(d, "cameras", n, MAX_CAMERAS), extra=extra, task=_str(d, "task", n, optional=True),
            instruction=_str(d, "instruction", n, optional=True), horizon=_int(d, "horizon", n, 0, 10**9),
            seed=_int(d, "seed", n, 0, (1 << 32) - 1),
        )


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
        mode = _str(d, "mode", n, MODES)
        times = unpack_array(_get(d, "times", n), f"{n}.times", shape=(None,), max_size=MAX_WAYPOINTS)
        if times.size == 0:
            raise ProtocolError(f"{n}.times", "needs at least one waypoint")
        if times.size > 1 and not (np.diff(times) > 0).all():
            raise ProtocolError(f"{n}.times", "must be strictly increasing")
        width = MODE_WIDTH.get(mode)
        wps = unpack_array(_get(d, "waypoints", n), f"{n}.waypoints", shape=(times.size, width), max_size=MAX_WAYPOINTS * MAX_JOINTS)
        if mode == MODE_JOINT and not 0 < wps.shape[1] <= MAX_JOINTS:
            raise ProtocolError(f"{n}.waypoints", f"joint waypoints need 1..{MAX_JOINTS} columns, got {wps.shape[1]}")
        if mode == MODE_EE_POSE and not (np.abs(np.linalg.norm(wps[:, 3:], axis=1) - 1.0) < 1e-3).all():
            raise ProtocolError(f"{n}.waypoints", "ee_pose quaternions (columns 3..6) must have unit norm")
        gripper = unpack_array(_get(d, "gripper", n), f"{n}.gripper", shape=(times.size,))
        obs_stamp = _float(d, "obs_stamp", n)
        expires = _float(d, "expires", n)
        if expires < times[0]:
            raise ProtocolError(f"{n}.expires", f"expires ({expires:.3f}) before the first waypoint ({times[0]:.3f})")
        return cls(sender=_int(d, "sender", n), seq=_int(d, "seq", n), boot=_int(d, "boot", n), obs_stamp=obs_stamp, mode=mode,
                   times=times, waypoints=wps, gripper=gripper, expires=expires)


@dataclass
class Heartbeat:
    """"I am alive and still in charge" from a node; commands count as heartbeats too."""

    TYPE: ClassVar[str] = "heartbeat"
    sender: int
    seq: int

    def to_wire(self) -> dict:
        return {"sender": self.sender, "seq": self.seq}

    @classmethod
    def from_wire(cls, d: dict) -> Heartbeat:
        return cls(sender=_int(d, "sender", "heartbeat"), seq=_int(d, "seq", "heartbeat"))


@dataclass
class Stop:
    """Stop now and stay stopped (commands are ignored) until a :class:`Reset`."""

    TYPE: ClassVar[str] = "stop"
    sender: int
    seq: int
    reason: str = ""

    def to_wire(self) -> dict:
        return {"sender": self.sender, "seq": self.seq, "reason": self.reason}

    @classmethod
    def from_wire(cls, d: dict) -> Stop:
        return cls(sender=_int(d, "sender", "stop"), seq=_int(d, "seq", "stop"), reason=_str(d, "reason", "stop"))


@dataclass
class Reset:
    """Start a new episode (the sim driver resets its scene with ``seed``); clears a stop."""

    TYPE: ClassVar[str] = "reset"
    sender: int
    seq: int
    seed: int | None = None

    def to_wire(self) -> dict:
        return {"sender": self.sender, "seq": self.seq, "seed": self.seed}

    @classmethod
    def from_wire(cls, d: dict) -> Reset:
        seed = d.get("seed")
        if seed is not None:
            seed = _int(d, "seed", "reset", 0, (1 << 32) - 1)
        return cls(sender=_int(d, "sender", "reset"), seq=_int(d, "seq", "reset"), seed=seed)


def observation_from_state(state: State) -> dict[str, np.ndarray]:
    """A State as one time step of a policy's observation, in the project's key conventions:
    ``robot0_eef_pos``, ``robot0_eef_quat``, ``robot0_gripper_qpos``, ``robot0_joint_pos``,
    ``robot0_joint_vel`` (float32), every ``extra`` key as it is (e.g. ``object``), and each camera
    as ``<camera>_image`` (uint8 H x W x 3)."""
    obs = {
        "robot0_eef_pos": state.ee_pos.astype(np.float32),
        "robot0_eef_quat": state.ee_quat.astype(np.float32),
        "robot0_gripper_qpos": state.gripper.astype(np.float32),
        "robot0_joint_pos": state.q.astype(np.float32),
        "robot0_joint_vel": state.dq.astype(np.float32),
    }
    obs.update({k: v.astype(np.float32) for k, v in state.extra.items()})
    obs.update({f"{cam}_image": frame.pixels for cam, frame in state.images.items()})
    return obs


Message = Union[State, Info, Command, Heartbeat, Stop, Reset]
MESSAGE_TYPES: dict[str, type] = {cls.TYPE: cls for cls in (State, Info, Command, Heartbeat, Stop, Reset)}
CONTROL_TYPES = (Command, Heartbeat, Stop, Reset)  # what a controller accepts
# The largest frame of each type (bytes): the rest of a frame is not unpacked when it is larger.
MAX_FRAME_BYTES = {"state": MAX_MESSAGE_BYTES, "info": 64 << 10, "command": MAX_COMMAND_BYTES,
                   "heartbeat": 256, "reset": 256, "stop": 256 + 4 * MAX_TEXT}


def encode(msg: Message) -> bytes:
    """One message as a msgpack frame."""
    return msgpack.packb({"v": VERSION, "type": msg.TYPE, **msg.to_wire()}, use_bin_type=True)


def _limits(max_bin: int) -> dict[str, Any]:
    """msgpack's bounds for one frame: no list, map or string longer, and no more lists and maps
    in all, than any message has (msgpack has no depth or object-count limit: a hook counts)."""
    containers = 0

    def count(obj):
        nonlocal containers
        containers += 1
        if containers > MAX_CONTAINERS:
            raise ValueError(f"more than {MAX_CONTAINERS} lists and maps")
        return obj

    return dict(max_bin_len=max_bin, max_str_len=4 * MAX_TEXT, max_array_len=MAX_ARRAY_LEN, max_map_len=MAX_MAP_LEN,
                max_ext_len=0, list_hook=count, object_hook=count)


def _peek_type(frame: bytes) -> Any:
    """The ``type`` entry of a frame's top-level map, read without building the other values
    (msgpack skips them), so that the frame's size can be checked against its type's bound first."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(frame)), **_limits(len(frame)))
    unpacker.feed(frame)
    for _ in range(unpacker.read_map_header()):
        if unpacker.unpack() == "type":
            return unpacker.unpack()
        unpacker.skip()
    return None


def max_frame_bytes(accept: tuple[type, ...] | None = None) -> int:
    """The largest frame any of the ``accept`` types may take (the transport's size cap)."""
    return max(MAX_FRAME_BYTES[c.TYPE] for c in (accept or MESSAGE_TYPES.values()))


def decode(frame: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, accept: tuple[type, ...] | None = None) -> Message:
    """Parse and validate one frame; :class:`ProtocolError` naming the field if anything is off.

    The work a frame can cost is bounded before it is unpacked: its length against the largest
    accepted type's bound, then (the type read alone) against its own type's bound
    (:data:`MAX_FRAME_BYTES`); unpacking itself is bounded in string, list and map lengths."""
    limit = min(max_bytes, max_frame_bytes(accept))
    if len(frame) > limit:
        raise ProtocolError("frame", f"{len(frame)} bytes, at most {limit} allowed")
    try:
        kind = _peek_type(frame)
    except Exception as exc:  # msgpack raises several unrelated types for garbage input
        raise ProtocolError("frame", f"not a msgpack map ({type(exc).__name__})") from None
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None or (accept is not None and cls not in accept):
        names = [c.TYPE for c in (accept or MESSAGE_TYPES.values())]
        raise ProtocolError("type", f"expected one of {names}, got {kind!r}")
    if len(frame) > MAX_FRAME_BYTES[cls.TYPE]:
        raise ProtocolError(cls.TYPE, f"{len(frame)} bytes, at most {MAX_FRAME_BYTES[cls.TYPE]} allowed for a {cls.TYPE}")
    try:
        d = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True, **_limits(MAX_FRAME_BYTES[cls.TYPE]))
    except Exception as exc:
        raise ProtocolError("frame", f"not a msgpack message within the limits ({type(exc).__name__}: {str(exc)[:80]})") from None
    if d.get("v") != VERSION:
        raise ProtocolError("v", f"unsupported schema version {d.get('v')!r} (this side speaks {VERSION})")
    try:
        return cls.from_wire(d)
    except ProtocolError:
        raise
    except Exception as exc:  # a validator met a value of an unexpected kind: still the sender's fault
        raise ProtocolError(cls.TYPE, f"malformed ({type(exc).__name__}: {exc})") from None


class SeqGuard:
    """Rejects out-of-order or repeated sequence numbers, per sender, in a table of at most
    ``max_senders`` entries. A sender heard within the last ``keep`` seconds is never evicted: when
    the table is full of such senders a new sender is refused instead, so a flood of new sender ids
    cannot flush a live sender's state and re-admit a replay of its messages. (A receiver must also
    refuse anything computed more than ``keep`` seconds ago, as the controller's command horizon
    does: that is what makes forgetting a quiet sender safe.) ``keep=None``: the least recently
    heard sender makes room (for clients, whose only sender is the controller run)."""

    def __init__(self, max_senders: int = 64, keep: float | None = None):
        self._last: OrderedDict[int, tuple[int, float]] = OrderedDict()  # sender -> (seq, last heard), oldest first
        self._max = max_senders
        self._keep = keep

    def check(self, sender: int, seq: int, field: str = "seq", now: float = 0.0) -> None:
        entry = self._last.get(sender)
        if entry is not None and seq <= entry[0]:
            raise ProtocolError(field, f"out of order: {seq} after {entry[0]} from sender {sender:x}")
        if entry is None and len(self._last) >= self._max:
            oldest, (_, heard) = next(iter(self._last.items()))
            if self._keep is not None and now - heard <= self._keep:
                raise ProtocolError(field.split(".")[0] + ".sender",
                                    f"new sender {sender:x} refused: {self._max} senders were heard within {self._keep:g} s")
            del self._last[oldest]
        self._last[sender] = (seq, now)
        self._last.move_to_end(sender)

    def last_heard(self, sender: int) -> float:
        """When ``sender`` last passed :meth:`check` (-inf if unknown)."""
        entry = self._last.get(sender)
        return -math.inf if entry is None else entry[1]

    def forget(self, sender: int) -> None:
        self._last.pop(sender, None)
