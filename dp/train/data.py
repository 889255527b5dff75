"""From episode stores to training windows: key selection, shapes, goal vocabulary, split, normalizer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from dp.config import Config
from dp.data.normalize import Normalizer
from dp.data.sampler import DEFAULT_TASK, WindowDataset, split_episodes
from dp.data.store import EpisodeStore
from dp.errors import DpError


@dataclass
class TrainData:
    train: WindowDataset
    val: WindowDataset | None
    normalizer: Normalizer
    goals: dict[str, np.ndarray]  # instruction (or task) -> language embedding; empty unless goal == "lang"
    train_task_map: torch.Tensor  # dataset task index -> vocabulary index
    val_task_map: torch.Tensor | None


def open_stores(paths: list[str]) -> list[EpisodeStore]:
    if not paths:
        raise DpError("no training data: pass --data STORE[,STORE...]")
    stores = [EpisodeStore.open(p, "r") for p in paths]
    for store in stores:
        if len(store) == 0:
            raise DpError(f"{store.path}: the store holds no episodes")
    return stores


def _select_keys(cfg: Config, stores: list[EpisodeStore]) -> tuple[list[str], list[str]]:
    data = cfg.data
    first = stores[0]
    if data.lowdim_keys or data.image_keys:  # resolved before (resume, or a saved config)
        wanted = [*data.lowdim_keys, *data.image_keys]
        lowdim, image = list(data.lowdim_keys), list(data.image_keys)
    elif data.obs_keys is not None:
        wanted = list(data.obs_keys)
        image = [k for k in wanted if k in first.roles["image"]]
        lowdim = [k for k in wanted if k not in image]
    else:
        lowdim = [k for k in first.roles["lowdim"] if all(k in s.keys for s in stores)]
        image = [k for k in first.roles["image"] if all(k in s.keys for s in stores)] if data.images else []
        if data.images and not image:
            raise DpError(f"{first.path}: data.images=true but the store has no image keys (roles: {first.roles})")
        wanted = [*lowdim, *image]
    for store in stores:
        missing = [k for k in [*wanted, data.action_key] if k not in store.keys]
        if missing:
            raise DpError(
                f"{store.path}: no key(s) {missing}, which the configuration asks for "
                f"(data.obs_keys / data.action_key); the store has: {', '.join(store.keys)}"
            )
    if not wanted:
        raise DpError(f"{first.path}: no observation keys to train on (roles: {first.roles}); set data.obs_keys")
    return lowdim, image


def _shapes(cfg: Config, stores: list[EpisodeStore], keys: list[str]) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for key in keys:
        for store in stores:
            shape = list(store.array(key).shape[1:])
            expected = shapes.get(key, cfg.data.shapes.get(key))
            if expected is not None and list(expected) != shape:
                raise DpError(f"{store.path}: key {key!r} has frame shape {shape}, the policy expects {list(expected)}")
            shapes[key] = shape
    return shapes


def _vocabulary(stores: list[EpisodeStore]) -> tuple[list[str], dict[str, str], dict[str, np.ndarray], bool]:
    tasks: set[str] = set()
    instructions: dict[str, str] = {}
    goals: dict[str, np.ndarray] = {}
    all_lang = True
    for store in stores:
        t_col, i_col, l_col = store.meta_column("task"), store.meta_column("instruction"), store.meta_column("lang_emb")
        for task, instr, emb in zip(t_col, i_col, l_col):
            task = task or DEFAULT_TASK
            tasks.add(task)
            if instr:
                instructions.setdefault(task, instr)
            if emb is None:
                all_lang = False
            else:
                goals.setdefault(instr or task, np.asarray(emb, dtype=np.float32))
    return sorted(tasks), instructions, goals, all_lang


def resolve(cfg: Config, paths: list[str]) -> tuple[Config, list[EpisodeStore]]:
    """``cfg`` with data keys, shapes, action size, goal kind and vocabulary filled in from the stores."""
    stores = open_stores(paths)
    lowdim, image = _select_keys(cfg, stores)
    shapes = _shapes(cfg, stores, [*lowdim, *image, cfg.data.action_key])
    action_shape = shapes.pop(cfg.data.action_key)
    if len(action_shape) != 1:
        raise DpError(f"{stores[0].path}: action key {cfg.data.action_key!r} must be one vector per frame; frame shape is {action_shape}")
    for key in image:
        if len(shapes[key]) != 3:
            raise DpError(f"{stores[0].path}: image key {key!r} must be (H, W, C) per frame; got {shapes[key]}")
    tasks, instructions, _, all_lang = _vocabulary(stores)
    goal = cfg.model.goal
    if goal == "auto":
        goal = "lang" if all_lang else "task"
    elif goal == "lang" and not all_lang:
        raise DpError("model.goal=lang but some episodes have no 'lang_emb' metadata; use model.goal=task")
    elif goal not in ("task", "none", "lang"):
        raise DpError(f"model.goal must be auto, task, lang or none; got {goal!r}")
    if cfg.vocab.tasks and cfg.vocab.tasks != tasks:  # resuming or fine-tuning on other data
        raise DpError(f"the stores' tasks {tasks} differ from the run's vocabulary {cfg.vocab.tasks}")
    data = dataclasses.replace(
        cfg.data,
        stores=[str(Path(p).resolve()) for p in paths],
        lowdim_keys=lowdim,
        image_keys=image,
        shapes=shapes,
        action_dim=int(action_shape[0]),
    )
    model = dataclasses.replace(cfg.model, goal=goal)
    vocab = dataclasses.replace(cfg.vocab, tasks=tasks, instructions=instructions)
    return dataclasses.replace(cfg, data=data, model=model, vocab=vocab), stores


def build_data(cfg: Config, stores: list[EpisodeStore], normalizer: Normalizer | None = None) -> TrainData:
    """Train / validation windows (episodes split per store with ``train.seed``) and the normalizer."""
    data = cfg.data
    if normalizer is None:
        normalizer = Normalizer.fit(stores, [*data.lowdim_keys, data.action_key])
    splits = [split_episodes(len(s), data.val_fraction, cfg.train.seed) for s in stores]
    obs_keys = [*data.lowdim_keys, *data.image_keys]

    def windows(episodes: list[np.ndarray]) -> WindowDataset:
        return WindowDataset(
            stores, obs_keys, data.action_key, data.obs_horizon, data.action_horizon, episodes=episodes, normalizer=normalizer
        )

    train = windows([tr for tr, _ in splits])
    val = windows([va for _, va in splits]) if any(len(va) for _, va in splits) else None
    _, _, goals, _ = _vocabulary(stores)
    if cfg.model.goal != "lang":
        goals = {}
    vocab = {t: i for i, t in enumerate(cfg.vocab.tasks)}
    train_map = torch.tensor([vocab[t] for t in train.tasks], dtype=torch.long)
    val_map = torch.tensor([vocab[t] for t in val.tasks], dtype=torch.long) if val is not None else None
    return TrainData(train, val, normalizer, goals, train_map, val_map)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded shuffle per epoch, one shard per rank) that can start mid-epoch."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.skip = 0

    def set_position(self, epoch: int, skip_samples: int) -> None:
        self.set_epoch(epoch)
        self.skip = skip_samples

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)
