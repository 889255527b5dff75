"""Videos of `dp eval --video` and `dp show` are H.264 (yuv420p) MP4s, which browsers play."""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av", reason="H.264 needs PyAV: pip install -e '.[video]'")

from dp.cli import main as dp_main  # noqa: E402
from dp.data.video import write_mp4  # noqa: E402
from dp.testing.format_fixtures import frame_image, make_sim_store  # noqa: E402


def _read(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = (container.format.name, stream.codec_context.name, stream.codec_context.pix_fmt, stream.width, stream.height)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return info, np.stack(frames)


def test_write_mp4_is_h264_and_keeps_the_frames(tmp_path):
    frames = [np.ascontiguousarray(frame_image(t, 64)[:63, :50]) for t in range(12)]  # odd height: padded to even
    write_mp4(tmp_path / "v.mp4", frames, fps=20)
    (fmt, codec, pix_fmt, width, height), decoded = _read(tmp_path / "v.mp4")
    assert "mp4" in fmt and codec == "h264" and pix_fmt == "yuv420p" and (width, height) == (50, 64)
    assert len(decoded) == 12
    mse = np.mean((decoded[:, :63].astype(float) - np.stack(frames).astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 20  # the same pictures, within the codec's loss


def test_dp_show_writes_h264(tmp_path):
    make_sim_store(tmp_path / "s.zarr", episode_lens=(6,), image_size=32)
    assert dp_main(["show", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "show.mp4")]) == 0
    (_, codec, pix_fmt, _, _), decoded = _read(tmp_path / "show.mp4")
    assert codec == "h264" and pix_fmt == "yuv420p" and len(decoded) == 6
