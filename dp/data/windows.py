"""Training windows over episode stores.

A window is anchored at frame t of an episode of length L: observations at t-To+1 .. t and
actions at t .. t+Ta-1; indices outside the episode repeat its first / last frame (edge padding
by repetition, as Diffusion Policy's SequenceSampler does). One window per frame; with
``executed`` = Te, as Diffusion Policy's ``pad_after = n_action_steps - 1``, the last anchor is
L-Te, so the Te actions a policy executes from a chunk are always recorded ones and only the
chunk's tail repeats the last action (a window whose executed actions were that repetition would
teach the policy to stand still just before the demonstration's end).

Low-dim keys are cached in memory (small); image frames are read lazily, frame by frame, so
memory does not grow with the store. :meth:`WindowDataset.__getitems__` builds a whole batch with
array indexing; use :func:`make_loader`, which passes batches through the DataLoader untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dp.data.language import episode_embeddings
from dp.data.shards import FrameReader
from dp.data.normalize import Normalizer
from dp.data.store import EpisodeStore
from dp.errors import DpError

DEFAULT_TASK = "default"


def split_episodes(n_episodes: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle episode indices with ``seed`` and hold out ``val_fraction`` (at least one when possible)."""
    order = np.random.default_rng(seed).permutation(n_episodes)
    n_val = int(round(n_episodes * val_fraction))
    if val_fraction > 0 and n_val == 0 and n_episodes > 1:
        n_val = 1
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class WindowDataset(Dataset):
    """(obs_horizon, action_horizon) windows over one or more stores; items are dicts of tensors."""

    def __init__(
        self,
        stores: list[EpisodeStore | str | Path],
        obs_keys: list[str],
        action_key: str = "action",
        obs_horizon: int = 1,
        action_horizon: int = 10,
        episodes: list[np.ndarray | list[int] | None] | None = None,
        normalizer: Normalizer | None = None,
        cache_lowdim: bool = True,
        widths: dict[str, int] | None = None,
        goals: list[dict[str, np.ndarray]] | None = None,
        executed: int | None = None,
    ):
        """``executed``: actions a policy executes from each chunk; windows end where these are still
        recorded (None: one window per frame). ``widths``: low-dim keys zero-padded to that many values per frame (stores of different widths
        training one policy, ``data.pad_lowdim``). ``goals``: per store, instruction -> language embedding
        for episodes whose metadata has none (embedded in memory because the store could not be written)."""
        if obs_horizon < 1 or action_horizon < 1:
            raise DpError(f"horizons must be >= 1 (obs_horizon={obs_horizon}, action_horizon={action_horizon})")
        opened = [s if isinstance(s, EpisodeStore) else EpisodeStore.open(s, "r") for s in stores]
        if episodes is not None and len(episodes) != len(opened):
            raise DpError(f"episodes: one selection per store expected ({len(opened)} stores, {len(episodes)} given)")
        self.paths = [s.path for s in opened]
        self.obs_keys = list(obs_keys)
        self.action_key = action_key
        self.obs_horizon, self.action_horizon = obs_horizon, action_horizon
        if executed is not None and not 1 <= executed <= action_horizon:
            raise DpError(f"executed actions per chunk must be 1..action_horizon ({action_horizon}), got {executed}")
        self.executed = executed
        self.normalizer = normalizer
        self.cache_lowdim = cache_lowdim
        self.widths = dict(widths or {})
        for store in opened:
            missing = [k for k in [*self.obs_keys, action_key] if k not in store.keys]
            if missing:
                raise DpError(f"{store.path}: keys {missing} not in the store (it has: {', '.join(store.keys)})")
        self.image_keys = [k for k in self.obs_keys if k in opened[0].roles["image"]]
        self.lowdim_keys = [k for k in self.obs_keys if k not in self.image_keys]
        self._build_index(opened, episodes, goals or [{} for _ in opened])
        self._lowdim = self._load_lowdim(opened) if cache_lowdim else None
        self._readers = [{k: FrameReader(p, k) for k in self.image_keys} for p in self.paths]
        self._stores: list[EpisodeStore] | None = None

    # ------------------------------------------------------------------ index
    def _build_index(self, stores: list[EpisodeStore], episodes: list | None, goals: list[dict[str, np.ndarray]]) -> None:
        anchors, starts, stops, store_ids, task_names, embs = [], [], [], [], [], []
        self.instructions: dict[str, str] = {}
        for sid, store in enumerate(stores):
            chosen = range(len(store)) if episodes is None or episodes[sid] is None else episodes[sid]
            tasks, instrs, lang = store.meta_column("task"), store.meta_column("instruction"), episode_embeddings(store, goals[sid])
            for e in chosen:
                start, episode_stop = store.episode_bounds(int(e))
                # anchors: every frame, or (executed) up to L-Te, at least the first frame of a short episode
                stop = episode_stop if self.executed is None else max(start + 1, episode_stop - self.executed + 1)
                task = tasks[e] or DEFAULT_TASK
                if instrs[e]:
                    self.instructions.setdefault(task, instrs[e])
                anchors.append(np.arange(start, stop))
                starts.append(np.full(stop - start, start))
                stops.append(np.full(stop - start, episode_stop))
                store_ids.append(np.full(stop - start, sid))
                task_names += [task] * (stop - start)
                embs.append(lang[e])
        if not anchors:
            raise DpError(f"no episodes to sample windows from in {', '.join(map(str, self.paths))}")
        self.tasks = sorted(set(task_names))
        task_of = {t: i for i, t in enumerate(self.tasks)}
        self._anchor = np.concatenate(anchors)
        self._start = np.concatenate(starts)
        self._stop = np.concatenate(stops)
        self._store_id = np.concatenate(store_ids)
        self._task_id = np.array([task_of[t] for t in task_names], dtype=np.int64)
        self._lang = None
        if all(e is not None for e in embs):
            lengths = [len(a) for a in anchors]
            self._lang = np.repeat(np.stack(embs).astype(np.float32), lengths, axis=0)

    def _load_lowdim(self, stores: list[EpisodeStore]) -> list[dict[str, np.ndarray]]:
        cache = []
        for store in stores:
            keys = [*self.lowdim_keys, self.action_key]
            cache.append({k: self._pad(k, store.read(k, 0, store.n_frames).astype(np.float32)) for k in keys})
        return cache

    def _pad(self, key: str, values: np.ndarray) -> np.ndarray:
        extra = self.widths.get(key, values.shape[-1]) - values.shape[-1]
        return np.pad(values, [(0, 0)] * (values.ndim - 1) + [(0, extra)]) if extra > 0 else values

    def __len__(self) -> int:
        return len(self._anchor)

    @property
    def task_ids(self) -> np.ndarray:
        """Each window's task, as an index into :attr:`tasks`."""
        return self._task_id

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_stores"] = None  # reopened lazily in each worker
        return state

    # ------------------------------------------------------------------ items
    def frame_indices(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global frame indices of the observations (B, To) and actions (B, Ta) of windows ``idx``."""
        anchor, start, last = self._anchor[idx, None], self._start[idx, None], self._stop[idx, None] - 1
        obs = np.clip(anchor + np.arange(-self.obs_horizon + 1, 1), start, last)
        act = np.clip(anchor + np.arange(self.action_horizon), start, last)
        return obs, act

    def _read_lowdim(self, sid: int, key: str, frames: np.ndarray) -> np.ndarray:
        if self._lowdim is not None:
            return self._lowdim[sid][key][frames]
        if self._stores is None:
            self._stores = [EpisodeStore.open(p, "r") for p in self.paths]
        lo, hi = int(frames.min()), int(frames.max()) + 1
        return self._pad(key, self._stores[sid].read(key, lo, hi).astype(np.float32)[frames - lo])

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        """A whole batch: ``{"obs": {key: (B, To, ...)}, "action": (B, Ta, A), "task_id": (B,), ["lang_emb": (B, E)]}``."""
        idx = np.asarray(indices, dtype=np.int64)
        obs_f, act_f = self.frame_indices(idx)
        sids = self._store_id[idx]
        obs: dict[str, np.ndarray] = {}
        action = None
        for sid in np.unique(sids):
            rows = np.nonzero(sids == sid)[0]
            parts = {k: self._read_lowdim(sid, k, obs_f[rows]) for k in self.lowdim_keys}
            for k in self.image_keys:
                frames = self._readers[sid][k].read_many(obs_f[rows].reshape(-1))
                parts[k] = frames.reshape(len(rows), self.obs_horizon, *frames.shape[1:])
            act = self._read_lowdim(sid, self.action_key, act_f[rows])
            for k, v in parts.items():
                if k not in obs:
                    obs[k] = np.empty((len(idx), *v.shape[1:]), dtype=v.dtype)
                obs[k][rows] = v
            if action is None:
                action = np.empty((len(idx), *act.shape[1:]), dtype=np.float32)
            action[rows] = act
        if self.normalizer is not None:
            for k in self.lowdim_keys:
                obs[k] = self.normalizer.normalize(k, obs[k])
            action = self.normalizer.normalize(self.action_key, action)
        batch: dict[str, Any] = {
            "obs": {k: torch.from_numpy(np.ascontiguousarray(v, dtype=v.dtype if k in self.image_keys else np.float32)) for k, v in obs.items()},
            "action": torch.from_numpy(np.ascontiguousarray(action, dtype=np.float32)),
            "task_id": torch.from_numpy(self._task_id[idx]),
        }
        if self._lang is not None:
            batch["lang_emb"] = torch.from_numpy(self._lang[idx])
        return batch

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One window (the batch of one, without the batch axis)."""
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        batch = self.__getitems__([i % len(self)])
        return _unbatch(batch)


def _unbatch(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: _unbatch(v) if isinstance(v, dict) else v[0] for k, v in batch.items()}


def passthrough_collate(batch: Any) -> Any:
    """The DataLoader's collate for :class:`WindowDataset`: its batches arrive already stacked."""
    return batch


def make_loader(
    dataset: WindowDataset,
    batch_size: int,
    shuffle: bool = True,
    num_workers: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = True,
    seed: int = 0,
    **kwargs: Any,
) -> DataLoader:
    """A DataLoader that fetches whole batches through ``dataset.__getitems__``."""
    generator = torch.Generator().manual_seed(seed) if sampler is None and shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=passthrough_collate,
        drop_last=drop_last,
        generator=generator,
        persistent_workers=num_workers > 0,
        **kwargs,
    )
