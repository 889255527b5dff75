"""Training windows: edges, short episodes, key selection, splits, lazy image reads, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dp.data.shards import FrameReader
from dp.data.normalize import Normalizer
from dp.data.windows import WindowDataset, make_loader, split_episodes
from dp.errors import DpError


def test_window_edges_repeat_first_and_last_frames(make_store):
    store = make_store(2, lengths=[6, 3])
    ds = WindowDataset([store], ["step", "agentview_image"], obs_horizon=3, action_horizon=4)
    assert len(ds) == 9
    steps = lambda i: ds[i]["obs"]["step"].numpy().ravel().tolist()  # noqa: E731
    assert steps(0) == [0, 0, 0]  # first frame: history is the first frame repeated
    assert steps(1) == [0, 0, 1]
    assert steps(5) == [3, 4, 5]
    ep0 = store.get_episode(0)
    np.testing.assert_array_equal(ds[0]["action"].numpy(), ep0["action"][[0, 1, 2, 3]])
    np.testing.assert_array_equal(ds[4]["action"].numpy(), ep0["action"][[4, 5, 5, 5]])  # last frame repeated
    np.testing.assert_array_equal(ds[5]["action"].numpy(), ep0["action"][[5, 5, 5, 5]])
    # episode 1 (3 frames) is shorter than both horizons
    ep1 = store.get_episode(1)
    assert steps(6) == [0, 0, 0] and steps(8) == [0, 1, 2]
    np.testing.assert_array_equal(ds[6]["action"].numpy(), ep1["action"][[0, 1, 2, 2]])
    np.testing.assert_array_equal(ds[8]["obs"]["agentview_image"].numpy(), ep1["agentview_image"][[0, 1, 2]])
    assert ds[8]["obs"]["agentview_image"].dtype == torch.uint8


def test_windows_end_where_the_executed_actions_are_still_recorded(make_store):
    store = make_store(3, lengths=[6, 3, 1])
    every = WindowDataset([store], ["step"], obs_horizon=2, action_horizon=4)
    ds = WindowDataset([store], ["step"], obs_horizon=2, action_horizon=4, executed=2)
    assert len(every) == 10 and len(ds) == 5 + 2 + 1  # anchors 0..L-2 per episode; a 1-frame episode keeps its one window
    _, act = ds.frame_indices(np.arange(len(ds)))
    stops = np.repeat([6, 9, 10], [5, 2, 1])
    assert (act[:7, :2] < stops[:7, None]).all()  # the two executed actions of every window are recorded frames
    assert (act[:, 2:] <= stops[:, None] - 1).all()  # the chunk's tail may still repeat the last frame
    np.testing.assert_array_equal(ds[4]["action"].numpy(), store.get_episode(0)["action"][[4, 5, 5, 5]])
    assert len(WindowDataset([store], ["step"], action_horizon=4, executed=1)) == len(every)
    for bad in (0, 5):
        with pytest.raises(DpError, match="executed actions per chunk must be 1..action_horizon"):
            WindowDataset([store], ["step"], action_horizon=4, executed=bad)


def test_training_windows_follow_pad_executed(make_store, tmp_path):
    from dp.config import build_config
    from dp.train.data import build_data, resolve

    store = make_store(4, image=False, lengths=[20, 20, 20, 20])
    cfg = build_config("tiny", ["data.obs_keys=[robot0_eef_pos]", "data.action_horizon=8", "data.n_action_steps=4", "data.val_fraction=0"])
    cfg, stores = resolve(cfg, [str(store.path)])
    assert len(build_data(cfg, stores).train) == 4 * 17
    cfg.data.pad_executed = True
    assert len(build_data(cfg, stores).train) == 4 * 20


def test_batches_equal_single_items(make_store):
    store = make_store(4)
    ds = WindowDataset([store], ["robot0_eef_pos", "agentview_image"], obs_horizon=2, action_horizon=5)
    idx = [len(ds) - 1, 0, 7, 3, 7]
    batch = ds.__getitems__(idx)
    for row, i in enumerate(idx):
        item = ds[i]
        for k in item["obs"]:
            assert torch.equal(batch["obs"][k][row], item["obs"][k])
        assert torch.equal(batch["action"][row], item["action"])


def test_task_ids_lang_and_episode_selection(make_store, tmp_path):
    a = make_store(3, name="a.zarr")
    ds = WindowDataset([a], ["robot0_eef_pos"], episodes=[[1]])
    assert len(ds) == a.episode_bounds(1)[1] - a.episode_bounds(1)[0]
    assert ds.tasks == ["can"] and ds.instructions == {"can": "pick the can"}
    full = WindowDataset([a], ["robot0_eef_pos"])
    assert full.tasks == ["can", "lift"]
    ids = full.__getitems__(list(range(len(full))))["task_id"].numpy()
    expected = np.concatenate([np.full(a.episode_bounds(i)[1] - a.episode_bounds(i)[0], 1 if i % 2 == 0 else 0) for i in range(3)])
    np.testing.assert_array_equal(ids, expected)
    assert "lang_emb" not in full[0]


def test_several_stores_make_one_dataset(make_store):
    a, b = make_store(2, name="a.zarr"), make_store(3, name="b.zarr")
    ds = WindowDataset([a, b], ["robot0_eef_pos", "agentview_image"], obs_horizon=2, action_horizon=3)
    assert len(ds) == a.n_frames + b.n_frames
    last = ds[len(ds) - 1]
    np.testing.assert_array_equal(last["obs"]["agentview_image"][-1].numpy(), b.get_episode(2)["agentview_image"][-1])


def test_normalized_windows(make_store):
    store = make_store(3)
    norm = Normalizer.fit([store], ["robot0_eef_pos", "action"])
    ds = WindowDataset([store], ["robot0_eef_pos"], action_horizon=4, normalizer=norm)
    batch = ds.__getitems__(list(range(len(ds))))
    act = batch["action"].numpy()
    assert act.min() >= -1 - 1e-5 and act.max() <= 1 + 1e-5
    assert set(np.unique(act[..., 6])) <= {-1.0, 1.0}  # the gripper stays discrete
    raw = WindowDataset([store], ["robot0_eef_pos"], action_horizon=4)[5]["action"].numpy()
    np.testing.assert_allclose(norm.unnormalize("action", ds[5]["action"].numpy()), raw, atol=1e-5)


def test_missing_keys_and_bad_horizons(make_store):
    store = make_store(1)
    with pytest.raises(DpError, match=r"keys \['wrist_image'\] not in the store"):
        WindowDataset([store], ["wrist_image"])
    with pytest.raises(DpError, match="horizons must be >= 1"):
        WindowDataset([store], ["step"], obs_horizon=0)


def test_split_by_episode_is_disjoint_and_seeded():
    train, val = split_episodes(20, 0.2, seed=3)
    assert len(val) == 4 and len(train) == 16 and not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(20))
    assert np.array_equal(split_episodes(20, 0.2, seed=3)[1], val)
    assert not np.array_equal(split_episodes(20, 0.2, seed=4)[1], val)
    assert len(split_episodes(3, 0.1)[1]) == 1 and len(split_episodes(1, 0.1)[1]) == 0


def test_frame_reader_matches_zarr_and_uses_the_fast_path(make_store):
    store = make_store(3)
    reader = FrameReader(store.path, "agentview_image")
    assert reader._layout is not None
    frames = np.array([0, store.n_frames - 1, 5, 5, 2])
    np.testing.assert_array_equal(reader.read_many(frames), store.array("agentview_image").oindex[frames])


def test_dataloader_with_workers_uncached(make_store):
    store = make_store(4)
    ds = WindowDataset([store], ["robot0_eef_pos", "agentview_image"], obs_horizon=2, action_horizon=4, cache_lowdim=False)
    loader = make_loader(ds, batch_size=8, num_workers=2, shuffle=True, drop_last=False)
    seen = 0
    for batch in loader:
        assert batch["obs"]["agentview_image"].shape[1:] == (2, 16, 16, 3)
        assert batch["obs"]["robot0_eef_pos"].shape[1:] == (2, 3) and batch["action"].shape[1:] == (4, 7)
        seen += len(batch["action"])
    assert seen == len(ds)
    cached = WindowDataset([store], ["robot0_eef_pos"], obs_horizon=2, action_horizon=4)
    for i in (0, 11, len(ds) - 1):
        assert torch.equal(ds[i]["obs"]["robot0_eef_pos"], cached[i]["obs"]["robot0_eef_pos"])
