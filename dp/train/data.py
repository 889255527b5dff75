"""From episode stores to training windows: key selection, shapes, goal vocabulary, split, normalizer.

Which keys feed the policy, unless ``data.obs_keys`` names them: the store's key roles, refined by
the dataset card the store was imported with (its ``dataset_card`` attribute): low-dim keys whose
card ``encoder`` is ``state`` feed the state encoder (if ``data.lowdim``), image keys whose encoder
is ``vision`` feed one vision encoder each (if ``data.images``), resized to the card's ``resize`` with
``model.card_resize``; keys marked ``none`` (privileged simulator state) only when named. Several
stores: the first store's card decides, and every key must be in every store.

Language goals (``model.goal=lang``): the episodes' ``lang_emb`` metadata (the card's
``language.key``); instructions without an embedding are embedded once per distinct instruction
with the offline sentence encoder and cached in their store first (dp/data/language.py).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from dp.config import Config
from dp.data import language
from dp.data.formats.cards import DatasetCard, card_from_dict
from dp.data.normalize import Normalizer
from dp.data.store import EpisodeStore
from dp.data.windows import DEFAULT_TASK, WindowDataset, split_episodes
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


def store_card(store: EpisodeStore) -> DatasetCard | None:
    """The dataset card a store was imported with (None for collected stores, or an unreadable card)."""
    raw = store.attrs.get("dataset_card")
    if not isinstance(raw, dict):
        return None
    try:
        return card_from_dict(raw, f"{store.path}: dataset_card attribute")
    except DpError:
        return None


def _encoder_of(card: DatasetCard | None, key: str, role: str) -> str:
    spec = card.spec_for_store_key(key) if card is not None else None
    if spec is not None and spec.role == role:
        return spec.policy_encoder
    return {"image": "vision", "lowdim": "state"}.get(role, "none")


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
        card = store_card(first)

        def inputs(role: str, encoder: str) -> list[str]:
            return [k for k in first.roles[role] if all(k in s.keys for s in stores) and _encoder_of(card, k, role) == encoder]

        lowdim = inputs("lowdim", "state") if data.lowdim else []
        image = inputs("image", "vision") if data.images else []
        if data.images and not image:
            raise DpError(f"{first.path}: data.images=true but the store has no image keys for the vision encoder (roles: {first.roles})")
        wanted = [*lowdim, *image]
    for store in stores:
        missing = [k for k in [*wanted, data.action_key, *data.privileged_keys] if k not in store.keys]
        if missing:
            raise DpError(
                f"{store.path}: no key(s) {missing}, which the configuration asks for "
                f"(data.obs_keys / data.action_key / data.privileged_keys); the store has: {', '.join(store.keys)}"
            )
    if not wanted:
        raise DpError(
            f"{first.path}: no observation keys to train on (roles: {first.roles}; data.lowdim={str(data.lowdim).lower()}, "
            f"data.images={str(data.images).lower()}); set data.obs_keys, data.lowdim=true or data.images=true"
        )
    _check_privileged(data.privileged_keys, wanted, image, first)
    return lowdim, image


def _check_privileged(privileged: list[str], observed: list[str], image: list[str], store: EpisodeStore) -> None:
    """Privileged keys: low-dim keys the policy does not observe, predicted from its cameras' features."""
    if not privileged:
        return
    if not image:
        raise DpError(f"data.privileged_keys={privileged} are predicted from the cameras' features, but this policy observes no camera")
    seen = [k for k in privileged if k in observed]
    if seen:
        raise DpError(f"data.privileged_keys {seen} are also observation keys: a privileged key is one the policy does not observe")
    not_lowdim = [k for k in privileged if k not in store.roles["lowdim"]]
    if not_lowdim:
        raise DpError(f"{store.path}: data.privileged_keys {not_lowdim} are not low-dim keys (low-dim keys: {store.roles['lowdim']})")


def _image_sizes(cfg: Config, stores: list[EpisodeStore], image: list[str]) -> dict[str, int]:
    """Per-camera resize: explicit ``model.image_sizes`` entries, else (with ``model.card_resize`` and no
    ``model.image_size``) the card's ``resize`` of each camera."""
    unknown = sorted(set(cfg.model.image_sizes) - set(image))
    if unknown:
        raise DpError(f"model.image_sizes names {unknown}, which are not camera keys of this run (cameras: {image or 'none'})")
    sizes = dict(cfg.model.image_sizes)
    if cfg.model.card_resize and cfg.model.image_size is None:
        card = store_card(stores[0])
        for key in image:
            spec = card.spec_for_store_key(key) if card is not None else None
            if key not in sizes and spec is not None and spec.resize:
                sizes[key] = int(spec.resize)
    return sizes


def _shapes(cfg: Config, stores: list[EpisodeStore], keys: list[str], padded: list[str]) -> dict[str, list[int]]:
    """Per-frame shapes, equal in every store; ``padded`` vector keys take the widest store's width."""
    shapes: dict[str, list[int]] = {}
    for key in keys:
        found = [list(store.array(key).shape[1:]) for store in stores]
        if key in padded and all(len(s) == 1 for s in found):
            shapes[key] = [max([s[0] for s in found] + list(cfg.data.shapes.get(key, [])))]
            continue
        for store, shape in zip(stores, found):
            expected = shapes.get(key, cfg.data.shapes.get(key))
            if expected is not None and list(expected) != shape:
                hint = " (stores of different widths: data.pad_lowdim=true)" if len(shape) == 1 and key not in padded else ""
                raise DpError(f"{store.path}: key {key!r} has frame shape {shape}, the policy expects {list(expected)}{hint}")
            shapes[key] = shape
    return shapes


def pad_widths(cfg: Config) -> dict[str, int]:
    """The low-dim keys zero-padded to a common width (``data.pad_lowdim``), with that width."""
    if not cfg.data.pad_lowdim:
        return {}
    return {k: cfg.data.shapes[k][0] for k in cfg.data.lowdim_keys if len(cfg.data.shapes[k]) == 1}


# embeddings made in memory for stores that could not be written (store path -> instruction -> vector)
_MEMORY_GOALS: dict[str, dict[str, np.ndarray]] = {}


def _memory_goals(store: EpisodeStore) -> dict[str, np.ndarray]:
    return _MEMORY_GOALS.get(str(Path(store.path).resolve()), {})


def _vocabulary(stores: list[EpisodeStore]) -> tuple[list[str], dict[str, str], dict[str, np.ndarray], bool, set[str]]:
    """(tasks, task -> instruction, instruction (or task) -> embedding, every episode has one, encoders of the embeddings)."""
    tasks: set[str] = set()
    instructions: dict[str, str] = {}
    goals: dict[str, np.ndarray] = {}
    encoders: set[str] = set()
    all_lang = True
    for store in stores:
        t_col, i_col = store.meta_column("task"), store.meta_column("instruction")
        l_col = language.episode_embeddings(store, _memory_goals(store))
        for task, instr, emb, enc in zip(t_col, i_col, l_col, language.episode_encoders(store)):
            task = task or DEFAULT_TASK
            tasks.add(task)
            if instr:
                instructions.setdefault(task, instr)
            if emb is None:
                all_lang = False
            else:  # no stored encoder for an embedding: it was made in memory, by the offline encoder
                goals.setdefault(instr or task, np.asarray(emb, dtype=np.float32))
                encoders.add(language.ENCODER_NAME if enc is None else enc)
    return sorted(tasks), instructions, goals, all_lang, encoders


def _embed_instructions(paths: list[str]) -> None:
    """Embed (once, cached in each store) the instructions that have no embedding yet; DDP: rank 0
    writes while the others wait, then the others embed in memory what could not be cached."""
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0

    def embed_all() -> None:
        for path in paths:
            counts, memory = language.ensure_embeddings(path)
            if memory:
                _MEMORY_GOALS[str(Path(path).resolve())] = memory
            if counts["episodes"] and rank == 0:
                where = "kept in memory (the store cannot be written)" if memory else "cached in the store"
                print(f"{path}: embedded {counts['instructions']} instruction(s) for {counts['episodes']} episode(s) "
                      f"with {language.ENCODER_NAME}; {where}", file=sys.stderr)

    if rank == 0:
        embed_all()
    if distributed:
        dist.barrier()
        if rank != 0:
            embed_all()


def resolve(cfg: Config, paths: list[str]) -> tuple[Config, list[EpisodeStore]]:
    """``cfg`` with data keys, shapes, action size, goal kind and vocabulary filled in from the stores."""
    goal = cfg.model.goal
    if goal not in ("auto", "task", "none", "lang"):
        raise DpError(f"model.goal must be auto, task, lang or none; got {goal!r}")
    if goal == "lang":
        open_stores(paths)  # clear errors for missing or empty stores before embedding anything
        _embed_instructions(paths)
    stores = open_stores(paths)
    lowdim, image = _select_keys(cfg, stores)
    shapes = _shapes(cfg, stores, [*lowdim, *image, *cfg.data.privileged_keys, cfg.data.action_key], lowdim if cfg.data.pad_lowdim else [])
    action_shape = shapes.pop(cfg.data.action_key)
    if len(action_shape) != 1:
        raise DpError(f"{stores[0].path}: action key {cfg.data.action_key!r} must be one vector per frame; frame shape is {action_shape}")
    for key in image:
        if len(shapes[key]) != 3:
            raise DpError(f"{stores[0].path}: image key {key!r} must be (H, W, C) per frame; got {shapes[key]}")
    tasks, instructions, goals, all_lang, encoders = _vocabulary(stores)
    if goal == "auto":
        goal = "lang" if all_lang else "task"
    elif goal == "lang" and not all_lang:
        raise DpError("model.goal=lang but some episodes have neither 'lang_emb' metadata nor an instruction to embed; use model.goal=task")
    lang_encoder = ""
    if goal == "lang":
        if len(encoders) > 1:
            names = ", ".join(sorted(repr(e) if e else "an unknown encoder" for e in encoders))
            raise DpError(
                f"the stores' language embeddings come from different sentence encoders ({names}) and cannot train one policy; "
                f"re-embed them all with the offline encoder: dp embed --overwrite {' '.join(map(str, paths))}"
            )
        lang_encoder = next(iter(encoders), "")
        dims = {int(v.shape[0]) for v in goals.values()}
        if dims != {cfg.model.lang_dim}:
            raise DpError(f"the language embeddings are {sorted(dims)}-d, model.lang_dim is {cfg.model.lang_dim}; set model.lang_dim")
    if cfg.vocab.tasks and cfg.vocab.tasks != tasks:  # resuming or fine-tuning on other data
        raise DpError(f"the stores' tasks {tasks} differ from the run's vocabulary {cfg.vocab.tasks}")
    small = {k: shapes[k][:2] for k in image if cfg.model.aug_crop > min(shapes[k][:2])}
    if small:
        raise DpError(f"model.aug_crop={cfg.model.aug_crop} is larger than the cameras' frames "
                      f"({', '.join(f'{k}: {h}x{w}' for k, (h, w) in small.items())}); set model.aug_crop to at most their size, or 0")
    data = dataclasses.replace(
        cfg.data,
        stores=[str(Path(p).resolve()) for p in paths],
        lowdim_keys=lowdim,
        image_keys=image,
        shapes=shapes,
        action_dim=int(action_shape[0]),
    )
    model = dataclasses.replace(cfg.model, goal=goal, image_sizes=_image_sizes(cfg, stores, image))
    vocab = dataclasses.replace(cfg.vocab, tasks=tasks, instructions=instructions, lang_encoder=lang_encoder or cfg.vocab.lang_encoder)
    return dataclasses.replace(cfg, data=data, model=model, vocab=vocab), stores


def build_data(cfg: Config, stores: list[EpisodeStore], normalizer: Normalizer | None = None) -> TrainData:
    """Train / validation windows (episodes split per store with ``train.seed``) and the normalizer."""
    data = cfg.data
    widths = pad_widths(cfg)
    if normalizer is None:
        normalizer = Normalizer.fit(stores, [*data.lowdim_keys, data.action_key, *data.privileged_keys], widths=widths)
    splits = [split_episodes(len(s), data.val_fraction, cfg.train.seed) for s in stores]
    obs_keys = [*data.lowdim_keys, *data.image_keys, *data.privileged_keys]  # privileged keys ride in "obs" as training targets

    def windows(episodes: list[np.ndarray]) -> WindowDataset:
        return WindowDataset(
            stores, obs_keys, data.action_key, data.obs_horizon, data.action_horizon, episodes=episodes, normalizer=normalizer,
            widths=widths, goals=[_memory_goals(s) for s in stores], executed=None if data.pad_executed else data.n_action_steps,
        )

    train = windows([tr for tr, _ in splits])
    val = windows([va for _, va in splits]) if any(len(va) for _, va in splits) else None
    _, _, goals, _, _ = _vocabulary(stores)
    if cfg.model.goal != "lang":
        goals = {}
    vocab = {t: i for i, t in enumerate(cfg.vocab.tasks)}
    train_map = torch.tensor([vocab[t] for t in train.tasks], dtype=torch.long)
    val_map = torch.tensor([vocab[t] for t in val.tasks], dtype=torch.long) if val is not None else None
    return TrainData(train, val, normalizer, goals, train_map, val_map)


def window_weights(task_weights: dict[str, float], train: WindowDataset) -> np.ndarray | None:
    """Each training window's sampling weight from ``data.task_weights`` (tasks not named weigh 1), or
    None where no weight is set (every window alike); a DpError names a task the data does not hold or a
    weight that is not a finite number >= 0."""
    if not task_weights:
        return None
    unknown = sorted(set(task_weights) - set(train.tasks))
    if unknown:
        raise DpError(f"data.task_weights names {', '.join(unknown)}, not a task of the training data (its tasks: {', '.join(train.tasks)})")
    invalid = any(not (np.isfinite(w) and w >= 0) for w in task_weights.values())
    if invalid or not any(task_weights.get(t, 1.0) > 0 for t in train.tasks):
        raise DpError(f"data.task_weights: weights must be finite and >= 0 with at least one task above 0, got {task_weights}")
    per_task = np.array([task_weights.get(t, 1.0) for t in train.tasks], dtype=np.float64)
    return per_task[train.task_ids]

