"""MP4 writing for `dp eval --video` and `dp show`: RGB frames to H.264 through PyAV, or to mp4v
through opencv where PyAV is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dp.errors import DpError


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Write RGB uint8 frames as an H.264 MP4 (yuv420p: browsers play it) through PyAV.

    Without PyAV (``pip install av``, in the ``video`` extra) opencv writes MPEG-4 Part 2 (``mp4v``),
    which players such as VLC read but browsers do not; a warning says so.
    """
    if not frames:
        raise DpError(f"{path}: no frames to write")
    try:
        import av
    except ImportError:
        av = None
    if av is None:
        _write_mp4_opencv(path, frames, fps)
        return
    from fractions import Fraction

    height, width = frames[0].shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "23", "preset": "medium"})
        stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"  # yuv420p: even sizes
        for frame in frames:
            if frame.shape[:2] != (stream.height, stream.width):
                frame = np.pad(frame, ((0, stream.height - height), (0, stream.width - width), (0, 0)), mode="edge")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))


def _write_mp4_opencv(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import warnings

    import cv2

    warnings.warn("PyAV is not installed: writing MPEG-4 Part 2 (mp4v), which browsers do not play; pip install av for H.264",
                  stacklevel=3)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise DpError(f"{path}: opencv cannot open an MP4 writer here")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
