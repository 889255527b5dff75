"""The policy runtime API shared by the torch and ONNX Runtime policies, with its contract in code.

Numpy only (no torch here: robots import this).
"""

from __future__ import annotations

import abc
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from dp.config import check_task_intervals
from dp.errors import DpError
from dp.infer.goals import goal_task, known_goals, resolve_goal
from dp.infer.observations import check_noise, check_observation
from dp.infer.rti_guess import Levels, medoid_chunk, shift_guess, snap_discrete, vote_discrete


class ChunkedRuntime(abc.ABC):
    """``reset`` / ``select_action`` / ``predict_chunk`` / ``prime`` over a runtime that samples chunks.

    Sampler noise comes from a numpy generator (``seed``), the same stream in both runtimes, so a torch
    policy and its export act alike from the same seed (to float precision). A runtime sets the
    attributes declared below, then calls :meth:`_start`, and implements the abstract methods.
    """

    lowdim_keys: list[str]
    image_keys: list[str]
    obs_keys: list[str]
    shapes: dict[str, list[int]]
    pad_lowdim: bool
    obs_horizon: int
    action_horizon: int
    action_dim: int
    action_key: str
    discrete_dims: list[int]
    discrete_levels: Levels = None  # (low, high) of each discrete dimension (the data's two levels); None: -1 and +1
    goal_kind: str  # "none", "task" or "lang"
    tasks: list[str]
    instructions: dict[str, str]  # task -> instruction
    goals: dict[str, np.ndarray]  # the stored language embeddings, by instruction
    lang_encoder: str | None  # the sentence encoder that made them (None: known instructions only)
    rti: Any  # truthy: every chunk after the first is warm-started from the previous one (RTI)

    @abc.abstractmethod
    def _sample_chunks(self, noise: np.ndarray, window: dict[str, np.ndarray], goal: Any, guess: np.ndarray | None) -> np.ndarray:
        """(K, H, A) float32 chunks of raw actions from the observation ``window`` (:meth:`_window`)
        and ``goal``, one per row of ``noise`` (K, H, A), warm-started from ``guess`` (H, A; the
        previous chunk shifted, under RTI) when given, discrete dimensions snapped. Reads nothing
        else of the episode: it may run in the plan-ahead worker thread."""

    @abc.abstractmethod
    def _goal_input(self, goal: dict[str, np.ndarray]) -> dict[str, Any]:
        """The goal (:func:`dp.infer.goals.resolve_goal`'s arrays) in the form :meth:`_sample` takes."""

    @property
    @abc.abstractmethod
    def lang_dim(self) -> int:
        """The size of a language embedding this policy takes."""

    def _full_sampler(self) -> dict[str, Any]:
        """The full sampler's ``solver``, ``schedule`` and ``steps`` (none for a runtime that samples no diffusion)."""
        return {}

    def sampling(self, task: str | None = None) -> dict[str, Any]:
        """How this policy samples ``task``'s chunks (a task name or instruction; None: the policy's own
        interval): the full sampler, the re-planning interval, whether RTI warm-starts the chunks after
        an episode's first, and the switches that change the executed actions when they are on
        (``ensemble``: temporal ensembling's decay, ``vote`` or ``medoid``: chunks per plan, ``plan_ahead``: the
        lead in control steps). Evaluation rows record it, so a figure says what sampled it."""
        several = self._voters if self._voters > 1 else None
        switches = {"ensemble": self._ensemble, "medoid" if self._medoid else "vote": several, "plan_ahead": self._lead}
        return {**self._full_sampler(), "replan_every": int(self.interval_for(task)), "rti": bool(self.rti),
                **{name: value for name, value in switches.items() if value is not None}}

    def _start(self, n_action_steps: int | None, seed: int, *, own: int, stored: dict[str, int] | None = None,
               task_action_steps: dict[str, int] | None = None) -> None:
        """Set and check the re-planning intervals, seed the noise and set up the episode state; a
        single-goal policy is ready at once, a multi-goal one waits for ``reset(instruction)``.

        ``n_action_steps``, when given, holds for every task. Otherwise the policy re-plans at its ``own``
        interval (under RTI its warm start's), and each task at its entry (set at ``reset``) in
        ``task_action_steps`` when given, else in the table the policy ``stored``, which RTI does not
        use (like the stored interval, it was chosen for full sampling)."""
        if n_action_steps:
            table = {}
        elif task_action_steps is not None:
            table = task_action_steps
        else:
            table = {} if self.rti else (stored or {})
        self.n_action_steps = self.default_action_steps = int(n_action_steps or own)
        if not 1 <= self.n_action_steps <= self.action_horizon:
            raise DpError(f"n_action_steps must be in [1, {self.action_horizon}] (the chunk length); got {self.n_action_steps}")
        self.task_action_steps = check_task_intervals(dict(table), self.tasks, self.action_horizon)
        self.seed(seed)
        self._history: deque[dict[str, np.ndarray]] = deque(maxlen=self.obs_horizon)
        self._queue: deque[np.ndarray] = deque()
        self._tail = np.zeros((0, self.action_dim), np.float32)  # the current chunk's actions after the queued ones
        self._previous: np.ndarray | None = None  # the last chunk: the RTI guess
        self._previous_t = 0  # the control step of the observation it was sampled from
        self._lead: int | None = None  # plan-ahead: steps between a plan's observation and its first action used
        self._worker: ThreadPoolExecutor | None = None
        self._plan: tuple[int, Future] | None = None  # the plan in flight: (its observation's step, its chunk)
        self.plan_seconds: deque[float] = deque(maxlen=64)  # how long recent plans took (compute only)
        self.late_plans = 0  # plans not ready at the step they were due (select_action waited for them)
        self._ensemble: float | None = None  # temporal ensembling's weight decay (None: off)
        self._voters = 1  # chunks sampled per plan; with more than one their majority sets the discrete dimensions
        self._medoid = False  # with several chunks per plan: act their medoid (in place of the vote)
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # with ensembling: (step sampled at, chunk)
        self._t = 0  # control steps this episode
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

    # ------------------------------------------------------------------ goal
    def reset(self, instruction: str | None = None) -> None:
        """Start a new episode: clear the history, the action queue and the RTI guess; set the goal,
        and with per-task intervals (``task_action_steps``) the goal's re-planning interval
        (:meth:`interval_for`; a plan-ahead lead it leaves no room for is shortened to fit).

        A language instruction the policy has no embedding for is embedded with the offline sentence
        encoder (once; needs the `lang` extra, and a policy trained on that encoder's embeddings,
        see :func:`dp.data.language.embed_new_instruction`); known instructions need no text model.
        """
        self._drop_plan()
        self._history.clear()
        self._queue.clear()
        self._tail = self._tail[:0]
        self._chunks.clear()
        self._t = 0
        self._previous = None
        self._goal = self.lookup_goal(instruction)
        self.instruction = instruction
        if self.task_action_steps:
            self._set_interval(self.interval_for(instruction))

    def interval_for(self, instruction: str | None) -> int:
        """The policy's own re-planning interval for ``instruction`` (a task name or its instruction):
        its task's entry in ``task_action_steps``, else the policy's interval (``default_action_steps``)."""
        return self.task_action_steps.get(goal_task(instruction, self.tasks, self.instructions), self.default_action_steps)

    def _set_interval(self, every: int) -> None:
        """Execute ``every`` actions of each chunk from now on; a plan-ahead lead that no longer fits
        (:meth:`_lead_room`) is shortened to the most that does (off if none does)."""
        self.n_action_steps = every
        if self._lead is not None:
            self._lead = min(self._lead, self._lead_room(every)) or None

    def _lead_room(self, every: int) -> int:
        """The longest plan-ahead lead a re-planning interval of ``every`` leaves room for: a plan's
        actions are used from ``lead`` steps in, ``every`` of them, within the chunk."""
        return min(every, self.action_horizon - every)

    def lookup_goal(self, instruction: str | None) -> dict[str, Any]:
        """The goal input for ``instruction`` (a task name or its instruction), in this runtime's form."""
        return self._goal_input(resolve_goal(self.goal_kind, instruction, self.tasks, self.instructions, self.goals, self._embed_new))

    def _embed_new(self, instruction: str, known: str) -> np.ndarray:
        if instruction not in self._encoded:
            from dp.data.language import embed_new_instruction  # only now: it loads a text model (and torch)

            self._encoded[instruction] = embed_new_instruction(instruction, self.lang_encoder, self.lang_dim, known)
        return self._encoded[instruction]

    def _check_goal(self) -> None:
        if self._goal is None:
            raise DpError(f"no goal set: call reset(instruction) first; this policy knows: {known_goals(self.tasks, self.instructions)}")

    # ------------------------------------------------------------------ acting
    def _noise(self, noise: Any, count: int = 1) -> np.ndarray:
        """The (count, H, A) float32 starts of the sampler: ``noise`` checked, or drawn from the seeded stream."""
        shape = (count, self.action_horizon, self.action_dim)
        return self._rng.standard_normal(shape, dtype=np.float32) if noise is None else check_noise(noise, shape)

    def _sample(self, noise: np.ndarray | None) -> np.ndarray:
        """The next (H, A) chunk from the current history: from ``noise`` when given, else from the
        seeded stream, with the discrete dimensions voted when :meth:`use_discrete_vote` is on; kept
        as the RTI guess."""
        return self._keep(self._t, self._plan_inputs(noise)())

    def _plan_inputs(self, noise: np.ndarray | None = None):
        """A function computing the next plan's chunks from what the episode holds now (history,
        goal, RTI guess, noise drawn now from the seeded stream), so that it can run later, in the
        plan-ahead worker, with the same result as at once."""
        self._check_goal()
        args = (self._noise(noise, 1 if noise is not None else self._voters), self._window(), self._goal, self._guess())

        def compute() -> np.ndarray:
            started = time.perf_counter()
            chunks = self._sample_chunks(*args)
            self.plan_seconds.append(time.perf_counter() - started)
            return chunks
        return compute

    def _guess(self) -> np.ndarray | None:
        """Under RTI, the previous chunk advanced to the current step (None: no warm start)."""
        if not self.rti or self._previous is None:
            return None
        return shift_guess(self._previous, self._t - self._previous_t, self.discrete_dims, self.discrete_levels)

    def _keep(self, t: int, chunks: np.ndarray) -> np.ndarray:
        """The plan's chunk from its sampled ``chunks`` (the vote or the medoid applied), kept as the RTI guess with
        ``t``, the step of the observation it was sampled from."""
        if self._medoid:
            chunk = medoid_chunk(chunks, self.n_action_steps, self.discrete_dims, self.discrete_levels)
        else:
            chunk = vote_discrete(chunks, self.discrete_dims, self.discrete_levels)
        self._previous, self._previous_t = chunk.copy(), t
        return chunk

    def _push(self, obs: dict[str, Any]) -> None:
        """Check one observation and add it to the history (the first one fills it, as in training)."""
        frame = check_observation(obs, self.lowdim_keys, self.image_keys, self.shapes, self.pad_lowdim)
        if not self._history:
            for _ in range(self.obs_horizon - 1):
                self._history.append(frame)
        self._history.append(frame)

    def _window(self) -> dict[str, np.ndarray]:
        """The observation history as arrays (1, To, ...) by key."""
        return {k: np.stack([h[k] for h in self._history])[None] for k in self.obs_keys}

    def predict_chunk(self, obs: dict[str, Any], noise: np.ndarray | None = None) -> np.ndarray:
        """Add one observation to the history and return a fresh (H, A) chunk of raw actions.

        ``noise``: optional (H, A) standard-normal start of the sampler, for reproducible chunks. With
        RTI, every chunk after the first starts from the previous one advanced by ``n_action_steps``.
        """
        self._push(obs)
        return self._sample(noise)

    def use_temporal_ensemble(self, decay: float | None) -> None:
        """Temporal ensembling (ACT, Zhao et al. 2023) with weight decay ``decay``, or off (None).

        A chunk is still sampled every ``n_action_steps``, but each step acts the weighted mean of what
        every chunk still covering it predicted for it, weights ``exp(-decay * i)`` with i = 0 for the
        oldest (ACT's form and default 0.01: positive trusts older chunks more, negative fresher ones,
        0 is a plain mean), discrete dimensions snapped after averaging. Clears the queued actions: it
        takes effect at the next step."""
        if decay is not None and not np.isfinite(decay):
            raise DpError(f"temporal ensemble decay must be a finite number, got {decay}")
        if decay is not None and self._lead is not None:
            raise DpError("temporal ensembling and plan-ahead do not combine: choose one")
        self._ensemble = None if decay is None else float(decay)
        self._queue.clear()
        self._chunks.clear()

    def use_discrete_vote(self, voters: int) -> None:
        """Vote the discrete dimensions (the gripper): every plan samples ``voters`` chunks from
        independent noise (one batch in torch) and acts the first with each discrete dimension, step
        by step, set to the majority of all: the sampler's most likely open/close decision instead of
        one draw's. An odd number, so every vote has a majority; 1 turns it off."""
        if int(voters) != voters or voters < 1 or voters % 2 == 0:
            raise DpError(f"discrete vote: the number of voting chunks must be odd and >= 1, got {voters}")
        self._chunks_per_plan(int(voters), medoid=False)

    def use_chunk_medoid(self, chunks: int) -> None:
        """Sample ``chunks`` chunks per plan from independent noise (one batch in torch) and act their
        medoid, the one nearest the others over the executed actions (:func:`medoid_chunk`): a plan
        less of one draw of the noise. 1 turns it off; it does not combine with the discrete vote."""
        if int(chunks) != chunks or chunks < 1:
            raise DpError(f"chunk medoid: the number of chunks per plan must be a whole number >= 1, got {chunks}")
        self._chunks_per_plan(int(chunks), medoid=True)

    def _chunks_per_plan(self, count: int, medoid: bool) -> None:
        """``count`` chunks per plan, combined by their medoid or by the discrete vote: one at a time (one
        chunk is neither, so it turns both off)."""
        if count > 1 and self._voters > 1 and self._medoid != medoid:
            raise DpError("the discrete vote and the chunk medoid do not combine: choose one")
        self._voters, self._medoid = count, medoid and count > 1

    def use_plan_ahead(self, lead: int | None, every: int | None = None) -> None:
        """Plan ahead (real-time chunking of the plan's start): sample each chunk ``lead`` control steps
        before the current one runs out, in a worker thread, from the observation of that step, and
        act its actions from ``lead`` steps in, so that a robot never waits at a chunk boundary for an
        inference that takes up to ``lead`` control periods. Under RTI the guess is the chunk in
        flight. Deterministic: the plan is always used at the step it is due (``select_action`` waits
        for it there if it is late: ``late_plans``), so simulation (`dp eval --plan-ahead`) acts as a
        robot does. ``lead`` is at most ``n_action_steps`` and at most the chunk length minus it (without
        ``every``, for every per-task interval too); None turns it off. ``every`` also sets
        ``n_action_steps`` (the re-planning interval) first, for this episode. May change between steps."""
        if every is not None:
            if int(every) != every or not 1 <= every <= self.action_horizon:
                raise DpError(f"re-planning interval must be in [1, {self.action_horizon}] (the chunk length); got {every}")
            self.n_action_steps = int(every)
        if lead is not None:
            later = {self.default_action_steps, *self.task_action_steps.values()} if every is None and self.task_action_steps else set()
            intervals = {self.n_action_steps} | later  # the intervals a reset may switch to
            every_now = min(intervals, key=self._lead_room)
            most = self._lead_room(every_now)
            if int(lead) != lead or not 1 <= lead <= most:
                raise DpError(f"plan-ahead lead must be a whole number of control steps in [1, {most}] (the re-planning "
                              f"interval {every_now} and the chunk {self.action_horizon} minus it); got {lead}")
            if self._ensemble is not None:
                raise DpError("plan-ahead and temporal ensembling do not combine: choose one")
            self._worker = self._worker or ThreadPoolExecutor(1, thread_name_prefix="plan-ahead")
        self._lead = None if lead is None else int(lead)

    @property
    def plan_ahead_lead(self) -> int | None:
        """The plan-ahead lead in control steps (None: off)."""
        return self._lead

    def select_action(self, obs: dict[str, Any]) -> np.ndarray:
        """Add one observation and return the next action (A,); a new chunk every ``n_action_steps``
        (with plan-ahead, sampled ``lead`` steps before it is used)."""
        self._push(obs)
        if self._ensemble is not None:
            return self._ensembled()
        if not self._queue:
            if self._plan is not None:
                self._switch()
            else:
                self._refill()
        if self._lead is not None and self._plan is None and len(self._queue) <= self._lead:
            t = self._t
            self._plan = (t, self._worker.submit(self._plan_inputs()))
        self._t += 1
        return self._queue.popleft()

    def _switch(self) -> None:
        """Queue the plan in flight (waiting for it if it is late) from the current step on."""
        t, future = self._plan
        if not future.done():
            self.late_plans += 1
        self._plan = None
        chunk = self._keep(t, future.result())
        self._enqueue(chunk, self._t - t)

    def _drop_plan(self) -> None:
        """Forget the plan in flight (a new episode), once its worker is done with it."""
        if self._plan is not None:
            self._plan[1].exception()  # waits; its result or error belongs to the old episode
            self._plan = None

    def prime(self, obs: dict[str, Any]) -> None:
        """Add one observation and sample the next chunk into the queue now, so that the next
        ``select_action`` returns at once (a robot computes its first chunk while it still holds)."""
        self._push(obs)
        self._drop_plan()
        if self._ensemble is not None:
            self._chunks.append((self._t, self._sample(None)))
            return
        self._queue.clear()
        self._refill()

    def _ensembled(self) -> np.ndarray:
        """This step's action under temporal ensembling (see :meth:`use_temporal_ensemble`)."""
        if not self._chunks or self._t - self._chunks[-1][0] >= self.n_action_steps:
            self._chunks.append((self._t, self._sample(None)))
        while self._t - self._chunks[0][0] >= self.action_horizon:
            self._chunks.popleft()
        action = self._ensemble_at(self._t)
        self._t += 1
        return action

    def _ensemble_at(self, t: int) -> np.ndarray:
        """The ensembled action (A,) for control step ``t`` from the chunks held now that cover it."""
        predictions = np.stack([chunk[t - start] for start, chunk in self._chunks if t - start < self.action_horizon])
        weights = np.exp(-self._ensemble * np.arange(len(predictions)))
        return snap_discrete((weights @ predictions / weights.sum()).astype(np.float32), self.discrete_dims, self.discrete_levels)

    def _refill(self) -> None:
        """Queue the first ``n_action_steps`` actions of a freshly sampled chunk."""
        self._enqueue(self._sample(None), 0)

    def _enqueue(self, chunk: np.ndarray, offset: int) -> None:
        """Queue ``n_action_steps`` actions of ``chunk`` from ``offset`` on; keep the rest as its tail."""
        self._queue.extend(chunk[offset: offset + self.n_action_steps])
        self._tail = chunk[offset + self.n_action_steps:]

    def lookahead_actions(self) -> np.ndarray:
        """The current chunk's actions after the queued ones (m, A): what it predicted past its
        re-planning point. A robot may follow them when the next plan comes late, instead of holding
        (the node sends them after the queue; the next command replaces them). Empty under temporal
        ensembling."""
        return self._tail if self._ensemble is None else self._tail[:0]

    def pending_actions(self) -> np.ndarray:
        """The queued actions still to come after the last one returned, (n, A); with temporal
        ensembling, the ensemble of the chunks held now for the steps up to the next re-plan (a later
        chunk will move them a little: it joins the mean)."""
        if self._ensemble is not None and self._chunks:
            replan = self._chunks[-1][0] + self.n_action_steps
            steps = range(self._t, replan)
            return np.array([self._ensemble_at(t) for t in steps], dtype=np.float32).reshape(-1, self.action_dim)
        return np.array(list(self._queue), dtype=np.float32).reshape(-1, self.action_dim)
