"""The inference node: subscribes to a controller's State, runs a policy, sends waypoints.

One cycle per control tick (a State with a new ``tick`` carries a new observation): the observation goes to
``policy.select_action`` (the policy keeps the observation history and its action queue, exactly as in `dp eval`),
and the action — followed by the rest of the policy's current chunk when it offers ``pending_actions()``, and what
the chunk predicted past its re-planning point (``lookahead_actions()``: followed only if the next command comes
late) — becomes ``ee_delta`` waypoints at ``obs_stamp + (k + 1) / control_hz`` (see :mod:`dp.link.protocol`); a
policy whose actions have one value per joint of a robot that takes ``joint`` commands (the Push-T agent, a 2-axis
robot in pixels), or one more for the gripper (a LeRobot arm), sends them as joint position waypoints instead
(:func:`command_mode`). A robot whose Info has a ``state_key`` (a LeRobot arm's ``state``: degrees, LeRobot's gripper
scale) is seen and commanded in those units (:class:`dp.link.protocol.StateKey`, :func:`joint_waypoints`). Waypoints carry the
observation's time, so inference latency is absorbed: if a command arrives late, the controller uses the later
waypoints of the chunk, and drops the ones already past. The episode's first chunk, the one full sampling (the rest
are queued actions or RTI warm chunks), is sampled from the episode's first State while the robot still holds
(``policy.prime``); the first command goes out at the next tick.

Plan-ahead (policies with ``use_plan_ahead``, on by default): the next chunk is sampled in a worker thread from the
observation of the tick ``lead`` control periods before the current chunk runs out, and used from ``lead`` steps in,
so the robot never waits at a chunk boundary. ``--plan-ahead auto`` sets ``lead`` at each episode's start to cover
1.5 times a slow recent plan (the 95th percentile of the last 64, the first chunk's full sampling included),
shortening the policy's re-planning interval (its own for the episode's task) when its chunk leaves no room for that
lead (:func:`plan_ahead_for`).
The report counts the controller's watchdog holds during episodes by reason, the ticks held after an episode's first
command, and the plans that were late.

A policy observing a key the controller's Info does not offer, or its state key at another width, stops the node
before anything is sent, with an error naming both sides (:func:`check_policy`); so do actions no mode takes. Between
commands the node sends heartbeats. If the controller falls silent the node stops commanding and says so;
when a controller (re)appears — a new ``boot`` — the node resets the policy and starts over. With ``episodes > 0``
the node runs that many episodes itself: it sends a Reset with the seed `dp eval --split test --seed` gives episode i
(``seed_for(seed, i, "test")``, so the two success rates are paired; i from ``first_episode`` on, so nodes side by side
can share one `dp eval` run's episodes), drives until the State reports success or the horizon passes, and reports.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from dp.deploy.node_report import HOLD_REASONS, NodeReport
from dp.link import protocol as P
from dp.link.transport import ClientSockets
from dp.errors import DpError
from dp.sim.rollout import seed_for
from dp.stats import timing_summary

log = logging.getLogger("dp.node")

PLAN_MARGIN = 1.5  # plan ahead by this many times a slow recent plan (95th percentile: a busy machine, the loop's own time)


def slow_plan(seconds: list[float], period: float) -> float:
    """A slow recent plan time: the 95th percentile of ``seconds`` (one control ``period`` if none was timed)."""
    return float(np.percentile(seconds, 95)) if seconds else period


def plan_ahead_for(seconds: list[float], period: float, horizon: int, replan: int) -> tuple[int, int, bool]:
    """(lead, re-planning interval, covered): the lead in control periods that covers PLAN_MARGIN
    times the 95th percentile of the plan times ``seconds``, and the policy's re-planning interval
    ``replan``, shortened when the chunk of ``horizon`` actions leaves no room for that lead (a
    plan's actions are used from ``lead`` steps in, ``replan`` of them: ``lead + replan <= horizon``,
    and ``lead <= replan``); ``covered`` is False when even half the chunk is too short."""
    need = max(1, math.ceil(PLAN_MARGIN * slow_plan(seconds, period) / period))
    replan = max(1, min(replan, horizon - min(need, horizon // 2)))
    lead = max(1, min(need, replan, horizon - replan))
    return lead, replan, lead >= need


def command_mode(info: P.Info, width: int) -> str:
    """How a policy's ``width``-value actions go to this controller: 7 (OSC deltas + gripper) as ``ee_delta``; one
    per joint, or one per joint and then the gripper, as ``joint`` position targets (:func:`joint_waypoints`)."""
    if width == 7 and P.MODE_EE_DELTA in info.modes:
        return P.MODE_EE_DELTA
    if width in (info.n_joints, info.n_joints + 1) and P.MODE_JOINT in info.modes:
        return P.MODE_JOINT
    raise DpError(f"controller {info.robot} (modes {info.modes}, {info.n_joints} joints) cannot take this policy's "
                  f"{width}-value actions: ee_delta takes 7, joint one per joint ({info.n_joints}) or the joints and "
                  f"then the gripper ({info.n_joints + 1})")


def check_policy(info: P.Info, policy: Any) -> None:
    """A DpError naming both sides when ``policy`` observes a key this robot does not offer, or its state key at another width."""
    missing = [k for k in getattr(policy, "obs_keys", []) if k not in info.observation_keys()]
    if missing:
        raise DpError(f"the policy observes {missing}, which controller {info.robot} does not publish ({info.offers()})")
    key, shapes = info.state_key, getattr(policy, "shapes", {})
    if key is not None and key.key in shapes and int(np.prod(shapes[key.key])) != info.n_joints + 1:
        raise DpError(f"the policy observes {key.key!r} as {int(np.prod(shapes[key.key]))} values; controller {info.robot} "
                      f"gives {info.n_joints + 1}: {key.describe(info.n_joints)}")


def joint_waypoints(chunk: np.ndarray, info: P.Info) -> tuple[np.ndarray, np.ndarray]:
    """(joint waypoints, gripper): a chunk's first ``n_joints`` columns and the gripper after them (none: open, -1),
    from the units of the robot's ``state_key`` to its own where it has one (unclamped: the controller clamps)."""
    n, key = info.n_joints, info.state_key
    gripper = chunk[:, n] if chunk.shape[1] > n else np.full(len(chunk), -1.0 if key is None else key.gripper_open)
    return (chunk[:, :n], gripper) if key is None else (key.joints_from_data(chunk[:, :n]), key.gripper_from_data(gripper))


class InferenceNode:
    def __init__(self, policy: Any, sockets: ClientSockets, *, instruction: str | None = None, episodes: int = 0, seed: int = 0,
                 first_episode: int = 0, max_steps: int | None = None, silence_timeout: float = 0.5, heartbeat_period: float = 0.05,
                 timings: Path | None = None, plan_ahead: int | str | None = "auto", clock=time.monotonic):
        self.policy, self.sockets, self.instruction = policy, sockets, instruction
        self.episodes, self.seed, self.first_episode, self.max_steps = episodes, seed, first_episode, max_steps
        self.silence_timeout, self.heartbeat_period, self.clock = silence_timeout, heartbeat_period, clock
        self.sender, self.seq = P.new_id(), 0
        self.report = NodeReport()
        self.timings = open(timings, "w", buffering=1) if timings else None  # line-buffered: readable live
        self.info: P.Info | None = None
        self.state: P.State | None = None
        self.state_guard = P.SeqGuard()
        self.boot: int | None = None
        self.last_rx = self.last_tx = -np.inf
        self.last_cycle, self.last_tick, self.last_latency_seq = None, -1, -1
        self.silent = False
        # episode bookkeeping
        self.episode_id: int | None = None  # controller episode being driven
        self.episode_seed = self.episode_start_tick = 0
        self.awaiting_reset: tuple[int, float] | None = None  # (episode id to wait for, deadline)
        self.done = False
        self.counted_tick = -1  # the last tick whose faults the report counted
        self.commanded = False  # this episode's first command has gone out
        self.plan_ahead = plan_ahead if callable(getattr(policy, "use_plan_ahead", None)) else None
        self.replan_every = getattr(policy, "n_action_steps", 1)  # the policy's own interval (per task: set at each episode); auto may shorten it
        self.plan_warned = False
        if isinstance(self.plan_ahead, int):
            policy.use_plan_ahead(self.plan_ahead)

    # ------------------------------------------------------------------ main loop
    def run(self, should_stop=lambda: False, connect_timeout: float | None = None) -> NodeReport:
        """Drive the robot until ``should_stop()`` or the episodes are done; TimeoutError (saying what
        the connection did, e.g. a CURVE key mismatch) if no State arrives for ``connect_timeout``
        seconds, at the start or after the controller fell silent (None: wait for it)."""
        gc.freeze()  # the policy's start-up objects leave the collector: shorter pauses in the loop
        sys.setswitchinterval(0.001)  # the loop gets the GIL back from the plan-ahead worker within 1 ms
        start = self.clock()
        next_log = start + 10.0
        while not should_stop() and not self.done:
            if self.clock() >= next_log:
                next_log += 10.0
                self._log_progress()
            if self.sockets.sub.poll(timeout=int(self.heartbeat_period * 1e3), flags=zmq.POLLIN):
                self._drain()
            now = self.clock()
            absent = now - (start if self.state is None else self.last_rx)
            if connect_timeout is not None and absent > connect_timeout:
                what = "no State from the controller" if self.state is None else "the controller fell silent and did not come back"
                raise TimeoutError(f"{what} within {connect_timeout:g} s: {self.sockets.diagnose()}")
            if self.state is None:
                continue
            if now - self.last_rx > self.silence_timeout:
                if not self.silent:
                    log.warning("controller silent for %.2f s: stopped commanding (waiting for it to come back)", now - self.last_rx)
                    self.silent = True
                continue
            if self.silent:
                log.info("controller is back")
                self.silent = False
            self._step(now)
            if self._commanding() and now - self.last_tx >= self.heartbeat_period:
                self._send(P.Heartbeat(self.sender, self._next_seq(), self.state.boot, self.state.stamp))
        if self.timings:
            self.timings.close()
        self.report.late_plans = getattr(self.policy, "late_plans", 0)
        return self.report

    def _log_progress(self) -> None:
        r = self.report
        pol, lat = timing_summary(r.policy_ms[-200:]), timing_summary(r.obs_to_command_ms[-200:])
        log.info("cycles %d, policy median %.2f ms, obs->command p99 %.1f ms, rejected %d, send failures %d",
                 len(r.cycle_ms), pol.get("median", float("nan")), lat.get("p99", float("nan")), r.rejected, r.send_failures)

    def _drain(self) -> None:
        while True:
            try:
                frame = self.sockets.sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = P.decode(frame, accept=(P.State, P.Info))
                if isinstance(msg, P.Info):
                    self._on_info(msg)
                    continue
                self.state_guard.check(msg.boot, msg.seq, "state.seq")
            except P.ProtocolError as exc:
                self.report.rejected += 1
                if self.report.rejected <= 5:
                    log.warning("dropped a bad message from the controller: %s", exc)
                continue
            self.last_rx = self.clock()
            if msg.boot != self.boot:
                self._resync(msg.boot)
            self._count_holds(msg)
            self.state = msg
            if msg.command_seq > self.last_latency_seq and msg.cmd_latency >= 0:
                self.last_latency_seq = msg.command_seq
                self.report.obs_to_command_ms.append(msg.cmd_latency * 1e3)

    def _count_holds(self, s: P.State) -> None:
        """Count each tick of the episode being driven once: the watchdog's holds by reason, and the
        ticks held after the episode's first command."""
        if s.tick <= self.counted_tick or self.episode_id is None or s.episode != self.episode_id or not self.commanded:
            return
        self.counted_tick = s.tick
        self.report.holds.update(f for f in s.faults if f in HOLD_REASONS)
        self.report.held_ticks += bool(s.held and s.mode != P.ROBOT_STOPPED)

    def _on_info(self, info: P.Info) -> None:
        if self.info is None or info.boot != self.info.boot:
            log.info("controller %s: %g Hz control, modes %s, task %s", info.robot, info.control_hz, info.modes, info.task)
            trained_hz = getattr(self.policy, "control_freq", None)  # exported policies record their data's rate
            if trained_hz and abs(trained_hz - info.control_hz) > 1e-3 * trained_hz:
                log.warning("the policy was trained on %g Hz data but controller %s runs at %g Hz: its action chunks "
                            "will play %.2fx too %s", trained_hz, info.robot, info.control_hz,
                            max(trained_hz, info.control_hz) / min(trained_hz, info.control_hz),
                            "fast" if info.control_hz > trained_hz else "slow")
            check_policy(info, self.policy)
        self.action_width = int(getattr(self.policy, "action_dim", 7))
        self.command_mode = command_mode(info, self.action_width)
        self.info = info
        self.report.period_target_ms = 1e3 / info.control_hz
        self.sockets.connect_commands(info.command_port)

    def _resync(self, boot: int) -> None:
        if self.boot is not None:
            self.report.resyncs += 1
            log.warning("controller restarted (run %x -> %x): resetting the policy", self.boot, boot)
            if self.episode_id is not None and self.episodes:
                log.warning("episode with seed %d interrupted; it will be run again", self.episode_seed)
        self.boot = boot
        self.episode_id = self.awaiting_reset = self.last_cycle = None
        self.last_tick = self.last_latency_seq = -1  # the policy is reset when the next episode starts

    # ------------------------------------------------------------------ episodes and cycles
    def _commanding(self) -> bool:
        return self.episode_id is not None and self.info is not None and self.info.boot == self.boot

    def _step(self, now: float) -> None:
        s = self.state
        if self.info is None or self.info.boot != s.boot:
            return  # need the Info of this controller run (command port, rates) first
        if self.episode_id is not None and s.episode != self.episode_id:
            if self.episodes:
                log.warning("someone else reset the robot (episode %d -> %d): starting over", self.episode_id, s.episode)
                self.episode_id = None
            else:
                self._start_episode(s)
        if self.episode_id is None:
            self._begin(s, now)
            if self.episode_id is None:
                return
        if s.tick == self.last_tick or s.mode == P.ROBOT_STOPPED:
            return
        if "score" in s.extra:  # a task with a score (Push-T): the episode scores its maximum
            self.episode_score = max(self.episode_score or 0.0, float(s.extra["score"][0]))
        steps = s.tick - self.episode_start_tick
        horizon = self.max_steps or self.info.horizon
        if self.episodes and (s.success or (horizon and steps >= horizon)):
            self._finish(bool(s.success), steps)
            return
        self._cycle(s)

    def _begin(self, s: P.State, now: float) -> None:
        if not self.episodes:
            self._start_episode(s)
            return
        if self.awaiting_reset is None:
            seed = seed_for(self.seed, self.first_episode + len(self.report.episodes), "test")
            if self._send(P.Reset(self.sender, self._next_seq(), s.boot, s.stamp, seed)):  # not yet connected: try again next wake-up
                self.awaiting_reset = (s.episode + 1, now + 5.0)
                self.episode_seed = seed
        elif s.episode >= self.awaiting_reset[0]:
            self.awaiting_reset = None
            self._start_episode(s)
        elif now > self.awaiting_reset[1]:
            log.warning("no new episode 5 s after a Reset: sending it again")
            self.awaiting_reset = None

    def _start_episode(self, s: P.State) -> None:
        self.episode_id, self.episode_start_tick, self.last_tick = s.episode, s.tick, -1
        self.commanded, self.counted_tick = False, s.tick
        self.episode_score: float | None = None
        self.last_cycle = None  # loop periods are timed within an episode, not across a reset
        if not self.episodes:
            self.episode_seed = self.info.seed
        if callable(getattr(self.policy, "seed", None)):
            self.policy.seed(self.episode_seed)
        goal = self.instruction if self.instruction is not None else self.info.instruction
        self.policy.reset(goal)
        if callable(getattr(self.policy, "interval_for", None)):
            self.replan_every = self.policy.interval_for(goal)
        log.info("episode %d started (seed %d)", s.episode, self.episode_seed)
        self._prime(s)
        if self.plan_ahead == "auto":
            self._choose_lead()
        if self.plan_ahead is not None:
            self.report.plan_ahead.append(int(self.policy.plan_ahead_lead or 0))
            self.report.replan_every.append(int(self.policy.n_action_steps))

    def _choose_lead(self) -> None:
        """Set the policy's plan-ahead lead (and, if the chunk needs it, a shorter re-planning
        interval) from its recent plan times: :func:`plan_ahead_for`."""
        policy, seconds, period = self.policy, list(self.policy.plan_seconds), 1.0 / self.info.control_hz
        lead, replan, covered = plan_ahead_for(seconds, period, policy.action_horizon, self.replan_every)
        if (lead, replan) != (policy.plan_ahead_lead, policy.n_action_steps):
            log.info("plan-ahead: %d control steps, a new chunk every %d (plans take up to %.0f ms, p95)", lead, replan,
                     1e3 * slow_plan(seconds, period))
        if not covered and not self.plan_warned:
            self.plan_warned = True
            log.warning("plans take longer than this policy's chunk (%d actions) can cover: expect holds at chunk "
                        "boundaries (RTI, a longer chunk or a faster device helps)", policy.action_horizon)
        policy.use_plan_ahead(lead, every=replan)

    def _prime(self, s: P.State) -> None:
        """Sample the episode's first chunk (full sampling, the one slow call) from its first State,
        while the robot still holds: nothing has been commanded, so the scene is the one the next tick
        sees. The first command goes out at the next tick from the queue, without that time in the loop."""
        prime = getattr(self.policy, "prime", None)
        if prime is None:
            return
        t0 = time.perf_counter()
        try:
            prime(self._observation(s))
        except Exception as exc:  # reported again, and handled, by the next cycle's select_action
            log.error("policy failed on the episode's first State: %s", exc)
            return
        self.report.prime_ms.append((time.perf_counter() - t0) * 1e3)
        self.last_tick = s.tick  # the first command waits for the next control tick

    def _observation(self, s: P.State) -> dict[str, np.ndarray]:
        return P.observation_from_state(s, self.info.camera_keys, self.info.state_key)

    def _finish(self, success: bool, steps: int) -> None:
        score = {} if self.episode_score is None else {"score": self.episode_score}
        self.report.episodes.append({"seed": self.episode_seed, "success": success, "steps": steps, **score})
        n, wins = len(self.report.episodes), sum(e["success"] for e in self.report.episodes)
        log.info("episode %d/%d: %s after %d steps (success rate %d/%d)", n, self.episodes,
                 "success" if success else "failure", steps, wins, n)
        self.episode_id = None
        self.done = n >= self.episodes

    def _cycle(self, s: P.State) -> None:
        t0 = time.perf_counter()
        if self.last_cycle is not None:
            self.report.period_ms.append((t0 - self.last_cycle) * 1e3)
        self.last_cycle = t0
        self.last_tick = s.tick
        try:
            action = np.asarray(self.policy.select_action(self._observation(s)), dtype=np.float64)
            chunk = np.concatenate([action[None]] + [np.asarray(more(), np.float64).reshape(-1, action.size) for more in
                                                     (getattr(self.policy, name, None) for name in ("pending_actions", "lookahead_actions"))
                                                     if more is not None])
            if chunk.shape[1] != self.action_width or not np.isfinite(chunk).all():
                raise ValueError(f"expected finite actions of {self.action_width} values, got shape {chunk.shape}")
        except Exception as exc:  # a policy fault must not send anything; the controller holds
            self.report.policy_errors += 1
            log.error("policy failed on tick %d, nothing sent: %s", s.tick, exc)
            return
        t1 = time.perf_counter()
        dt = 1.0 / self.info.control_hz
        chunk = chunk[: P.MAX_WAYPOINTS]
        times = s.obs_stamp + dt * np.arange(1, len(chunk) + 1)
        if self.command_mode == P.MODE_JOINT:  # position targets, one per joint (and the gripper)
            waypoints, gripper = joint_waypoints(chunk, self.info)
        else:
            waypoints, gripper = chunk[:, :6] * np.repeat(np.asarray(self.info.action_scale, dtype=np.float64), 3), chunk[:, 6]
        cmd = P.Command(
            sender=self.sender, seq=self._next_seq(), boot=s.boot, obs_stamp=s.obs_stamp, mode=self.command_mode,
            times=times, waypoints=waypoints, gripper=gripper, expires=float(times[-1] + dt / 2),
        )
        if self._send(cmd) and not self.commanded:  # holds count from the first tick this command can move
            self.commanded, self.counted_tick = True, s.tick
        t2 = time.perf_counter()
        self.report.policy_ms.append((t1 - t0) * 1e3)
        self.report.cycle_ms.append((t2 - t0) * 1e3)
        if self.timings:
            self.timings.write(json.dumps({"tick": s.tick, "policy_ms": (t1 - t0) * 1e3, "cycle_ms": (t2 - t0) * 1e3,
                                           "waypoints": len(chunk), "action": action.tolist()}) + "\n")

    # ------------------------------------------------------------------ sending
    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _send(self, msg: P.Message) -> bool:
        if self.sockets.send(P.encode(msg)):
            self.last_tx = self.clock()
            return True
        self.report.send_failures += 1
        return False
