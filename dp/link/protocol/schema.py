"""The protocol's schema version, size limits, command and robot modes, and its error."""

from __future__ import annotations

import secrets

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

WIRE_DTYPES = {"<f4", "<f8", "|u1", "<i4", "<i8", "|b1"}
UINT63 = (1 << 63) - 1


class ProtocolError(DpError):
    """A message that breaks the schema; ``field`` names the offending field (``msgtype.field``)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


def new_id() -> int:
    """A random 63-bit id for a sender (node) or a controller run (boot)."""
    return secrets.randbits(63)
