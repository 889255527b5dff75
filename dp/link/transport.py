"""ZeroMQ sockets of the protocol: endpoints, loopback-by-default binding and CURVE authentication.

A controller binds a PUB socket (State, Info) and a PULL socket (Command, Heartbeat, Stop, Reset);
nodes, recorders and tools connect a SUB and a PUSH. Binding to anything but loopback needs CURVE
keys (``--keys DIR``, made with ``dp robot --make-keys DIR``) unless ``--insecure`` is given:
the controller accepts only clients whose public key is in that folder, and clients check the
controller's key. Copy the folder to every machine that should be allowed to talk to the robot.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from dp.link.protocol import CONTROL_TYPES, MAX_MESSAGE_BYTES, max_frame_bytes
from dp.errors import DpError

# ZeroMQ drops (and disconnects the sender of) frames above these caps before it allocates them;
# frames between the protocol's limits and a cap still arrive and are counted as oversized.
TRANSPORT_CAP = 2 * MAX_MESSAGE_BYTES  # what clients receive (State, Info)
COMMAND_CAP = 2 * max_frame_bytes(CONTROL_TYPES)  # what the controller receives (at most a Command)
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_WATCHED = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | sum(_HANDSHAKE_FAILED)
COMMAND_QUEUE = 16  # frames queued per connection to the command port; then ZeroMQ stops reading it


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``tcp://host:port`` -> (host, port); a DpError for anything else."""
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise DpError(f"endpoint {endpoint!r}: expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:5555)")
    return parts.hostname, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port() -> int:
    """A TCP port free on loopback right now (for a process that must bind a known port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_keys(folder: Path) -> None:
    """Create the controller's and one client's CURVE key pairs in ``folder``."""
    if not zmq.has("curve"):
        raise DpError("this libzmq has no CURVE support")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("server", "client"):
        if not (folder / f"{name}.key_secret").exists():
            zmq.auth.create_certificates(folder, name)


def _load(folder: Path, name: str, secret: bool) -> tuple[bytes, bytes | None]:
    path = folder / f"{name}.key_secret" if secret else folder / f"{name}.key"
    if not path.is_file():
        raise DpError(f"{path}: missing CURVE key (create the folder with `dp robot --make-keys {folder}`)")
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise DpError(f"{path}: not a CURVE certificate ({exc})") from None


class ControllerSockets:
    """The controller's two bound sockets. ``state_endpoint`` / ``command_port`` are the real ones
    (after binding to port 0)."""

    def __init__(self, bind: str, command_port: int = -1, keys: Path | None = None, insecure: bool = False):
        host, port = split_endpoint(bind)
        if not is_loopback(host) and keys is None and not insecure:
            raise DpError(f"refusing to bind {bind} without authentication: give --keys DIR (CURVE) or --insecure")
        self.ctx = zmq.Context()
        self.auth = None
        self.pub = self.ctx.socket(zmq.PUB)
        self.pull = self.ctx.socket(zmq.PULL)
        if keys is not None:
            public, secret = _load(keys, "server", secret=True)
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=str(keys))
            for s in (self.pub, self.pull):
                s.curve_secretkey, s.curve_publickey, s.curve_server = secret, public, True
        self.pub.setsockopt(zmq.SNDHWM, 50)  # a slow subscriber loses old states, never slows the controller
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.RCVHWM, COMMAND_QUEUE)
        self.pull.setsockopt(zmq.MAXMSGSIZE, COMMAND_CAP)
        self.pull.setsockopt(zmq.LINGER, 0)
        try:
            self.pub.bind(f"tcp://{host}:{port}")
            real_port = int(self.pub.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1])
            cport = real_port + 1 if command_port < 0 else command_port
            self.pull.bind(f"tcp://{host}:{cport}")
        except zmq.ZMQError as exc:
            self.close()
            raise DpError(f"cannot bind {bind} (command port {command_port}): {exc}") from None
        self.state_endpoint = f"tcp://{host}:{real_port}"
        self.command_port = int(self.pull.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1])

    def close(self) -> None:
        for s in (self.pub, self.pull):
            s.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()


class ClientSockets:
    """A node's (or recorder's) sockets: SUB to the State endpoint, PUSH to the command port.
    A monitor on the SUB socket records how far the connection got (:meth:`diagnose`)."""

    def __init__(self, endpoint: str, keys: Path | None = None):
        self.endpoint = endpoint
        self.host, _ = split_endpoint(endpoint)
        self.ctx = zmq.Context()
        self._curve = _load(keys, "client", secret=True) + (_load(keys, "server", secret=False)[0],) if keys else None
        self.sub = self.ctx.socket(zmq.SUB)
        self._secure(self.sub)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVHWM, 1000)
        self.sub.setsockopt(zmq.MAXMSGSIZE, TRANSPORT_CAP)
        self.sub.setsockopt(zmq.LINGER, 0)
        self._monitor = self.sub.get_monitor_socket(_WATCHED)
        self._seen: set[int] = set()  # monitor events seen so far
        self._failure: int | None = None  # the last handshake failure's event
        self._up = False  # the last connection event was a handshake that succeeded (not a disconnect since)
        self.sub.connect(endpoint)
        self.push: zmq.Socket | None = None
        self.command_port: int | None = None

    def diagnose(self) -> str:
        """Why no State may have arrived, from what the connection did so far (one line)."""
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            self._seen.add(event)
            if event in _HANDSHAKE_FAILED:
                self._failure = event
            elif event in (zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_DISCONNECTED):
                self._up = event == zmq.EVENT_HANDSHAKE_SUCCEEDED
        if self._failure is not None:
            if self._failure == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                return "the controller refused this client's CURVE key: its --keys folder does not hold our client.key"
            if self._failure == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                return "the handshake failed: one side uses CURVE keys (--keys) and the other does not"
            return ("the CURVE handshake failed: likely a key mismatch (the server.key given with --keys is not "
                    "this controller's)" if self._curve else "the handshake failed: the controller may require CURVE keys (--keys)")
        if self._up:
            return "the connection is up, but the controller sends no State"
        if zmq.EVENT_DISCONNECTED in self._seen:
            return f"the controller at {self.endpoint} closed the connection (it stopped or crashed) and has not come back"
        return f"nothing accepts connections at {self.endpoint}: is the controller running there?"

    def _secure(self, s: zmq.Socket) -> None:
        if self._curve:
            public, secret, server = self._curve
            s.curve_publickey, s.curve_secretkey, s.curve_serverkey = public, secret, server

    def connect_commands(self, port: int) -> None:
        """(Re)connect the PUSH socket to the controller's command port (after a restart it may change)."""
        if self.command_port == port and self.push is not None:
            return
        if self.push is not None:
            self.push.close(linger=0)
        self.push = self.ctx.socket(zmq.PUSH)
        self._secure(self.push)
        self.push.setsockopt(zmq.SNDHWM, 100)
        self.push.setsockopt(zmq.IMMEDIATE, 1)  # never queue commands for a controller that is not there
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(f"tcp://{self.host}:{port}")
        self.command_port = port

    def send(self, frame: bytes) -> bool:
        """Send without blocking; False if the controller is not reachable right now."""
        if self.push is None:
            return False
        try:
            self.push.send(frame, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def close(self) -> None:
        self.sub.disable_monitor()
        self._monitor.close(linger=0)
        self.sub.close(linger=0)
        if self.push is not None:
            self.push.close(linger=0)
        self.ctx.term()
