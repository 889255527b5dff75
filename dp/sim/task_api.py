"""The interface every simulation task implements (robosuite tasks in :mod:`dp.sim.tasks`, Push-T in
:mod:`dp.sim.pusht`): a :class:`Task` declares what it observes and acts on; its :class:`Env` runs one
episode at a time through the store's keys. Environments inherit :class:`Env` for its key listing."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Env(Protocol):
    """One environment of a task, seen through the store's keys."""

    spec: Task
    cameras: list[str]

    @property
    def image_keys(self) -> list[str]:
        """The camera keys this environment returns."""
        return self.spec.image_keys(self.cameras)

    @property
    def keys(self) -> list[str]:
        """The observation keys :meth:`reset` and :meth:`step` return."""
        return [*self.spec.lowdim_keys, *self.image_keys]

    def reset(self, seed: int) -> dict[str, np.ndarray]: ...  # the same seed, the same initial state

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]: ...

    def observation(self) -> dict[str, np.ndarray]: ...

    def success(self) -> bool: ...  # solved now

    def score(self) -> float: ...  # progress now in [0, 1]; an episode scores its maximum

    def milestones(self) -> dict[str, bool]: ...  # the task's steps toward success reached now (dp.sim.milestones)

    def render(self, camera: str, size: int) -> np.ndarray: ...  # uint8 (size, size, 3), for videos

    def close(self) -> None: ...


class Task(Protocol):
    """What a task declares: its name, goal, episode length, rate, action width and observations."""

    name: str
    instruction: str | None  # what the policy's reset(instruction) gets (None: its only task)
    horizon: int
    control_freq: float
    action_dim: int
    image_size: int  # the default camera size
    cameras: tuple[str, ...]
    robot: str  # what a collected store records as its robot
    discrete_action_dims: tuple[int, ...]  # action values with two levels (a gripper), kept unnormalised

    @property
    def lowdim_keys(self) -> list[str]: ...

    def image_keys(self, cameras: list[str] | tuple[str, ...] | None = None) -> list[str]: ...

    def make_env(self, cameras: list[str] | None = None, image_size: int | None = None, *,
                 offscreen: bool = False, viewer: bool = False) -> Env: ...
