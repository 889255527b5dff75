"""Run a robot controller: own a robot through its driver (the robot file names it), publish its
State, follow the inference node's waypoints within the robot file's limits, hold when commands
expire or the node goes quiet, obey stop.

  dp robot --robot robots/panda_sim.yaml                      simulated Panda, tcp://127.0.0.1:5555
  dp robot --robot robots/panda_sim.yaml driver.options.task=can limits.max_speed=0.5
  dp robot --make-keys keys/                                  CURVE keys for binding other interfaces
  dp robot --robot my_arm.yaml --bind tcp://0.0.0.0:5555 --keys keys/
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from dp.deploy.robot_config import load_robot
from dp.link.transport import make_keys


EXAMPLE = "dp robot --robot robots/panda_sim.yaml driver.options.task=lift --bind tcp://127.0.0.1:5555"  # ends `dp robot --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="robots/panda_sim.yaml", help="robot file (YAML; default: robots/panda_sim.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="robot-file overrides, e.g. driver.options.task=can")
    parser.add_argument("--bind", help="State endpoint, e.g. tcp://127.0.0.1:5555 (port 0: a free port); default from the robot file")
    parser.add_argument("--command-port", type=int, help="command port (default: the state port + 1; 0: a free port)")
    parser.add_argument("--keys", type=Path, help="CURVE key folder: only clients holding its client key may connect")
    parser.add_argument("--insecure", action="store_true", help="allow binding a non-loopback interface without --keys")
    parser.add_argument("--make-keys", type=Path, metavar="DIR", help="create a CURVE key folder and exit")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C / SIGTERM)")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(name)s: %(message)s")
    if args.make_keys:
        make_keys(args.make_keys)
        print(f"CURVE keys in {args.make_keys}: server.key_secret stays with the controller; "
              f"copy the folder (client.key_secret, server.key) to the machines that run nodes")
        return 0
    overrides = list(args.overrides)
    if args.bind:
        overrides.append(f"network.bind={args.bind}")
    if args.command_port is not None:
        overrides.append(f"network.command_port={args.command_port}")
    config = load_robot(args.robot, overrides)

    from dp.deploy.controller import Controller  # robot file checked first: errors before heavy imports
    from dp.deploy.drivers import make_driver
    from dp.link.transport import ControllerSockets

    driver = make_driver(config)
    sockets = ControllerSockets(config.network.bind, config.network.command_port, args.keys, args.insecure)
    controller = Controller(config, driver, sockets)
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    started = False
    try:
        info = controller.start()
        started = True
        print(f"dp robot: {config.name} ready ({config.driver.type} driver, task {info.task}): "
              f"state {sockets.state_endpoint}, commands port {sockets.command_port}, "
              f"{config.rates.control_hz:g} Hz control, {config.rates.state_hz:g} Hz state", flush=True)
        controller.run(should_stop=lambda: bool(stopping), duration=args.duration)
    finally:
        controller.close()
        if started:
            print(f"dp robot: stopped; {controller.stats.summary()}", flush=True)
    return 0
