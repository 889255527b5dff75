"""Deployment: a robot controller and an inference node talking the controller protocol.

- :mod:`dp.deploy.protocol` — the messages (State, Info, Command, Heartbeat, Stop, Reset), their
  wire format and validation;
- :mod:`dp.deploy.transport` — ZeroMQ sockets, loopback by default, CURVE authentication;
- :mod:`dp.deploy.controller` (`dp robot`) — owns a robot through a driver (:mod:`dp.deploy.drivers`:
  the robosuite sim, a template for real arms), follows waypoints (:mod:`dp.deploy.trajectory`)
  inside the robot file's limits (:mod:`dp.deploy.safety`, :mod:`dp.deploy.robot_config`), with a watchdog;
- :mod:`dp.deploy.node` (`dp node`) — runs a policy (:mod:`dp.deploy.policies`) on the State stream;
- :mod:`dp.deploy.recorder` — records State + executed commands as episodes (`dp collect --from`);
- :mod:`dp.deploy.harness` — real processes and a State watcher for tests and benchmarks.
"""
