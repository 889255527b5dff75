"""The controller protocol: what a robot controller and an inference node say to each other.

This package is its public surface: :mod:`.schema` (version, limits, modes, the error),
:mod:`.fields` (wire arrays, field checks), :mod:`.messages`, :mod:`.state_key` (a robot's joints
and gripper in its policies' units), :mod:`.codec` (frames) and :mod:`.seq_guard` (sequence numbers).

Transport: ZeroMQ. The controller PUBlishes :class:`State` (>= 100 Hz) and :class:`Info` (1 Hz) on
its state endpoint and PULLs :class:`Command`, :class:`Heartbeat`, :class:`Stop`, :class:`Release`
and :class:`Reset` on its command endpoint (by default the state port + 1). Every message is one msgpack map with
``v`` (the schema version, :data:`VERSION`) and ``type``. A numpy array crosses as a 3-list
``[dtype, shape, bytes]`` (little-endian dtypes only). Camera frames cross JPEG-encoded (opencv)
or raw.

Every message is validated on receipt (:func:`decode`): size, version, types, dtypes, shapes,
finite numbers; per-sender sequence numbers are checked by :class:`SeqGuard`. A bad message raises
:class:`ProtocolError` naming the field; receivers count it and drop it, never crash. A Command
names the controller run (``boot``) whose State it was computed from; another run refuses it, so
nothing computed before a controller restart is ever executed after it; the other control messages
name it too, with the ``stamp`` of the newest State their sender saw, and one from another run or
older than the controller's replay window is refused, so a recording replayed later is refused even
after its sender left the controller's table of sequence numbers. A Stop is accepted from any
sender, and latches until an operator's Release (never a Reset); a Reset starts a new episode (the
sim driver re-draws its scene from the given seed) and is refused while stopped.

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

from dp.link.protocol.codec import MAX_FRAME_BYTES, decode, encode, max_frame_bytes
from dp.link.protocol.fields import pack_array, unpack_array
from dp.link.protocol.messages import (
    CONTROL_TYPES,
    MESSAGE_TYPES,
    CameraFrame,
    Command,
    Heartbeat,
    Info,
    Message,
    Release,
    Reset,
    State,
    Stop,
    STATE_KEYS,
    camera_key,
    observation_from_state,
)
from dp.link.protocol.schema import (
    MAX_CAMERAS,
    MAX_COMMAND_BYTES,
    MAX_EXTRA_KEYS,
    MAX_EXTRA_SIZE,
    MAX_FAULTS,
    MAX_GRIPPER_DIMS,
    MAX_IMAGE_SIDE,
    MAX_JOINTS,
    MAX_MESSAGE_BYTES,
    MAX_TEXT,
    MAX_WAYPOINTS,
    MODE_EE_DELTA,
    MODE_EE_POSE,
    MODE_JOINT,
    MODE_WIDTH,
    MODES,
    ROBOT_HOLD,
    ROBOT_MODES,
    ROBOT_STOPPED,
    ROBOT_TRACK,
    VERSION,
    ProtocolError,
    new_id,
)
from dp.link.protocol.seq_guard import SeqGuard
from dp.link.protocol.state_key import StateKey

__all__ = [
    "CONTROL_TYPES", "CameraFrame", "Command", "Heartbeat", "Info", "MAX_CAMERAS", "MAX_COMMAND_BYTES",
    "MAX_EXTRA_KEYS", "MAX_EXTRA_SIZE", "MAX_FAULTS", "MAX_FRAME_BYTES", "MAX_GRIPPER_DIMS", "MAX_IMAGE_SIDE",
    "MAX_JOINTS", "MAX_MESSAGE_BYTES", "MAX_TEXT", "MAX_WAYPOINTS", "MESSAGE_TYPES", "MODES", "MODE_EE_DELTA",
    "MODE_EE_POSE", "MODE_JOINT", "MODE_WIDTH", "Message", "ProtocolError", "ROBOT_HOLD", "ROBOT_MODES",
    "ROBOT_STOPPED", "ROBOT_TRACK", "Release", "Reset", "SeqGuard", "State", "StateKey", "Stop", "VERSION", "decode", "encode",
    "max_frame_bytes", "new_id", "STATE_KEYS", "camera_key", "observation_from_state", "pack_array", "unpack_array",
]
