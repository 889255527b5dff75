"""One episode of any action source in a task's environment (:class:`~dp.sim.tasks.Env`).

The action source is anything with the Policy runtime API (``reset(instruction)``,
``select_action(obs)``): a scripted expert, a teleoperation device, a trained policy. Sources that
draw random numbers (the scripted experts) expose ``seed(int)`` and are seeded per episode, so an
episode is reproducible from its seed alone. A source may raise :class:`EndEpisode` to stop early
(a teleoperator's reset key). A source that executes something other than what it means to teach
(a scripted expert's DART-style slip) sets ``recorded_action`` to the action to record, None otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dp.errors import DpError
from dp.sim.task_api import Env


class ActionSource(Protocol):
    def reset(self, instruction: str | None = None) -> None: ...

    def select_action(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


class EndEpisode(Exception):
    """Raised by an action source to end the current episode now."""


@dataclass
class Episode:
    """What one rollout produced."""

    seed: int
    success: bool
    length: int  # steps taken
    data: dict[str, np.ndarray] = field(default_factory=dict)  # obs keys + "action", (T, ...) each
    latencies: np.ndarray = field(default_factory=lambda: np.zeros(0))  # seconds per select_action
    frames: list[np.ndarray] = field(default_factory=list)  # video frames (cameras side by side)
    strategy: str | None = None  # a scripted expert's strategy label
    score: float = 0.0  # the maximum over steps of the task's score (robosuite: 1.0 once solved)
    milestones: dict[str, bool] = field(default_factory=dict)  # each of the task's milestones: reached at some step (when asked for)


# Seed streams: demonstrations ("collect"), validation ("val": every choice of settings) and test
# ("test", also called "eval": reported figures only). Each stream hashes (stream, base, index).
SEED_STREAMS = {"collect": 0, "test": 1, "eval": 1, "val": 2}


def seed_for(base: int, index: int, purpose: str) -> int:
    """The seed of episode ``index`` of a run started with ``base``; ``purpose`` ("collect", "val",
    "test" or its older name "eval") picks a stream, so the seeds of collected demonstrations,
    validation episodes and test episodes stay apart."""
    try:
        stream = SEED_STREAMS[purpose]
    except KeyError:
        raise DpError(f"seed purpose {purpose!r} is not one of {', '.join(SEED_STREAMS)}") from None
    return hashed_seed(stream, base, index)


def hashed_seed(*parts: int) -> int:
    """One 32-bit seed hashed from ``parts`` (numpy's SeedSequence): distinct parts, independent streams."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def run_episode(
    env: Env,
    policy: ActionSource,
    seed: int,
    *,
    record: bool = True,
    video_cameras: list[str] | None = None,
    video_size: int = 256,
    success_hold: int = 0,
    viewer: bool = False,
    milestones: bool = False,
    noise_seed: int | None = None,
) -> Episode:
    """Roll ``policy`` out from ``env.reset(seed)`` until success (held for ``success_hold`` more
    steps) or the task's horizon; ``success`` means the task was solved at some step. ``record``
    keeps observations and actions for a store; ``video_cameras`` renders those cameras side by
    side into ``frames`` (the first observation, then one per step). A policy's sampler noise is
    seeded from ``seed``, or with ``noise_seed`` from both: the same start, other noise draws."""
    spec = env.spec
    obs = env.reset(seed)
    if callable(getattr(policy, "seed", None)):
        policy.seed(seed if noise_seed is None else hashed_seed(seed, noise_seed))
    policy.reset(instruction=spec.instruction)
    steps: list[dict[str, np.ndarray]] = []
    actions: list[np.ndarray] = []
    latencies: list[float] = []
    frames: list[np.ndarray] = []
    success, held, score = False, 0, 0.0
    reached = dict.fromkeys(env.milestones(), False) if milestones else {}
    if video_cameras:
        frames.append(_video_frame(env, video_cameras, video_size))
    for _ in range(spec.horizon):
        start = time.perf_counter()
        try:
            action = policy.select_action(obs)
        except EndEpisode:
            break
        latencies.append(time.perf_counter() - start)
        action = _check_action(action, spec.action_dim)
        if record:
            recorded = getattr(policy, "recorded_action", None)
            steps.append(obs)
            actions.append(action if recorded is None else _check_action(recorded, spec.action_dim))
        obs, _ = env.step(action)
        score = max(score, env.score())
        if milestones:
            for name, now in env.milestones().items():
                reached[name] = reached[name] or now
        if viewer:
            env.env.render()
        if video_cameras:
            frames.append(_video_frame(env, video_cameras, video_size))
        if env.success():
            success = True
            held += 1
            if held > success_hold:
                break
        else:
            held = 0
    data: dict[str, np.ndarray] = {}
    if record and steps:
        data = {key: np.stack([s[key] for s in steps]) for key in steps[0]}
        data["action"] = np.stack(actions).astype(np.float32)
    strategy = getattr(policy, "strategy_label", None)
    return Episode(
        seed=seed, success=success, length=len(latencies), data=data,
        latencies=np.asarray(latencies), frames=frames,
        strategy=strategy if isinstance(strategy, str) else None, score=score, milestones=reached,
    )


def _check_action(action: Any, width: int) -> np.ndarray:
    action = np.asarray(action, dtype=np.float32).reshape(-1)
    if action.shape != (width,):
        raise DpError(f"the policy returned an action of shape {action.shape}; this task takes {width} values")
    if not np.isfinite(action).all():
        raise DpError(f"the policy returned a non-finite action {action.tolist()}")
    return action


def _video_frame(env: Env, cameras: list[str], size: int) -> np.ndarray:
    return np.concatenate([env.render(cam, size) for cam in cameras], axis=1)
