"""A policy runtime whose chunks say where they came from, for tests of the acting logic shared by the
torch and ONNX runtimes (:class:`dp.infer.chunked_runtime.ChunkedRuntime`): queues, re-planning
intervals, plan-ahead, RTI guesses."""

from __future__ import annotations

import threading

import numpy as np

from dp.infer.chunked_runtime import ChunkedRuntime


class Clockwork(ChunkedRuntime):
    """A runtime whose chunk sampled from the observation x = t is ``100 t + k`` at its step k, so
    each action says which observation planned it and for which step; sampling waits for ``gate``
    when one is set, and records the RTI guess it was given. With ``instructions`` (task ->
    instruction) it has task goals, and ``table`` gives tasks their own re-planning intervals."""

    def __init__(self, every: int = 4, horizon: int = 10, rti: bool = False, instructions: dict[str, str] | None = None,
                 table: dict[str, int] | None = None):
        self.lowdim_keys, self.image_keys, self.obs_keys = ["x"], [], ["x"]
        self.shapes, self.pad_lowdim, self.obs_horizon = {"x": [1]}, False, 1
        self.action_horizon, self.action_dim, self.action_key, self.discrete_dims = horizon, 1, "action", []
        self.instructions = dict(instructions or {})
        self.goal_kind, self.tasks = ("task" if self.instructions else "none"), sorted(self.instructions)
        self.goals, self.lang_encoder, self.rti = {}, None, rti
        self.gate: threading.Event | None = None
        self.guesses: list[np.ndarray | None] = []
        self.threads: set[str] = set()
        self._start(None, 0, own=every, stored=table)

    def _sample_chunks(self, noise, window, goal, guess):
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        self.threads.add(threading.current_thread().name)
        self.guesses.append(None if guess is None else guess[:, 0].copy())
        t = float(window["x"][0, -1, 0])
        return (100 * t + np.arange(self.action_horizon, dtype=np.float32))[None, :, None]

    def _goal_input(self, goal):
        return goal

    @property
    def lang_dim(self) -> int:
        return 0

    def run(self, steps: int) -> list[float]:
        """The actions of ``steps`` control steps whose observations are x = 0, 1, ..."""
        return [float(self.select_action({"x": np.array([t])})[0]) for t in range(steps)]
