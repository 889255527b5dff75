"""Demonstration collection: roll an action source out in a task and append finished episodes to
an episode store, one at a time, as they end.

Episodes run in worker processes (``spawn`` start method: MuJoCo's GL contexts must never be
forked); the parent is the only writer. Each episode is appended all-or-nothing, so Ctrl-C or a
SIGKILL loses only episodes still running. Episode ``k`` of a collection started with ``--seed S``
has the seed ``seed_for(S, k, "collect")``; its number is kept in the episode's metadata
(``attempt``), and a re-run continues after the highest number stored, never repeating a seed,
until the store holds the requested number of episodes of the task.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dp.data.info_cmd import EXPERT_SETTINGS
from dp.data.store import EpisodeStore, StoreWriteError
from dp.errors import DpError
from dp.sim.rollout import ActionSource, Episode, run_episode, seed_for
from dp.sim.tasks import SimEnv, TaskSpec, get_task

SourceFactory = Callable[[SimEnv], ActionSource]  # must be picklable for worker processes


@dataclass
class CollectSummary:
    """What a collection run did (the figures `dp collect --json` prints)."""

    store: str
    task: str
    stored: int  # episodes of the task in the store at the end
    added: int  # episodes appended by this run
    attempts: int  # episodes rolled out by this run (failures included)
    successes: int
    frames: int  # frames simulated by this run
    seconds: float

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "success_rate": self.success_rate, "frames_per_second": self.frames_per_second}


@dataclass(frozen=True)
class ExpertSource:
    """A picklable factory of a task's scripted expert (``strategies``, ``release_slips`` and ``labels``
    as in :class:`~dp.sim.waypoints.ScriptedExpert`); build it with :func:`expert_source`."""

    task: str
    strategies: str = "random"
    release_slips: float = 0.0
    labels: str = "executed"

    @property
    def settings(self) -> dict[str, Any]:
        """The settings each of its episodes keeps in its metadata (see :func:`check_same_settings`)."""
        return dict(zip(EXPERT_SETTINGS, (self.strategies, float(self.release_slips), self.labels)))

    def __call__(self, env: SimEnv) -> ActionSource:
        from dp.sim.experts import make_expert

        return make_expert(self.task, strategies=self.strategies, release_slips=self.release_slips, labels=self.labels)


def expert_source(task: str, strategies: str = "random", release_slips: float = 0.0, labels: str = "executed") -> ExpertSource:
    """The task's scripted expert as a source for :func:`collect`; a DpError for a task without one
    or for settings out of range."""
    from dp.sim.experts import EXPERTS
    from dp.sim.waypoints import check_labels, check_release_slips

    check_release_slips(release_slips)
    check_labels(labels)
    task = get_task(task).name
    if task not in EXPERTS:
        raise DpError(f"task {task!r} has no scripted expert (experts: {', '.join(EXPERTS)}); "
                      "import its demonstrations with `dp import`")
    return ExpertSource(task, strategies, release_slips, labels)


def check_same_settings(store: EpisodeStore, task: str, settings: dict[str, Any]) -> None:
    """A DpError if ``store`` already holds episodes of ``task`` recorded with other source settings
    (noise-free labels appended to executed ones, say): one store, one kind of demonstration."""
    tasks = store.meta_column("task")
    for key, want in settings.items():
        held = {v for t, v in zip(tasks, store.meta_column(key)) if t == task and v is not None}
        other = sorted(str(v) for v in held if v != want)
        if other:
            raise DpError(f"{store.path}: holds {task} episodes collected with {key}={', '.join(other)}; "
                          f"this run asks {key}={want}: collect into another --out")


def store_layout(spec: TaskSpec, cameras: list[str]) -> dict[str, list[str]]:
    """Key roles of a store collected from ``spec`` with ``cameras``."""
    return {"lowdim": list(spec.lowdim_keys), "image": spec.image_keys(cameras), "action": ["action"]}


def open_store(path: Path, spec: TaskSpec, cameras: list[str]) -> EpisodeStore:
    """Open ``path`` for appending (create it if missing) and check it can take this task's episodes."""
    roles = store_layout(spec, cameras)
    if not path.exists():
        return EpisodeStore.create(
            path, control_freq=spec.control_freq, robot=spec.robot, roles=roles,
            discrete_dims={"action": list(spec.discrete_action_dims)},
        )
    store = EpisodeStore.open(path, mode="a")
    expected = sorted(k for keys in roles.values() for k in keys)
    if len(store) and sorted(store.keys) != expected:
        store.close()
        raise DpError(
            f"{path}: holds keys {store.keys}, but --task {spec.name} with cameras {cameras or 'none'} "
            f"records {expected}; use the same --cameras as before or another --out"
        )
    if len(store) and "object" in store.keys and store.array("object").shape[1:] != (spec.object_dim,):
        store.close()
        raise DpError(
            f"{path}: its episodes hold an object state of {store.array('object').shape[1]} values; task {spec.name} "
            f"has {spec.object_dim}: collect it into a store of its own (several stores train one multitask policy)"
        )
    if store.control_freq is not None and abs(float(store.control_freq) - spec.control_freq) > 1e-9:
        store.close()
        raise DpError(f"{path}: control frequency {store.control_freq} Hz, task {spec.name} runs at {spec.control_freq} Hz")
    return store


def episode_meta(spec: TaskSpec, ep: Episode, source_name: str, settings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The metadata stored with a collected episode: task, instruction, success, source, seed, the
    source's settings, the expert's strategy where it drew one, and ``extra`` (attempt, collect seed, success hold)."""
    meta = {"task": spec.name, "success": ep.success, "source": source_name, "seed": ep.seed, **extra, **settings}
    if spec.instruction is not None:  # Push-T has none, as its imported demonstrations
        meta["instruction"] = spec.instruction
    if ep.strategy:
        meta["strategy"] = ep.strategy
    return meta


def resume_point(store: EpisodeStore, task: str, base_seed: int) -> tuple[int, int]:
    """(episodes of ``task`` in the store, next episode number for ``base_seed``)."""
    tasks = store.meta_column("task")
    attempts = store.meta_column("attempt")
    seeds = store.meta_column("collect_seed")
    have = sum(t == task for t in tasks)
    mine = [a for t, a, s in zip(tasks, attempts, seeds) if t == task and s == base_seed and a is not None]
    return have, (max(mine) + 1 if mine else 0)


def collect(
    task: str,
    episodes: int,
    out: Path,
    *,
    source: SourceFactory | None = None,
    source_name: str = "expert",
    cameras: list[str] | None = None,
    image_size: int | None = None,
    workers: int = 1,
    seed: int = 0,
    keep_failures: bool = False,
    max_attempts: int | None = None,
    success_hold: int = 0,
    viewer: bool = False,
    progress: bool = True,
) -> CollectSummary:
    """Collect until ``out`` holds ``episodes`` episodes of ``task`` (see the module docstring).

    ``source`` builds the action source inside each worker (default: the scripted expert); a
    scripted expert's settings, or the acting policy, go into every episode's metadata, and a store
    holding episodes of the task from other settings is refused. Failed
    episodes are stored only with ``keep_failures``; at most ``max_attempts`` episodes are rolled
    out (default ``2 * episodes + 10``). An episode ends ``success_hold`` steps after the task is first
    solved (0: at once), so its last phase is recorded too. ``workers=1`` runs in this process (the only
    choice for sources that need this process, like a teleoperation device).
    """
    spec = get_task(task)
    if episodes < 1:
        raise DpError(f"--episodes must be at least 1, got {episodes}")
    if workers < 1:
        raise DpError(f"--workers must be at least 1, got {workers}")
    if success_hold < 0:
        raise DpError(f"--success-hold must be >= 0, got {success_hold}")
    source = source or expert_source(spec.name)
    settings = dict(getattr(source, "settings", {}))
    plan = _Plan(spec, source, list(cameras or []), image_size, seed, success_hold, viewer)
    store = open_store(Path(out), spec, plan.cameras)
    try:
        check_same_settings(store, spec.name, settings)
        have, first = resume_point(store, spec.name, seed)
        summary = CollectSummary(str(out), spec.name, have, 0, 0, 0, 0, 0.0)
        if have >= episodes:
            return summary
        attempts = range(first, first + (max_attempts if max_attempts is not None else 2 * episodes + 10))
        start = time.perf_counter()
        with tqdm(total=episodes, initial=have, desc=f"collect {spec.name}", unit="ep", disable=not progress) as bar:

            def on_episode(attempt: int, ep: Episode) -> bool:
                """Store one finished episode; True once the store holds enough."""
                summary.attempts += 1
                summary.successes += ep.success
                summary.frames += ep.length
                if (ep.success or keep_failures) and ep.length and summary.stored < episodes:
                    meta = episode_meta(spec, ep, source_name, settings, attempt=attempt, collect_seed=seed,
                                        success_hold=plan.success_hold)
                    try:
                        store.add_episode(ep.data, meta)
                    except StoreWriteError as exc:  # disk full, file too large: one line, what the store holds
                        raise StoreWriteError(f"{exc}; free space and re-run the same command to continue") from None
                    summary.stored += 1
                    summary.added += 1
                    bar.update(1)
                summary.seconds = time.perf_counter() - start
                bar.set_postfix(success=f"{summary.success_rate:.0%}", fps=f"{summary.frames_per_second:.0f}")
                return summary.stored >= episodes

            if workers == 1:
                _run_inline(plan, attempts, on_episode)
            else:
                _run_workers(plan, attempts, on_episode, workers, needed=lambda: episodes - summary.stored)
        summary.seconds = time.perf_counter() - start
        if summary.stored < episodes:
            raise DpError(
                f"{out}: stopped after {summary.attempts} attempts with {summary.stored}/{episodes} episodes of "
                f"{spec.name} stored (success rate {summary.success_rate:.0%}); re-run to continue, or pass --keep-failures"
            )
        return summary
    finally:
        store.close()


@dataclass
class _Plan:
    """What every episode of a collection run shares."""

    spec: TaskSpec
    source: SourceFactory
    cameras: list[str]
    image_size: int | None  # None: the task's
    seed: int
    success_hold: int
    viewer: bool


OnEpisode = Callable[[int, Episode], bool]


def _run_inline(plan: _Plan, attempts: range, on_episode: OnEpisode) -> None:
    env = plan.spec.make_env(plan.cameras, plan.image_size, viewer=plan.viewer)
    try:
        policy = plan.source(env)
        for attempt in attempts:
            ep = run_episode(env, policy, seed_for(plan.seed, attempt, "collect"), success_hold=plan.success_hold, viewer=plan.viewer)
            if on_episode(attempt, ep):
                return
    finally:
        env.close()


def _run_workers(plan: _Plan, attempts: range, on_episode: OnEpisode, workers: int, needed: Callable[[], int]) -> None:
    ctx = mp.get_context("spawn")
    tasks: mp.Queue = ctx.Queue()
    results: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker, args=(plan.spec.name, plan.source, plan.cameras, plan.image_size, plan.success_hold, tasks, results),
            name=f"dp-collect-{i}", daemon=True,
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    pending = iter(attempts)
    in_flight = 0

    def send() -> bool:
        nonlocal in_flight
        attempt = next(pending, None)
        if attempt is None:
            return False
        tasks.put((attempt, seed_for(plan.seed, attempt, "collect")))
        in_flight += 1
        return True

    try:
        # keep every worker busy, but never run more episodes at once than could still be needed
        while in_flight < min(workers, needed()) and send():
            pass
        while in_flight:
            kind, attempt, payload = _next_result(results, procs)
            in_flight -= 1
            if kind == "error":
                raise DpError(f"collect worker failed on episode {attempt}:\n{payload}")
            if on_episode(attempt, payload):
                return
            if in_flight < needed():
                send()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
        tasks.close()
        results.close()


def _next_result(results: mp.Queue, procs: list) -> tuple[str, int, Any]:
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in procs if not p.is_alive()]
            if dead:
                raise DpError(f"collect worker {dead[0].name} died (exit code {dead[0].exitcode})") from None


def _worker(task: str, source: SourceFactory, cameras: list[str], image_size: int | None, success_hold: int,
            tasks: mp.Queue, results: mp.Queue) -> None:
    """Worker process: build the env once, then run the episodes the parent sends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    results.cancel_join_thread()  # never block exit on a parent that is gone
    parent = mp.parent_process()
    env = get_task(task).make_env(cameras, image_size)
    policy = source(env)
    try:
        while parent is None or parent.is_alive():
            try:
                attempt, seed = tasks.get(timeout=1.0)
            except queue.Empty:
                continue
            try:
                results.put(("ok", attempt, run_episode(env, policy, seed, success_hold=success_hold)))
            except Exception:
                results.put(("error", attempt, traceback.format_exc()))
                return
    finally:
        env.close()
