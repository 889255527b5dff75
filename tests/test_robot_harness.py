"""The test harness's StateWatcher, on a real ZeroMQ PUB socket: a wait that times out says what did arrive."""

from __future__ import annotations

import re
import time

import msgpack
import numpy as np
import pytest
import zmq

from dp.link import protocol as P
from dp.testing.robot_harness import StateWatcher


def a_state(tick: int) -> P.State:
    return P.State(boot=1, seq=tick, stamp=0.0, obs_stamp=0.0, tick=tick, episode=3, mode=P.ROBOT_HOLD,
                   q=np.zeros(7), dq=np.zeros(7), ee_pos=np.zeros(3), ee_quat=np.array([0.0, 0.0, 0.0, 1.0]),
                   gripper=np.zeros(2), applied=np.zeros(7))


def test_a_timed_out_wait_names_the_states_seen_and_the_frames_rejected():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    watcher = StateWatcher(f"tcp://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 10
        while not watcher.states and time.monotonic() < deadline:  # until the subscription has joined
            pub.send(P.encode(a_state(5)))
            time.sleep(0.05)
        seen = len(watcher.states)
        wire = msgpack.unpackb(P.encode(a_state(6)), raw=False)
        wire["ee_pos"] = wire["applied"]  # 7 values where a position has 3
        pub.send(msgpack.packb(wire, use_bin_type=True))
        with pytest.raises(TimeoutError) as err:
            watcher.wait(lambda s: s.tick > 5, 1.0)
    finally:
        watcher.close()
        pub.close(linger=0)
        ctx.term()
    message = str(err.value)
    count = re.search(r"(\d+) States seen", message)
    assert count and int(count.group(1)) >= seen > 0, message  # a late copy of the valid State may still have come
    assert "the latest at tick 5 of episode 3 (hold)" in message, message
    assert "1 frames rejected" in message and "state.ee_pos" in message, message
