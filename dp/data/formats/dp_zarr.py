"""Diffusion Policy replay buffers (zarr format 2, FORMATS.md §1) into our format-3 store.

The source opens read-only through :class:`EpisodeStore` (``data/<key>`` + ``meta/episode_ends``).
Keys come from a card (``--card datasets/pusht.yaml``), from flags (``--image KEY --lowdim KEY
--action KEY``, kept under their own names, the action as ``action``), or, with neither, from the
source's key roles. Float images holding 0..255 (Push-T's ``img``) become uint8.

Before anything is written the source's structure is checked: ``meta/episode_ends`` increasing and
within the data, every used key as long as the last end, image keys (T, H, W, C), low-dim keys
numeric and free of NaN/inf. A problem stops the import naming the source and key; with
``skip_bad`` the episodes it touches are listed and skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dp.data.formats.cards import DatasetCard, card_from_dict
from dp.data.formats.convert import to_image
from dp.data.formats.dp_zarr_decode import open_source, zarr_episode
from dp.data.formats.pipeline import ImportItem
from dp.data.formats.structure import episode_ranges, nonfinite_frames, refuse
from dp.data.store import EpisodeStore
from dp.errors import DpError


def card_from_flags(name: str, image: list[str], lowdim: list[str], action: str | None, source: EpisodeStore) -> DatasetCard:
    """A card naming the given keys (or, with no flags, every key of the source by its role)."""
    if not (image or lowdim or action):
        roles = source.roles
        image, lowdim = roles["image"], roles["lowdim"]
        if len(roles["action"]) > 1:
            raise DpError(f"{source.path}: several action keys {roles['action']}; choose one with --action")
        action = roles["action"][0] if roles["action"] else None
    if action is None:
        raise DpError(f"{source.path}: no action key (keys: {', '.join(source.keys)}); name it with --action")
    keys = [{"key": k, "source": k, "role": "image"} for k in image]
    keys += [{"key": k, "source": k, "role": "lowdim"} for k in lowdim]
    entry: dict[str, Any] = {"key": "action", "source": action, "role": "action"}
    if source.discrete_dims.get(action):
        entry["discrete_dims"] = list(source.discrete_dims[action])
    keys.append(entry)
    raw: dict[str, Any] = {"name": name, "format": "dp-zarr", "keys": keys}
    if source.control_freq is not None:
        raw["control_freq"] = source.control_freq
    if source.robot is not None:
        raw["robot"] = source.robot
    return card_from_dict(raw, f"{source.path} (from flags)")


def plan_import(
    src: str | Path,
    *,
    card: DatasetCard | None = None,
    image: list[str] | None = None,
    lowdim: list[str] | None = None,
    action: str | None = None,
    image_size: int | None = None,
    skip_bad: bool = False,
    skipped: list[str] | None = None,
) -> tuple[DatasetCard, list[ImportItem]]:
    """The card in use and one item per good episode of the source store; structure problems
    raise DpError, or with ``skip_bad`` go to ``skipped`` with the episodes they touch left out."""
    src = Path(src)
    with open_source(src) as source:
        if card is None:
            card = card_from_flags(src.name.removesuffix(".zarr"), image or [], lowdim or [], action, source)
        elif image or lowdim or action:
            raise DpError("give either --card or --image/--lowdim/--action, not both")
        if card.format != "dp-zarr":
            raise DpError(f"{card.origin}: a {card.format} card, not a dp-zarr one")
        for spec in card.keys:
            if not spec.optional and not any(s.field in source.keys for s in spec.sources):
                wanted = " or ".join(repr(s.field) for s in spec.sources)
                raise DpError(f"{src}: no data key {wanted} for {spec.key!r} (keys: {', '.join(source.keys)})")
        used = {spec.key: s for spec in card.keys if (s := next((s for s in spec.sources if s.field in source.keys), None))}
        problems = _check_keys(src, source, card, used)
        if problems:  # a key every episode shares: nothing of the source can be imported
            refuse(problems, "episodes")
        ends = source.raw_episode_ends()
        lengths = {f"data/{s.field}": source.array(s.field).shape[0] for s in used.values()}
        ranges, problems = episode_ranges(ends, min(lengths.values()), f"{src}: meta/episode_ends")
        if not len(ends):
            raise DpError(problems[0] if problems else f"{src}: no episodes (meta/episode_ends is empty)")
        last = int(ends[-1])
        problems += [f"{src}: {name} has {n} frames, meta/episode_ends ends at {last}" for name, n in lengths.items() if n != last]
        skips = [f"{src}: episode {i}: its bounds in meta/episode_ends are inconsistent" for i, r in enumerate(ranges) if r is None]
        skips += [f"{src}: {name} frames {last}..{n - 1} belong to no episode" for name, n in lengths.items() if n > last]
        nonfinite = _nonfinite(source, card, used)
        frame_shapes = _decoded_frame_shapes(source, card, used, image_size)
        items = []
        for i, bounds in enumerate(ranges):
            if bounds is None:
                continue
            start, stop = bounds
            where = [name for name, frames in nonfinite.items() if ((frames >= start) & (frames < stop)).any()]
            if where:
                first = min(int(nonfinite[name][nonfinite[name] >= start][0]) for name in where)
                problems.append(f"{src}: {where[0]} holds NaN or inf at frame {first} (episode {i}, frames {start}..{stop - 1})")
                skips.append(f"{src}: episode {i}: {', '.join(where)} hold(s) NaN or inf")
                continue
            meta = {k: v for k, v in source.raw_episode_meta(i).items() if k not in ("source_file", "source_index")}
            meta = {"source": "dp-zarr", "task": card.name, **meta}
            items.append(ImportItem(
                source_file=src.resolve().name, source_index=i, label=f"{src}: episode {i} (frames {start}..{stop - 1})",
                n_frames=stop - start, job=zarr_episode, args=(str(src), start, stop, card.keys, image_size), meta=meta,
                shapes={key: (stop - start, *shape) for key, shape in frame_shapes.items()},
            ))
        if not skip_bad:
            refuse(problems, "episodes")
        elif skipped is not None:
            skipped.extend(skips)
    return card, items


def _check_keys(src: Path, source: EpisodeStore, card: DatasetCard, used: dict) -> list[str]:
    """Problems of the used keys' dtypes and shapes (image keys (T, H, W, C), low-dim keys numeric)."""
    problems = []
    for key, ref in used.items():
        arr = source.array(ref.field)
        where = f"{src}: data/{ref}"
        if card.spec(key).role == "image":
            try:
                to_image(np.zeros((0, *arr.shape[1:]), arr.dtype), where)
            except DpError as exc:
                problems.append(str(exc))
        elif np.dtype(arr.dtype).kind not in "fiub":
            problems.append(f"{where}: expected numbers, got dtype {arr.dtype}")
    return problems


def _nonfinite(source: EpisodeStore, card: DatasetCard, used: dict) -> dict[str, np.ndarray]:
    """Per low-dim float key (``data/FIELD``) the frames holding NaN or inf, where there are any.
    Image keys are checked as each episode decodes (reading them twice would double the import)."""
    out = {}
    for key, ref in used.items():
        arr = source.array(ref.field)
        if np.dtype(arr.dtype).kind != "f" or card.spec(key).role == "image":
            continue
        frame_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * np.dtype(arr.dtype).itemsize
        frames = nonfinite_frames(lambda a, b, r=ref: r.take(source.read(r.field, a, b)), arr.shape[0], frame_bytes)
        if len(frames):
            out[f"data/{ref}"] = frames
    return out


def _decoded_frame_shapes(source: EpisodeStore, card: DatasetCard, used: dict, image_size: int | None) -> dict[str, tuple[int, ...]]:
    """One frame's shape per key once decoded (slices taken, images resized)."""
    shapes = {}
    for key, ref in used.items():
        shape = ref.take(np.zeros((0, *source.array(ref.field).shape[1:]), np.uint8)).shape[1:]
        if card.spec(key).role == "image" and image_size is not None:
            shape = (image_size, image_size, shape[-1])
        shapes[key] = tuple(shape)
    return shapes
