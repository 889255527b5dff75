"""Start the processes a launch file names, prefix their output, stop them all cleanly.

  dp launch launch/sim_deploy.yaml                                  sim controller + inference node
  dp launch sim_deploy --set policy=exported/lift --set episodes=20 --json-out deploy.json
  dp launch launch/sim_deploy.yaml --dry-run                        print the command lines only

A launch file (YAML)::

    description: what it runs
    vars: {policy: expert:lift, port: 5555}     # ${name} anywhere in command, args, env; --set name=value
    processes:
      - name: robot
        command: dp                 # `dp` is this installation's dp (python -m dp); others via PATH
        args: [robot, --bind, "tcp://127.0.0.1:${port}"]
        env: {MUJOCO_GL: egl}       # added to the launch's own environment
        required: true              # when it exits, everything stops; the launch exits with failure
                                    # unless it exited 0 (a finished job, e.g. a node after N episodes)
        restart: never              # never | on-failure | always  (processes that are not required)
        max_restarts: 3
        restart_delay: 1.0          # seconds
        start_delay: 0.0            # seconds after the launch starts
        stop_timeout: 5.0           # seconds between SIGINT and SIGKILL when stopping

Ctrl-C (or SIGTERM) stops every process (SIGINT to its process group, SIGKILL after
``stop_timeout``), last started first, and the launch exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dp.config import from_dict
from dp.deploy.robot_config import resolve_file
from dp.errors import DpError
from dp.files import read_yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
RESTART_POLICIES = ("never", "on-failure", "always")


@dataclass
class ProcessSpec:
    name: str = ""
    command: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    required: bool = True
    restart: str = "never"
    max_restarts: int = 3
    restart_delay: float = 1.0
    start_delay: float = 0.0
    stop_timeout: float = 5.0


@dataclass
class LaunchFile:
    description: str = ""
    vars: dict[str, str] = field(default_factory=dict)
    processes: list[ProcessSpec] = field(default_factory=list)


def load_launch(path: str | Path, overrides: dict[str, str]) -> tuple[Path, LaunchFile]:
    """Read a launch file, apply ``--set`` values and substitute every ``${var}``."""
    file = resolve_file(path, "launch")
    raw = read_yaml(file) or {}
    try:
        spec = from_dict(LaunchFile, raw)
    except DpError as exc:
        raise DpError(f"{file}: {exc}") from None
    unknown = sorted(set(overrides) - set(spec.vars))
    if unknown:
        raise DpError(f"{file}: --set {', '.join(unknown)}: not a variable of this file (variables: {', '.join(sorted(spec.vars)) or 'none'})")
    values = {**spec.vars, **overrides}

    def sub(text: str, where: str) -> str:
        def one(m: re.Match) -> str:
            if m.group(1) not in values:
                raise DpError(f"{file}: {where}: unknown variable ${{{m.group(1)}}} (variables: {', '.join(sorted(values))})")
            return str(values[m.group(1)])

        return _VAR.sub(one, text)

    names = set()
    if not spec.processes:
        raise DpError(f"{file}: no processes")
    for i, p in enumerate(spec.processes):
        where = f"processes[{i}]"
        if not p.name or not p.command:
            raise DpError(f"{file}: {where}: needs a name and a command")
        if p.name in names:
            raise DpError(f"{file}: {where}: duplicate name {p.name!r}")
        names.add(p.name)
        if p.restart not in RESTART_POLICIES:
            raise DpError(f"{file}: {where}.restart: expected one of {', '.join(RESTART_POLICIES)}, got {p.restart!r}")
        if p.required and p.restart != "never":
            raise DpError(f"{file}: {where}: a required process ends the launch when it exits; restart must be never")
        p.command = sub(p.command, f"{where}.command")
        p.args = [sub(a, f"{where}.args") for a in p.args]
        p.env = {k: sub(v, f"{where}.env.{k}") for k, v in p.env.items()}
    return file, spec


def command_line(p: ProcessSpec) -> list[str]:
    if p.command == "dp":
        return [sys.executable, "-m", "dp", *p.args]
    exe = shutil.which(p.command)
    if exe is None:
        raise DpError(f"process {p.name!r}: command {p.command!r} not found on PATH")
    return [exe, *p.args]


class _Running:
    """One process of the launch and the thread that copies its output, line by line, prefixed."""

    def __init__(self, spec: ProcessSpec, width: int, out_lock: threading.Lock):
        self.spec, self.width, self.lock = spec, width, out_lock
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.reported = False  # its exit has been announced
        self.reader: threading.Thread | None = None

    def start(self) -> None:
        env = {**os.environ, **self.spec.env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            command_line(self.spec), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,  # own process group: signals reach its children too
        )
        self.reader = threading.Thread(target=self._copy, args=(self.proc.stdout,), daemon=True)
        self.reader.start()
        say(f"started {self.spec.name} (pid {self.proc.pid}): {' '.join(command_line(self.spec))}", self.lock)

    def _copy(self, stream) -> None:
        prefix = f"[{self.spec.name}]".ljust(self.width + 2) + " "
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            with self.lock:
                sys.stdout.write(prefix + line + "\n")
                sys.stdout.flush()
        stream.close()

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def wait_output(self) -> None:
        if self.reader is not None:
            self.reader.join(timeout=2.0)


def say(message: str, lock: threading.Lock) -> None:
    with lock:
        sys.stdout.write(f"[launch] {message}\n")
        sys.stdout.flush()


def stop_all(procs: list[_Running], lock: threading.Lock) -> None:
    """SIGINT to each running process, last started first; SIGKILL to whoever outlives its stop_timeout."""
    for r in reversed(procs):
        if r.poll() is None:
            say(f"stopping {r.spec.name}", lock)
            r.signal(signal.SIGINT)
            deadline = time.monotonic() + r.spec.stop_timeout
            while r.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if r.poll() is None:
                say(f"{r.spec.name} did not stop within {r.spec.stop_timeout:g} s: killing it", lock)
                r.signal(signal.SIGKILL)
                r.proc.wait()
    for r in procs:
        r.wait_output()


def launch(spec: LaunchFile, stop_requested=lambda: False) -> int:
    """Run the launch until a required process exits, everything ends, or ``stop_requested()``."""
    lock = threading.Lock()
    width = max(len(p.name) for p in spec.processes)
    procs = [_Running(p, width, lock) for p in spec.processes]
    t0 = time.monotonic()
    pending = list(procs)  # not started yet (start_delay)
    restart_at: dict[int, float] = {}
    try:
        while True:
            if stop_requested():
                say("interrupted: stopping everything", lock)
                return 130
            now = time.monotonic()
            for r in [r for r in pending if now - t0 >= r.spec.start_delay]:
                r.start()
                pending.remove(r)
            for i, r in enumerate(procs):
                rc = r.poll()
                if rc is None or r in pending or i in restart_at:
                    continue
                if r.spec.required:
                    r.wait_output()
                    if rc == 0:
                        say(f"{r.spec.name} finished: stopping the others", lock)
                        return 0
                    say(f"{r.spec.name} (required) exited with code {rc}: stopping everything", lock)
                    return 1
                wants = r.spec.restart == "always" or (r.spec.restart == "on-failure" and rc != 0)
                if wants and r.restarts < r.spec.max_restarts:
                    r.restarts += 1
                    say(f"{r.spec.name} exited with code {rc}: restart {r.restarts}/{r.spec.max_restarts} "
                        f"in {r.spec.restart_delay:g} s", lock)
                    restart_at[i] = now + r.spec.restart_delay
                elif not r.reported:
                    r.reported = True
                    say(f"{r.spec.name} exited with code {rc}" + (" (no restarts left)" if wants else ""), lock)
            for i, when in list(restart_at.items()):
                if now >= when:
                    del restart_at[i]
                    procs[i].start()
            if not pending and not restart_at and all(r.poll() is not None for r in procs):
                failed = [r.spec.name for r in procs if r.poll() != 0]
                say("every process has ended" + (f"; failed: {', '.join(failed)}" if failed else ""), lock)
                return 1 if failed else 0
            time.sleep(0.05)
    finally:
        stop_all([r for r in procs if r.proc is not None], lock)


def _parse_set(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DpError(f"--set {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


EXAMPLE = "dp launch sim_deploy --set policy=exported/lift --set episodes=20 --json-out deploy.json"  # ends `dp launch --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="launch file (YAML), e.g. launch/sim_deploy.yaml or just sim_deploy")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="set a variable of the launch file (repeatable)")
    parser.add_argument("--json-out", help="shorthand for --set json_out=PATH (files that declare json_out write their report there)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved command lines and exit")


def run(args: argparse.Namespace) -> int:
    overrides = _parse_set(args.set)
    if args.json_out:
        overrides["json_out"] = args.json_out
    file, spec = load_launch(args.file, overrides)
    if args.dry_run:
        for p in spec.processes:
            env = " ".join(f"{k}={v}" for k, v in p.env.items())
            print(f"{p.name}: {env + ' ' if env else ''}{' '.join(command_line(p))}")
        return 0
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: stopping.append(s))
    print(f"[launch] {file}: {spec.description or ''}".rstrip(), flush=True)
    return launch(spec, stop_requested=lambda: bool(stopping))
