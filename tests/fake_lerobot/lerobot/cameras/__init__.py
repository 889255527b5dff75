"""Camera configs by type, as LeRobot's ``lerobot.cameras``."""

from __future__ import annotations

from dataclasses import dataclass

from draccus import ChoiceRegistry


@dataclass(kw_only=True)
class CameraConfig(ChoiceRegistry):
    fps: int | None = None
    width: int | None = None
    height: int | None = None
