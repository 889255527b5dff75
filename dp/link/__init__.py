"""The robot link: the wire protocol and ZeroMQ transport shared by the controller, the node and the recorder.

- :mod:`dp.link.protocol` — the messages (State, Info, Command, Heartbeat, Stop, Reset), their
  wire format and validation;
- :mod:`dp.link.transport` — ZeroMQ sockets, loopback by default, CURVE authentication.
"""
