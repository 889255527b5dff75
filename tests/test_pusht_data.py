"""Push-T data: the keypoint card flattens (9, 2) keypoints, and on Diffusion Policy's own data the
keypoints are the rigid function of the block pose that the Push-T task computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dp.cli import main
from dp.data.formats.cards import load_card
from dp.data.store import EpisodeStore
from dp.sim.pusht import keypoints
from dp.testing.format_fixtures import make_dp_zarr

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"


def test_keypoint_card_flattens_keypoints_and_keeps_the_task_name(tmp_path):
    src = make_dp_zarr(tmp_path / "src.zarr", episode_lens=(9, 6), image_size=8)
    card = load_card("pusht_keypoints")
    assert card.name == "pusht" and card.spec("keypoint").flatten and card.to_dict()["keys"][1]["flatten"] is True
    assert main(["import", "dp-zarr", str(tmp_path / "src.zarr"), "--card", "pusht_keypoints", "--out", str(tmp_path / "kp.zarr"),
                 "--workers", "0", "--no-progress"]) == 0
    with EpisodeStore.open(tmp_path / "kp.zarr") as store:
        assert store.roles == {"lowdim": ["agent_pos", "keypoint"], "image": [], "action": ["action"]}
        np.testing.assert_array_equal(store.array("keypoint")[:], src["keypoint"].reshape(15, 18))  # x0 y0 x1 y1 ...
        np.testing.assert_array_equal(store.array("agent_pos")[:], src["state"][:, :2])
        assert store.episode_meta(1)["task"] == "pusht"


def test_flatten_is_refused_on_images(tmp_path):
    from dp.data.formats.cards import card_from_dict
    from dp.errors import DpError

    with pytest.raises(DpError, match="'flatten' must be true or false, and applies to low-dim and action keys only"):
        card_from_dict({"name": "x", "format": "dp-zarr", "keys": [{"key": "img", "source": "img", "role": "image", "flatten": True}]})


@pytest.mark.skipif(not SHARED.exists(), reason="needs Diffusion Policy's Push-T data (pusht_cchi_v7_replay.zarr from the "
                    "data/pusht folder of the Diffusion Policy release) at ../shared/data/pusht/")
def test_diffusion_policy_keypoints_are_the_tasks_function_of_the_block_pose():
    import zarr

    root = zarr.open_group(str(SHARED), mode="r")
    state, kp = root["data/state"][::50], root["data/keypoint"][::50]
    error = np.abs(np.stack([keypoints(s[2:]) for s in state]) - kp).max(axis=(1, 2))
    assert np.median(error) < 0.01 and np.percentile(error, 99) < 0.1  # pixels
