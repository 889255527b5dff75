"""Embed every episode's language instruction with the offline sentence encoder (all-MiniLM-L6-v2,
384-d; the optional `lang` extra) and cache the embeddings in the store as `lang_emb` metadata.

Each distinct instruction is encoded once; episodes that already have an embedding are kept unless
--overwrite. Language-conditioned training (`model.goal=lang`) reads these embeddings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dp.data.language import embed_store
from dp.data.store import EpisodeStore


EXAMPLE = "dp embed data/multi.zarr"  # ends `dp embed --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stores", type=Path, nargs="+", help="episode stores to embed the instructions of")
    parser.add_argument("--overwrite", action="store_true", help="re-embed episodes that already have an embedding")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")


def run(args: argparse.Namespace) -> int:
    counts = {}
    for path in args.stores:
        with EpisodeStore.open(path, "a") as store:
            counts[str(path)] = embed_store(store, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(counts))
    else:
        for path, c in counts.items():
            print(f"{path}: {c['instructions']} instruction(s) embedded for {c['episodes']} episode(s)")
    return 0
