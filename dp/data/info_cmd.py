"""Show what an episode store holds: episodes, frames, keys (shape, dtype, chunks, codec), size on
disk, compression, and a metadata summary (tasks, instructions, success rate).

Works on the project's zarr-format-3 stores and on Diffusion Policy's format-2 replay buffers.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from dp.data.store import EpisodeStore

EXPERT_SETTINGS = ("expert_strategies", "release_slips", "expert_labels")  # episode metadata `dp collect` writes
COLLECT_SETTINGS = (*EXPERT_SETTINGS, "policy", "success_hold")  # the expert's or the acting policy, and how long an episode runs on past success
EXAMPLE = "dp info data/lift.zarr"  # ends `dp info --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", type=Path, help="path of the episode store (a .zarr directory)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _codec_name(arr: Any) -> str:
    """'blosc zstd/3' style names for zarr-3 codecs and format-2 numcodecs compressors alike."""
    names = []
    for codec in getattr(arr, "compressors", None) or ():
        name = getattr(codec, "codec_id", None) or type(codec).__name__.removesuffix("Codec").lower()
        cname = getattr(codec, "cname", None)
        if cname is not None:
            name += f" {getattr(cname, 'value', cname)}/{codec.clevel}"
        names.append(name)
    return ", ".join(names) or "none"


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def summarize(store: EpisodeStore) -> dict[str, Any]:
    """Everything `dp info` shows, as a JSON-ready dict."""
    keys = {}
    raw_bytes = 0
    roles = store.roles
    for key in store.keys:
        arr = store.array(key)
        raw_bytes += arr.nbytes
        keys[key] = {
            "role": next((r for r, ks in roles.items() if key in ks), "other"),
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "chunks": list(arr.chunks),
            "shards": list(arr.shards) if getattr(arr, "shards", None) else None,
            "codec": _codec_name(arr),
        }
    disk = _disk_bytes(store.path)
    lengths = [b - a for a, b in (store.episode_bounds(i) for i in range(len(store)))]
    meta: dict[str, Any] = {}
    tasks = Counter(t for t in store.meta_column("task") if t is not None)
    if tasks:
        meta["tasks"] = dict(sorted(tasks.items()))
    instructions = Counter(t for t in store.meta_column("instruction") if t is not None)
    if instructions:
        meta["instructions"] = dict(sorted(instructions.items()))
    success = [s for s in store.meta_column("success") if s is not None]
    if success:
        meta["success_rate"] = sum(success) / len(success)
    sources = Counter(s for s in store.meta_column("source") if s is not None)
    if sources:
        meta["sources"] = dict(sources)
    settings = {key: dict(Counter(str(v) for v in store.meta_column(key) if v is not None)) for key in COLLECT_SETTINGS}
    if any(settings.values()):
        meta["collection"] = {key: counts for key, counts in settings.items() if counts}
    if any(e is not None for e in store.meta_column("lang_emb")):
        meta["lang_emb_dim"] = int(next(e for e in store.meta_column("lang_emb") if e is not None).shape[0])
    return {
        "path": str(store.path),
        "zarr_format": store.zarr_format,
        "episodes": len(store),
        "frames": store.n_frames,
        "episode_length": {"min": min(lengths), "mean": sum(lengths) / len(lengths), "max": max(lengths)} if lengths else None,
        "control_freq": store.control_freq,
        "robot": store.robot,
        "discrete_dims": store.discrete_dims,
        "keys": keys,
        "bytes_raw": int(raw_bytes),
        "bytes_on_disk": int(disk),
        "compression_ratio": round(raw_bytes / disk, 2) if disk else None,
        "meta": meta,
    }


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def format_summary(info: dict[str, Any]) -> str:
    lines = [
        f"{info['path']}  (zarr format {info['zarr_format']})",
        f"  episodes: {info['episodes']}   frames: {info['frames']}   control: {info['control_freq'] or '?'} Hz   robot: {info['robot'] or '?'}",
    ]
    if info["episode_length"]:
        el = info["episode_length"]
        lines.append(f"  episode length: min {el['min']}  mean {el['mean']:.1f}  max {el['max']}")
    lines.append(
        f"  size: {_human(info['bytes_raw'])} raw, {_human(info['bytes_on_disk'])} on disk (ratio {info['compression_ratio']})"
    )
    lines.append("  keys:")
    width = max((len(k) for k in info["keys"]), default=0)
    for key, k in info["keys"].items():
        shards = f" shards {tuple(k['shards'])}" if k["shards"] else ""
        lines.append(f"    {key:<{width}}  {k['role']:<7} {str(tuple(k['shape'])):<20} {k['dtype']:<8} chunks {tuple(k['chunks'])}{shards}  {k['codec']}")
    meta = info["meta"]
    if meta.get("tasks"):
        lines.append("  tasks: " + ", ".join(f"{t} ({n})" for t, n in meta["tasks"].items()))
    if meta.get("instructions"):
        shown = list(meta["instructions"].items())[:10]
        more = len(meta["instructions"]) - len(shown)
        lines.append("  instructions: " + "; ".join(f'"{t}" ({n})' for t, n in shown) + (f"; ... {more} more" if more > 0 else ""))
    if "success_rate" in meta:
        lines.append(f"  success rate: {meta['success_rate']:.1%}")
    if meta.get("sources"):
        lines.append("  sources: " + ", ".join(f"{s} ({n})" for s, n in meta["sources"].items()))
    if meta.get("collection"):
        lines.append("  collected with: " + "; ".join(
            f"{key.replace('_', ' ')} " + ", ".join(f"{v} ({n})" for v, n in counts.items()) for key, counts in meta["collection"].items()))
    if meta.get("lang_emb_dim"):
        lines.append(f"  language embeddings: {meta['lang_emb_dim']}-d")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    with EpisodeStore.open(args.store, "r") as store:
        info = summarize(store)
    print(json.dumps(info, indent=2) if args.json else format_summary(info))
    return 0

