"""Frames: encoding a message, and decoding one with its cost bounded before it is unpacked."""

from __future__ import annotations

from typing import Any

import msgpack

from dp.link.protocol.messages import MESSAGE_TYPES, Message
from dp.link.protocol.schema import MAX_COMMAND_BYTES, MAX_CONTAINERS, MAX_ARRAY_LEN, MAX_MAP_LEN, MAX_MESSAGE_BYTES, MAX_TEXT, VERSION, ProtocolError

# The largest frame of each type (bytes): the rest of a frame is not unpacked when it is larger.
MAX_FRAME_BYTES = {"state": MAX_MESSAGE_BYTES, "info": 64 << 10, "command": MAX_COMMAND_BYTES,
                   "heartbeat": 256, "reset": 256, "stop": 256 + 4 * MAX_TEXT,
                   "release": 256 + 4 * MAX_TEXT}


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
