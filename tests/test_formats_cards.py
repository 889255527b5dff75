"""Dataset cards (validation, selection) and the restricted unpickler."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import yaml

from dp.data.formats.cards import CARDS_DIR, card_from_dict, load_card
from dp.data.formats.safe_pickle import load_npy, safe_loads
from dp.errors import DpError


def _raw(**changes):
    raw = {"name": "t", "format": "libero", "keys": [{"key": "action", "source": "actions", "role": "action"}]}
    raw.update(changes)
    return raw


@pytest.mark.parametrize("name", ["calvin", "libero", "pusht"])
def test_shipped_cards_load(name):
    card = load_card(name)
    assert card.name == name
    assert card.roles()["action"] == ["action"] * len(card.roles()["action"])
    assert card.control_freq > 0


def test_calvin_card_selects_cameras_and_action_variant():
    card = load_card("calvin")
    rel = card.select()
    assert [str(s) for s in rel.spec("action").sources] == ["rel_actions"]
    assert [str(s) for s in card.select(variant="abs").spec("action").sources] == ["actions"]
    assert rel.discrete_dims() == {"action": [6]}
    static_only = card.select(cameras=["static"])
    assert static_only.roles()["image"] == ["rgb_static"]
    with pytest.raises(DpError, match="unknown camera.*wrist"):
        card.select(cameras=["wrist"])
    with pytest.raises(DpError, match="no variant 'delta'"):
        card.select(variant="delta")


def test_card_source_slices_and_alternatives():
    card = load_card("libero")
    quat = card.spec("robot0_eef_quat")
    assert [str(s) for s in quat.sources] == ["obs/robot0_eef_quat", "robot_states[5:9]"]
    assert quat.export_field == "obs/robot0_eef_quat"
    assert quat.sources[1].take(np.arange(18).reshape(2, 9)).tolist() == [[5, 6, 7, 8], [14, 15, 16, 17]]
    assert card.spec_for_store_key("rgb_static").key == "agentview_image"  # alias used by export
    assert card_from_dict(card.to_dict()) == card  # a card survives its own serialisation


@pytest.mark.parametrize(
    "raw, message",
    [
        (_raw(framerate=30), r"unknown card key\(s\) 'framerate'"),
        (_raw(keys=[{"key": "action", "source": "actions", "role": "action", "sorce": "x"}]), r"keys\[0\] \('action'\): unknown card key\(s\) 'sorce'"),
        (_raw(keys=[{"key": "action", "source": "actions", "role": "motor"}]), "role 'motor' is not one of"),
        (_raw(keys=[{"key": "action", "role": "action"}]), "entry needs 'source'"),
        (_raw(keys=[{"key": "a", "source": "x", "role": "lowdim"}, {"key": "a", "source": "y", "role": "lowdim"}]), "appears twice"),
        (_raw(keys=[{"key": "a", "source": "x[1:b]", "role": "lowdim"}]), "not 'field' or 'field"),
        (_raw(format="rlds"), "format 'rlds' is not one of"),
        (_raw(keys=[]), "non-empty list"),
        (_raw(control_freq="fast"), "'control_freq' must be float"),
    ],
)
def test_bad_cards_are_refused_with_the_field_named(raw, message):
    with pytest.raises(DpError, match=message):
        card_from_dict(raw, "card.yaml")


def test_unknown_card_name_lists_the_known_ones(tmp_path):
    with pytest.raises(DpError, match="no such dataset card.*calvin"):
        load_card("no_such_card")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(_raw(gripper="close")))
    with pytest.raises(DpError, match=rf"{path}: unknown card key\(s\) 'gripper'"):
        load_card(path)
    assert CARDS_DIR.is_dir()


# ---------------------------------------------------------------------------- restricted unpickler
class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_benign_pickled_npy_loads(tmp_path):
    value = {"info": {"indx": [(0, 4), (2, 9)], "episodes": []},
             "language": {"ann": ["a"], "task": ["t"], "emb": np.arange(6, dtype=np.float32).reshape(2, 1, 3)}}
    np.save(tmp_path / "ann.npy", np.array(value, dtype=object), allow_pickle=True)
    loaded = load_npy(tmp_path / "ann.npy")
    assert loaded["info"]["indx"] == [(0, 4), (2, 9)]
    np.testing.assert_array_equal(loaded["language"]["emb"], value["language"]["emb"])
    np.save(tmp_path / "plain.npy", np.arange(4))  # not pickled: read as an array
    np.testing.assert_array_equal(load_npy(tmp_path / "plain.npy"), np.arange(4))


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = {"info": {"indx": [(0, 1)]}, "language": {"ann": [_RunsCode(str(marker))]}}
    path = tmp_path / "auto_lang_ann.npy"
    with open(path, "wb") as f:  # a .npy header followed by the crafted pickle, as np.save would write it
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(np.array(payload, dtype=object), f, protocol=protocol)
    with pytest.raises(DpError, match=r"auto_lang_ann.npy: refused to unpickle '(posix|os)\.system'"):
        load_npy(path)
    assert not marker.exists()
    with pytest.raises(DpError, match="refused to unpickle"):
        safe_loads(pickle.dumps(_RunsCode(str(marker))), "x")
    assert not marker.exists()


def test_garbage_pickle_is_a_clear_error():
    with pytest.raises(DpError, match="not a valid pickle"):
        safe_loads(b"\x80\x04garbage", "file.npy")
