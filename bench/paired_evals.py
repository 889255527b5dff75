"""Two `dp eval --json-out` files on the same seeds, compared episode by episode.

Prints the episodes only one of the two solved with the exact McNemar p-value of their success rates,
the paired score difference (B minus A) with its 95% t-interval, and whether the two fail the same
episodes more often than chance (both failed, the count expected if they failed independently, and
Fisher's one-sided p): two policies, two samplers, or one policy twice with other noise draws
(`dp eval --noise-seed`), which tells hard starts from unlucky draws.

    python bench/paired_evals.py square_test.json square_test_noise1.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write_json  # noqa: E402
from bench.merge_evals import paired, parts_parser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = parts_parser(__doc__, "two dp eval --json-out files on the same seeds: A, then B")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if len(args.parts) != 2:
        raise SystemExit(f"give two dp eval files, A and B; got {len(args.parts)}")
    write_json(paired(*args.parts, a="a", b="b"), args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
