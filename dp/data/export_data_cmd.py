"""Write an episode store out as LIBERO task files, a CALVIN split directory or a LeRobotDataset folder.

  dp export-data libero STORE --out DIR      one <task>_demo.hdf5 per task
  dp export-data calvin STORE --out DIR [--split training|validation] [--actions rel|abs]
  dp export-data lerobot STORE --out DIR [--fps F] [--crf N]      LeRobotDataset v3.0 (pip install 'dp[lerobot]')

Our keys map to the format's fields through the dataset card (the one the store was imported
with, else datasets/<format>.yaml) and --map OUR=FOREIGN; keys the card does not name are
written under their own names. Fields the format needs but the store lacks are filled
deterministically (the list is printed, and recorded in the output). The output also records the
card of the export and each episode's metadata, so `dp import` gives back the same episodes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dp.data.formats import calvin_export, lerobot_export, libero_export
from dp.data.formats.cards import load_card
from dp.data.store import EpisodeStore
from dp.errors import DpError


def _mapping(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        for pair in item.split(","):
            if not pair.strip():
                continue
            ours, sep, foreign = pair.partition("=")
            if not sep or not ours.strip() or not foreign.strip():
                raise DpError(f"--map {pair!r}: expected OUR_KEY=FOREIGN_FIELD")
            out[ours.strip()] = foreign.strip()
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", type=Path, help="the episode store to export")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--card", help="dataset card for the key mapping (YAML path or name in datasets/)")
    p.add_argument("--map", action="append", default=[], metavar="OUR=FOREIGN",
                   help="send a store key to a given field (npz key / HDF5 path in the demo), e.g. agentview_image=rgb_static; repeatable or comma-separated")
    p.add_argument("--overwrite", action="store_true", help="replace existing output")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


EXAMPLE = "dp export-data lerobot data/lift.zarr --out exported_data/lift_lerobot"  # ends `dp export-data --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", required=True, metavar="libero|calvin|lerobot")
    p = sub.add_parser("libero", help="LIBERO task files (robomimic-style HDF5)", description=libero_export.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p = sub.add_parser("calvin", help="a CALVIN split directory", description=calvin_export.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--split", default="training", choices=["training", "validation"], help="split directory to write (default training)")
    p.add_argument("--actions", choices=["rel", "abs"], help="CALVIN field the store's action fills: rel_actions (default) or actions")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="processes compressing frame files (0: this process); default 2")
    p = sub.add_parser("lerobot", help="a LeRobotDataset v3.0 folder (needs the lerobot extra)", description=lerobot_export.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--fps", type=float, help="frame rate (default: the store's control frequency)")
    p.add_argument("--crf", type=int, default=23, metavar="N", help="H.264 quality, 0 (lossless) .. 51 (worst); default 23")


def run(args: argparse.Namespace) -> int:
    card = load_card(args.card) if args.card else None
    mapping = _mapping(args.map)
    with EpisodeStore.open(args.store, mode="r") as store:
        if args.format == "libero":
            summary = libero_export.export_store(store, args.out, card=card, mapping=mapping, overwrite=args.overwrite,
                                          progress=not args.no_progress)
        elif args.format == "lerobot":
            summary = lerobot_export.export_store(store, args.out, card=card, mapping=mapping, fps=args.fps, crf=args.crf,
                                                  overwrite=args.overwrite, progress=not args.no_progress)
        else:
            summary = calvin_export.export_store(store, args.out, split=args.split, card=card, actions=args.actions, mapping=mapping,
                                          workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {summary['episodes']} episodes ({summary['frames']} frames) to {summary['dir']}")
        if summary["filled"]:
            print("filled (the store has no source for these; see the exporter's docstring):")
            for item in summary["filled"]:
                print(f"  - {item}")
    return 0
