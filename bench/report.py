"""Build the results page `docs/results.md` (and its PNG plots in `docs/img/`) from the benchmark
JSONs kept under `bench/results/` (bench/results/README.md says which command writes which file).

    python bench/report.py                                   # docs/results.md + docs/img/results_*.png
    python bench/report.py --results bench/results --out docs/results.md
    python bench/report.py --headline                        # print only the headline success table

Inputs:
- `<bench>.json` for bench in data_throughput, import_throughput, train, latency, deploy, sim_collect:
  what `python bench/<bench>.py` prints;
- `success/<task>__<method>.json`: `dp eval ... --json-out FILE` or `dp node ... --json-out FILE`,
  with an optional sibling `<task>__<method>.cmd` holding the commands that produced it;
- `curves/<name>.jsonl`: a training run's metrics.jsonl;
- `quickstart.json`: the report.json of `dp quickstart`.

Every target is checked against the measured figure (met / not met); an input that is missing is
listed as "not measured yet", an unreadable one is named with its error. Needs only matplotlib.
The page is built by `bench/reporting/` (loading, targets, plots, sections, page, README).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.reporting.load import load  # noqa: E402
from bench.reporting.page import PLOTS, build_page  # noqa: E402
from bench.reporting.readme import write_readme  # noqa: E402
from bench.reporting.sections_policy import headline_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("bench/results"), help="folder of benchmark JSONs (default bench/results)")
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"), help="page to write (default docs/results.md)")
    parser.add_argument("--img", type=Path, default=None, help="folder for the PNG plots (default: img/ next to --out)")
    parser.add_argument("--headline", action="store_true", help="print only the headline success table (markdown) and write nothing")
    parser.add_argument("--readme", type=Path, default=None, help="also rewrite the '## Results' section of this README")
    args = parser.parse_args(argv)
    results = load(args.results)
    if args.readme is not None:
        write_readme(results, args.readme)
    if args.headline:
        print(headline_table(results))
        return 0
    img = args.img or args.out.parent / "img"
    page = build_page(results, args.out, img)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    pngs = [str(img / name) for name in PLOTS if (img / name).is_file()]
    print(f"wrote {args.out}" + (f" and {', '.join(pngs)}" if pngs else "") + f" from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
