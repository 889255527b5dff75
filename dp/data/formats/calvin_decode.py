"""CALVIN's worker side: read a range of frame files into our keys, write an episode's frame files.

Kept apart from the planner so a worker imports only numpy (not zarr, scipy or the store).
"""

from __future__ import annotations

import io
import math
import re
import struct
import zipfile
import zlib

import numpy as np

from dp.data.formats.cards import KeySpec, SourceRef
from dp.data.formats.convert import Episode, finish
from dp.errors import DpError


def calvin_frames(
    root: str, prefix: str, digits: int, start: int, end: int, specs: tuple[KeySpec, ...], image_size: int | None
) -> Episode:
    """Read frames start..end (inclusive) and map them to our keys (runs in a worker)."""
    n = end - start + 1
    raw: dict[str, np.ndarray] = {}
    chosen: dict[str, SourceRef] = {}
    for t in range(n):
        path = f"{root}/{prefix}{start + t:0{digits}d}.npz"
        try:
            with _open_npz(path) as npz:
                names = npz.names
                if t == 0:
                    chosen = _choose_npz_fields(specs, names, path)
                for key, src in chosen.items():
                    if src.field not in names:
                        raise DpError(f"{path}: no field {src.field!r} (earlier frames of frames {start}..{end} have it)")
                    value = src.take(npz.read(src.field))
                    if t == 0:
                        raw[key] = np.empty((n, *value.shape), value.dtype)
                    elif value.shape != raw[key].shape[1:]:
                        raise DpError(f"{path}: field {src} has shape {value.shape}, earlier frames {raw[key].shape[1:]}")
                    raw[key][t] = value
        except FileNotFoundError:
            raise DpError(f"{path}: frame file missing (frame {start + t} of the range {start}..{end})") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise DpError(f"{path}: unreadable frame file ({type(exc).__name__}: {exc})") from exc
    by_key = {s.key: s for s in specs}
    return {
        key: finish(by_key[key], arr, f"{root} frames {start}..{end}: {chosen[key]} -> {key}", image_size=image_size)
        for key, arr in raw.items()
    }


class _NpzFile:
    """The arrays of an ``np.savez[_compressed]`` file, read straight from its bytes.

    ``np.load`` of one CALVIN frame costs about three times the inflating of its bytes (zipfile's
    streaming reader, an ``ast`` parse of every .npy header); this reads the file once, takes the
    member table from the zip central directory, inflates each wanted member in one call, checks its
    CRC and parses the plain .npy headers ``np.save`` writes. Anything else (zip64 sizes, other
    compression, unusual headers) raises :class:`_Unsupported` and the caller uses ``np.load``.
    Never unpickles: object arrays are refused, as ``allow_pickle=False`` does.
    """

    def __init__(self, path: str):
        with open(path, "rb") as fh:
            self._buf = memoryview(fh.read())
        buf = self._buf
        eocd = bytes(buf[-22:]) if len(buf) >= 22 else b""
        if eocd[:4] != b"PK\x05\x06":  # a zip comment (np.savez writes none): let zipfile search for it
            raise _Unsupported
        count, cd_size, cd_offset = _EOCD.unpack_from(eocd, 10)
        if cd_offset == 0xFFFFFFFF or count == 0xFFFF or cd_offset + cd_size > len(buf) - 22:
            raise _Unsupported
        self._members: dict[str, tuple[int, int, int, int, int]] = {}
        pos = cd_offset
        for _ in range(count):
            if bytes(buf[pos : pos + 4]) != b"PK\x01\x02":
                raise _Unsupported
            flags, method, crc, csize, usize, nlen, xlen, clen, offset = _CDIR.unpack_from(buf, pos)
            name = bytes(buf[pos + 46 : pos + 46 + nlen]).decode("utf-8", "replace")
            pos += 46 + nlen + xlen + clen
            if flags & 1 or method not in (0, 8) or 0xFFFFFFFF in (csize, usize, offset):
                raise _Unsupported
            if name.endswith(".npy"):
                self._members[name[:-4]] = (method, crc, csize, usize, offset)
        self.names = set(self._members)

    def read(self, name: str) -> np.ndarray:
        method, crc, csize, usize, offset = self._members[name]
        buf = self._buf
        if bytes(buf[offset : offset + 4]) != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"bad local header of member {name}.npy")
        try:
            nlen, xlen = _LOCAL.unpack_from(buf, offset + 26)
        except struct.error:
            raise zipfile.BadZipFile(f"truncated local header of member {name}.npy") from None
        first = offset + 30 + nlen + xlen
        stored = buf[first : first + csize]
        data = zlib.decompress(stored, -15, usize) if method == 8 else bytes(stored)
        if len(data) != usize or zlib.crc32(data) != crc:
            raise zipfile.BadZipFile(f"bad CRC-32 or size of member {name}.npy")
        return _npy_from_bytes(data)

    def __enter__(self) -> _NpzFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._buf.release()


class _NpLoad:
    """``np.load`` behind the :class:`_NpzFile` interface (the fallback)."""

    def __init__(self, path: str):
        self._npz = np.load(path, allow_pickle=False)
        self.names = set(self._npz.files)

    def read(self, name: str) -> np.ndarray:
        return self._npz[name]

    def __enter__(self) -> _NpLoad:
        return self

    def __exit__(self, *exc: object) -> None:
        self._npz.close()


class _Unsupported(Exception):
    pass


_EOCD = struct.Struct("<HII")  # entries, central directory size, its offset (at byte 10 of the record)
_CDIR = struct.Struct("<8xHH4xIIIHHH8xI")  # flags, method, crc, sizes, name/extra/comment lengths, local offset
_LOCAL = struct.Struct("<HH")  # name and extra lengths (at byte 26 of a local header)
_NPY_HEADER = re.compile(r"\{'descr': '([<>|=]?[a-zA-Z]\d*)', 'fortran_order': (True|False), 'shape': \(([\d, ]*)\), \}\s*")
_DTYPES: dict[str, np.dtype] = {}


def _npy_from_bytes(data: bytes) -> np.ndarray:
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise ValueError("not a .npy member")
    if data[6] == 1:
        hlen, body = int.from_bytes(data[8:10], "little"), 10
    else:
        hlen, body = int.from_bytes(data[8:12], "little"), 12
    match = _NPY_HEADER.fullmatch(data[body : body + hlen].decode("latin1"))
    dtype = _DTYPES.get(match.group(1)) if match else None
    if match and dtype is None:
        dtype = np.dtype(match.group(1))
        if dtype.hasobject:
            dtype = None
        else:
            _DTYPES[match.group(1)] = dtype
    if dtype is None:  # anything unusual: numpy's own reader (it refuses pickled object arrays)
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    shape = tuple(int(v) for v in match.group(3).replace(",", " ").split())
    count = math.prod(shape)
    if len(data) - body - hlen != count * dtype.itemsize:
        raise ValueError(f".npy member holds {len(data) - body - hlen} bytes for shape {shape} of {dtype}")
    arr = np.frombuffer(data, dtype, count, offset=body + hlen)
    return arr.reshape(shape[::-1]).T if match.group(2) == "True" else arr.reshape(shape)


def _open_npz(path: str) -> _NpzFile | _NpLoad:
    try:
        return _NpzFile(path)
    except _Unsupported:
        return _NpLoad(path)
    except struct.error as exc:  # a table that runs past the end of the file
        raise zipfile.BadZipFile(f"truncated zip directory ({exc})") from None


def _choose_npz_fields(specs: tuple[KeySpec, ...], names: set[str], path: str) -> dict[str, SourceRef]:
    chosen = {}
    for spec in specs:
        src = next((s for s in spec.sources if s.field in names), None)
        if src is not None:
            chosen[spec.key] = src
        elif not spec.optional:
            wanted = " or ".join(repr(s.field) for s in spec.sources)
            raise DpError(f"{path}: no field {wanted} for key {spec.key!r} (fields: {', '.join(sorted(names))})")
    return chosen


def write_calvin_frames(root: str, first: int, fields: dict[str, np.ndarray]) -> None:
    """Write one ``episode_NNNNNNN.npz`` per frame (runs in a worker)."""
    n = len(next(iter(fields.values())))
    for t in range(n):
        np.savez_compressed(f"{root}/episode_{first + t:07d}.npz", **{k: v[t] for k, v in fields.items()})
