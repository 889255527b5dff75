"""Diffusion Policy replay buffers (zarr format 2, FORMATS.md §1) into our format-3 store.

The source opens read-only through :class:`EpisodeStore` (``data/<key>`` + ``meta/episode_ends``).
Keys come from a card (``--card datasets/pusht.yaml``), from flags (``--image KEY --lowdim KEY
--action KEY``, kept under their own names, the action as ``action``), or, with neither, from the
source's key roles. Float images holding 0..255 (Push-T's ``img``) become uint8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dp.data.formats import decode
from dp.data.formats.cards import DatasetCard, card_from_dict
from dp.data.formats.pipeline import ImportItem
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
) -> tuple[DatasetCard, list[ImportItem]]:
    """The card in use and one item per episode of the source store."""
    src = Path(src)
    with EpisodeStore.open(src, mode="r") as source:
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
        items = []
        for i in range(len(source)):
            start, stop = source.episode_bounds(i)
            meta = {k: v for k, v in source.episode_meta(i).items() if k not in ("source_file", "source_index")}
            meta = {"source": "dp-zarr", "task": card.name, **meta}
            items.append(ImportItem(
                source_file=src.resolve().name, source_index=i, label=f"{src}: episode {i} (frames {start}..{stop - 1})",
                n_frames=stop - start, job=decode.zarr_episode, args=(str(src), start, stop, card.keys, image_size), meta=meta,
            ))
    return card, items


