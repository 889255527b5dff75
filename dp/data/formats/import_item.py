"""One episode an importer plans: where it comes from and how a worker decodes it (shared by the
import driver, :mod:`dp.data.formats.pipeline`, and its structure checks, :mod:`dp.data.formats.structure`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dp.data.formats.convert import Episode


@dataclass
class ImportItem:
    """One episode to import: where it comes from and how to decode it."""

    source_file: str  # stable name of the source (file or split), the same on every run
    source_index: int  # the item's number inside that source
    label: str  # for messages: "FILE: data/demo_3"
    n_frames: int  # for progress (an estimate is fine)
    job: Callable[..., Episode]  # a module-level function (picklable), run in a worker
    args: tuple
    meta: dict[str, Any] = field(default_factory=dict)
    order: int | None = None  # position in the store an export recorded (restores the order on re-import)
    shapes: dict[str, tuple[int, ...]] | None = None  # our key -> (T, ...) once decoded, where the planner knows it
