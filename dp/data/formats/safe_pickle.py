"""Loading pickled ``.npy`` files without running code: a restricted unpickler.

CALVIN's ``auto_lang_ann.npy`` (and ``scene_info.npy``, ``embeddings.npy``) are pickled Python
dicts saved with ``np.save``. ``np.load(..., allow_pickle=True)`` would run whatever callable a
crafted file names (``os.system`` through ``__reduce__``). Here the pickle stream is read with an
unpickler whose ``find_class`` admits only builtin containers/scalars and the few numpy callables
that rebuild arrays and dtypes; anything else is refused with a :class:`DpError` before it can run.
"""

from __future__ import annotations

import builtins
import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from dp.errors import DpError

_SAFE_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex", "bool", "slice", "range"}
)
# (module, name) -> object. numpy 1.x pickles name numpy.core, numpy 2.x numpy._core.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED_GLOBALS[(_mod, "_reconstruct")] = np.core.multiarray._reconstruct
    _ALLOWED_GLOBALS[(_mod, "scalar")] = np.core.multiarray.scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED_GLOBALS[(_mod, "_frombuffer")] = np.core.numeric._frombuffer
# Protocol-2 pickles spell bytes as _codecs.encode(text, "latin1"): a pure function, no side effects.
_ALLOWED_GLOBALS[("_codecs", "encode")] = codecs.encode


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return getattr(builtins, name)
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise DpError(
            f"{self._source}: refused to unpickle '{module}.{name}': only builtin containers/scalars and numpy "
            "arrays are allowed (the file may be crafted to run code, or is not the expected data file)"
        )


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` admitting only builtins and numpy arrays; anything else raises DpError."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except DpError:
        raise
    except Exception as exc:  # a malformed stream fails in many ways (EOFError, UnpicklingError, TypeError...)
        raise DpError(f"{source}: not a valid pickle ({type(exc).__name__}: {exc})") from exc


def load_npy(path: str | Path) -> Any:
    """Read a ``.npy`` file; a pickled (object-dtype) one goes through the restricted unpickler.

    Returns the array, or for a 0-d object array (how ``np.save`` stores a dict) the object inside.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DpError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise DpError(f"{path}: not a readable .npy file ({exc})") from exc
    if not dtype.hasobject:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    value = safe_loads(raw[stream.tell():], str(path))
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        return value.item()
    if isinstance(value, np.ndarray) and tuple(value.shape) != tuple(shape):
        raise DpError(f"{path}: header says shape {shape}, the pickle holds {value.shape}")
    return value
