"""`python -m dp.train ...` (what torchrun runs): the same arguments as `dp train`."""

from __future__ import annotations

import sys

from dp.cli_args import command_parser, run_reporting_errors
from dp.train import train_cmd


def main(argv: list[str] | None = None) -> int:
    args = command_parser(train_cmd, "python -m dp.train").parse_args(argv)
    return run_reporting_errors("train", args._run, args)


if __name__ == "__main__":
    sys.exit(main())
