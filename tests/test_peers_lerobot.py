"""The Push-T -> LeRobotDataset conversion of bench/peers/, checked with LeRobot itself (in its own venv):
LeRobot loads the dataset, episode and frame counts match, frames' values match the source zarr."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr

REPO = Path(__file__).resolve().parents[1]
SRC = REPO.parent / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"
VENV = Path(os.environ.get("DP_PEERS_LEROBOT_VENV", Path.home() / ".cache" / "dp-peers" / "lerobot"))
PY = VENV / "bin" / "python"

pytestmark = [
    pytest.mark.skipif(not PY.exists(), reason="LeRobot's venv is absent: build it with `bash bench/peers/setup_lerobot.sh` "
                       "(or point DP_PEERS_LEROBOT_VENV at one)"),
    pytest.mark.skipif(not SRC.exists(), reason="the Push-T replay buffer (shared/data/pusht) is absent"),
]

# Run inside LeRobot's venv: load the dataset with LeRobot's API and report what it holds.
LOAD = """
import json, sys
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/pusht", root=sys.argv[1])
eps = ds.meta.episodes
frames = {}
for i in map(int, sys.argv[2:]):
    item = ds[i]
    frames[i] = {k: np.asarray(item[k]).tolist() for k in ("observation.state", "observation.environment_state", "action",
                                                             "observation.image", "episode_index", "frame_index", "task")}
print(json.dumps({"episodes": ds.num_episodes, "frames": ds.num_frames, "version": ds.meta.info["codebase_version"],
                  "lengths": [int(b - a) for a, b in zip(eps["dataset_from_index"], eps["dataset_to_index"])],
                  "stats_action_max": np.asarray(ds.meta.stats["action"]["max"]).tolist(), "items": frames}))
"""


def _venv(*args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(PY), *args], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_conversion_loads_in_lerobot_with_matching_counts_and_values(tmp_path):
    out = tmp_path / "pusht_lerobot"
    report = json.loads(_venv(str(REPO / "bench" / "peers" / "convert_pusht.py"), str(SRC), "--out", str(out), "--episodes", "3"))
    src = zarr.open_group(str(SRC), mode="r")
    ends = src["meta/episode_ends"][:3]
    assert report["episodes"] == 3 and report["frames"] == int(ends[-1])

    picks = [0, int(ends[0]) + 7, int(ends[-1]) - 1]  # first frame, inside episode 1, last frame of episode 2
    loaded = json.loads(_venv("-c", LOAD, str(out), *map(str, picks)))
    assert loaded["version"] == "v3.0"
    assert loaded["episodes"] == 3 and loaded["frames"] == int(ends[-1])
    assert loaded["lengths"] == np.diff(np.concatenate([[0], ends])).tolist()
    np.testing.assert_allclose(loaded["stats_action_max"], src["data/action"][: ends[-1]].max(0), rtol=1e-6)
    for i in picks:
        item = loaded["items"][str(i)]
        episode = int(np.searchsorted(ends, i, side="right"))
        assert item["episode_index"] == episode
        assert item["frame_index"] == i - (int(ends[episode - 1]) if episode else 0)
        np.testing.assert_array_equal(np.float32(item["observation.state"]), src["data/state"][i, :2])
        np.testing.assert_array_equal(np.float32(item["observation.environment_state"]), src["data/keypoint"][i].reshape(18))
        np.testing.assert_array_equal(np.float32(item["action"]), src["data/action"][i])
        # LeRobot serves images as float CHW in [0, 1]; the source is HWC float 0..255 (integer-valued)
        image = np.rint(np.asarray(item["observation.image"]) * 255).transpose(1, 2, 0)
        np.testing.assert_array_equal(image, src["data/img"][i])


def test_conversion_refuses_an_existing_folder(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    done = subprocess.run([str(PY), str(REPO / "bench" / "peers" / "convert_pusht.py"), str(SRC), "--out", str(out), "--episodes", "1"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900)
    assert done.returncode != 0
    assert "already exists" in done.stderr.strip().splitlines()[-1]
    assert (out / "keep.txt").read_text() == "mine"
