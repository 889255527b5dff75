"""The controller protocol: round trips, validation naming the field, sequence checks, a decode fuzz."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from dp.errors import DpError
from dp.link import protocol as P


def make_state(images: str | None = None, **kw) -> P.State:
    rng = np.random.default_rng(0)
    frames = {}
    if images:
        px = np.zeros((24, 32, 3), dtype=np.uint8)
        px[:, :16, 0] = 220  # red left half, blue right half: JPEG keeps it and the channel order shows
        px[:, 16:, 2] = 220
        frames = {"agentview": P.CameraFrame.jpeg(px) if images == "jpeg" else P.CameraFrame(px)}
    fields = dict(
        boot=7, seq=3, stamp=10.5, obs_stamp=10.49, tick=2, episode=1, mode="track",
        q=rng.normal(size=7), dq=rng.normal(size=7), ee_pos=np.array([0.1, 0.0, 1.0]),
        ee_quat=np.array([1.0, 0.0, 0.0, 0.0]), gripper=np.array([0.02, -0.02]), applied=np.zeros(7), held=False,
        extra={"object": rng.normal(size=10).astype(np.float32)}, images=frames, faults=["clamped:rotation"], success=False,
    )
    fields.update(kw)
    return P.State(**fields)


def make_command(**kw) -> P.Command:
    fields = dict(sender=5, seq=1, boot=7, obs_stamp=1.0, mode="ee_delta", times=np.array([1.05, 1.10]),
                  waypoints=np.zeros((2, 6)), gripper=np.array([-1.0, 1.0]), expires=1.2)
    fields.update(kw)
    return P.Command(**fields)


def wire(msg) -> dict:
    return msgpack.unpackb(P.encode(msg), raw=False)


def reencode(d: dict) -> bytes:
    return msgpack.packb(d, use_bin_type=True)


def test_round_trip_every_message():
    for msg in [make_command(), make_command(mode="ee_pose", waypoints=np.array([[0, 0, 1, 0, 0, 0, 1.0]] * 2)),
                make_command(mode="joint", waypoints=np.zeros((2, 7))), P.Heartbeat(1, 2, 3, 0.5), P.Stop(1, 3, 3, 0.5, "operator"),
                P.Release(1, 4, 3, 0.5, "operator"), P.Reset(1, 4, 3, 0.5, 9), P.Reset(1, 5, 3, 0.5, None),
                P.Info(7, "panda", 20.0, 100.0, 7, ["ee_delta"], (0.05, 0.5), 5556, ["agentview"], {"object": 10}, "lift", "lift the cube", 200, 3),
                P.Info(7, "pusht", 10.0, 100.0, 2, ["joint"], (0.05, 0.5), 5556, ["top"], {"agent_pos": 2}, camera_keys={"top": "img"})]:
        back = P.decode(P.encode(msg))
        assert type(back) is type(msg)
        for name, value in vars(msg).items():
            got = getattr(back, name)
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(got, value)
            else:
                assert got == value, name


@pytest.mark.parametrize("images", [None, "raw", "jpeg"])
def test_state_round_trip_with_cameras(images):
    state = make_state(images)
    back = P.decode(P.encode(state))
    np.testing.assert_array_equal(back.q, state.q)
    np.testing.assert_array_equal(back.extra["object"], state.extra["object"])
    assert back.faults == state.faults and back.held is False and back.success is False
    if images:
        px, got = state.images["agentview"].pixels, back.images["agentview"].pixels
        assert got.shape == px.shape and got.dtype == np.uint8
        if images == "raw":
            np.testing.assert_array_equal(got, px)
        else:  # lossy, but the same picture, in RGB order
            assert np.abs(got.astype(int) - px).mean() < 8
            assert got[12, 4, 0] > 180 and got[12, 4, 2] < 60 and got[12, 28, 2] > 180
    obs = P.observation_from_state(back)
    assert obs["robot0_eef_pos"].dtype == np.float32 and obs["object"].shape == (10,)
    assert ("agentview_image" in obs) == bool(images)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.update(v=2), "v"),
        (lambda d: d.update(type="launch_missiles"), "type"),
        (lambda d: d.pop("seq"), "command.seq"),
        (lambda d: d.update(seq=-1), "command.seq"),
        (lambda d: d.update(seq=1.5), "command.seq"),
        (lambda d: d.update(mode="teleport"), "command.mode"),
        (lambda d: d.update(expires=float("nan")), "command.expires"),
        (lambda d: d.update(obs_stamp=float("inf")), "command.obs_stamp"),
        (lambda d: d.update(expires=0.5), "command.expires"),
        (lambda d: d.update(times=P.pack_array(np.array([1.1, 1.05]))), "command.times"),
        (lambda d: d.update(times=P.pack_array(np.zeros(0))), "command.times"),
        (lambda d: d.update(waypoints=P.pack_array(np.full((2, 6), np.nan))), "command.waypoints"),
        (lambda d: d.update(waypoints=P.pack_array(np.zeros((2, 5)))), "command.waypoints"),
        (lambda d: d.update(waypoints=P.pack_array(np.zeros((2, 6), np.int64))), "command.waypoints"),
        (lambda d: d.update(waypoints=["<f8", [2, 6], b"\x00" * 95]), "command.waypoints"),
        (lambda d: d.update(waypoints=[">f8", [2, 6], b"\x00" * 96]), "command.waypoints"),
        (lambda d: d.update(waypoints=["<f8", [1 << 40, 6], b""]), "command.waypoints"),
        (lambda d: d.update(waypoints="zeros"), "command.waypoints"),
        (lambda d: d.update(gripper=P.pack_array(np.zeros(3))), "command.gripper"),
        (lambda d: d.update(mode="ee_pose", waypoints=P.pack_array(np.zeros((2, 7)))), "command.waypoints"),
    ],
)
def test_bad_command_names_the_field(mutate, field):
    d = wire(make_command())
    mutate(d)
    with pytest.raises(P.ProtocolError) as err:
        P.decode(reencode(d))
    assert err.value.field == field, str(err.value)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.update(ee_pos=P.pack_array(np.array([0.0, np.inf, 0.0]))), "state.ee_pos"),
        (lambda d: d.update(ee_quat=P.pack_array(np.zeros(3))), "state.ee_quat"),
        (lambda d: d.update(dq=P.pack_array(np.zeros(6))), "state.dq"),
        (lambda d: d.update(mode="dancing"), "state.mode"),
        (lambda d: d.update(held=1), "state.held"),
        (lambda d: d.update(faults=["x" * 1000]), "state.faults"),
        (lambda d: d.update(extra={"object": P.pack_array(np.zeros(5000))}), "state.extra.object"),
        (lambda d: d["images"]["agentview"].update(data=b"\xff\xd8garbage"), "state.images.agentview.data"),
        (lambda d: d["images"]["agentview"].update(shape=[24, 33, 3]), "state.images.agentview.data"),
        (lambda d: d["images"]["agentview"].update(shape=[99999, 2, 3]), "state.images.agentview.shape"),
        (lambda d: d["images"]["agentview"].update(enc="png"), "state.images.agentview.enc"),
    ],
)
def test_bad_state_names_the_field(mutate, field):
    d = wire(make_state("jpeg"))
    mutate(d)
    with pytest.raises(P.ProtocolError) as err:
        P.decode(reencode(d))
    assert err.value.field == field, str(err.value)


def test_frame_level_rejections():
    for frame, field in [(b"", "frame"), (b"\xc1", "frame"), (msgpack.packb([1, 2]), "frame"),
                         (b"\x00" * (P.MAX_MESSAGE_BYTES + 1), "frame"), (msgpack.packb({"v": 1}), "type")]:
        with pytest.raises(P.ProtocolError) as err:
            P.decode(frame)
        assert err.value.field == field
    with pytest.raises(P.ProtocolError) as err:  # a State where a controller expects control messages
        P.decode(P.encode(make_state()), accept=P.CONTROL_TYPES)
    assert err.value.field == "type"
    big = make_command(times=np.arange(1, 501) * 0.01, waypoints=np.zeros((500, 6)), gripper=np.zeros(500), expires=99.0)
    assert P.decode(P.encode(big)).times.size == 500  # 500 waypoints fit the command size limit
    huge = wire(make_command())
    huge["pad"] = b"\x00" * (P.MAX_COMMAND_BYTES + 1)
    with pytest.raises(P.ProtocolError, match="at most"):
        P.decode(reencode(huge))


def test_seq_guard_rejects_out_of_order_and_replays_per_sender():
    guard = P.SeqGuard(max_senders=4)
    guard.check(1, 5)
    guard.check(2, 1)  # another sender has its own sequence
    for bad in (5, 4):
        with pytest.raises(P.ProtocolError, match="out of order"):
            guard.check(1, bad)
    guard.check(1, 6)


def test_decode_fuzz_only_raises_protocol_error():
    """20,000 mutations of valid frames: decode either returns a message or raises ProtocolError."""
    rng = np.random.default_rng(1)
    seeds = [P.encode(m) for m in (make_command(), make_state("jpeg"), make_state(), P.Heartbeat(1, 1, 2, 0.5), P.Reset(1, 1, 2, 0.5, 3))]
    outcomes = {"ok": 0, "rejected": 0}
    for i in range(20_000):
        frame = bytearray(seeds[i % len(seeds)])
        kind = i % 4
        if kind == 0:  # flip bytes
            for pos in rng.integers(0, len(frame), size=int(rng.integers(1, 8))):
                frame[pos] = int(rng.integers(0, 256))
        elif kind == 1:  # truncate
            frame = frame[: int(rng.integers(0, len(frame)))]
        elif kind == 2:  # random bytes
            frame = bytearray(rng.integers(0, 256, size=int(rng.integers(0, 300)), dtype=np.uint8).tobytes())
        else:  # splice two frames
            other = seeds[int(rng.integers(len(seeds)))]
            cut = int(rng.integers(0, min(len(frame), len(other))))
            frame = frame[:cut] + other[cut:]
        try:
            P.decode(bytes(frame))
            outcomes["ok"] += 1
        except P.ProtocolError:
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 15_000, outcomes


def test_node_warns_when_the_controller_rate_differs_from_the_training_data(caplog):
    from types import SimpleNamespace

    from dp.deploy.node import InferenceNode

    class Sockets:
        def connect_commands(self, port):
            self.port = port

    info = P.Info(7, "panda", 20.0, 100.0, 7, ["ee_delta"], (0.05, 0.5), 5556)
    with caplog.at_level("WARNING", logger="dp.node"):
        InferenceNode(SimpleNamespace(control_freq=20.0), Sockets())._on_info(info)
        assert not caplog.records
        InferenceNode(SimpleNamespace(control_freq=30.0), Sockets())._on_info(info)
    assert "trained on 30 Hz data" in caplog.text and "1.50x too slow" in caplog.text


def test_camera_keys_name_observation_keys_and_are_checked():
    """A camera's observation key is ``<camera>_image`` unless the Info names another (Push-T's ``img``);
    a key for a camera the robot does not have, or an Info without the field (an older controller), is
    handled by name."""
    info = P.Info(7, "pusht", 10.0, 100.0, 2, ["joint"], (0.05, 0.5), 5556, ["top", "wrist"], {"agent_pos": 2}, camera_keys={"top": "img"})
    assert info.observation_keys()[-3:] == ["agent_pos", "img", "wrist_image"]
    state = make_state("raw")
    assert "agentview_image" in P.observation_from_state(state)
    assert "view" in P.observation_from_state(state, {"agentview": "view"})
    wire = info.to_wire()
    wire.pop("camera_keys")
    assert P.decode(reencode({"type": "info", "v": P.VERSION, **wire})).camera_keys == {}
    wire["camera_keys"] = {"side": "img"}
    with pytest.raises(P.ProtocolError, match=r"info.camera_keys.*cameras of \['top', 'wrist'\]"):
        P.decode(reencode({"type": "info", "v": P.VERSION, **wire}))


def test_node_refuses_a_robot_without_the_camera_its_policy_needs():
    from types import SimpleNamespace

    from dp.deploy.node import InferenceNode

    class Sockets:
        def connect_commands(self, port):
            self.port = port

    policy = SimpleNamespace(control_freq=10.0, action_dim=2, obs_keys=["img", "agent_pos"])
    blind = P.Info(7, "pusht_sim", 10.0, 100.0, 2, ["joint"], (0.05, 0.5), 5556, [], {"agent_pos": 2})
    with pytest.raises(DpError, match=r"observes \['img'\], which controller pusht_sim does not publish \(its cameras: none"):
        InferenceNode(policy, Sockets())._on_info(blind)
    seeing = P.Info(7, "pusht_sim", 10.0, 100.0, 2, ["joint"], (0.05, 0.5), 5556, ["top"], {"agent_pos": 2}, camera_keys={"top": "img"})
    InferenceNode(policy, Sockets())._on_info(seeing)  # accepted
