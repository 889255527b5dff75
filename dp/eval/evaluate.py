"""Policy evaluation in simulation: seeded rollouts, success rate with a 95% Wilson interval, mean
score with a 95% t-interval, mean episode length, policy latency, how many episodes reached each of
the task's milestones (:mod:`dp.sim.milestones`: where failures stop), and MP4s of the first episodes.

Seeds come in two splits, streams apart from each other and from the one collection uses (so a
policy is never judged on the initial states of its training demonstrations): ``val``
(``seed_for(S, i, "val")``) for every choice of settings (checkpoint, RTI, sampler steps) and
``test`` (``seed_for(S, i, "test")``, the stream older figures call "eval") for reported figures only.
The score is the maximum over an episode's steps of the task's score (Push-T: min(coverage / 0.95, 1),
Diffusion Policy's protocol; robosuite tasks: 1 once solved).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dp.data.formats.workers import ordered_map
from dp.data.video import write_mp4
from dp.errors import DpError
from dp.sim.rollout import ActionSource, run_episode, seed_for
from dp.sim.tasks import Task, get_task
from dp.stats import mean_interval, wilson_interval

SPLITS = ("val", "test")


@dataclass
class EvalResult:
    """The figures `dp eval` prints."""

    task: str
    episodes: int
    successes: int
    lengths: list[int]
    seeds: list[int]
    latency_ms: np.ndarray = field(repr=False)  # per select_action call, all episodes
    videos: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    split: str = "val"
    milestones: dict[str, int] = field(default_factory=dict)  # episodes that reached each of the task's milestones

    def add(self, outcome: _Outcome) -> None:
        """Count one more episode."""
        self.episodes += 1
        self.successes += outcome.success
        self.scores.append(outcome.score)
        self.lengths.append(outcome.length)
        self.seeds.append(outcome.seed)
        for name, reached in outcome.milestones.items():
            self.milestones[name] = self.milestones.get(name, 0) + int(reached)
        if outcome.video is not None:
            self.videos.append(outcome.video)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def as_dict(self) -> dict[str, Any]:
        low, high = wilson_interval(self.successes, self.episodes)
        lat = self.latency_ms
        return {
            "task": self.task,
            "split": self.split,
            "episodes": self.episodes,
            "successes": self.successes,
            "success_rate": self.success_rate,
            "success_ci95": [low, high],
            "mean_score": float(np.mean(self.scores)) if self.scores else 0.0,
            "score_ci95": list(mean_interval(self.scores)),
            "scores": [round(s, 6) for s in self.scores],
            "milestones": dict(self.milestones),
            "mean_length": float(np.mean(self.lengths)) if self.lengths else 0.0,
            "lengths": self.lengths,
            "latency_ms": {
                "median": float(np.median(lat)) if lat.size else None,
                "p99": float(np.percentile(lat, 99)) if lat.size else None,
                "calls": int(lat.size),
            },
            "seeds": self.seeds,
            "videos": self.videos,
        }


def policy_cameras(policy: ActionSource, spec: Task) -> list[str]:
    """The cameras of task ``spec`` that render the image keys the policy declares (``image_keys``);
    a DpError when the task cannot give one of them."""
    keys = list(getattr(policy, "image_keys", None) or [])
    by_key = {spec.image_keys([cam])[0]: cam for cam in spec.cameras}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise DpError(f"the policy observes image key(s) {missing}; task {spec.name!r} renders only {sorted(by_key)}")
    return [by_key[k] for k in keys]


def check_fit(policy: ActionSource, spec: Task) -> None:
    """A DpError when the policy cannot act in the task: other action width, or a low-dim key the
    task does not observe (checked before any episode runs)."""
    width = getattr(policy, "action_dim", None)
    if width is not None and int(width) != spec.action_dim:
        raise DpError(f"the policy's actions have {width} values but task {spec.name!r} takes {spec.action_dim} "
                      f"(a policy trained on another task?)")
    missing = [k for k in getattr(policy, "lowdim_keys", None) or [] if k not in spec.lowdim_keys]
    if missing:
        raise DpError(f"the policy observes {missing}, which task {spec.name!r} does not give "
                      f"(it gives {spec.lowdim_keys} and images {spec.image_keys()})")


def evaluate(
    policy: ActionSource,
    task: str,
    episodes: int,
    *,
    seed: int = 0,
    split: str = "val",
    cameras: list[str] | None = None,
    image_size: int | None = None,
    video_dir: Path | None = None,
    video_episodes: int = 3,
    video_size: int = 256,
    progress: bool = True,
    workers: int = 1,
    reload: Callable[[], ActionSource] | None = None,
    noise_seed: int | None = None,
) -> EvalResult:
    """Roll ``policy`` out for ``episodes`` episodes of ``task`` seeded from ``split`` ("val", the
    default, or "test" for figures to report). ``cameras`` are rendered into the observations (default: those the policy declares, at
    ``image_size``, default the task's); with ``video_dir`` the first ``video_episodes`` episodes are
    written as MP4s with every camera side by side.

    With ``workers`` > 1 the episodes run in that many spawned processes, each acting with the policy
    that ``reload`` (picklable and without arguments, e.g. ``functools.partial(load_policy, spec)``)
    gives it, on one torch thread: the same seeds as one process, in episode order (a scripted expert's
    figures are identical; a torch policy's rounding follows its thread count).

    ``noise_seed`` draws the policy's sampler noise from another stream on the same starts (see
    :func:`dp.sim.rollout.run_episode`): whether an episode's outcome follows its start or its draw."""
    spec = get_task(task)
    if episodes < 1:
        raise DpError(f"--episodes must be at least 1, got {episodes}")
    if split not in SPLITS:
        raise DpError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if workers < 1:
        raise DpError(f"--workers must be at least 1, got {workers}")
    if workers > 1 and reload is None:
        raise DpError("evaluating in worker processes needs a way to load the policy in each (reload)")
    check_fit(policy, spec)
    cameras = policy_cameras(policy, spec) if cameras is None else list(cameras)
    if video_dir is not None:
        video_dir.mkdir(parents=True, exist_ok=True)
    plan = _Plan(spec.name, cameras, image_size, seed, split, video_dir, video_episodes, video_size, noise_seed)
    result = EvalResult(spec.name, 0, 0, [], [], np.zeros(0), split=split)
    latencies: list[np.ndarray] = []
    bar = tqdm(total=episodes, desc=f"eval {spec.name}", unit="ep", disable=not progress)
    try:
        for outcome in _outcomes(policy, plan, episodes, workers, reload):
            result.add(outcome)
            latencies.append(outcome.latency_ms)
            bar.update(1)
            bar.set_postfix(success=f"{result.success_rate:.0%}", score=f"{np.mean(result.scores):.3f}")
    finally:
        bar.close()
    result.latency_ms = np.concatenate(latencies) if latencies else np.zeros(0)
    return result


@dataclass(frozen=True)
class _Plan:
    """What every episode of one evaluation shares (sent to worker processes)."""

    task: str
    cameras: list[str]
    image_size: int | None
    seed: int
    split: str
    video_dir: Path | None
    video_episodes: int
    video_size: int
    noise_seed: int | None

    def make_env(self) -> Any:
        """The task's env with the policy's cameras (offscreen rendering too when videos are written)."""
        return get_task(self.task).make_env(self.cameras, self.image_size, offscreen=self.video_dir is not None)


@dataclass
class _Outcome:
    """What one evaluated episode adds to the figures."""

    seed: int
    success: bool
    score: float
    length: int
    milestones: dict[str, bool]
    latency_ms: np.ndarray
    video: str | None


def _outcomes(policy: ActionSource, plan: _Plan, episodes: int, workers: int,
              reload: Callable[[], ActionSource] | None) -> Iterator[_Outcome]:
    if workers > 1:
        for future in ordered_map(_episode_in_worker, ((reload, plan, i) for i in range(episodes)), workers):
            yield future.result()
        return
    env = plan.make_env()
    try:
        for i in range(episodes):
            yield _episode(env, policy, plan, i)
    finally:
        env.close()


def _episode(env: Any, policy: ActionSource, plan: _Plan, index: int) -> _Outcome:
    spec = get_task(plan.task)
    video = plan.video_dir is not None and index < plan.video_episodes
    ep = run_episode(env, policy, seed_for(plan.seed, index, plan.split), record=False, milestones=True,
                     video_cameras=list(spec.cameras) if video else None, video_size=plan.video_size,
                     noise_seed=plan.noise_seed)
    path = None
    if video:
        path = plan.video_dir / f"{spec.name}_ep{index:03d}_{'success' if ep.success else 'failure'}.mp4"
        write_mp4(path, ep.frames, spec.control_freq)
    return _Outcome(ep.seed, ep.success, ep.score, ep.length, dict(ep.milestones), ep.latencies * 1000.0,
                    None if path is None else str(path))


_WORKER: dict[str, Any] = {}  # a worker process's policy and env, built at its first episode


def _episode_in_worker(reload: Callable[[], ActionSource], plan: _Plan, index: int) -> _Outcome:
    if not _WORKER:
        _WORKER["policy"] = reload()
        if "torch" in sys.modules:  # a trained run: one thread, one process per core (ONNX Runtime sessions use one)
            sys.modules["torch"].set_num_threads(1)
        _WORKER["env"] = plan.make_env()
    return _episode(_WORKER["env"], _WORKER["policy"], plan, index)
