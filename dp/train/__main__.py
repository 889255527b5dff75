"""`python -m dp.train ...` (what torchrun runs): the same arguments as `dp train`."""

from __future__ import annotations

import argparse
import sys

from dp.cli_args import run_reporting_errors
from dp.train import train_cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dp.train", description=(train_cmd.__doc__ or "").strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    train_cmd.add_arguments(parser)
    return run_reporting_errors("train", train_cmd.run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
