"""Run controllers and nodes as real processes and watch their State stream from outside.

Used by the deploy tests, ``bench/deploy.py`` and anything that needs to drive the deploy path
programmatically: :func:`spawn_dp` starts ``python -m dp ...`` with its output collected line by
line, :func:`start_robot` waits for a controller to be ready and returns its State endpoint,
:class:`StateWatcher` records every State a subscriber sees, :class:`Commander` speaks to a
controller as a node would (or as an attacker would: raw frames).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import zmq

from dp.link import protocol as P
from dp.link.transport import split_endpoint

_READY = re.compile(r"ready .*state (tcp://[^,\s]+), commands port (\d+)")


class DpProcess:
    """``python -m dp ARGS`` with stdout+stderr collected into ``lines``."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None):
        self.args = args
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "dp", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in iter(self.popen.stdout.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", errors="replace").rstrip("\n"))
                self._cond.notify_all()
        self.popen.stdout.close()

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        """The first output line matching ``pattern``; TimeoutError (with the output) otherwise."""
        rx, deadline, seen = re.compile(pattern), time.monotonic() + timeout, 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and seen == len(self.lines)):
                    raise TimeoutError(f"dp {' '.join(self.args)}: no line matching {pattern!r}; output:\n" + self.output)
                self._cond.wait(min(left, 0.2))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then SIGKILL after ``timeout``; the exit code, once every line the process wrote is in ``lines``."""
        self.signal(signal.SIGINT)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.popen.wait()
        self._reader.join(timeout)  # the process has exited; its last lines (the shutdown summary) may still be in the pipe
        return code


def spawn_dp(args: list[str], env: dict[str, str] | None = None) -> DpProcess:
    return DpProcess(args, env)


def start_robot(*overrides: str, port: int = 0, robot: str = "robots/panda_sim.yaml", timeout: float = 120.0,
                env: dict[str, str] | None = None) -> tuple[DpProcess, str]:
    """A `dp robot` process on loopback (port 0: a free one) and its State endpoint, once it is ready;
    ``env`` is added to its environment."""
    proc = spawn_dp(["robot", "--robot", robot, *overrides, "--bind", f"tcp://127.0.0.1:{port}", "--command-port", "0"], env)
    try:
        return proc, proc.wait_for(_READY.pattern, timeout).group(1)
    except TimeoutError:
        proc.stop()
        raise


def watched_robot(robot: str = "robots/panda_sim.yaml", info_timeout: float = 30.0, overrides: tuple[str, ...] = (),
                  env: dict[str, str] | None = None) -> Iterator[tuple[DpProcess, str, StateWatcher, P.Info]]:
    """A `dp robot` process (``overrides`` and ``env`` as :func:`start_robot`'s) with a StateWatcher on it,
    for a pytest fixture to ``yield from``; on teardown the watcher closes and the robot must still be
    alive and stop cleanly."""
    proc, endpoint = start_robot(*overrides, robot=robot, env=env)
    watcher = StateWatcher(endpoint)
    info = watcher.wait_info(info_timeout)
    yield proc, endpoint, watcher, info
    watcher.close()
    assert proc.alive(), proc.output
    assert proc.stop() == 0, proc.output


class StateWatcher:
    """Subscribes to a controller and keeps every valid State with its arrival time (monotonic)."""

    def __init__(self, endpoint: str, on_state: Callable[[float, P.State], None] | None = None):
        self.endpoint = endpoint
        self.states: list[tuple[float, P.State]] = []
        self.infos: list[P.Info] = []
        self.rejected = 0
        self.last_error: P.ProtocolError | None = None  # why the latest rejected frame was rejected
        self.on_state = on_state
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.connect(self.endpoint)
        while not self._stop.is_set():
            if not sub.poll(50):
                continue
            frame = sub.recv()
            now = time.monotonic()
            try:
                msg = P.decode(frame, accept=(P.State, P.Info))
            except P.ProtocolError as e:
                self.rejected += 1
                self.last_error = e
                continue
            with self._cond:
                if isinstance(msg, P.Info):
                    self.infos.append(msg)
                else:
                    self.states.append((now, msg))
                    if self.on_state:
                        self.on_state(now, msg)
                self._cond.notify_all()
        sub.close(linger=0)
        ctx.term()

    def wait(self, predicate: Callable[[P.State], bool], timeout: float, after: int = 0) -> tuple[float, P.State]:
        """The first recorded State (from index ``after``) satisfying ``predicate``."""
        deadline, i = time.monotonic() + timeout, after
        with self._cond:
            while True:
                while i < len(self.states):
                    t, s = self.states[i]
                    if predicate(s):
                        return t, s
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no State satisfying the condition within {timeout} s: {self._seen()}")
                self._cond.wait(min(left, 0.1))

    def _seen(self) -> str:
        """What arrived, for a timeout's message: the States, the latest one, the frames rejected and why."""
        where = ""
        if self.states:
            arrived, last = self.states[-1]
            where = f", the latest at tick {last.tick} of episode {last.episode} ({last.mode}) {time.monotonic() - arrived:.1f} s ago"
        why = f" (the latest: {self.last_error})" if self.last_error else ""
        return f"{len(self.states)} States seen{where}; {self.rejected} frames rejected{why}"

    def wait_info(self, timeout: float) -> P.Info:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.infos:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no Info from {self.endpoint} within {timeout} s")
                self._cond.wait(min(left, 0.1))
            return self.infos[-1]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class Commander:
    """Talks to a controller's command port directly: messages with a sender id and rising seq, or raw frames."""

    def __init__(self, endpoint: str, command_port: int):
        host, _ = split_endpoint(endpoint)
        self.ctx = zmq.Context()
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.setsockopt(zmq.SNDHWM, 100_000)
        self.push.connect(f"tcp://{host}:{command_port}")
        self.sender = P.new_id()
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, msg: P.Message) -> None:
        self.push.send(P.encode(msg))

    def control(self, kind: type, state: P.State, *args) -> P.Message:
        """Send a Heartbeat, Stop, Release or Reset (``args``: its reason or seed) addressed to the
        controller run of ``state``, stamped with that State's stamp; returns the message."""
        msg = kind(self.sender, self.next_seq(), state.boot, state.stamp, *args)
        self.send(msg)
        return msg

    def send_raw(self, frame: bytes) -> None:
        self.push.send(frame)

    def close(self) -> None:
        self.push.close(linger=0)
        self.ctx.term()
