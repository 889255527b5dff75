"""Diffusion Policy zarr-format-2 stores into our format-3 store."""

from __future__ import annotations

import numpy as np
import pytest

from dp.cli import main
from dp.data.formats import dp_zarr
from dp.data.formats.cards import card_from_dict, load_card
from dp.data.formats.pipeline import run_import
from dp.data.store import EpisodeStore
from dp.errors import DpError
from dp.testing.format_fixtures import make_dp_zarr

LENS = (10, 7, 12)


def test_pusht_card_import(tmp_path):
    src = make_dp_zarr(tmp_path / "pusht.zarr", episode_lens=LENS)
    assert main(["import", "dp-zarr", str(tmp_path / "pusht.zarr"), "--card", "pusht", "--out", str(tmp_path / "s.zarr"),
                 "--workers", "2", "--no-progress"]) == 0
    with EpisodeStore.open(tmp_path / "s.zarr") as store:
        assert store.zarr_format == 3 and store.control_freq == 10.0
        assert store.roles == {"lowdim": ["agent_pos", "state", "keypoint"], "image": ["img"], "action": ["action"]}
        assert store.array("keypoint").shape[1:] == (18,)  # privileged state: the block's 9 keypoints, flattened
        assert store.episode_ends.tolist() == np.cumsum(LENS).tolist()
        np.testing.assert_array_equal(store.array("agent_pos")[:], src["state"][:, :2])
        image = store.array("img")[:]
        assert image.dtype == np.uint8
        np.testing.assert_array_equal(image, src["img"].astype(np.uint8))  # float 0..255 -> uint8
        np.testing.assert_array_equal(store.array("state")[:], src["state"])
        np.testing.assert_array_equal(store.array("action")[:], src["action"])
        assert store.episode_meta(1)["task"] == "pusht" and store.episode_meta(1)["source_index"] == 1


def test_flags_and_default_roles(tmp_path):
    src = make_dp_zarr(tmp_path / "pusht.zarr", episode_lens=LENS, image_size=16)
    card, items = dp_zarr.plan_import(tmp_path / "pusht.zarr", image=["img"], lowdim=["state", "keypoint"], action="action")
    run_import(items, tmp_path / "flags.zarr", card, workers=0, progress=False)
    with EpisodeStore.open(tmp_path / "flags.zarr") as store:
        assert store.roles == {"lowdim": ["state", "keypoint"], "image": ["img"], "action": ["action"]}
        np.testing.assert_array_equal(store.array("keypoint")[:], src["keypoint"])
    card, items = dp_zarr.plan_import(tmp_path / "pusht.zarr")  # no card, no flags: the source's own roles
    assert sorted(k.key for k in card.keys) == ["action", "img", "keypoint", "n_contacts", "state"]
    sliced = card_from_dict({"name": "agent", "format": "dp-zarr", "keys": [
        {"key": "agent_pos", "source": "state[0:2]", "role": "lowdim"}, {"key": "action", "source": "action", "role": "action"}]})
    card, items = dp_zarr.plan_import(tmp_path / "pusht.zarr", card=sliced)
    run_import(items, tmp_path / "sliced.zarr", card, workers=0, progress=False)
    with EpisodeStore.open(tmp_path / "sliced.zarr") as store:
        np.testing.assert_array_equal(store.array("agent_pos")[:], src["state"][:, :2])


def test_bad_input(tmp_path):
    make_dp_zarr(tmp_path / "pusht.zarr", episode_lens=LENS, image_size=16)
    with pytest.raises(DpError, match="a libero card, not a dp-zarr one"):
        dp_zarr.plan_import(tmp_path / "pusht.zarr", card=load_card("libero"))
    with pytest.raises(DpError, match="no data key 'pixels'"):
        dp_zarr.plan_import(tmp_path / "pusht.zarr", image=["pixels"], action="action")
    with pytest.raises(DpError, match="either --card or"):
        dp_zarr.plan_import(tmp_path / "pusht.zarr", card=load_card("pusht"), action="action")
    import zarr

    zarr.open_group(str(tmp_path / "pusht.zarr"), mode="r+")["data/img"][3] = 300.0  # not 0..255
    card, items = dp_zarr.plan_import(tmp_path / "pusht.zarr", card=load_card("pusht"))
    with pytest.raises(DpError, match=r"data/img frames 0..9 -> img: float images must hold finite values in 0..255"):
        run_import(items, tmp_path / "s.zarr", card, workers=0, progress=False)
    report = run_import(items, tmp_path / "t.zarr", card, workers=0, skip_bad=True, progress=False)
    assert report.added == 2 and "episode 0" in report.skipped[0]
