"""LeRobotDataset v3.0 folders (LeRobot's format): layout facts, MP4 video through PyAV, the import job.

A dataset is a local folder (the hub only hosts one)::

    meta/info.json             codebase_version "v3.0", fps, features, data_path / video_path templates
    meta/stats.json            per feature: min, max, mean, std, count, q01 q10 q50 q90 q99 (images: per channel, 0..1)
    meta/tasks.parquet         the task texts (the index) and their task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, tasks, which data and video
                               file holds it (chunk_index, file_index), its rows (dataset_from_index,
                               dataset_to_index) and video time span (from_timestamp, to_timestamp), stats/...
    data/chunk-000/file-000.parquet            one row per frame: index, episode_index, frame_index,
                               timestamp, task_index and the features (observation.state, action, ...)
    videos/<feature>/chunk-000/file-000.mp4    the cameras (many episodes one after another in a file)

Facts from LeRobot's own code (lerobot.datasets: lerobot_dataset.py, utils.py, compute_stats.py,
video_utils.py). This module needs the ``lerobot`` extra (pyarrow, av); LeRobot itself is not needed.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dp.data.formats.cards import KeySpec
from dp.data.formats.convert import finish
from dp.errors import DpError
from dp.files import read_json

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
LEGACY_VERSIONS = ("v2.0", "v2.1")  # one parquet and one MP4 per episode; episodes and tasks as JSON lines
LEGACY_EPISODES_PATH, LEGACY_TASKS_PATH = "meta/episodes.jsonl", "meta/tasks.jsonl"
DP_RECORD = "meta/dp.json"  # ours: the card of the export and each episode's metadata (LeRobot ignores it)
CHUNKS_SIZE = 1000  # files per chunk folder (LeRobot's DEFAULT_CHUNK_SIZE)
DATA_FILE_MB, VIDEO_FILE_MB = 100, 500  # LeRobot's default file size caps
TIME_TOLERANCE_S = 1e-4  # LeRobot's tolerance_s between a query timestamp and a decoded frame


def store_key(feature: str, camera: bool) -> str:
    """The dp key of a LeRobot feature that no card names: ``observation.images.front`` -> ``front_image``,
    ``observation.image`` -> ``image``, ``observation.state`` -> ``state``, ``action`` -> ``action``
    (dots become underscores). The importer and the LeRobot policy plugin both name keys by it."""
    if not camera:
        return feature.removeprefix("observation.").replace(".", "_")
    name = camera_name(feature)
    return name.replace(".", "_") + ("" if name == "image" else "_image")


def camera_name(feature: str) -> str:
    """A LeRobot camera feature's camera: ``observation.images.front`` -> ``front``, ``observation.image`` -> ``image``."""
    return feature.removeprefix("observation.images.").removeprefix("observation.")


def require(name: str) -> Any:
    """Import an optional dependency of this format, or fail saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise DpError(f"LeRobot datasets need the '{name.split('.')[0]}' package: pip install 'dp[lerobot]'") from None


@contextmanager
def parquet_errors(path: Path) -> Iterator[None]:
    """Turn pyarrow's errors on reading the parquet file ``path`` into one-line DpErrors naming it."""
    pa = require("pyarrow")
    try:
        yield
    except FileNotFoundError:
        raise DpError(f"{path}: missing") from None
    except (OSError, pa.ArrowException) as exc:
        reason = re.sub(r"^Could not open Parquet input source '[^']*': ", "", " ".join(str(exc).split()))
        raise DpError(f"{path}: not a readable parquet file ({reason})") from exc


def next_file(chunk: int, file: int) -> tuple[int, int]:
    """The next (chunk_index, file_index), CHUNKS_SIZE files per chunk folder (LeRobot's rule)."""
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


def read_info(root: Path) -> dict[str, Any]:
    """meta/info.json, checked: a v3.0 (or v2.x) dataset with fps and features."""
    path = root / INFO_PATH
    if not path.is_file():
        raise DpError(f"{root}: no {INFO_PATH} (not a LeRobotDataset folder)")
    info = read_json(path)
    version = str(info.get("codebase_version", "?"))
    if version not in (CODEBASE_VERSION, *LEGACY_VERSIONS):
        raise DpError(f"{path}: codebase_version {version!r}; dp reads LeRobotDataset {CODEBASE_VERSION} and {', '.join(LEGACY_VERSIONS)} "
                      "(LeRobot's conversion scripts, lerobot.datasets.v*/convert_dataset_*, upgrade older ones)")
    for name in ("fps", "features", "data_path"):
        if name not in info:
            raise DpError(f"{path}: no {name!r}")
    if not isinstance(info["features"], dict):
        raise DpError(f"{path}: 'features' must be a mapping of feature name to {{dtype, shape, names}}")
    return info


# ====================================================================== video
def encoder_options(crf: int) -> dict[str, str]:
    """libx264 settings: LeRobot's habit of a short GOP (g=2) so a frame is found by seeking quickly."""
    return {"crf": str(crf), "g": "2", "preset": "medium"}


class Mp4Writer:
    """An H.264 (yuv420p) MP4 file, written frame by frame; frame k has timestamp k / fps exactly."""

    def __init__(self, path: Path, fps: float, width: int, height: int, crf: int = 23):
        from fractions import Fraction

        av = require("av")
        if width % 2 or height % 2:
            raise DpError(f"{path}: H.264 in yuv420p needs even frame sizes, got {width}x{height}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.frames, self.bytes = path, 0, 0
        self._container = av.open(str(path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate, options=encoder_options(crf))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.codec_context.time_base = 1 / rate
        self._av = av

    def write(self, frame: np.ndarray) -> None:
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames
        self.frames += 1
        self._mux(self._stream.encode(vf))

    def _mux(self, packets: list) -> None:
        for packet in packets:
            self.bytes += packet.size
            self._container.mux(packet)

    def close(self) -> None:
        self._mux(self._stream.encode(None))
        self._container.close()


def video_info(fps: float, width: int, height: int) -> dict[str, Any]:
    """The ``info`` LeRobot records for a video feature (what its get_video_info reads from the file)."""
    return {"video.height": height, "video.width": width, "video.codec": "h264", "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}


def decode_video(path: Path, from_ts: float, n: int, fps: float) -> np.ndarray:
    """The ``n`` frames of one episode, starting at ``from_ts`` seconds: (n, H, W, 3) uint8 RGB."""
    av = require("av")
    if not path.is_file():
        raise DpError(f"{path}: video file missing")
    out: np.ndarray | None = None
    got = np.zeros(n, bool)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if from_ts > 0:  # the key frame at or before the episode's first frame
                container.seek(int(from_ts / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                k = int(round((frame.time - from_ts) * fps))
                if k < 0:
                    continue
                if k >= n:
                    break
                if abs(frame.time - from_ts - k / fps) > max(TIME_TOLERANCE_S, 0.25 / fps):
                    raise DpError(f"{path}: frame at {frame.time:.4f} s is not on the {fps} fps grid starting at {from_ts:.4f} s")
                if out is None:
                    out = np.empty((n, frame.height, frame.width, 3), np.uint8)
                out[k] = frame.to_ndarray(format="rgb24")
                got[k] = True
    except av.error.FFmpegError as exc:
        raise DpError(f"{path}: cannot decode ({exc})") from exc
    if out is None or not got.all():
        raise DpError(f"{path}: {int(n - got.sum())} of the episode's {n} frames from {from_ts:.4f} s are missing")
    return out


# ====================================================================== import job (runs in a worker)
def _column_array(table: Any, name: str, n: int, where: str) -> np.ndarray:
    """A parquet column as a numpy array (n, ...): scalars, fixed or variable lists, nested lists."""
    pa = require("pyarrow")
    column = table.column(name).combine_chunks()
    kind = column.type
    if pa.types.is_struct(kind):  # an image feature: {bytes: PNG/JPEG, path}
        from dp.data.formats.workers import cv2_module

        cv2 = cv2_module()
        frames = []
        for blob in column.field("bytes").to_pylist():
            img = cv2.imdecode(np.frombuffer(blob or b"", np.uint8), cv2.IMREAD_COLOR) if blob else None
            if img is None:
                raise DpError(f"{where}: an image of {name!r} cannot be decoded")
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        return np.stack(frames)
    values = column
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type) or pa.types.is_large_list(values.type):
        values = values.flatten()
    if n == 0 or len(values) % n:
        raise DpError(f"{where}: feature {name!r} has rows of different lengths")
    return values.to_numpy(zero_copy_only=False).reshape(n, -1)


def read_episode(root: str, data_file: str, episode_index: int, n: int, videos: tuple[tuple[str, str, float], ...],
                 fps: float, specs: tuple[KeySpec, ...], image_size: int | None) -> dict[str, np.ndarray]:
    """One episode in our keys: its rows of ``data_file`` and its frames of each video (runs in a worker)."""
    pq = require("pyarrow.parquet")
    pc = require("pyarrow.compute")
    rootp = Path(root)
    where = f"{rootp / data_file}: episode {episode_index}"
    video_of = {feature: (path, from_ts) for feature, path, from_ts in videos}
    wanted = {s.field for spec in specs for s in spec.sources if s.field not in video_of}
    with parquet_errors(rootp / data_file):
        schema = pq.read_schema(rootp / data_file)
        columns = [c for c in schema.names if c in wanted | {"episode_index", "frame_index"}]
        # the filter skips row groups of other episodes by their statistics (a file holds many episodes)
        table = pq.read_table(rootp / data_file, columns=columns, filters=pc.field("episode_index") == episode_index)
    if "frame_index" in table.column_names:
        table = table.sort_by("frame_index")
    if table.num_rows != n:
        raise DpError(f"{where}: {table.num_rows} rows, the episode metadata says {n}")
    out = {}
    for spec in specs:
        src = next((s for s in spec.sources if s.field in video_of or s.field in table.column_names), None)
        if src is None:
            if spec.optional:
                continue
            wanted_text = " or ".join(repr(s.field) for s in spec.sources)
            raise DpError(f"{where}: no feature {wanted_text} for key {spec.key!r} (features: {', '.join(table.column_names + list(video_of))}); "
                          f"name the right one in a card (--card) or leave the camera out (--cameras)")
        if src.field in video_of:
            path, from_ts = video_of[src.field]
            arr = decode_video(rootp / path, from_ts, n, fps)
        else:
            arr = _column_array(table, src.field, n, where)
        arr = src.take(arr)
        out[spec.key] = finish(spec, arr, f"{where}: {src} -> {spec.key}", image_size=image_size)
    return out
