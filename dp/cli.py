"""`dp <command>`: the user's interface to every stage.

Each command lives in the module of its stage. That module exposes ``add_arguments(parser)``,
``run(args) -> int`` and ``EXAMPLE`` (one complete command line, the end of its ``--help``); it is
imported only when its command runs, so `dp --help`, `dp --version` and light commands (`dp info`)
start without loading torch or MuJoCo.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dp.cli_args import command_parser, run_reporting_errors, version

# name -> (module, one-line help). Order is the order of the path, from data to robot.
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("dp.collect.collect_cmd", "collect demonstrations (scripted expert, teleop, or a controller recorder)"),
    "import": ("dp.data.import_cmd", "import CALVIN, LIBERO, robomimic, LeRobot or Diffusion Policy Zarr data into an episode store"),
    "export-data": ("dp.data.export_data_cmd", "write an episode store out as LIBERO HDF5, a CALVIN directory or a LeRobot dataset"),
    "info": ("dp.data.info_cmd", "show what an episode store holds"),
    "embed": ("dp.data.embed_cmd", "embed episodes' language instructions (offline sentence encoder) into the store"),
    "show": ("dp.data.show_cmd", "preview an episode: video or contact sheet of its cameras and actions"),
    "train": ("dp.train.train_cmd", "train a MoDE policy on one or more episode stores"),
    "eval": ("dp.eval.eval_cmd", "evaluate a policy in MuJoCo simulation"),
    "export": ("dp.export.export_cmd", "export a trained policy to ONNX"),
    "robot": ("dp.deploy.robot_cmd", "run a robot controller (simulated or through a driver)"),
    "node": ("dp.deploy.node_cmd", "run the inference node that drives a robot controller"),
    "stop": ("dp.deploy.stop_cmd", "stop a robot controller now (latched), or release its stop"),
    "launch": ("dp.launch", "start the processes a launch file names"),
    "quickstart": ("dp.quickstart", "the whole path on a small embedded default"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: dp <command> [options]", "       dp --version", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`dp <command> --help` explains a command's options and ends with an example."]
    return "\n".join(lines)


def build_parser(name: str) -> argparse.ArgumentParser:
    """The argument parser of one command (imports that command's module)."""
    module_name, help_ = COMMANDS[name]
    return command_parser(importlib.import_module(module_name), f"dp {name}", help_)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"dp {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dp: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    args = build_parser(name).parse_args(rest)
    return run_reporting_errors(name, args._run, args)


if __name__ == "__main__":
    sys.exit(main())
