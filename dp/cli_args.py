"""What the `dp` commands share on their command lines: the POLICY argument, old flag spellings kept
as deprecated aliases for one release, a command's parser, how it reports its errors, and the package's version.

Standard library only (and :mod:`dp.errors`), so `dp --help` and `dp --version` stay fast.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from importlib import metadata
from types import ModuleType

from dp.errors import DpError

DISTRIBUTION = "dp"


def error_message(exc: DpError) -> str:
    """What to print of a DpError: its message, or for one re-raised from a DataLoader worker (torch
    puts the worker's traceback into the message) the original message, without the traceback."""
    lines = str(exc).splitlines()
    if not any(line.startswith("Original Traceback") for line in lines):
        return str(exc)
    last_frame = max((i for i, line in enumerate(lines) if line.startswith("  ")), default=0)
    return re.sub(r"^[\w.]+: ", "", " ".join(lines[last_frame + 1:]))  # less the exception's class name


def command_parser(module: ModuleType, prog: str, fallback_help: str = "") -> argparse.ArgumentParser:
    """The argument parser of a command's module (its ``add_arguments``, docstring and ``EXAMPLE``):
    `dp NAME` and `python -m dp.train` (what torchrun runs) build the same one."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(module.__doc__ or fallback_help).strip(),
        epilog=f"example:\n  {module.EXAMPLE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return parser


def run_reporting_errors(name: str, run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run command ``name``: its exit code, or 1 with ``dp NAME: error: ...`` for a DpError, 130 on Ctrl-C."""
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print(f"dp {name}: interrupted", file=sys.stderr)
        return 130
    except DpError as exc:
        print(f"dp {name}: error: {error_message(exc)}", file=sys.stderr)
        return 1


def version() -> str:
    """The installed package's version (its metadata), else ``dp.__version__`` (a source tree)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return sys.modules["dp"].__version__  # the package: imported before any of its modules


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: stores into the new flag's destination and warns once on stderr."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: argparse.Action, *, use: str | None = None,
                         metavar: str | None = None) -> argparse.Action:
    """Accept ``old`` as a deprecated spelling of the flag ``new`` (the action ``add_argument`` returned);
    ``use`` is what the warning tells the user to write instead (default: the new flag)."""
    use = use or next(s for s in new.option_strings if s.startswith("--"))
    return parser.add_argument(old, action=DeprecatedAlias, new=use, dest=new.dest, type=new.type, default=argparse.SUPPRESS,
                               metavar=metavar or new.metavar or new.dest.upper(), help=f"deprecated: use {use}")


def deprecated_aliases(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{old spelling: new spelling}`` of the parser's deprecated aliases."""
    return {s: a.new for a in parser._actions if isinstance(a, DeprecatedAlias) for s in a.option_strings}


def switch(text: str) -> bool:
    """An on/off flag value: on, true, yes, 1 / off, false, no, 0."""
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


def add_policy_argument(parser: argparse.ArgumentParser, help: str) -> argparse.Action:
    """POLICY, given either as the positional argument or as ``--policy POLICY`` (read it with :func:`policy_of`)."""
    parser.add_argument("policy", nargs="?", default=None, metavar="POLICY", help=f"{help} (or --policy POLICY)")
    return parser.add_argument("--policy", dest="policy_flag", default=None, metavar="POLICY", help="POLICY, given as a flag")


def policy_of(args: argparse.Namespace) -> str:
    """The POLICY the command line names, once: a DpError if it names none or names it twice."""
    given = [p for p in (args.policy, args.policy_flag) if p is not None]
    if not given:
        raise DpError("name the policy: POLICY or --policy POLICY")
    if len(given) > 1:
        raise DpError(f"the policy is named twice ({given[0]!r} and --policy {given[1]!r}): give POLICY or --policy POLICY, not both")
    return given[0]


def add_chunks_per_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """``--vote K`` and ``--medoid K``: several chunks sampled per plan, combined (`dp eval` and `dp node` alike)."""
    parser.add_argument("--vote", type=int, default=None, metavar="K",
                        help="sample K chunks per plan (K odd; one batch in torch) and set the gripper, step by step, to "
                             "their majority; the arm follows the first (default: one chunk)")
    parser.add_argument("--medoid", type=int, default=None, metavar="K",
                        help="sample K chunks per plan (one batch in torch) and act their medoid, the one nearest the others "
                             "over the executed actions: a plan less of one noise draw (default: one chunk)")


def replan_interval(text: str) -> int | dict[str, int]:
    """A re-planning interval: ``N`` (every task) or ``TASK=N,TASK=N`` (those tasks; the others keep the policy's own)."""
    try:
        if "=" not in text:
            return int(text)
        pairs = [item.split("=") for item in text.split(",") if item.strip()]
        names = [pair[0].strip() for pair in pairs]
        if not pairs or any(len(pair) != 2 or not name for pair, name in zip(pairs, names)) or len(set(names)) < len(names):
            raise ValueError  # a malformed pair, or a task named twice
        return {task.strip(): int(n) for task, n in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or TASK=N,TASK=N (e.g. can=8,square=4), got {text!r}") from None
