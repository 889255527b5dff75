"""Deployment: a robot controller and an inference node talking the controller protocol.

The wire protocol and transport they share live in :mod:`dp.link`.

- :mod:`dp.deploy.controller` (`dp robot`) — owns a robot through a driver (:mod:`dp.deploy.drivers`:
  the robosuite sim, a template for real arms), follows waypoints (:mod:`dp.deploy.trajectory`)
  inside the robot file's limits (:mod:`dp.deploy.safety`, :mod:`dp.deploy.robot_config`), with a watchdog;
- :mod:`dp.deploy.node` (`dp node`) — runs a policy (loaded by :mod:`dp.infer.load`) on the State stream.
"""
