"""Robot drivers: ``sim`` (a robosuite task), ``template`` (where a real arm's SDK plugs in),
``lerobot`` (an arm LeRobot runs: SO-101, Koch, ...), or any ``package.module:Class`` implementing
:class:`dp.deploy.drivers.base.Driver`."""

from __future__ import annotations

import importlib

from dp.deploy.drivers.base import ArmTarget, Driver, DriverInfo, Reading
from dp.deploy.robot_config import RobotConfig
from dp.errors import DpError

BUILTIN = {"sim": "dp.deploy.drivers.sim:SimDriver", "template": "dp.deploy.drivers.template:TemplateDriver",
           "lerobot": "dp.deploy.drivers.lerobot:LeRobotDriver"}

__all__ = ["ArmTarget", "Driver", "DriverInfo", "Reading", "make_driver"]


def make_driver(config: RobotConfig) -> Driver:
    """The driver a robot file names, built with the robot file (it reads ``driver.options``)."""
    spec = BUILTIN.get(config.driver.type, config.driver.type)
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        raise DpError(f"driver.type {config.driver.type!r}: expected one of {sorted(BUILTIN)} or package.module:Class")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise DpError(f"driver.type {config.driver.type!r}: cannot import {spec} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise DpError(f"driver.type {config.driver.type!r}: {spec} is not a dp.deploy.drivers.base.Driver")
    return cls(config)
