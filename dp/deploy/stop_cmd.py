"""Stop a robot controller now, or release its Stop: the operator's button.

  dp stop --robot tcp://127.0.0.1:5555                      stop (latches: nodes and Resets are refused)
  dp stop --robot tcp://127.0.0.1:5555 --release            release it: the robot holds, nodes drive it again
  dp stop --robot tcp://10.0.0.2:5555 --keys keys/ --reason "person in the cell"

A Stop is accepted from any sender, however many senders the controller is tracking, and only a
Release clears it (a Reset never does). The command reads one State first (a Stop names the
controller run and the newest State's stamp, so that a recording of it cannot be replayed later),
sends the message until a State confirms it, and prints how long that took. Exit code 1 when no
controller answers within --timeout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import zmq

from dp.errors import DpError
from dp.link import protocol as P
from dp.link.transport import ClientSockets, split_endpoint

RESEND = 0.05  # seconds between copies of the message until a State confirms it
EXAMPLE = "dp stop --robot tcp://127.0.0.1:5555 --reason operator"  # ends `dp stop --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="tcp://127.0.0.1:5555", help="the controller's State endpoint (default tcp://127.0.0.1:5555)")
    parser.add_argument("--release", action="store_true", help="release a Stop instead of stopping")
    parser.add_argument("--reason", default="", help="why (logged by the controller)")
    parser.add_argument("--keys", type=Path, help="CURVE key folder (client.key_secret + server.key) for an authenticated controller")
    parser.add_argument("--timeout", type=float, default=5.0, help="give up after this many seconds without confirmation (default 5)")


def run(args: argparse.Namespace) -> int:
    split_endpoint(args.robot)
    if not args.timeout > 0:
        raise DpError(f"--timeout must be > 0 seconds, got {args.timeout}")
    kind = P.Release if args.release else P.Stop
    sockets = ClientSockets(args.robot, args.keys)
    try:
        elapsed, state = send_until_confirmed(sockets, kind, args.reason, args.timeout)
    except TimeoutError as exc:
        print(f"dp stop: {exc}", flush=True)
        return 1
    finally:
        sockets.close()
    what = "released: holding, commands are followed again" if args.release else "stopped (latched until dp stop --release)"
    print(f"dp stop: controller run {state.boot:x} {what}, confirmed {elapsed * 1e3:.0f} ms after the first send", flush=True)
    return 0


def send_until_confirmed(sockets: ClientSockets, kind: type, reason: str, timeout: float) -> tuple[float, P.State]:
    """Send ``kind`` (Stop or Release) every RESEND seconds until a State shows it took effect; the
    seconds from the first send and that State. TimeoutError (saying what the connection did) otherwise."""
    sender, seq = P.new_id(), 0
    deadline = time.monotonic() + timeout
    first_sent = next_send = None
    info: P.Info | None = None
    while time.monotonic() < deadline:
        if sockets.sub.poll(10, zmq.POLLIN):
            try:
                msg = P.decode(sockets.sub.recv(), accept=(P.State, P.Info))
            except P.ProtocolError:
                continue
            if isinstance(msg, P.Info):
                info = msg
                sockets.connect_commands(msg.command_port)
                continue
            stopped = msg.mode == P.ROBOT_STOPPED
            if first_sent is not None and stopped == (kind is P.Stop):
                return time.monotonic() - first_sent, msg
            now = time.monotonic()
            if info is not None and info.boot == msg.boot and (next_send is None or now >= next_send):
                seq += 1
                if sockets.send(P.encode(kind(sender, seq, msg.boot, msg.stamp, reason))):
                    first_sent = now if first_sent is None else first_sent
                next_send = now + RESEND
    raise TimeoutError(f"no confirmation within {timeout:g} s: {sockets.diagnose()}")
