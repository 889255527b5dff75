"""Robot configs by type and ``make_robot_from_config``, as LeRobot's ``lerobot.robots``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from draccus import ChoiceRegistry

ROBOTS: dict[str, type] = {}  # type -> robot class, filled in by the robot modules


@dataclass(kw_only=True)
class RobotConfig(ChoiceRegistry):
    id: str | None = None
    calibration_dir: str | None = None

    @property
    def type(self) -> str:
        return self.get_choice_name(type(self))


def make_robot_from_config(config: RobotConfig) -> Any:
    return ROBOTS[config.type](config)
