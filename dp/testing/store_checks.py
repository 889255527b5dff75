"""Assertions on episode stores that the format tests share (a store exported and imported again)."""

from __future__ import annotations

import numpy as np

from dp.data.store import EpisodeStore

SOURCE_META = {"source_file", "source_index"}  # where an import read an episode from: differs by design


def assert_same_store(a: EpisodeStore, b: EpisodeStore, robot: bool = True) -> None:
    """``a`` and ``b`` hold the same episodes: keys, roles, discrete dimensions, control rate (and robot,
    unless the format does not carry it), every array bit for bit with its dtype, and every episode's
    metadata apart from its source."""
    assert len(a) == len(b) and a.keys == b.keys and a.roles == b.roles and a.discrete_dims == b.discrete_dims
    assert a.control_freq == b.control_freq and (not robot or a.robot == b.robot)
    for i in range(len(a)):
        ea, eb = a.get_episode(i), b.get_episode(i)
        for key in a.keys:
            assert ea[key].dtype == eb[key].dtype
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=f"episode {i} key {key}")
        ma, mb = a.episode_meta(i), b.episode_meta(i)
        assert set(ma) - SOURCE_META == set(mb) - SOURCE_META
        for k in set(ma) - SOURCE_META:
            np.testing.assert_array_equal(np.asarray(ma[k]), np.asarray(mb[k]), err_msg=f"episode {i} meta {k}")
