"""The robot controller: owns a robot through a driver, follows the node's waypoints, keeps it safe.

Two threads (all clocks ``time.monotonic``):

- the **control loop** owns the driver and the command socket. It sleeps in ``zmq.Poller.poll``
  until the next deadline — a control tick (``rates.control_hz``), the expiry of the command, the
  heartbeat deadline of the commanding node — or until a message arrives. Messages are handled at
  once, each one validated; a bad one is counted (by field) and dropped. Handling stops at the next
  deadline; when one is due, a ``RECEIVE_SLICE`` of messages goes first (a heartbeat waiting behind
  a stall is seen before the watchdog judges). A flood of messages thus delays a tick or the
  watchdog by at most a slice and one (bounded) message; the ZeroMQ queues, bounded too, hold the rest. At a tick it
  takes the setpoint the waypoints give, clamps it to the limits (the workspace box bounds where
  the end effector goes: :mod:`dp.deploy.safety`), hands it to the driver (or holds), reads the
  new observation and freezes it into a snapshot;
- the **publisher** sends the latest snapshot as State at ``rates.state_hz`` with a fresh
  ``seq``/``stamp`` (immediately when a tick produced a new observation), and Info at 1 Hz, so a
  slow driver call (a physics step, a reset) never thins the State stream.

The watchdog holds the robot when the command expires or when the commanding node has sent
neither a command nor a heartbeat for ``safety.heartbeat_timeout``.

Every control message must name this controller run (``boot``) and be fresh: a Command's
``obs_stamp``, the others' ``stamp`` (both the controller's clock) no older than the replay window
(``max_command_horizon + heartbeat_timeout``); sequence numbers rise per sender. A sender is
forgotten only after a window of silence, when all its messages are stale anyway, so a recording
replayed later is refused whatever the sender table went through (counted as ``replays``). A Stop
is accepted from any sender, even with the sender table full, and latches: commands and Resets are
refused until an operator's Release (``dp stop --release``; it too gets past a full table).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np
import zmq

from dp.link import protocol as P
from dp.deploy.drivers import ArmTarget, Driver, DriverInfo, Reading
from dp.deploy.robot_config import RobotConfig
from dp.deploy.safety import Limits, rotation_delta
from dp.deploy.trajectory import CommandBuffer
from dp.link.transport import ControllerSockets
from dp.errors import DpError

log = logging.getLogger("dp.robot")

MAX_MESSAGES_PER_WAKE = 256  # then the loop checks its deadlines and should_stop again
RECEIVE_SLICE = 0.002  # seconds of message handling when a tick or the watchdog is due (heartbeats first)
MAX_SENDERS = 64  # senders whose sequence numbers the controller tracks at once
OUTSIDE = "outside_workspace"  # the fault of a tick that found the end effector outside the box


@dataclass
class ControllerStats:
    ticks: int = 0
    overruns: int = 0  # ticks that started more than one period late (schedule re-anchored)
    states: int = 0
    commands: int = 0
    clamped_ticks: int = 0
    clamped: Counter = field(default_factory=Counter)  # clamped ticks by limit
    late_waypoints: int = 0
    holds: Counter = field(default_factory=Counter)  # why the controller went to hold
    rejected: Counter = field(default_factory=Counter)  # bad messages by field
    replays: int = 0  # messages refused as replayed or stale (another run's, too old, a repeated seq)
    stops: int = 0  # Stops accepted (also while already stopped)
    latency: deque = field(default_factory=lambda: deque(maxlen=2000))  # command arrival - its observation ready (s)

    def summary(self) -> str:
        lat = np.asarray(self.latency) * 1e3
        lat_s = f"obs->cmd median {np.median(lat):.1f} ms p99 {np.percentile(lat, 99):.1f} ms" if lat.size else "no commands"
        rej = ", ".join(f"{k} {v}" for k, v in self.rejected.most_common(5)) or "none"
        clamped = f" {dict(self.clamped)}" if self.clamped else ""
        return (f"ticks {self.ticks} (overruns {self.overruns}), states {self.states}, commands {self.commands}, "
                f"clamped ticks {self.clamped_ticks}{clamped}, late waypoints {self.late_waypoints}, {lat_s}; "
                f"holds {dict(self.holds) or 'none'}; rejected {sum(self.rejected.values())} ({rej}), of them replayed "
                f"or stale {self.replays}; stops {self.stops}")


class Controller:
    def __init__(self, config: RobotConfig, driver: Driver, sockets: ControllerSockets, clock=time.monotonic):
        self.config = config
        self.driver = driver
        self.sockets = sockets
        self.clock = clock
        self.dt = 1.0 / config.rates.control_hz
        self.limits = Limits.from_config(config.limits, config.rates.control_hz)
        self.buffer = CommandBuffer(config.rates.control_hz)
        # replay protection: a sender heard within the replay window keeps its sequence state; anything
        # computed before the window is refused by its stamp (see _admit)
        safety = config.safety
        self.replay_window = safety.max_command_horizon + safety.heartbeat_timeout
        self.guard = P.SeqGuard(MAX_SENDERS, keep=self.replay_window)
        self.stats = ControllerStats()
        self.boot = P.new_id()
        self.info: DriverInfo | None = None
        self.reading: Reading | None = None
        self.images: dict[str, P.CameraFrame] = {}
        self.obs_stamp = 0.0
        self.obs_ready: OrderedDict[float, float] = OrderedDict()  # obs_stamp -> when that observation was ready
        self.tick = 0
        self.episode = 0
        self.seq = 0
        self.stopped = False
        self.last_command_seq = -1
        self.last_latency = -1.0
        self.applied = np.zeros(7)
        self.prev_ee: np.ndarray | None = None  # the end effector's pose (position + quaternion) before the last tick
        self.held = True
        self.gripper = -1.0
        self.faults: list[str] = []  # faults of the last tick
        self.events: list[str] = []  # faults raised between ticks (watchdog), reported once
        self._snapshot: P.State | None = None  # what the publisher thread sends
        self._fresh: deque[P.State] = deque()  # snapshots that must go out at least once (new tick, mode change)
        self._new_obs = threading.Event()
        self._info_due = threading.Event()
        self._quit = threading.Event()
        self._reanchor = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> DriverInfo:
        self.info = self.driver.connect()
        if self.info.n_joints and self.config.limits.joint_min and len(self.config.limits.joint_min) != self.info.n_joints:
            raise DpError(f"limits.joint_min has {len(self.config.limits.joint_min)} values, the robot has {self.info.n_joints} joints")
        self._observe(self.clock())
        self._freeze()
        return self.info

    def run(self, should_stop=lambda: False, duration: float | None = None) -> None:
        """Serve until ``should_stop()`` is true (checked at every wake-up) or ``duration`` seconds."""
        sys.setswitchinterval(0.001)  # the publisher thread gets the GIL within 1 ms of its deadline
        gc.freeze()  # the simulator's start-up objects leave the collector: no 10 ms pauses in the loop
        poller = zmq.Poller()
        poller.register(self.sockets.pull, zmq.POLLIN)
        publisher = threading.Thread(target=self._publish_loop, name="state-publisher", daemon=True)
        publisher.start()
        now = self.clock()
        end = None if duration is None else now + duration
        next_tick, next_log = now + self.dt, now + 10.0
        try:
            while not should_stop() and (end is None or now < end):
                deadline = min(next_tick, self._watchdog_deadline())
                if poller.poll(max(0.0, min(deadline, now + 0.1) - self.clock()) * 1e3):
                    # until the next deadline; when one is due, a short slice first (heartbeats queued behind a stall)
                    self._receive(max(deadline, self.clock() + RECEIVE_SLICE))
                now = self.clock()
                self._watchdog(now)
                self._freeze()  # a stop, a reset or a watchdog hold goes out before the next (slow) driver call
                if self._reanchor:  # a reset took time: the first tick of the episode is a period after its observation
                    self._reanchor = False
                    next_tick = self.obs_stamp + self.dt
                if now >= next_tick:
                    self._tick(next_tick)
                    next_tick += self.dt
                    if self.clock() > next_tick + self.dt:  # fell behind by more than a period: re-anchor
                        self.stats.overruns += 1
                        next_tick = self.clock() + self.dt
                    self._freeze()
                if now >= next_log:
                    log.info("%s", self.stats.summary())
                    next_log = now + 10.0
                now = self.clock()
        finally:
            self._quit.set()
            self._new_obs.set()
            publisher.join(timeout=2.0)

    def close(self) -> None:
        try:
            self.driver.stop()
        finally:
            self.driver.disconnect()
            self.sockets.close()

    # ------------------------------------------------------------------ messages
    def _receive(self, until: float) -> None:
        """Handle queued messages until none is left or the clock reaches ``until``. Decoding bounds
        what one message costs (well under a millisecond), so a flood never makes a tick late."""
        for _ in range(MAX_MESSAGES_PER_WAKE):
            now = self.clock()
            if now >= until:
                return
            try:
                frame = self.sockets.pull.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            try:
                msg = P.decode(frame, accept=P.CONTROL_TYPES)
                self._admit(msg, now)
                self._handle(msg, now)
            except P.ProtocolError as exc:
                self.stats.rejected[exc.field] += 1
                if sum(self.stats.rejected.values()) <= 5:
                    log.warning("rejected a message: %s", exc)

    def _admit(self, msg: P.Message, now: float) -> None:
        """Refuse a message of another controller run, one stamped in the future or before the replay
        window, and a repeated or out-of-order sequence number (counted as ``replays``). A Stop and
        an operator's Release get past a full sender table."""
        key = "obs_stamp" if isinstance(msg, P.Command) else "stamp"
        stamp = getattr(msg, key)
        try:
            if msg.boot != self.boot:
                raise P.ProtocolError(f"{msg.TYPE}.boot", f"meant for controller run {msg.boot:x}, this is {self.boot:x}")
            if stamp > now + 1e-3:
                raise P.ProtocolError(f"{msg.TYPE}.{key}", f"stamp {stamp:.3f} is in the future (now {now:.3f})")
            if now - stamp > self.replay_window:
                raise P.ProtocolError(f"{msg.TYPE}.{key}", f"stamped {now - stamp:.2f} s ago, before the replay window "
                                                           f"({self.replay_window:g} s)")
            self.guard.check(msg.sender, msg.seq, f"{msg.TYPE}.seq", now, force=isinstance(msg, (P.Stop, P.Release)))
        except P.ProtocolError as exc:
            if not exc.field.endswith(".sender"):
                self.stats.replays += 1
            raise

    def _handle(self, msg: P.Message, now: float) -> None:
        if isinstance(msg, P.Stop):
            self.stats.stops += 1
            if not self.stopped:
                log.warning("stop from %x: %s", msg.sender, msg.reason or "(no reason given)")
                self.driver.stop()
            self.stopped = True
            self.buffer.clear()
            self._freeze()  # published now, not after the rest of the queue
        elif isinstance(msg, P.Release):
            if self.stopped:
                log.warning("stop released by %x: %s", msg.sender, msg.reason or "(no reason given)")
                self.stopped = False
                self._freeze()
        elif isinstance(msg, P.Reset):
            if self.stopped:  # a Reset never clears a Stop (it may move a real arm home)
                self.stats.holds["reset_while_stopped"] += 1
                return
            self._reset(msg.seed)
        elif isinstance(msg, P.Command):
            self._command(msg, now)

    def _command(self, cmd: P.Command, now: float) -> None:
        if cmd.mode not in self.info.modes:
            raise P.ProtocolError("command.mode", f"{cmd.mode!r} is not supported by this robot (supported: {self.info.modes})")
        if cmd.mode == P.MODE_JOINT and cmd.waypoints.shape[1] != self.info.n_joints:
            raise P.ProtocolError("command.waypoints", f"joint mode needs {self.info.n_joints} columns, got {cmd.waypoints.shape[1]}")
        self.limits.refuse_absurd(cmd.mode, cmd.waypoints)
        if now - cmd.obs_stamp > self.config.safety.max_command_horizon:
            raise P.ProtocolError("command.obs_stamp", f"computed from an observation {now - cmd.obs_stamp:.2f} s old")
        if self.stopped:
            self.stats.holds["command_while_stopped"] += 1
            return
        r = self.reading
        start = np.concatenate([r.ee_pos, r.ee_quat]) if cmd.mode == P.MODE_EE_POSE else r.q
        self.stats.late_waypoints += self.buffer.accept(cmd, now, start, self.gripper, self.config.safety.max_command_horizon)
        self.stats.commands += 1
        self.last_command_seq = cmd.seq
        self.last_latency = now - self.obs_ready.get(cmd.obs_stamp, cmd.obs_stamp)
        self.stats.latency.append(self.last_latency)

    def _reset(self, seed: int | None) -> None:
        self.buffer.clear()
        self.info.seed = self.driver.reset(seed)
        self.episode += 1
        self.gripper = -1.0
        self.applied = np.zeros(7)
        self.prev_ee = None
        self.held = True
        self._observe(self.clock())  # the first tick of the episode comes one period later (re-anchored)
        log.info("episode %d (seed %s)", self.episode, self.info.seed)
        self._info_due.set()
        self._reanchor = True
        self._freeze()

    # ------------------------------------------------------------------ safety
    def _watchdog(self, now: float) -> None:
        if self.buffer.mode is None:
            return
        if now > self.buffer.expires:
            reason = "command_expired"
        elif now - self.guard.last_heard(self.buffer.sender) > self.config.safety.heartbeat_timeout:
            reason = "heartbeat_timeout"
        else:
            return
        self.buffer.clear()
        self.stats.holds[reason] += 1
        self.events.append(reason)

    # ------------------------------------------------------------------ control
    def _tick(self, t: float) -> None:
        faults: list[str] = []
        setpoint = None if self.stopped else self.buffer.setpoint(t)
        r = self.reading
        before, self.prev_ee = self.prev_ee, np.concatenate([r.ee_pos, r.ee_quat])  # the pose a tick ago, and now
        motion = None if before is None else np.concatenate([r.ee_pos - before[:3], rotation_delta(before[3:], r.ee_quat)])
        self.held = setpoint is None
        if setpoint is None:  # no motion without a command: outside the box too, the arm holds (and says so)
            self.driver.hold()
            self.applied = np.array([0, 0, 0, 0, 0, 0, self.gripper], dtype=float)
            faults += [OUTSIDE] if self.limits.outside(r.ee_pos) else []
        else:
            if setpoint.mode == P.MODE_EE_DELTA:
                target, clamped = self.limits.clamp_delta(r.ee_pos, setpoint.value[:3], setpoint.value[3:], setpoint.gripper, motion)
            elif setpoint.mode == P.MODE_EE_POSE:
                target, clamped = self.limits.clamp_pose(r.ee_pos, r.ee_quat, setpoint.value[:3], setpoint.value[3:], setpoint.gripper, motion)
            else:
                target, clamped = self.limits.clamp_joints(r.q, setpoint.value, setpoint.gripper, r.ee_pos, r.ee_quat,
                                                           self.driver.forward_kinematics, motion)
            if clamped:
                self.stats.clamped_ticks += 1
                self.stats.clamped.update(clamped)
                faults += [OUTSIDE if c == "outside" else f"clamped:{c}" for c in clamped]
            self._apply(target)
        self.tick += 1
        self.stats.ticks += 1
        self._observe(t)
        self.faults = faults + self.events + self.reading.faults
        self.events = []

    def _apply(self, target: ArmTarget) -> None:
        self.driver.apply(target)
        self.gripper = target.gripper
        self.applied = np.concatenate([target.dpos, target.drot, [target.gripper]])

    def _observe(self, tick_time: float) -> None:
        """Read the robot after the tick scheduled at ``tick_time``; that time stamps the observation,
        so waypoints anchored to it land exactly on later ticks however long the driver call took."""
        self.reading = self.driver.read_state()
        self.obs_stamp = tick_time
        self.obs_ready[tick_time] = self.clock()
        if len(self.obs_ready) > 256:
            self.obs_ready.popitem(last=False)
        net = self.config.network
        self.images = {
            cam: P.CameraFrame.jpeg(px, net.jpeg_quality) if net.camera_encoding == "jpeg" else P.CameraFrame(px)
            for cam, px in self.reading.images.items()
        }

    def _watchdog_deadline(self) -> float:
        if self.buffer.mode is None:
            return np.inf
        contact = self.guard.last_heard(self.buffer.sender) + self.config.safety.heartbeat_timeout
        return min(self.buffer.expires, contact) + 1e-4

    def _freeze(self) -> None:
        """Hand the publisher the current view (a State without seq/stamp, swapped in atomically);
        a new observation or a change of mode goes out at once."""
        r = self.reading
        snapshot = P.State(
            boot=self.boot, seq=0, stamp=0.0, obs_stamp=self.obs_stamp, tick=self.tick, episode=self.episode,
            mode=self.mode, q=r.q, dq=r.dq, ee_pos=r.ee_pos, ee_quat=r.ee_quat, gripper=r.gripper,
            applied=self.applied, held=self.held, command_seq=self.last_command_seq, cmd_latency=self.last_latency,
            extra=r.extra, images=self.images, faults=self.faults + self.events, success=r.success,
            rejected=sum(self.stats.rejected.values()),
        )
        old = self._snapshot
        self._snapshot = snapshot
        if old is None or (snapshot.tick, snapshot.episode, snapshot.mode) != (old.tick, old.episode, old.mode):
            self._fresh.append(snapshot)  # even if the publisher is late, every tick goes out once
            self._new_obs.set()

    @property
    def mode(self) -> str:
        if self.stopped:
            return P.ROBOT_STOPPED
        return P.ROBOT_TRACK if self.buffer.active(self.clock()) else P.ROBOT_HOLD

    def _publish_loop(self) -> None:
        """The publisher thread: State at ``state_hz`` (at once on a new observation), Info at 1 Hz."""
        period = 1.0 / self.config.rates.state_hz
        next_state = next_info = self.clock()
        while not self._quit.is_set():
            self._new_obs.wait(max(0.0, next_state - self.clock()))
            self._new_obs.clear()
            now = self.clock()
            if not self._fresh and now < next_state:
                continue
            if self._info_due.is_set() or now >= next_info:
                self._info_due.clear()
                self.sockets.pub.send(P.encode(self._info_message()))
                next_info = now + 1.0
            fresh = bool(self._fresh)
            for snapshot in [self._fresh.popleft() for _ in range(len(self._fresh))] or [self._snapshot]:
                self.sockets.pub.send(P.encode(dataclasses.replace(snapshot, seq=self.seq, stamp=self.clock())))
                self.seq += 1
                self.stats.states += 1
            # a new observation re-phases the schedule; otherwise catch up at most one period
            next_state = now + period if fresh else max(next_state + period, now - period)

    def _info_message(self) -> P.Info:
        i, c = self.info, self.config
        return P.Info(
            boot=self.boot, robot=c.name, control_hz=c.rates.control_hz, state_hz=c.rates.state_hz, n_joints=i.n_joints,
            modes=i.modes, action_scale=(c.action_scale.translation, c.action_scale.rotation),
            command_port=self.sockets.command_port, cameras=i.cameras, extra=i.extra, task=i.task, instruction=i.instruction,
            horizon=i.horizon, seed=int(i.seed), camera_keys=dict(i.camera_keys), state_key=i.state_key,
        )
