"""Numpy helpers shared by the torch and the ONNX Runtime policies (no torch here: robots import this).

Observation checks, goal lookup, and the RTI warm-start guess (previous chunk shifted by the executed
steps, last action repeated, discrete dimensions snapped to +-1).
"""

from __future__ import annotations

import hashlib
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from dp.errors import DpError

# An exported policy folder (written by dp.infer.onnx_export, read by dp.infer.onnx_policy): three
# entry points (full sampling, RTI warm start, short first chunk) whose weights live once in WEIGHTS_FILE
# (ONNX external data shared by all three), and the description. Version 2 added the first-chunk graph
# and the shared weights file; version 1 folders are refused with a request to re-export.
FULL_FILE, WARM_FILE, FIRST_FILE, SPEC_FILE = "policy.onnx", "policy_warm.onnx", "policy_first.onnx", "policy.yaml"
WEIGHTS_FILE = "policy.weights"
GRAPH_FILES = (FULL_FILE, WARM_FILE, FIRST_FILE)
EXPORT_FILES = (*GRAPH_FILES, WEIGHTS_FILE, SPEC_FILE)
SPEC_FORMAT, SPEC_VERSION = "dp-onnx-policy", 2
PRECISIONS = ("fp32", "fp16", "int8")


def shift_guess(previous: np.ndarray, executed: int, discrete_dims: list[int]) -> np.ndarray:
    """The RTI initial guess (H, A): ``previous`` (H, A) advanced by ``executed`` steps, the last
    action repeated to fill the tail, discrete dimensions snapped to +-1."""
    H = previous.shape[0]
    index = np.minimum(np.arange(H) + executed, H - 1)
    guess = np.array(previous[index], dtype=np.float32)
    return snap_discrete(guess, discrete_dims)


def snap_discrete(chunk: np.ndarray, discrete_dims: list[int]) -> np.ndarray:
    """``chunk`` (..., A) with the discrete dimensions set to +1 where >= 0 and -1 elsewhere (in place)."""
    for d in discrete_dims:
        chunk[..., d] = np.where(chunk[..., d] >= 0, 1.0, -1.0)
    return chunk


def check_observation(
    obs: Any, lowdim_keys: list[str], image_keys: list[str], shapes: dict[str, list[int]], pad_lowdim: bool = False
) -> dict[str, np.ndarray]:
    """One time step of raw observations, checked and converted: low-dim float32 in the trained
    shape, images uint8 HxWxC. ``pad_lowdim`` (a policy trained with ``data.pad_lowdim``): narrower
    low-dim vectors are zero-padded at the end, as in training. A DpError names the key and what was
    expected."""
    if not isinstance(obs, dict):
        raise DpError(f"observation must be a dict of key -> array, got {type(obs).__name__}")
    out = {}
    for key in [*lowdim_keys, *image_keys]:
        if key not in obs:
            raise DpError(f"observation has no key {key!r}; the policy needs {[*lowdim_keys, *image_keys]} (got {sorted(obs)})")
        value = np.asarray(obs[key])
        expected = tuple(int(s) for s in shapes[key])
        if key in image_keys:
            if value.dtype != np.uint8 or value.shape != expected:
                raise DpError(f"observation {key!r}: expected a uint8 image of shape {expected}, got {value.dtype} {value.shape}")
        else:
            if value.dtype.kind not in "fiu":
                raise DpError(f"observation {key!r}: expected numbers (float), got dtype {value.dtype}")
            if pad_lowdim and len(expected) == 1 and value.ndim <= 1 and value.size < expected[0]:
                value = np.pad(value.reshape(-1), (0, expected[0] - value.size))
            if value.size != int(np.prod(expected)):
                raise DpError(f"observation {key!r}: expected shape {expected}, got {value.shape}")
            value = value.reshape(expected).astype(np.float32)
            if not np.isfinite(value).all():
                raise DpError(f"observation {key!r} holds NaN or inf: {value.tolist()}")
        out[key] = value
    return out


def check_noise(noise: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Caller-given sampler noise as float32 of ``shape`` (any layout with as many finite values)."""
    value = np.asarray(noise, dtype=np.float32)
    if value.size != int(np.prod(shape)):
        raise DpError(f"noise: expected {int(np.prod(shape))} values (shape {shape}), got shape {value.shape}")
    if not np.isfinite(value).all():
        raise DpError("noise holds NaN or inf")
    return value.reshape(shape)


def resolve_goal(
    kind: str,
    instruction: str | None,
    tasks: list[str],
    instructions: dict[str, str],
    embeddings: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The goal input for ``instruction`` (a task name or its instruction): ``{"task_id": (1,) int64}``,
    ``{"lang_emb": (1, E) float32}`` or ``{}``; a DpError lists the known goals when it is unknown."""
    if kind == "none":
        return {}
    known = ", ".join(f"{t!r} ({instructions[t]!r})" if t in instructions else repr(t) for t in tasks) or "none"
    if kind == "task":
        if instruction is None:
            if len(tasks) == 1:
                return {"task_id": np.zeros(1, dtype=np.int64)}
            raise DpError(f"this policy was trained on several tasks; reset(instruction) must name one of: {known}")
        by_instruction = {v: k for k, v in instructions.items()}
        task = instruction if instruction in tasks else by_instruction.get(instruction)
        if task is None:
            raise DpError(f"unknown instruction {instruction!r}; this policy knows: {known}")
        return {"task_id": np.array([tasks.index(task)], dtype=np.int64)}
    key = instruction
    if key is None and len(embeddings) == 1:
        key = next(iter(embeddings))
    elif key is not None and key not in embeddings:
        key = instructions.get(key, key)  # a task name -> its instruction
    if key not in embeddings:
        raise DpError(f"no language embedding for instruction {instruction!r}; this policy knows: {known}")
    return {"lang_emb": np.asarray(embeddings[key], dtype=np.float32)[None]}


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

class ChunkedRuntime:
    """The Policy runtime API shared by the torch and ONNX Runtime policies.

    Sampler noise comes from a numpy generator (``seed``), the same stream in both runtimes, so a torch
    policy and its export act alike from the same seed (to float precision).

    A subclass provides ``_sample(noise)`` (one (H, A) chunk of raw actions), ``_history`` (a deque
    of ``obs_horizon`` frames), ``_queue`` (a deque), ``lowdim_keys``, ``image_keys``, ``shapes``,
    ``obs_horizon``, ``n_action_steps``, ``action_dim`` and ``pad_lowdim``.
    """

    def _start(self, n_action_steps: int, seed: int) -> None:
        """Check ``n_action_steps``, seed the noise and set up the episode state; a single-goal policy
        is ready at once, a multi-goal one waits for ``reset(instruction)``."""
        self.n_action_steps = int(n_action_steps)
        if not 1 <= self.n_action_steps <= self.action_horizon:
            raise DpError(f"n_action_steps must be in [1, {self.action_horizon}] (the chunk length); got {self.n_action_steps}")
        self.seed(seed)
        self._history: deque[dict[str, np.ndarray]] = deque(maxlen=self.obs_horizon)
        self._queue: deque[np.ndarray] = deque()
        self._previous: np.ndarray | None = None  # the last chunk: the RTI guess
        self._goal: dict[str, Any] | None = None
        self._encoded: dict[str, np.ndarray] = {}  # new instructions embedded at run time
        self.instruction: str | None = None
        try:
            self.reset()
        except DpError:
            pass

    def seed(self, seed: int) -> None:
        """Reseed the sampler noise (reproducible episodes)."""
        self._rng = np.random.default_rng(seed)

    def _noise(self, noise: Any) -> np.ndarray:
        """The (1, H, A) float32 start of the sampler: ``noise`` checked, or drawn from the seeded stream."""
        shape = (1, self.action_horizon, self.action_dim)
        return self._rng.standard_normal(shape, dtype=np.float32) if noise is None else check_noise(noise, shape)

    def _push(self, obs: dict[str, Any]) -> None:
        """Check one observation and add it to the history (the first one fills it, as in training)."""
        frame = check_observation(obs, self.lowdim_keys, self.image_keys, self.shapes, self.pad_lowdim)
        if not self._history:
            for _ in range(self.obs_horizon - 1):
                self._history.append(frame)
        self._history.append(frame)

    def predict_chunk(self, obs: dict[str, Any], noise: np.ndarray | None = None) -> np.ndarray:
        """Add one observation to the history and return a fresh (H, A) chunk of raw actions.

        ``noise``: optional (H, A) standard-normal start of the sampler, for reproducible chunks. With
        RTI, every chunk after the first starts from the previous one advanced by ``n_action_steps``.
        """
        self._push(obs)
        return self._sample(noise)

    def select_action(self, obs: dict[str, Any]) -> np.ndarray:
        """Add one observation and return the next action (A,); a new chunk every ``n_action_steps``."""
        self._push(obs)
        if not self._queue:
            self._refill()
        return self._queue.popleft()

    def prime(self, obs: dict[str, Any]) -> None:
        """Add one observation and sample the next chunk into the queue now, so that the next
        ``select_action`` returns at once (a robot computes its first chunk while it still holds)."""
        self._push(obs)
        self._queue.clear()
        self._refill()

    def _refill(self) -> None:
        """Queue the first ``n_action_steps`` actions of a freshly sampled chunk."""
        self._queue.extend(self._sample(None)[: self.n_action_steps])

    def pending_actions(self) -> np.ndarray:
        """The queued actions still to come after the last one returned, (n, A)."""
        return np.array(list(self._queue), dtype=np.float32).reshape(-1, self.action_dim)


# RTI defaults (steps of policy_warm, start sigma, actions executed per warm chunk), chosen by
# closed-loop success on `can` (see dp/infer/rti.py); here so that command-line parsers can show them
# without importing torch.
DEFAULT_RTI_STEPS = 1
DEFAULT_RTI_SIGMA = 1.0
DEFAULT_RTI_EVERY = 4
# The first chunk of an episode with RTI (no previous chunk): a short sampler from a zero guess,
# FIRST_STEPS steps from FIRST_SIGMA (chosen on validation seeds, see dp/infer/rti.py).
DEFAULT_FIRST_STEPS = 1
DEFAULT_FIRST_SIGMA = 1.0
