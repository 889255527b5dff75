"""The deploy path with real processes and real sockets on loopback: a `dp robot` sim controller
and `dp node`, the watchdog, controller restarts, a fuzz of malformed messages, and clamping
against an adversarial policy."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from dp.deploy.robot_config import load_robot
from dp.deploy.safety import Limits
from dp.link import protocol as P
from dp.link.transport import free_port
from dp.testing.robot_harness import Commander, StateWatcher, spawn_dp, start_robot, watched_robot

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out

TESTS = Path(__file__).parent
NODE_ENV = {"PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])}


# --------------------------------------------------------------------------- test policies (run inside `dp node`)
class DriftPolicy:
    """Moves slowly along x and sends a 1 s chunk: after its node dies, only the heartbeat watchdog stops it."""

    def reset(self, instruction=None):
        pass

    def select_action(self, obs):
        return np.array([0.05, 0, 0, 0, 0, 0, -1], dtype=np.float32)

    def pending_actions(self):
        return np.tile(self.select_action(None), (19, 1))


class AdversarialPolicy:
    """Erratic actions far beyond every per-step limit, though not so far as to be refused as absurd
    (now and then NaN or a wrong shape), in long chunks."""

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def reset(self, instruction=None):
        pass

    def select_action(self, obs):
        r = self.rng.random()
        if r < 0.05:
            return np.full(7, np.nan, dtype=np.float32)
        if r < 0.08:
            return np.zeros(3, dtype=np.float32)
        return (self.rng.normal(size=7) * 10 ** self.rng.uniform(0, 1.3)).astype(np.float32)

    def pending_actions(self):
        return self.rng.normal(size=(5, 7)) * 10


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def robot():
    yield from watched_robot()


def reset(watcher: StateWatcher, endpoint: str, info: P.Info, seed: int = 0) -> P.State:
    cmd = Commander(endpoint, info.command_port)
    time.sleep(0.2)  # connect
    episode = watcher.states[-1][1].episode
    cmd.control(P.Reset, watcher.states[-1][1], seed)
    _, s = watcher.wait(lambda s: s.episode > episode, 10, after=len(watcher.states) - 1)
    cmd.close()
    return s


def release(watcher: StateWatcher, endpoint: str, info: P.Info) -> P.State:
    """An operator's Release of a Stop; the first State after it that is not stopped."""
    cmd = Commander(endpoint, info.command_port)
    time.sleep(0.2)  # connect
    cmd.control(P.Release, watcher.states[-1][1], "test over")
    _, s = watcher.wait(lambda s: s.mode != P.ROBOT_STOPPED, 10, after=len(watcher.states) - 1)
    cmd.close()
    return s


# --------------------------------------------------------------------------- tests
def test_node_drives_the_sim_controller_to_success(robot, tmp_path):
    proc, endpoint, watcher, info = robot
    report = tmp_path / "node.json"
    node = spawn_dp(["node", "--policy", "expert:lift", "--robot", endpoint, "--episodes", "2", "--json-out", str(report),
                     "--timings", str(tmp_path / "timings.jsonl")])
    assert node.popen.wait(120) == 0, node.output
    figures = json.loads(report.read_text())
    assert figures["episodes"] == 2 and figures["success_rate"] == 1.0, figures
    assert figures["obs_to_command_ms"]["n"] > 50 and figures["obs_to_command_ms"]["median"] < 25, figures
    assert figures["policy_errors"] == 0 and figures["rejected_states"] == 0
    timings = [json.loads(line) for line in (tmp_path / "timings.jsonl").read_text().splitlines()]
    assert len(timings) >= sum(e["steps"] for e in figures["per_episode"]) - 4
    # the State stream ran at >= 100 Hz throughout
    stamps = np.array([s.stamp for _, s in watcher.states[-400:]])
    assert (len(stamps) - 1) / (stamps[-1] - stamps[0]) >= 97.0


def test_killing_the_node_makes_the_controller_hold_within_its_timeout(robot):
    proc, endpoint, watcher, info = robot
    timeout = load_robot("robots/panda_sim.yaml").safety.heartbeat_timeout
    reset(watcher, endpoint, info)
    node = spawn_dp(["node", "--policy", "test_deploy_e2e:DriftPolicy", "--robot", endpoint], env=NODE_ENV)
    try:
        watcher.wait(lambda s: s.mode == P.ROBOT_TRACK, 60, after=len(watcher.states) - 1)
        time.sleep(0.3)
        node.signal(signal.SIGKILL)
        killed = time.monotonic()  # the same clock as the controller's stamps (one machine)
        n = len(watcher.states)
        _, s_hold = watcher.wait(lambda s: s.mode == P.ROBOT_HOLD, 5, after=n)
    finally:
        node.signal(signal.SIGKILL)
    # the 1 s chunk would have kept it moving: the heartbeat watchdog stopped it
    reaction = s_hold.stamp - killed
    assert timeout - 0.1 <= reaction <= timeout + 0.1, (reaction, timeout)
    assert "heartbeat_timeout" in s_hold.faults
    time.sleep(0.3)
    after = [s for _, s in watcher.states if s.stamp > s_hold.stamp + 0.11]  # two ticks later
    assert after and all(s.held and s.mode == P.ROBOT_HOLD and s.command_seq == s_hold.command_seq for s in after)
    assert proc.alive()


def test_killing_the_controller_stops_the_node_and_they_resynchronise(tmp_path):
    port = free_port()
    first, endpoint = start_robot(port=port)
    timings = tmp_path / "timings.jsonl"
    node = spawn_dp(["node", "--policy", "expert:lift", "--robot", endpoint, "--timings", str(timings)])
    second = None
    try:
        watcher = StateWatcher(endpoint)
        watcher.wait(lambda s: s.mode == P.ROBOT_TRACK, 60)
        first.signal(signal.SIGKILL)
        node.wait_for("controller silent", 5)
        time.sleep(0.2)  # a cycle in flight may still finish
        sent = len(timings.read_text().splitlines())
        time.sleep(1.0)
        assert len(timings.read_text().splitlines()) == sent  # no command while the controller is away
        assert node.alive()
        second, _ = start_robot(port=port)
        node.wait_for("controller restarted", 60)
        n = len(watcher.states)
        watcher.wait(lambda s: s.mode == P.ROBOT_TRACK, 30, after=n)  # commanding the new controller
        # the node logs a cycle after sending its command, so the controller may track before the line lands
        deadline = time.monotonic() + 5
        while len(timings.read_text().splitlines()) <= sent and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(timings.read_text().splitlines()) > sent
        watcher.close()
    finally:
        node.stop()
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.output


def _malformed_states(template: bytes, older: list[bytes], n: int, rng) -> list[bytes]:
    """n frames a node must reject: mutated frames that fail validation, and replays of old States."""
    out: list[bytes] = []
    while len(out) < n:
        kind = len(out) % 5
        if kind == 0:
            out.append(older[int(rng.integers(len(older)))])  # out of order
            continue
        frame = bytearray(template)
        if kind == 1:
            for pos in rng.integers(0, len(frame), size=4):
                frame[pos] = int(rng.integers(256))
        elif kind == 2:
            frame = frame[: int(rng.integers(len(frame)))]
        elif kind == 3:
            frame = bytearray(rng.integers(0, 256, size=int(rng.integers(1, 200)), dtype=np.uint8).tobytes())
        else:
            d = P.State.from_wire(msgpack.unpackb(template, raw=False)).to_wire()
            d.update(v=1, type="state", ee_pos=P.pack_array(np.array([np.nan, 0, 0])))
            frame = bytearray(msgpack.packb(d, use_bin_type=True))
        try:
            P.decode(bytes(frame))
        except P.ProtocolError:
            out.append(bytes(frame))
    return out


def _malformed_commands(info: P.Info, boot: int, n: int, rng) -> list[bytes]:
    # for another controller run: a mutation that happens to stay well-formed is still refused
    good = P.encode(P.Command(1, 1, boot ^ 1, 0.0, "ee_delta", np.array([1.0]), np.zeros((1, 6)), np.zeros(1), 2.0))
    out: list[bytes] = []
    while len(out) < n:
        kind = len(out) % 6
        if kind == 0:
            frame = bytearray(good)
            for pos in rng.integers(0, len(frame), size=3):
                frame[pos] = int(rng.integers(256))
            frame = bytes(frame)
        elif kind == 1:
            frame = good[: int(rng.integers(len(good)))]
        elif kind == 2:
            frame = rng.integers(0, 256, size=int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
        elif kind == 3:  # non-finite waypoints, wrong version, bad mode
            d = msgpack.unpackb(good, raw=False)
            key, value = [("waypoints", P.pack_array(np.full((1, 6), np.inf))), ("v", 99), ("mode", "warp")][int(rng.integers(3))]
            d[key] = value
            frame = msgpack.packb(d, use_bin_type=True)
        elif kind == 4:  # oversized (over the command limit, under the transport cap)
            frame = good + b"\x00" * (P.MAX_COMMAND_BYTES + int(rng.integers(1, 1000)))
        else:  # well-formed but for another controller run: must not be executed
            frame = P.encode(P.Command(2, len(out), boot ^ 1, 0.0, "ee_delta", np.array([1.0]), np.ones((1, 6)), np.ones(1), 2.0))
        out.append(frame)
    return out


def test_fuzz_ten_thousand_malformed_messages_each_way(robot, tmp_path):
    """A man in the middle forwards the controller's States to the node with malformed frames
    mixed in, while an attacker floods the controller's command port; both stay up and the node
    still succeeds, and each side counts what it dropped."""
    proc, endpoint, watcher, info = robot
    n = 10_000
    rng = np.random.default_rng(3)
    _, last = watcher.wait(lambda s: True, 10, after=max(0, len(watcher.states) - 1))
    older = [P.encode(s) for _, s in watcher.states[-50:]]
    bad_states = _malformed_states(older[-1], older, n, rng)
    bad_commands = _malformed_commands(info, last.boot, n, rng)
    rejected_before = watcher.states[-1][1].rejected

    ctx = zmq.Context()
    sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    mitm_port = pub.bind_to_random_port("tcp://127.0.0.1")
    stop, inject = threading.Event(), threading.Event()
    injected = [0]

    def forward():
        queue = list(bad_states)
        while not stop.is_set():
            if sub.poll(5):
                pub.send(sub.recv())
                if inject.is_set():  # ~100 bad frames after every good one: 10,000 within a second or two
                    for frame in queue[:100]:
                        pub.send(frame)
                    injected[0] += len(queue[:100])
                    queue = queue[100:]

    mitm = threading.Thread(target=forward, daemon=True)
    mitm.start()
    report = tmp_path / "node.json"
    node = spawn_dp(["node", "--policy", "expert:lift", "--robot", f"tcp://127.0.0.1:{mitm_port}", "--episodes", "1",
                     "--seed", "1", "--json-out", str(report), "--max-steps", "400"])
    attacker = Commander(endpoint, info.command_port)
    try:
        node.wait_for("episode .* started", 60)  # the node is subscribed: nothing injected is lost
        inject.set()
        for frame in bad_commands:
            attacker.send_raw(frame)
        assert node.popen.wait(120) == 0, node.output
    finally:
        stop.set()
        mitm.join(2)
        attacker.close()
        sub.close(linger=0)
        pub.close(linger=0)
        ctx.term()
        node.signal(signal.SIGKILL)
    figures = json.loads(report.read_text())
    assert injected[0] == n
    assert figures["success_rate"] == 1.0, figures
    assert figures["rejected_states"] >= n * 0.99, figures  # the node saw (nearly) all of them
    _, s = watcher.wait(lambda s: s.rejected - rejected_before >= n, 20, after=len(watcher.states) - 1)
    assert s.rejected - rejected_before == n  # every malformed command counted, none executed
    assert proc.alive()
    # still consistent: seq and ticks move forward, the robot still answers
    recent = [s for _, s in watcher.states[-200:]]
    assert all(b.seq > a.seq and b.tick >= a.tick for a, b in zip(recent, recent[1:]))


def test_adversarial_commands_are_clamped_never_executed_as_sent(robot):
    proc, endpoint, watcher, info = robot
    config = load_robot("robots/panda_sim.yaml")
    limits = Limits.from_config(config.limits, config.rates.control_hz)
    reset(watcher, endpoint, info, seed=4)
    start = len(watcher.states)
    node = spawn_dp(["node", "--policy", "test_deploy_e2e:AdversarialPolicy", "--robot", endpoint], env=NODE_ENV)
    attacker = Commander(endpoint, info.command_port)
    rng = np.random.default_rng(5)
    try:
        watcher.wait(lambda s: s.mode == P.ROBOT_TRACK, 60, after=start)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # a second commander with far poses and wild joint targets
            s = watcher.states[-1][1]
            t = s.obs_stamp + 0.05 * np.arange(1, 4)
            if rng.random() < 0.5:
                quats = rng.normal(size=(3, 4))
                quats /= np.linalg.norm(quats, axis=1, keepdims=True)
                wps = np.concatenate([rng.normal(size=(3, 3)), quats], axis=1)
                msg = P.Command(attacker.sender, attacker.next_seq(), s.boot, s.obs_stamp, "ee_pose", t, wps, rng.normal(size=3) * 9, t[-1])
            else:
                msg = P.Command(attacker.sender, attacker.next_seq(), s.boot, s.obs_stamp, "joint", t, rng.normal(size=(3, 7)) * 2, rng.normal(size=3), t[-1])
            attacker.send(msg)
            time.sleep(0.02)
        attacker.control(P.Stop, watcher.states[-1][1], "test over")
        t_stop = time.monotonic()
        t_stopped, _ = watcher.wait(lambda s: s.mode == P.ROBOT_STOPPED, 2, after=len(watcher.states) - 1)
        assert t_stopped - t_stop < 0.1
        time.sleep(0.3)
    finally:
        node.signal(signal.SIGKILL)
        attacker.close()
    by_tick: dict[int, P.State] = {}
    for _, s in watcher.states[start:]:
        by_tick.setdefault(s.tick, s)
    checked, faults = 0, set()
    for tick, s in sorted(by_tick.items()):
        prev = by_tick.get(tick - 1)
        faults.update(s.faults)
        if prev is None or s.held or s.episode != prev.episode:
            continue
        dpos, drot, grip = s.applied[:3], s.applied[3:6], s.applied[6]
        assert np.linalg.norm(dpos) <= limits.step_translation + 1e-9
        assert np.linalg.norm(drot) <= limits.step_rotation + 1e-9
        assert -1.0 <= grip <= 1.0
        goal = prev.ee_pos + dpos
        assert ((goal >= limits.box_min - 1e-9) & (goal <= limits.box_max + 1e-9)).all(), (tick, goal)
        assert ((s.ee_pos >= limits.box_min - 0.03) & (s.ee_pos <= limits.box_max + 0.03)).all(), (tick, s.ee_pos)
        checked += 1
    assert checked >= 40
    assert {"clamped:translation", "clamped:rotation", "clamped:gripper"} <= faults, faults
    assert any(f.startswith("clamped:joint") for f in faults) and "clamped:workspace" in faults, faults
    stopped = [s for _, s in watcher.states[-10:]]
    assert all(s.mode == P.ROBOT_STOPPED and s.held for s in stopped)  # the stop latches
    release(watcher, endpoint, info)
    assert watcher.states[-1][1].mode == P.ROBOT_HOLD  # an operator's release clears it


def test_template_driver_dry_run_follows_pose_commands_and_refuses_other_modes():
    proc, endpoint = start_robot("driver.options.dry_run=true", robot="robots/panda_template.yaml")
    watcher = StateWatcher(endpoint)
    try:
        info = watcher.wait_info(30)
        assert info.robot == "panda_real" and info.modes == ["ee_delta", "ee_pose"]
        cmd = Commander(endpoint, info.command_port)
        time.sleep(0.3)
        s = watcher.states[-1][1]
        t = s.obs_stamp + 0.05 * np.arange(1, 11)
        far = np.tile([0.9, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0], (10, 1))  # beyond the workspace box (x <= 0.75)
        cmd.send(P.Command(cmd.sender, cmd.next_seq(), s.boot, s.obs_stamp, "ee_pose", t, far, np.ones(10), float(t[-1])))
        cmd.send(P.Command(cmd.sender, cmd.next_seq(), s.boot, s.obs_stamp, "joint", t[:1], np.zeros((1, 7)), np.ones(1), float(t[0])))
        n = len(watcher.states)
        _, moving = watcher.wait(lambda s: not s.held, 5, after=n)
        _, refused = watcher.wait(lambda s: s.rejected >= 1, 5, after=n)
        cmd.close()
    finally:
        watcher.close()
        assert proc.stop() == 0, proc.output
    # the template's arm does not move, so every tick asks for the same clamped step toward the box edge
    assert np.linalg.norm(moving.applied[:3]) <= 0.015 + 1e-9 and moving.applied[0] > 0
    assert "clamped:translation" in moving.faults
    assert refused.rejected == 1 and "rejected 1 (command.mode 1)" in proc.output
