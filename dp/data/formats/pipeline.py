"""The import driver shared by every format: resumable, parallel decoding, one writer.

An importer plans a list of :class:`ImportItem` (one per future episode, each with a stable source
identity) and a picklable decode job. :func:`run_import` skips the items already in the store
(resume after a kill: the identity is stored as episode metadata ``source_file`` +
``source_index``), decodes the rest in a pool of worker processes, and appends them in order from
the parent, the store's only writer, a few episodes per commit (``BATCH_EPISODES``). Items that
fail with a :class:`DpError` stop the import, or with ``skip_bad`` are listed and skipped.

Every import goes through the structure checks of :mod:`dp.data.formats.structure`: the planned
items' shapes against each other and the store before anything is written, each decoded episode
before it is staged. An import stopped after it wrote episodes says that the store holds a
partial import and that rerunning the same command continues it.
"""

from __future__ import annotations

import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from dp.data.formats.cards import DatasetCard
from dp.data.formats.import_item import ImportItem
from dp.data.formats.structure import check_decoded, check_planned, refuse
from dp.data.formats.workers import call, ordered_map
from dp.data.store import EpisodeStore, StoreWriteError
from dp.errors import DpError


# The writer stages each decoded episode (its frames are compressed and written at once) and commits
# them in batches (EpisodeStore.stage_episode / commit): per-episode metadata and commit writes would
# otherwise cost as much as the frames themselves for short episodes. A kill loses at most the
# batch being gathered; the resumed import redoes it.
BATCH_EPISODES = 8
BATCH_FRAMES = 512


@dataclass
class ImportReport:
    store: Path
    added: int = 0
    frames: int = 0
    already_present: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f"imported {self.added} episodes ({self.frames} frames) into {self.store} in {self.seconds:.1f} s "
            f"({self.frames_per_s:.0f} frames/s); {self.already_present} already present"
        ]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} bad item(s):")
            lines += [f"  - {s}" for s in self.skipped]
        return "\n".join(lines)


def role_ordered_keys(store: EpisodeStore) -> list[str]:
    """The store's keys in the order its roles list them (the order models concatenate them in)."""
    ordered = [k for role in ("lowdim", "image", "action") for k in store.roles.get(role, []) if k in store.keys]
    return ordered + [k for k in store.keys if k not in ordered]


def existing_sources(store: EpisodeStore) -> set[tuple[str, int]]:
    """The (source_file, source_index) identities already in a store."""
    files, indices = store.meta_column("source_file"), store.meta_column("source_index")
    return {(f, i) for f, i in zip(files, indices) if f is not None and i is not None}


def run_import(
    items: list[ImportItem],
    out: str | Path,
    card: DatasetCard,
    *,
    workers: int = 2,
    skip_bad: bool = False,
    overwrite: bool = False,
    skipped: list[str] | None = None,
    progress: bool = True,
) -> ImportReport:
    """Append the items' episodes to the store at ``out`` (created on the first episode if absent).

    ``skipped`` carries bad items already found while planning (with ``skip_bad``).
    """
    out = Path(out)
    report = ImportReport(store=out, skipped=list(skipped or []))
    store, done, overwrite = _resume(out, card, overwrite)
    todo = [it for it in items if (it.source_file, it.source_index) not in done]
    report.already_present = len(items) - len(todo)
    stored = {k: (tuple(store.array(k).shape[1:]), store.array(k).dtype) for k in store.keys} if store is not None else {}
    bad = check_planned(todo, {k: shape for k, (shape, _) in stored.items()})
    if bad and not skip_bad:
        if store is not None:
            store.close()
        refuse([problem for _, problem in bad], "items")
    report.skipped += [problem for _, problem in bad]
    todo = [it for it in todo if all(it is not b for b, _ in bad)]
    start = time.perf_counter()
    bar = tqdm(total=sum(it.n_frames for it in todo), unit="frame", unit_scale=True, desc=f"import {card.name}", disable=not progress)
    futures = ordered_map(call, ((it.job, it.args) for it in todo), workers)
    staged: list[tuple[ImportItem, int]] = []  # (item, frames) staged in the store, not yet committed

    def commit() -> None:
        store.commit()
        for item, n in staged:
            report.added += 1
            report.frames += n
            bar.update(item.n_frames)
        bar.set_postfix(episodes=report.added, refresh=False)
        staged.clear()

    try:
        for item, fut in zip(todo, futures):
            try:
                data = fut.result()
                check_decoded(data, item, card, stored)
                if store is None:
                    store = _create_store(out, card, list(data), overwrite)
                if not stored:  # the first episode of a new store fixes keys, shapes and dtypes
                    stored = {k: (tuple(v.shape[1:]), v.dtype) for k, v in data.items()}
                meta = {**item.meta, "source_file": item.source_file, "source_index": item.source_index}
                store.stage_episode(data, meta)  # its frames are written now, committed with the batch
            except StoreWriteError:
                raise  # disk full and the like: never a bad item
            except DpError as exc:
                if not skip_bad:
                    if staged:
                        commit()  # the episodes before the bad one are kept
                    raise
                report.skipped.append(str(exc) if str(exc).startswith(item.label) else f"{item.label}: {exc}")
                bar.update(item.n_frames)
                continue
            staged.append((item, len(next(iter(data.values())))))
            if len(staged) >= BATCH_EPISODES or sum(n for _, n in staged) >= BATCH_FRAMES:
                commit()
        if staged:
            commit()
    except (DpError, BrokenProcessPool) as exc:
        raise DpError(_stopped(exc, store, report)) from exc
    finally:
        futures.close()  # stops the pool now, also when an error ends the import early
        bar.close()
        if store is not None:
            store.close()
    report.seconds = time.perf_counter() - start
    return report


def _resume(out: Path, card: DatasetCard, overwrite: bool) -> tuple[EpisodeStore | None, set[tuple[str, int]], bool]:
    """(the store to append to or None, the sources it already holds, overwrite): an existing
    store is continued only if it was imported from the same format with the same card."""
    if not out.exists() or overwrite:
        return None, set(), overwrite
    store = EpisodeStore.open(out, mode="a")
    previous = store.attrs.get("source_format")
    if len(store) and previous != card.format:
        store.close()
        raise DpError(f"{out}: already holds {previous or 'non-imported'} episodes, not {card.format}; choose another --out or pass --overwrite")
    if len(store) and store.attrs.get("dataset_card") != card.to_dict():
        store.close()
        raise DpError(f"{out}: was imported with another dataset card or other key options (--card, --cameras, --actions); "
                      "re-run with the same ones to continue, or choose another --out, or pass --overwrite")
    done = existing_sources(store)
    if not len(store):  # an empty store (a run killed before its first episode): start it afresh
        store.close()
        return None, done, True
    return store, done, overwrite


def _stopped(exc: BaseException, store: EpisodeStore | None, report: ImportReport) -> str:
    """The one-line error of an import stopped mid-way: the cause, what the store holds, how to go on."""
    reason = f"a decoding worker died ({exc})" if isinstance(exc, BrokenProcessPool) else str(exc)
    if isinstance(exc, StoreWriteError):
        return f"{reason}; free space and rerun the same command to continue the import"
    if store is None or not len(store):
        return reason
    episodes = f"{len(store)} episode" + ("s" if len(store) != 1 else "")
    return (f"{reason}; {report.store} holds a partial import ({episodes}, {report.added} added by this run): "
            "rerun the same command to continue it once the source is fixed, or add --skip-bad to skip the bad items")


def _create_store(out: Path, card: DatasetCard, keys: list[str], overwrite: bool) -> EpisodeStore:
    return EpisodeStore.create(
        out,
        control_freq=card.control_freq,
        robot=card.robot,
        roles=card.roles(keys),
        discrete_dims=card.discrete_dims(keys),
        attrs={"source_format": card.format, "gripper_close": card.gripper_close, "dataset_card": card.to_dict()},
        overwrite=overwrite,
    )
