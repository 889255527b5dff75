"""`python -m dp.train ...` (what torchrun runs): the same arguments as `dp train`."""

from __future__ import annotations

import argparse
import sys

from dp.errors import DpError
from dp.train import train_cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dp.train", description=(train_cmd.__doc__ or "").strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    train_cmd.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return train_cmd.run(args)
    except KeyboardInterrupt:
        print("dp train: interrupted", file=sys.stderr)
        return 130
    except DpError as exc:
        print(f"dp train: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
