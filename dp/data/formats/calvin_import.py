"""CALVIN (FORMATS.md §2): import a split directory into an episode store.

The frame-file pattern (prefix, zero padding) is read off the files, as CALVIN's own loader
does. ``ep_start_end_ids.npy`` gives play episodes with inclusive ends; ``--segments lang`` makes
one episode per language-annotated window of ``lang_annotations/auto_lang_ann.npy`` (read through
the restricted unpickler) with its instruction, task and 384-d embedding (stored as (N, 1, 384) or
(N, 384): both are accepted); ``--segments episodes`` keeps the play episodes. Keys map through the
card (``datasets/calvin.yaml``); low-dim keys are cast to float32 (the files hold float32 or float64).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from dp.data.formats.calvin_decode import calvin_frames
from dp.data.formats.cards import DatasetCard, card_from_dict, load_card
from dp.data.formats.pipeline import ImportItem
from dp.data.formats.safe_pickle import load_npy
from dp.errors import DpError

FRAME_RE = re.compile(r"^(.*?)(\d+)\.npz$")
SIDECAR = "dp_card.json"
LANG_FILE = Path("lang_annotations") / "auto_lang_ann.npy"


class CalvinSplit:
    """One split directory: frame naming, episode ranges, annotations, and our export sidecar."""

    def __init__(self, path: str | Path, split: str = "training"):
        path = Path(path)
        if (path / split / "ep_start_end_ids.npy").is_file():
            root = path / split
        elif (path / "ep_start_end_ids.npy").is_file():
            root = path
        else:
            raise DpError(f"{path}: not a CALVIN directory: no {split}/ep_start_end_ids.npy (nor ep_start_end_ids.npy)")
        self.root = root
        self.name = f"{root.resolve().parent.name}/{root.name}"  # stable identity for resume
        self.prefix, self.digits = _naming_pattern(root)
        self.ranges = _read_ranges(root / "ep_start_end_ids.npy")
        sidecar = root / SIDECAR
        self.sidecar: dict[str, Any] | None = None
        if sidecar.is_file():
            try:
                self.sidecar = json.loads(sidecar.read_text())
            except json.JSONDecodeError as exc:
                raise DpError(f"{sidecar}: not valid JSON ({exc})") from exc

    def default_card(self) -> DatasetCard:
        """The card written by our export if there is one, else ``datasets/calvin.yaml``."""
        if self.sidecar is not None:
            return card_from_dict(self.sidecar.get("card"), f"{self.root / SIDECAR}: card")
        return load_card("calvin")

    def episode_meta(self, row: int) -> dict[str, Any]:
        """Metadata our export recorded for play episode ``row`` (empty for foreign data)."""
        if self.sidecar is None:
            return {}
        episodes = self.sidecar.get("episodes") or []
        return _meta_from_json(episodes[row]) if row < len(episodes) else {}

    def annotations(self) -> list[tuple[int, int, str, str, np.ndarray]]:
        """(start, end inclusive, instruction, task, embedding (384,)) per annotation, validated."""
        path = self.root / LANG_FILE
        if not path.is_file():
            raise DpError(f"{path}: missing (needed for --segments lang; use --segments episodes for play data without annotations)")
        obj = load_npy(path)
        try:
            indx = list(obj["info"]["indx"])
            language = obj["language"]
            anns = list(language["ann"])
            emb = np.asarray(language["emb"], dtype=np.float32)
            tasks = list(language["task"]) if "task" in language else anns
        except (TypeError, KeyError, IndexError) as exc:
            raise DpError(f"{path}: expected a dict with info.indx and language.ann/task/emb ({type(exc).__name__}: {exc})") from exc
        if emb.ndim == 3 and emb.shape[1] == 1:
            emb = emb[:, 0]
        if emb.ndim != 2:
            raise DpError(f"{path}: language.emb has shape {emb.shape}; expected (N, 1, D) or (N, D)")
        counts = {"info.indx": len(indx), "language.ann": len(anns), "language.task": len(tasks), "language.emb": len(emb)}
        if len(set(counts.values())) != 1:
            raise DpError(f"{path}: annotation lists differ in length {counts}")
        out = []
        for j, (pair, ann, task) in enumerate(zip(indx, anns, tasks)):
            try:
                start, end = (int(v) for v in pair)
            except (TypeError, ValueError):
                raise DpError(f"{path}: annotation {j}: info.indx entry {pair!r} is not a (start, end) pair") from None
            out.append((start, end, str(ann), str(task), emb[j]))
        return out

    def row_containing(self, start: int, end: int) -> int | None:
        """The play episode (row of ep_start_end_ids.npy) whose range holds frames start..end, or None."""
        if end < start:
            return None
        rows = np.nonzero((self.ranges[:, 0] <= start) & (end <= self.ranges[:, 1]))[0]
        return int(rows[0]) if len(rows) else None


def _naming_pattern(root: Path) -> tuple[str, int]:
    with os.scandir(root) as entries:
        for entry in entries:
            match = FRAME_RE.match(entry.name)
            if match and entry.is_file():
                return match.group(1), len(match.group(2))
    raise DpError(f"{root}: no frame files (<prefix><digits>.npz)")


def _read_ranges(path: Path) -> np.ndarray:
    try:
        ranges = np.asarray(np.load(path, allow_pickle=False))
    except (ValueError, OSError) as exc:
        raise DpError(f"{path}: not a readable numeric .npy ({exc})") from exc
    if ranges.ndim != 2 or ranges.shape[1] != 2 or ranges.dtype.kind not in "iuf" or not np.array_equal(ranges, np.round(ranges)):
        raise DpError(f"{path}: expected integer (start, end) pairs of shape (N, 2), got {ranges.dtype} {ranges.shape}")
    ranges = ranges.astype(np.int64)
    bad = np.nonzero(ranges[:, 1] < ranges[:, 0])[0]
    if len(bad):
        raise DpError(f"{path}: episode {int(bad[0])} ends before it starts ({ranges[bad[0]].tolist()}; ends are inclusive)")
    return ranges


def plan_import(
    path: str | Path,
    *,
    split: str = "training",
    segments: str = "lang",
    card: DatasetCard | None = None,
    cameras: list[str] | None = None,
    actions: str | None = None,
    image_size: int | None = None,
    max_episode_len: int | None = None,
    skip_bad: bool = False,
    skipped: list[str] | None = None,
) -> tuple[DatasetCard, list[ImportItem]]:
    """The card in use and one item per episode to import; bad annotations raise or go to ``skipped``.

    ``max_episode_len`` cuts play episodes (``segments="episodes"``) into consecutive pieces of at
    most that many frames, so that a long one need not fit in memory at once.
    """
    source = CalvinSplit(path, split)
    card = (card or source.default_card()).select(cameras=cameras, variant=actions)
    if card.format != "calvin":
        raise DpError(f"{card.origin}: a {card.format} card, not a calvin one")
    if segments not in ("lang", "episodes"):
        raise DpError(f"--segments must be 'lang' or 'episodes', not {segments!r}")
    job_args = (str(source.root), source.prefix, source.digits)
    items = []
    has_emb = (source.sidecar or {}).get("has_lang_emb")
    if segments == "episodes":
        emb_of: dict[tuple[int, int], np.ndarray] = {}
        if source.sidecar is not None and any(has_emb or []):  # our export: embeddings sit in the annotations
            emb_of = {(s, e): emb for s, e, _, _, emb in source.annotations()}
        if max_episode_len is not None and max_episode_len < 1:
            raise DpError(f"--max-episode-len must be >= 1, not {max_episode_len}")
        for row, (start, end) in enumerate(source.ranges.tolist()):
            meta = source.episode_meta(row) if source.sidecar is not None else {"source": "calvin"}
            if has_emb and has_emb[row] and (start, end) in emb_of:
                meta["lang_emb"] = emb_of[(start, end)]
            step = max_episode_len or (end - start + 1)
            for piece in range(start, end + 1, step):  # identity: the piece's first frame id (ranges never overlap)
                items.append(_item(source, "episodes", piece, piece, min(piece + step - 1, end), job_args, card, image_size, meta))
        return card, items
    exact_rows = {(int(s), int(e)): r for r, (s, e) in enumerate(source.ranges.tolist())}
    for j, (start, end, ann, task, emb) in enumerate(source.annotations()):
        row = source.row_containing(start, end)
        if row is None:
            problem = (
                f"{source.root / LANG_FILE}: annotation {j} (frames {start}..{end}) is out of range: "
                f"not inside any episode of ep_start_end_ids.npy"
            )
            if not skip_bad:
                raise DpError(problem)
            if skipped is not None:
                skipped.append(problem)
            continue
        exact = exact_rows.get((start, end))
        if source.sidecar is not None and exact is not None:  # our export: the episode's metadata as it was
            meta = source.episode_meta(exact)
            if has_emb is None or has_emb[exact]:
                meta["lang_emb"] = emb
        else:
            meta = {"source": "calvin", "task": task, "instruction": ann, "lang_emb": emb}
        items.append(_item(source, "lang", j, start, end, job_args, card, image_size, meta))
    return card, items


def _item(source: CalvinSplit, kind: str, index: int, start: int, end: int, job_args: tuple, card: DatasetCard,
          image_size: int | None, meta: dict[str, Any]) -> ImportItem:
    return ImportItem(
        source_file=f"{source.name}/{kind}",
        source_index=index,
        label=f"{source.root}: {'annotation ' + str(index) if kind == 'lang' else 'play episode'} (frames {start}..{end})",
        n_frames=end - start + 1,
        job=calvin_frames,
        args=(*job_args, start, end, card.keys, image_size),
        meta=meta,
    )


def _meta_from_json(meta: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in meta.items():
        if k in ("source_file", "source_index"):
            continue  # the new store records the new source identity
        out[k] = np.asarray(v, dtype=np.float32) if isinstance(v, list) else v
    return out
