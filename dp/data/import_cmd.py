"""Import CALVIN, LIBERO (or robomimic), Diffusion Policy zarr and LeRobot data into an episode store.

  dp import calvin DIR --out STORE [--split training|validation] [--segments lang|episodes]
                       [--cameras static,gripper] [--image-size N] [--actions rel|abs]
  dp import libero FILE_OR_DIR... --out STORE [--image-size N] [--filter-key train]
  dp import dp-zarr SRC --out STORE [--card datasets/pusht.yaml | --image KEY --lowdim KEY --action KEY]
  dp import lerobot DIR --out STORE [--cameras front,wrist] [--image-size N]     (needs: pip install 'dp[lerobot]')

Keys are mapped by a dataset card (datasets/<format>.yaml, or --card). An import is resumable:
run the same command again after a kill and it continues where it stopped, without duplicates
(each episode records its source as metadata source_file + source_index). Frames are decoded in
--workers processes (they end with the command, even when it is killed); the command itself is
the store's only writer. The source's structure (episode ends, lengths, shapes, NaN/inf) is
checked before anything is written. Bad input stops the import with an error naming the file,
the key and the problem; with --skip-bad the rest imports and the skipped items are listed. An
import stopped mid-way (a corrupt chunk, a full disk) says that the store holds a partial import;
rerunning the same command continues it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dp.data.formats import calvin_import, dp_zarr, lerobot_import, libero_import
from dp.data.formats.cards import load_card
from dp.data.formats.pipeline import run_import
from dp.data.formats.workers import keep_freed_memory


def _comma_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="episode store to create or continue (.zarr directory)")
    p.add_argument("--card", help="dataset card (a YAML path, or a name in datasets/); default: the format's own card")
    p.add_argument("--image-size", type=int, metavar="N", help="resize every camera to N x N (opencv INTER_AREA); default: keep")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="decoding processes (0: decode in this process); default 2")
    p.add_argument("--skip-bad", action="store_true", help="skip (and list) bad items instead of stopping at the first")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out store instead of continuing it")
    p.add_argument("--json", action="store_true", help="print the import report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


EXAMPLE = "dp import dp-zarr pusht_cchi_v7_replay.zarr --out data/pusht.zarr --card datasets/pusht_keypoints.yaml"  # ends `dp import --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", required=True, metavar="calvin|libero|dp-zarr|lerobot")
    p = sub.add_parser("calvin", help="a CALVIN dataset directory (or one split directory)", description=calvin_import.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, help="CALVIN dataset directory (holding training/ and validation/) or a split directory")
    p.add_argument("--split", default="training", choices=["training", "validation"], help="which split to import (default training)")
    p.add_argument("--segments", default="lang", choices=["lang", "episodes"],
                   help="lang: one episode per language-annotated window (default); episodes: the play episodes")
    p.add_argument("--cameras", type=_comma_list, help="cameras to keep, comma-separated (static,gripper); default: all the card names")
    p.add_argument("--actions", choices=["rel", "abs"], help="rel: rel_actions (default), abs: actions")
    p.add_argument("--max-episode-len", type=int, metavar="N",
                   help="with --segments episodes: cut play episodes into pieces of at most N frames (bounds memory)")
    _common(p)
    p = sub.add_parser("libero", help="LIBERO task files or robomimic HDF5 files", description=libero_import.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="HDF5 files or directories searched for *.hdf5; many tasks make one multitask store")
    p.add_argument("--filter-key", help="import only the demos listed in mask/<KEY> (robomimic files)")
    p.add_argument("--cameras", type=_comma_list, help="cameras to keep, comma-separated (agentview,wrist); default: all")
    _common(p)
    p = sub.add_parser("dp-zarr", help="a Diffusion Policy replay buffer (zarr format 2) or another store", description=dp_zarr.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="source zarr store (data/<key> + meta/episode_ends)")
    p.add_argument("--image", action="append", default=[], help="image key to import (repeatable); float 0..255 becomes uint8")
    p.add_argument("--lowdim", action="append", default=[], help="low-dim key to import (repeatable)")
    p.add_argument("--action", help="the action key (stored as 'action')")
    _common(p)
    p = sub.add_parser("lerobot", help="a LeRobotDataset v3.0 or v2.x folder (local; needs the lerobot extra)", description=lerobot_import.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, help="the dataset folder (holding meta/info.json, data/, videos/)")
    p.add_argument("--cameras", type=_comma_list, help="cameras to keep, comma-separated (observation.images.<cam> names); default: all")
    _common(p)


def run(args: argparse.Namespace) -> int:
    keep_freed_memory()  # this process only imports: reuse freed episode-sized buffers (see workers.py)
    card = load_card(args.card) if args.card else None
    skipped: list[str] = []
    if args.format == "calvin":
        card, items = calvin_import.plan_import(
            args.dir, split=args.split, segments=args.segments, card=card, cameras=args.cameras,
            actions=args.actions, image_size=args.image_size, max_episode_len=args.max_episode_len,
            skip_bad=args.skip_bad, skipped=skipped,
        )
    elif args.format == "libero":
        card, items = libero_import.plan_import(
            args.paths, card=card, cameras=args.cameras, image_size=args.image_size,
            filter_key=args.filter_key, skip_bad=args.skip_bad, skipped=skipped,
        )
    elif args.format == "lerobot":
        card, items = lerobot_import.plan_import(
            args.dir, card=card, cameras=args.cameras, image_size=args.image_size, skip_bad=args.skip_bad, skipped=skipped,
        )
    else:
        card, items = dp_zarr.plan_import(
            args.src, card=card, image=args.image, lowdim=args.lowdim, action=args.action, image_size=args.image_size,
            skip_bad=args.skip_bad, skipped=skipped,
        )
    report = run_import(
        items, args.out, card, workers=args.workers, skip_bad=args.skip_bad, overwrite=args.overwrite,
        skipped=skipped, progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps({
            "store": str(report.store), "added": report.added, "frames": report.frames,
            "already_present": report.already_present, "skipped": report.skipped,
            "seconds": round(report.seconds, 3), "frames_per_s": round(report.frames_per_s, 1),
        }, indent=2))
    else:
        print(report.summary())
    return 0
