"""Structure checks every import goes through, so bad sources fail before anything is written.

Planners check what they can read cheaply (:func:`episode_ranges` for cumulative episode ends,
:func:`nonfinite_frames` for low-dim arrays, the shapes each item will decode to);
:func:`check_planned` compares the planned items with each other and with the store before the
first write, and :func:`check_decoded` checks each decoded episode before it is staged, so an error
names the source item and key, never only the destination store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from dp.errors import DpError

if TYPE_CHECKING:
    from dp.data.formats.cards import DatasetCard
    from dp.data.formats.import_item import ImportItem

BLOCK_BYTES = 16 << 20  # nonfinite_frames reads this much at a time


def episode_ranges(ends: Any, n_frames: int, where: str) -> tuple[list[tuple[int, int] | None], list[str]]:
    """Each episode's frames ``[start, stop)`` from cumulative exclusive ``ends`` (None where its
    bounds cannot be trusted), and the problems found, each naming ``where`` (e.g.
    ``SRC: meta/episode_ends``).

    An end is trusted when it is above every end before it (and 0), below every end after it, and
    within the ``n_frames`` frames of data; an episode needs its own end and the one before it
    trusted. The trusted ends increase, so the ranges returned never overlap and two swapped
    entries never import a range that spans two episodes.
    """
    ends = np.asarray(ends)
    if ends.ndim != 1 or (ends.size and ends.dtype.kind not in "iu"):
        return [], [f"{where}: expected a 1-D integer array, got {ends.dtype} {ends.shape}"]
    ends = ends.astype(np.int64)
    later_min = np.minimum.accumulate(np.append(ends[1:], np.iinfo(np.int64).max)[::-1])[::-1]  # min of the ends after each
    problems, trusted = [], np.zeros(len(ends), dtype=bool)
    top, top_at = 0, None  # the largest end so far, and where
    for k, end in enumerate(ends):
        if end <= top:
            before = f"[{top_at}] = {top}" if top_at is not None else "the start (0)"
            problems.append(f"{where}[{k}] = {end} does not increase on {before} (ends must increase)")
        if end > n_frames:
            problems.append(f"{where}[{k}] = {end} is past the end of the data ({n_frames} frames)")
        trusted[k] = top < end < later_min[k] and end <= n_frames
        if end > top:
            top, top_at = int(end), k
    ranges: list[tuple[int, int] | None] = []
    for k, end in enumerate(ends):
        ok = trusted[k] and (k == 0 or trusted[k - 1])
        ranges.append((int(ends[k - 1]) if k else 0, int(end)) if ok else None)
    return ranges, problems


def nonfinite_frames(read: Callable[[int, int], np.ndarray], n_frames: int, frame_bytes: int) -> np.ndarray:
    """Indices of the frames holding NaN or inf, reading ``read(start, stop)`` a block at a time."""
    step = max(1, BLOCK_BYTES // max(1, frame_bytes))
    bad = []
    for start in range(0, n_frames, step):
        block = np.asarray(read(start, min(n_frames, start + step)))
        if block.dtype.kind == "f":
            rows = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
            bad.append(np.flatnonzero(rows) + start)
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def refuse(problems: list[str], what: str) -> None:
    """Stop an import before anything is written (DpError naming the first problem), if there are problems.
    ``what``: the items the problems concern, for the hint about ``--skip-bad``."""
    if problems:
        more = f" (+{len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise DpError(f"{problems[0]}{more}; nothing was written (--skip-bad imports the good {what} and lists the rest)")


def check_planned(items: list[ImportItem], stored: dict[str, tuple[int, ...]]) -> list[tuple[ImportItem, str]]:
    """The planned items whose decoded shapes (``ImportItem.shapes``, where the planner knows them)
    disagree with the store's frame shapes ``stored`` (key -> shape of one frame; empty for a new
    store), with the other items, or between their own keys; with the problem of each."""
    known = [it for it in items if it.shapes is not None]
    key_sets = Counter(tuple(sorted(it.shapes)) for it in known)
    keys = tuple(sorted(stored)) if stored else (key_sets.most_common(1)[0][0] if key_sets else ())
    frame = {k: Counter(tuple(it.shapes[k][1:]) for it in known if k in it.shapes) for k in keys}
    reference = {k: tuple(stored[k]) if stored else frame[k].most_common(1)[0][0] for k in keys}
    bad = []
    for it in known:
        lengths = {k: s[0] for k, s in it.shapes.items()}
        if tuple(sorted(it.shapes)) != keys:
            missing, extra = sorted(set(keys) - set(it.shapes)), sorted(set(it.shapes) - set(keys))
            bad.append((it, f"{it.label}: keys differ from the {'store' if stored else 'other items'} "
                            f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'})"))
        elif len(set(lengths.values())) != 1 or min(lengths.values()) < 1:
            bad.append((it, f"{it.label}: keys have different or zero lengths {lengths}; every key needs one entry per frame"))
        else:
            wrong = next((k for k in keys if tuple(it.shapes[k][1:]) != reference[k]), None)
            if wrong is not None:
                against = "the store holds" if stored else "the other items have"
                bad.append((it, f"{it.label}: key {wrong!r} has frame shape {tuple(it.shapes[wrong][1:])}, {against} {reference[wrong]}"))
    return bad


def check_decoded(data: dict[str, np.ndarray], item: ImportItem, card: DatasetCard,
                  reference: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """DpError naming the source item and key unless a decoded episode fits ``reference`` (key ->
    frame shape and dtype of the store or of the import's first episode; empty: anything) and its
    float keys are finite."""
    if not data:
        raise DpError(f"{item.label}: decoded to no keys")
    lengths = {k: (v.shape[0] if v.ndim else 0) for k, v in data.items()}
    if len(set(lengths.values())) != 1 or min(lengths.values()) < 1:
        raise DpError(f"{item.label}: keys have different or zero lengths {lengths}; every key needs one entry per frame")
    if reference and set(data) != set(reference):
        missing, extra = sorted(set(reference) - set(data)), sorted(set(data) - set(reference))
        raise DpError(f"{item.label}: keys differ from the earlier episodes' (missing: {', '.join(missing) or 'none'}; "
                      f"unexpected: {', '.join(extra) or 'none'})")
    for key, value in data.items():
        spec = card.spec(key)
        named = f"key {key!r}" + (f" (from {' or '.join(str(s) for s in spec.sources)})" if spec else "")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            frame = int(np.flatnonzero(~np.isfinite(value.reshape(len(value), -1)).all(axis=1))[0])
            raise DpError(f"{item.label}: {named} holds NaN or inf (first at frame {frame} of the episode)")
        if key in reference:
            shape, dtype = reference[key]
            if tuple(value.shape[1:]) != tuple(shape):
                raise DpError(f"{item.label}: {named} has frame shape {tuple(value.shape[1:])}, earlier episodes {tuple(shape)}")
            if value.dtype != dtype and not np.can_cast(value.dtype, dtype, casting="same_kind"):
                raise DpError(f"{item.label}: {named} has dtype {value.dtype}, earlier episodes {dtype}")
