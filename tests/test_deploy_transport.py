"""Transport: loopback by default, CURVE authentication between a controller's sockets and clients."""

from __future__ import annotations

import time

import pytest
import zmq

from dp.link import protocol as P
from dp.link.transport import ClientSockets, ControllerSockets, make_keys, split_endpoint
from dp.errors import DpError


def exchange(server: ControllerSockets, client: ClientSockets, seconds: float = 1.0) -> tuple[int, int]:
    """Publish heartbeat-sized frames both ways for a while; (states received, commands received)."""
    client.connect_commands(server.command_port)
    got_state = got_cmd = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        server.pub.send(P.encode(P.Heartbeat(1, 1, 7, 0.5)))
        client.send(P.encode(P.Heartbeat(2, 2, 7, 0.5)))
        time.sleep(0.01)
        while client.sub.poll(0):
            client.sub.recv()
            got_state += 1
        while server.pull.poll(0):
            server.pull.recv()
            got_cmd += 1
    return got_state, got_cmd


def test_endpoints_and_loopback_policy():
    assert split_endpoint("tcp://127.0.0.1:5555") == ("127.0.0.1", 5555)
    for bad in ("127.0.0.1:5555", "ipc:///tmp/x", "tcp://host"):
        with pytest.raises(DpError, match="expected tcp://HOST:PORT"):
            split_endpoint(bad)
    with pytest.raises(DpError, match="refusing to bind"):
        ControllerSockets("tcp://0.0.0.0:0")


def test_plain_loopback_exchange():
    server = ControllerSockets("tcp://127.0.0.1:0", command_port=0)
    client = ClientSockets(server.state_endpoint)
    try:
        states, commands = exchange(server, client)
        assert states > 10 and commands > 10
    finally:
        client.close()
        server.close()


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
@pytest.mark.slow
def test_curve_admits_key_holders_only(tmp_path):
    keys, strangers = tmp_path / "keys", tmp_path / "strangers"
    make_keys(keys)
    make_keys(strangers)  # a valid key pair the controller has never seen
    (strangers / "server.key").write_bytes((keys / "server.key").read_bytes())  # knows the server, not authorised
    server = ControllerSockets("tcp://127.0.0.1:0", command_port=0, keys=keys)
    good = ClientSockets(server.state_endpoint, keys)
    bad = ClientSockets(server.state_endpoint, strangers)
    plain = ClientSockets(server.state_endpoint)
    try:
        states, commands = exchange(server, good)
        assert states > 10 and commands > 10
        assert exchange(server, bad, 0.5)[0] == 0
        assert exchange(server, plain, 0.5)[0] == 0
        assert not server.pull.poll(100)  # nothing from the unauthenticated clients got through
    finally:
        for s in (good, bad, plain):
            s.close()
        server.close()
    with pytest.raises(DpError, match="missing CURVE key"):
        ControllerSockets("tcp://127.0.0.1:0", keys=tmp_path / "nowhere")
