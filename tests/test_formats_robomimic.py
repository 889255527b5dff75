"""robomimic files through `dp import libero`: a low-dim file with the plain command, the robomimic card, errors that say what fixes them."""

from __future__ import annotations

import h5py
import numpy as np

from dp.cli import main as dp_main
from dp.data.formats.cards import load_card
from dp.data.store import EpisodeStore
from dp.testing.format_fixtures import make_libero_file

LOW_DIM = ["action", "object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]


def _low_dim_file(path):
    """robomimic's low_dim.hdf5: the image file's demos without the camera datasets."""
    expected = make_libero_file(path, robomimic=True, demo_lens=(7, 5, 6), image_size=8)
    with h5py.File(path, "r+") as f:
        for name in f["data"]:
            del f[f"data/{name}/obs/agentview_image"], f[f"data/{name}/obs/robot0_eye_in_hand_image"]
    return expected


def test_low_dim_file_imports_with_the_plain_command(tmp_path):
    path = tmp_path / "lift" / "low_dim.hdf5"
    expected = _low_dim_file(path)
    out = tmp_path / "lift.zarr"
    assert dp_main(["import", "libero", str(path), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    with EpisodeStore.open(out) as store:
        assert len(store) == 3 and sorted(store.keys) == LOW_DIM
        assert store.roles["image"] == [] and store.discrete_dims == {"action": [6]}
        assert store.attrs["dataset_card"]["name"] == "robomimic"
        for i in range(3):
            episode = store.get_episode(i)
            for key in LOW_DIM:
                np.testing.assert_array_equal(episode[key], expected[i][key], err_msg=f"demo {i} {key}")
            assert store.episode_meta(i)["task"] == "Lift" and store.episode_meta(i)["source"] == "robomimic"


def test_robomimic_card_names_robomimics_keys():
    card = load_card("robomimic")
    fields = {spec.key: spec.sources[0].field for spec in card.keys}
    assert fields["object"] == "obs/object" and fields["robot0_eef_pos"] == "obs/robot0_eef_pos"
    assert fields["agentview_image"] == "obs/agentview_image" and fields["action"] == "actions"
    # Diffusion Policy's low-dim robomimic experiments observe these four
    state = sorted(s.key for s in card.keys if s.policy_encoder == "state")
    assert state == ["object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]


def test_missing_keys_say_which_flag_or_card_entry_fixes_them(tmp_path, capsys):
    path = tmp_path / "image.hdf5"
    make_libero_file(path, robomimic=True, demo_lens=(4, 4), image_size=8)
    with h5py.File(path, "r+") as f:
        del f["data/demo_1/obs/robot0_eye_in_hand_image"]  # one demo lacks a camera the other has
    assert dp_main(["import", "libero", str(path), "--out", str(tmp_path / "a.zarr"), "--workers", "0", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "missing 'obs/robot0_eye_in_hand_image'" in err and "leave camera 'wrist' out with --cameras" in err
    assert dp_main(["import", "libero", str(path), "--out", str(tmp_path / "b.zarr"), "--cameras", "agentview",
                    "--workers", "0", "--no-progress"]) == 0
    with h5py.File(path, "r+") as f:
        del f["data/demo_0/obs/robot0_eef_quat"]
    assert dp_main(["import", "libero", str(path), "--out", str(tmp_path / "c.zarr"), "--cameras", "agentview",
                    "--workers", "0", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "missing 'obs/robot0_eef_quat'" in err and "'optional: true' (--card)" in err
