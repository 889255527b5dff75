"""Plan the import of a LeRobotDataset v3.0 (or v2.x) folder (`dp import lerobot DIR`).

Every row of ``meta/episodes/*/*.parquet`` is an episode: its frames are its rows of the data file
the row names, its camera frames the span ``from_timestamp`` .. ``to_timestamp`` of each video
(decoded with PyAV). Keys map through the card (``datasets/lerobot.yaml``: ``observation.state`` ->
``state``, ``action`` -> ``action``); each camera feature the card does not name is imported too,
``observation.images.<cam>`` as ``<cam>_image`` (camera ``<cam>``, selectable with ``--cameras``).
The episode's task text (``meta/tasks.parquet``) becomes its instruction and task; the frame rate
(``fps``) the store's control frequency. A folder written by ``dp export-data lerobot`` carries
``meta/dp.json``: its card and episode metadata are used, so the store comes back as it was.
v2.0 / v2.1 folders (one parquet and one MP4 per episode, ``meta/episodes.jsonl``,
``meta/tasks.jsonl``) import the same way.

Before anything is written every data row's ``episode_index`` is checked against the episode whose
frame range (``dataset_from_index`` .. ``dataset_to_index``; v2.x: the episode's own file) holds
the row: a mismatch refuses the import naming the file, the row and both episodes, or with
``--skip-bad`` the episodes it touches are listed and skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dp.data.formats import lerobot
from dp.data.formats.cards import DatasetCard, card_from_dict, load_card
from dp.data.formats.lerobot import (
    DP_RECORD, EPISODES_DIR, LEGACY_EPISODES_PATH, LEGACY_TASKS_PATH, LEGACY_VERSIONS, TASKS_PATH, parquet_errors, read_info,
    camera_name, require, store_key,
)
from dp.data.formats.pipeline import ImportItem
from dp.data.formats.structure import refuse
from dp.errors import DpError
from dp.files import read_json


def plan_import(root: str | Path, *, card: DatasetCard | None = None, cameras: list[str] | None = None,
                image_size: int | None = None, skip_bad: bool = False,
                skipped: list[str] | None = None) -> tuple[DatasetCard, list[ImportItem]]:
    """The card in use and one item per good episode of the folder; episodes whose data rows
    disagree with their frame ranges raise DpError, or with ``skip_bad`` go to ``skipped``."""
    root = Path(root)
    if not root.is_dir():
        raise DpError(f"{root}: no such directory (a LeRobotDataset folder holds meta/, data/ and videos/)")
    info = read_info(root)
    features = info["features"]
    fps = float(info["fps"])
    record = _read_record(root)
    if card is None:
        card = card_from_dict(record["card"], f"{root / DP_RECORD}: card") if record else load_card("lerobot")
    if card.format != "lerobot":
        raise DpError(f"{card.origin}: a {card.format} card, not a lerobot one")
    card = _with_cameras(card, features, info).select(cameras=cameras)
    for spec in card.keys:
        if not spec.optional and not any(s.field in features for s in spec.sources):
            wanted = " or ".join(repr(s.field) for s in spec.sources)
            raise DpError(f"{root}: no feature {wanted} for key {spec.key!r} (features: {', '.join(features)}); "
                          f"point the key's card entry 'source' at one (--card), or mark it 'optional: true'")
    legacy = info["codebase_version"] in LEGACY_VERSIONS
    if legacy:
        tasks = {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(root / LEGACY_TASKS_PATH, ("task_index", "task"))}
        episodes = sorted(_read_jsonl(root / LEGACY_EPISODES_PATH, ("episode_index", "length")), key=lambda r: r["episode_index"])
    else:
        tasks, episodes = _read_tasks(root), _read_episodes(root)
    used = {s.field for spec in card.keys for s in spec.sources}
    videos = [k for k, f in features.items() if f.get("dtype") == "video" and k in used]
    items, rows_of = [], {}  # data file -> (episode, first row, stop row) of each episode it holds
    for ep in episodes:
        index, n = int(ep["episode_index"]), int(ep["length"])
        data_file, spans = (_legacy_locations if legacy else _locations)(root, info, ep, videos)
        rows = (0, n) if legacy else (int(ep["dataset_from_index"]), int(ep["dataset_to_index"]))
        rows_of.setdefault(data_file, []).append((index, *rows))
        if record is not None and len(record["episodes"]) == len(episodes):  # not if episodes were removed since
            meta = _meta_from_json(record["episodes"][index])
        else:
            text = next(iter(ep.get("tasks") or []), None) or tasks.get(int(ep.get("task_index", 0)), "")
            meta = {"source": "lerobot", "task": str(text), "instruction": str(text)}
        items.append(ImportItem(
            source_file=root.name, source_index=index, label=f"{root}: episode {index}", n_frames=n,
            job=lerobot.read_episode, args=(str(root), data_file, index, n, tuple(spans), fps, card.keys, image_size), meta=meta,
        ))
    problems, bad = _check_rows(root, rows_of, LEGACY_EPISODES_PATH if legacy else EPISODES_DIR)
    if not skip_bad:
        refuse(problems, "episodes")
    elif skipped is not None:
        skipped += [f"{root}: episode {k}: its data rows disagree with its frame range ({bad[k]})" for k in sorted(bad)]
    return card, [it for it in items if it.source_index not in bad]


def _check_rows(root: Path, rows_of: dict[str, list[tuple[int, int, int]]], listing: str) -> tuple[list[str], dict[int, str]]:
    """The problems of every data file's ``episode_index`` column and the episodes they touch
    (episode -> its data file). ``rows_of``: per data file, each episode's (index, start, stop) in
    the dataset's frame numbering; a file's first row is the smallest start of its episodes."""
    problems, bad = [], {}
    for data_file, spans in rows_of.items():
        try:
            found = _misplaced_rows(root / data_file, spans, listing)
        except DpError as exc:  # an unreadable file: every episode in it
            found = [(str(exc), {index for index, _, _ in spans})]
        for problem, touched in found:
            problems.append(problem)
            bad.update((k, data_file) for k in touched if k not in bad)
    return problems, bad


def _misplaced_rows(path: Path, spans: list[tuple[int, int, int]], listing: str) -> list[tuple[str, set[int]]]:
    """Rows of the data file ``path`` whose ``episode_index`` is not that of the episode whose span
    (``listing`` gives the spans) holds them, or that claim one of its episodes from outside every
    span; one problem per (episode expected, episode found) pair, with the episodes it touches."""
    pq = require("pyarrow.parquet")
    with parquet_errors(path), pq.ParquetFile(path) as file:
        if "episode_index" not in file.schema_arrow.names:
            raise DpError(f"{path}: no column episode_index")
        found = file.read(columns=["episode_index"]).column(0).to_numpy()
    first = min(start for _, start, _ in spans)
    expected = np.full(len(found), -1, np.int64)
    problems = []
    for index, start, stop in spans:
        if stop - first > len(found):
            problems.append((f"{path}: episode {index}'s rows [{start - first}, {stop - first}) (by {listing}) run past "
                             f"the file's {len(found)} rows", {index}))
        expected[start - first:stop - first] = index
    own = np.array([index for index, _, _ in spans])
    wrong = np.flatnonzero((found != expected) & ((expected >= 0) | np.isin(found, own)))
    pairs, firsts, counts = np.unique(np.stack([expected[wrong], found[wrong]], 1), axis=0, return_index=True, return_counts=True)
    for (want, got), row, count in zip(pairs.tolist(), wrong[firsts].tolist(), counts.tolist()):
        span = next(((start - first, stop - first) for index, start, stop in spans if index == want), None)
        place = f"episode {want}'s rows [{span[0]}, {span[1]})" if span else "no episode's rows"
        more = f" (and {count - 1} more row(s) like it)" if count > 1 else ""
        problems.append((f"{path}: row {row} has episode_index {got}, but it lies in {place} (by {listing}){more}",
                         {int(k) for k in (want, got) if k in own}))
    return problems


def _locations(root: Path, info: dict[str, Any], ep: dict[str, Any], videos: list[str]) -> tuple[str, list[tuple[str, str, float]]]:
    """v3.0: the data file and, per video, (feature, file, start in s) that an episode row names."""
    data_file = info["data_path"].format(chunk_index=int(ep["data/chunk_index"]), file_index=int(ep["data/file_index"]))
    spans = []
    for key in videos:
        try:
            path = info["video_path"].format(video_key=key, chunk_index=int(ep[f"videos/{key}/chunk_index"]),
                                             file_index=int(ep[f"videos/{key}/file_index"]))
            spans.append((key, path, float(ep[f"videos/{key}/from_timestamp"])))
        except (KeyError, TypeError, AttributeError) as exc:
            raise DpError(f"{root}: episode {ep['episode_index']} has no video location for {key!r} in {EPISODES_DIR} ({exc})") from None
    return data_file, spans


def _legacy_locations(root: Path, info: dict[str, Any], ep: dict[str, Any], videos: list[str]) -> tuple[str, list[tuple[str, str, float]]]:
    """v2.x: one data file and one MP4 per camera for each episode, in chunks of chunks_size episodes."""
    index = int(ep["episode_index"])
    chunk = index // int(info.get("chunks_size") or 1000)
    data_file = info["data_path"].format(episode_chunk=chunk, episode_index=index)
    return data_file, [(key, info["video_path"].format(episode_chunk=chunk, video_key=key, episode_index=index), 0.0) for key in videos]


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DpError(f"{path}: missing (a LeRobotDataset v2.x folder lists its episodes and tasks there)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DpError(f"{path}: line {number} is not valid JSON ({exc})") from exc
        if not isinstance(row, dict) or any(k not in row for k in required):
            raise DpError(f"{path}: line {number} needs {', '.join(required)}")
        rows.append(row)
    return rows


def _with_cameras(card: DatasetCard, features: dict[str, Any], info: dict[str, Any]) -> DatasetCard:
    """The card plus an entry for every camera feature it does not name, and the folder's fps and robot."""
    raw = card.to_dict()
    named = {s.field for spec in card.keys for s in spec.sources}
    keys = {spec.key for spec in card.keys}
    for feature, ft in features.items():
        if ft.get("dtype") not in ("video", "image") or feature in named:
            continue
        key = store_key(feature, camera=True)
        if key in keys:
            raise DpError(f"{feature}: its store key {key!r} is taken; name the camera in a card entry (--card)")
        keys.add(key)
        raw["keys"].append({"key": key, "source": feature, "role": "image", "camera": camera_name(feature)})
    raw["control_freq"] = float(info["fps"])
    if info.get("robot_type"):
        raw.setdefault("robot", str(info["robot_type"]))
    return card_from_dict(raw, card.origin)


def _read_record(root: Path) -> dict[str, Any] | None:
    path = root / DP_RECORD
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("card"), dict) or not isinstance(record.get("episodes"), list):
        raise DpError(f"{path}: expected {{card: {{...}}, episodes: [...]}}")
    return record


def _read_tasks(root: Path) -> dict[int, str]:
    """task_index -> text; the text is the index pandas wrote (a 'task' or '__index_level_0__' column)."""
    pq = require("pyarrow.parquet")
    path = root / TASKS_PATH
    if not path.is_file():
        raise DpError(f"{root}: no {TASKS_PATH}")
    with parquet_errors(path):
        table = pq.read_table(path)
    text = next((c for c in ("task", "__index_level_0__") if c in table.column_names), None)
    if "task_index" not in table.column_names or text is None:
        raise DpError(f"{path}: expected columns task_index and task (got {', '.join(table.column_names)})")
    return dict(zip(table.column("task_index").to_pylist(), table.column(text).to_pylist()))


def _read_episodes(root: Path) -> list[dict[str, Any]]:
    pq = require("pyarrow.parquet")
    files = sorted((root / EPISODES_DIR).glob("*/*.parquet"))
    if not files:
        raise DpError(f"{root}: no {EPISODES_DIR}/chunk-*/file-*.parquet (episode metadata)")
    rows: list[dict[str, Any]] = []
    for path in files:
        with parquet_errors(path):
            table = pq.read_table(path)
        missing = {"episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                   "dataset_to_index"} - set(table.column_names)
        if missing:
            raise DpError(f"{path}: no column(s) {', '.join(sorted(missing))}")
        rows += table.select([c for c in table.column_names if not c.startswith("stats/")]).to_pylist()
    return sorted(rows, key=lambda r: r["episode_index"])


def _meta_from_json(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: (np.asarray(v, dtype=np.float32) if isinstance(v, list) else v) for k, v in meta.items()
            if k not in ("source_file", "source_index")}
