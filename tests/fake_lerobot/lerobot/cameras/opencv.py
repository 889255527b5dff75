"""The ``opencv`` camera type; the fake robot draws its frames itself."""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.cameras import CameraConfig


@CameraConfig.register_subclass("opencv")
@dataclass(kw_only=True)
class OpenCVCameraConfig(CameraConfig):
    index_or_path: int | str = 0
