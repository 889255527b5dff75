"""Record a robot controller's State and executed commands as episodes (the real-robot path of
data collection): `dp collect --from tcp://HOST:PORT --out STORE --episodes N`.

Whatever drives the robot (a teleoperation device, a scripted expert, a policy), the recorder
only listens to the State stream. For each control tick it keeps the observation (the project's
key conventions: ``robot0_eef_pos``, ``robot0_eef_quat``, ``robot0_gripper_qpos``, the task state
``object``, cameras as ``<camera>_image``) and pairs it with the motion the controller executed
next (``State.applied``, after clamping), turned back into the dataset's action convention
(OSC_POSE delta divided by the robot's ``action_scale``, gripper -1/+1): frame ``t`` holds the
observation of tick ``t`` and the action that followed it, as in simulated demonstrations.

An episode ends when the controller starts a new one (a Reset), when the task reports success,
or after ``idle_end`` seconds in which nobody commanded the robot. Leading and trailing ticks in
which the robot only held are dropped. Each episode is appended to the store as it ends
(all-or-nothing); re-running the same command resumes until the store holds ``episodes``.

For `dp collect` (the command belongs to ``dp.collect.collect_cmd``)::

    add_recorder_arguments(parser)          # adds --from, --from-keys, --idle-end
    if args.from_endpoint:                  # uses args.out and args.episodes as well
        return run_recorder(args)
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq
from tqdm import tqdm

from dp.data.store import EpisodeStore
from dp.errors import DpError
from dp.link import protocol as P
from dp.link.transport import ClientSockets

log = logging.getLogger("dp.recorder")

ROBOT_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")


@dataclass
class Frame:
    """One control tick as the recorder saw it."""

    obs: dict[str, np.ndarray]
    applied: np.ndarray  # what the tick that produced this observation executed
    held: bool


@dataclass
class RecordSummary:
    episodes: int  # stored by this run
    frames: int
    successes: int
    discarded: int  # episodes cut by a controller restart or a gap in the State stream
    missed_ticks: int  # ticks never seen (the State stream dropped them): their episode is discarded
    rejected: int  # malformed States dropped
    store: str
    total_episodes: int = 0
    per_episode: list[dict] = field(default_factory=list)


def frames_to_episode(frames: list[Frame], action_scale: tuple[float, float]) -> dict[str, np.ndarray] | None:
    """Observations and the actions that followed them, leading/trailing holds trimmed; None if nobody commanded."""
    driven = [i for i in range(len(frames) - 1) if not frames[i + 1].held]
    if not driven:
        return None
    first, last = driven[0], driven[-1]
    scale = np.array([action_scale[0]] * 3 + [action_scale[1]] * 3, dtype=np.float64)
    actions = []
    for f in frames[first + 1:last + 2]:
        a = np.empty(7, dtype=np.float32)
        a[:6] = f.applied[:6] / scale
        a[6] = 1.0 if f.applied[6] > 0 else -1.0
        actions.append(a)
    keys = frames[first].obs.keys()
    data = {k: np.stack([f.obs[k] for f in frames[first:last + 1]]) for k in keys}
    data["action"] = np.stack(actions)
    return data


def stored_observation(state: P.State, camera_keys: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """The keys a recorded episode stores: the simulator's conventions (no joint keys, so a policy
    trained on recorded data takes the same observations as one trained in simulation); cameras
    under the keys the robot's Info names (``camera_keys``)."""
    full = P.observation_from_state(state, camera_keys)
    keep = [*ROBOT_KEYS, *state.extra, *(P.camera_key(cam, camera_keys) for cam in state.images)]
    return {k: full[k] for k in keep}


class _Recording:
    """One recording run's state: the store, the episode in progress and where the State stream is."""

    def __init__(self, out: Path, episodes: int, progress: bool):
        self.out, self.episodes, self.progress = out, episodes, progress
        self.store: EpisodeStore | None = EpisodeStore.open(out, mode="a") if out.exists() else None
        self.info: P.Info | None = None
        self.frames: list[Frame] = []
        self.episode_id = self.boot = self.skip = None
        self.driven = False  # a commanded tick is among the frames
        self.last_tick, self.last_command_time = -1, time.monotonic()
        self.summary = RecordSummary(0, 0, 0, 0, 0, 0, str(out))
        self.bar = None

    def done(self) -> bool:
        return self.store is not None and len(self.store) >= self.episodes

    def finish(self, success: bool) -> None:
        """End the episode in progress: store it if anybody commanded the robot in it."""
        info = self.info
        data = frames_to_episode(self.frames, info.action_scale) if info is not None else None
        self.frames.clear()
        self.driven = False
        if data is None:  # nobody commanded the robot in this stretch: nothing to store
            return
        if self.store is None:
            lowdim = [k for k in data if k != "action" and data[k].dtype != np.uint8]
            images = [k for k in data if data[k].dtype == np.uint8]
            self.store = EpisodeStore.create(self.out, control_freq=info.control_hz, robot=info.robot,
                                             roles={"lowdim": lowdim, "image": images, "action": ["action"]},
                                             discrete_dims={"action": [6]})
        meta = {"task": info.task or "teleop", "instruction": info.instruction or "", "success": bool(success),
                "source": "recorder", "seed": int(info.seed)}
        self.store.add_episode(data, meta)
        n, summary = len(data["action"]), self.summary
        summary.episodes += 1
        summary.frames += n
        summary.successes += int(success)
        summary.per_episode.append({"frames": n, "success": bool(success), "seed": int(info.seed)})
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(frames=summary.frames, success=f"{summary.successes}/{summary.episodes}")

    def _discard(self) -> None:
        self.summary.discarded += 1
        self.frames.clear()
        self.driven = False

    def on_info(self, info: P.Info) -> None:
        self.info = info
        if self.bar is None and self.progress:
            done = len(self.store) if self.store is not None else 0
            self.bar = tqdm(total=self.episodes, initial=done, desc=f"recording {self.out.name}", unit="episode")

    def on_state(self, s: P.State) -> None:
        """Add one State to the episode in progress, ending, discarding or skipping episodes as the stream says."""
        if self.info is None or self.info.boot != s.boot:
            return  # the Info of this controller run (action scale, rate) comes first
        if s.boot != self.boot or s.episode != self.episode_id:
            if self.frames and s.boot != self.boot:
                log.warning("controller restarted: the episode in progress is discarded")
                self._discard()
            elif self.frames:
                self.finish(False)
            self.boot, self.episode_id, self.last_tick, self.skip = s.boot, s.episode, -1, None
        if s.tick == self.last_tick or s.episode == self.skip:
            return
        if self.last_tick >= 0 and s.tick != self.last_tick + 1:
            self.summary.missed_ticks += s.tick - self.last_tick - 1
            log.warning("missed %d tick(s): the episode in progress is discarded", s.tick - self.last_tick - 1)
            self._discard()
            self.skip = s.episode
            return
        self.last_tick = s.tick
        if s.held and not self.driven:
            self.frames.clear()  # only the observation just before the first commanded tick is kept
        if not s.held:
            self.driven, self.last_command_time = True, time.monotonic()
        self.frames.append(Frame(stored_observation(s, self.info.camera_keys), s.applied.copy(), s.held))
        if s.success:
            self.finish(True)
            self.skip = s.episode  # the rest of this controller episode is after the success

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.store is not None:
            self.store.close()


def record_episodes(
    endpoint: str,
    out: str | Path,
    episodes: int,
    *,
    keys: Path | None = None,
    idle_end: float = 3.0,
    connect_timeout: float = 60.0,
    should_stop=lambda: False,
    progress: bool = True,
) -> RecordSummary:
    """Record from the controller at ``endpoint`` into the episode store ``out`` until it holds
    ``episodes`` episodes (creating it from the controller's Info if missing)."""
    out = Path(out)
    sockets = ClientSockets(endpoint, keys)
    rec = _Recording(out, episodes, progress)
    guard = P.SeqGuard()
    start = time.monotonic()
    try:
        if rec.done():
            log.info("%s already holds %d episodes", out, len(rec.store))
        while not should_stop() and not rec.done():
            now = time.monotonic()
            if rec.driven and idle_end > 0 and now - rec.last_command_time > idle_end:
                rec.finish(False)  # nobody has commanded for a while; what follows is a new episode
            if not sockets.sub.poll(timeout=100, flags=zmq.POLLIN):
                if rec.boot is None and now - start > connect_timeout:
                    raise DpError(f"no State from {endpoint} within {connect_timeout:.0f} s")
                continue
            try:
                msg = P.decode(sockets.sub.recv(zmq.NOBLOCK), accept=(P.State, P.Info))
                if isinstance(msg, P.State):
                    guard.check(msg.boot, msg.seq, "state.seq")
            except P.ProtocolError:
                rec.summary.rejected += 1
                continue
            if isinstance(msg, P.Info):
                rec.on_info(msg)
            else:
                rec.on_state(msg)
        rec.summary.total_episodes = len(rec.store) if rec.store is not None else 0
        return rec.summary
    finally:
        rec.close()
        sockets.close()


def add_recorder_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `dp collect` needs for recording from a controller (it already has --out, --episodes)."""
    parser.add_argument("--from", dest="from_endpoint", metavar="ENDPOINT",
                        help="record from a robot controller's State endpoint (tcp://HOST:PORT) instead of simulating")
    parser.add_argument("--from-keys", type=Path, help="CURVE key folder for an authenticated controller (with --from)")
    parser.add_argument("--idle-end", type=float, default=3.0,
                        help="with --from: end an episode after this many seconds without commands (0: only at a reset or success)")


def run_recorder(args: argparse.Namespace) -> int:
    """`dp collect --from ...`: record ``args.episodes`` episodes into ``args.out``."""
    import signal

    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(1))
    summary = record_episodes(args.from_endpoint, args.out, args.episodes, keys=args.from_keys,
                              idle_end=args.idle_end, should_stop=lambda: bool(stopping))
    print(f"recorded {summary.episodes} episodes ({summary.frames} frames, {summary.successes} successes) into "
          f"{summary.store}; {summary.total_episodes} in the store; discarded {summary.discarded}, "
          f"missed ticks {summary.missed_ticks}, rejected states {summary.rejected}", flush=True)
    return 0 if summary.total_episodes >= args.episodes else 1
