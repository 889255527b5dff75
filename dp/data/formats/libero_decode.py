"""LIBERO / robomimic's worker side: read one HDF5 demo into our keys.

Kept apart from the planner so a worker imports only numpy and h5py (not zarr or the store).
"""

from __future__ import annotations

import numpy as np

from dp.data.formats.cards import KeySpec, SourceRef
from dp.data.formats.convert import Episode, finish
from dp.errors import DpError


def missing_key_hint(spec: KeySpec) -> str:
    """What fixes a key the data lacks: the flag or the card entry to change."""
    if spec.camera:
        return f"leave camera {spec.camera!r} out with --cameras, or point the card entry's 'source' at the file's name (--card)"
    return "point the card entry's 'source' at the file's name, or mark it 'optional: true' (--card)"


def libero_demo(path: str, demo_name: str, specs: tuple[KeySpec, ...], flip: bool, image_size: int | None) -> Episode:
    """Read one demo and map it to our keys (runs in a worker)."""
    import h5py  # here, not at the top: CALVIN workers never need it (a tenth of a second of start-up)

    where = f"{path}: data/{demo_name}"
    try:
        with h5py.File(path, "r") as f:
            demo = f["data"][demo_name]
            raw: dict[str, tuple[SourceRef, np.ndarray]] = {}
            for spec in specs:
                src = next((s for s in spec.sources if s.field in demo and isinstance(demo[s.field], h5py.Dataset)), None)
                if src is None:
                    if spec.optional:
                        continue
                    wanted = " or ".join(repr(s.field) for s in spec.sources)
                    raise DpError(f"{where}: missing {wanted} (needed for key {spec.key!r}); {missing_key_hint(spec)}")
                raw[spec.key] = (src, src.take(demo[src.field][()]))
            num_samples = demo.attrs.get("num_samples")
    except OSError as exc:
        raise DpError(f"{where}: cannot read (truncated or corrupt HDF5: {exc})") from exc
    lengths = {str(src): len(arr) if arr.ndim else 0 for src, arr in raw.values()}
    if num_samples is not None:
        lengths["attrs.num_samples"] = int(num_samples)
    if len(set(lengths.values())) > 1:
        raise DpError(f"{where}: lengths disagree: {', '.join(f'{k} {v}' for k, v in lengths.items())}")
    by_key = {s.key: s for s in specs}
    return {
        key: finish(by_key[key], arr, f"{where}/{src} -> {key}", image_size=image_size, flip=flip)
        for key, (src, arr) in raw.items()
    }
