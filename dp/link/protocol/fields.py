"""Wire arrays and typed field readers: every received value is checked here, naming its field."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dp.link.protocol.schema import MAX_TEXT, UINT63, WIRE_DTYPES, ProtocolError


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
    if not isinstance(dtype_str, str) or dtype_str not in WIRE_DTYPES:
        raise ProtocolError(name, f"unsupported dtype {dtype_str!r} (expected one of {sorted(WIRE_DTYPES)})")
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


def required(d: dict, key: str, name: str) -> Any:
    """``d[key]``; a ProtocolError naming ``name.key`` when it is absent."""
    if key not in d:
        raise ProtocolError(f"{name}.{key}", "missing")
    return d[key]


def int_field(d: dict, key: str, name: str, lo: int = 0, hi: int = UINT63) -> int:
    """An integer (not a bool) in ``[lo, hi]``."""
    v = required(d, key, name)
    if type(v) is not int or not lo <= v <= hi:
        raise ProtocolError(f"{name}.{key}", f"expected an integer in [{lo}, {hi}], got {v!r}")
    return v


def float_field(d: dict, key: str, name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite number in ``[lo, hi]``, as a float."""
    v = required(d, key, name)
    if type(v) not in (int, float) or not math.isfinite(v) or not lo <= v <= hi:
        raise ProtocolError(f"{name}.{key}", f"expected a finite number in [{lo}, {hi}], got {v!r}")
    return float(v)


def str_field(d: dict, key: str, name: str, choices: tuple[str, ...] | None = None, optional: bool = False) -> str | None:
    """A short string, one of ``choices`` if given; None for an absent or nil ``optional`` field."""
    v = d.get(key) if optional else required(d, key, name)
    if v is None and optional:
        return None
    if not isinstance(v, str) or len(v) > MAX_TEXT or (choices is not None and v not in choices):
        want = f"one of {list(choices)}" if choices else f"a string of at most {MAX_TEXT} characters"
        raise ProtocolError(f"{name}.{key}", f"expected {want}, got {v!r}")
    return v


def bool_field(d: dict, key: str, name: str) -> bool:
    """A bool."""
    v = required(d, key, name)
    if type(v) is not bool:
        raise ProtocolError(f"{name}.{key}", f"expected true or false, got {v!r}")
    return v


def optional_bool_field(d: dict, key: str, name: str) -> bool | None:
    """A bool, or None when absent or nil."""
    v = d.get(key)
    if v is not None and type(v) is not bool:
        raise ProtocolError(f"{name}.{key}", f"expected true, false or nil, got {v!r}")
    return v


def strings_field(d: dict, key: str, name: str, max_items: int) -> list[str]:
    """A list of at most ``max_items`` short strings."""
    v = required(d, key, name)
    if not isinstance(v, (list, tuple)) or len(v) > max_items or not all(isinstance(s, str) and len(s) <= MAX_TEXT for s in v):
        raise ProtocolError(f"{name}.{key}", f"expected a list of at most {max_items} short strings")
    return list(v)


def map_field(d: dict, key: str, name: str, max_items: int) -> dict:
    """A map of at most ``max_items`` entries with short string keys (values unchecked)."""
    v = required(d, key, name)
    if not isinstance(v, dict) or len(v) > max_items or not all(isinstance(k, str) and 0 < len(k) <= 64 for k in v):
        raise ProtocolError(f"{name}.{key}", f"expected a map of at most {max_items} entries with short string keys")
    return v
