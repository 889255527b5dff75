"""Between LeRobot's features and dp's keys: the key map, dp's run configuration and its statistics.

A dp model reads named keys (low-dim vectors, images (H, W, C) uint8, the action); a LeRobot policy
reads features (``observation.state``, ``observation.images.<camera>``, ``action``). The key map
sends each dp key the policy uses to a feature or a slice of one (``agent_pos ->
observation.state[0:2]``), low-dim keys first in the order the model concatenates them, then the
cameras, then the action. It is built once, from the dataset:

- a dataset written by ``dp export-data lerobot`` records its store's card (``meta/dp.json``): the
  store's key names, their slices, encoders and discrete dimensions are used, so a policy trained
  here keeps the names ``dp eval`` and ``dp node`` feed;
- any other dataset: one dp key per feature (``observation.state`` -> ``state``,
  ``observation.environment_state`` -> ``environment_state``, ``observation.images.front`` ->
  ``front_image``, ``observation.image`` -> ``image``).

Which keys feed the policy follows ``dp train``: ``data.obs_keys`` when the preset or the overrides
name them, else the low-dim keys (``data.lowdim``) and cameras (``data.images``) whose encoder is
``state`` / ``vision``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lerobot.configs.types import FeatureType, PolicyFeature

from dp.config import Config
from dp.data.formats.cards import DatasetCard, SourceRef, card_from_dict
from dp.data.formats.lerobot import DP_RECORD, store_key
from dp.data.normalize import Normalizer
from dp.errors import DpError

ACTION = "action"
STATS = ("min", "max", "mean", "std", "count")
_ENCODER = {"lowdim": "state", "image": "vision", "action": "none"}


@dataclass(frozen=True)
class Entry:
    """Where one dp key comes from, and what it feeds."""

    source: SourceRef
    role: str  # lowdim, image or action
    encoder: str = "none"  # state, vision or none
    discrete: tuple[int, ...] = ()


def role_of(feature: PolicyFeature) -> str:
    return {FeatureType.VISUAL: "image", FeatureType.ACTION: "action"}.get(feature.type, "lowdim")


def read_card(root: str | Path | None) -> DatasetCard | None:
    """The card a ``dp export-data lerobot`` dataset records (None for other datasets)."""
    path = Path(root) / DP_RECORD if root is not None else None
    if path is None or not path.is_file():
        return None
    raw = json.loads(path.read_text()).get("card")
    return card_from_dict(raw, str(path)) if isinstance(raw, dict) else None


def candidates(features: dict[str, PolicyFeature], card: DatasetCard | None) -> dict[str, Entry]:
    """Every dp key the features offer: the card's keys, then one per feature the card does not cover."""
    found: dict[str, Entry] = {}
    for spec in card.keys if card is not None else ():
        source = next((s for s in spec.sources if s.field in features), None)
        if source is not None:
            found[spec.key] = Entry(source, spec.role, spec.policy_encoder, tuple(spec.discrete_dims))
    covered = {e.source.field for e in found.values()}
    for name, feature in features.items():
        role = role_of(feature)
        if name not in covered:
            found.setdefault(store_key(name, camera=role == "image"), Entry(SourceRef(name), role, _ENCODER[role]))
    return found


def _offered(found: dict[str, Entry]) -> str:
    return ", ".join(f"{k} ({e.source})" for k, e in found.items() if e.role != "action") or "nothing"


def resolve_key_map(cfg: Config, features: dict[str, PolicyFeature], card: DatasetCard | None) -> tuple[dict[str, str], dict[str, list[int]]]:
    """(key map, discrete dimensions) of the keys a policy of ``cfg`` reads from these features."""
    found = candidates(features, card)
    data = cfg.data
    if data.obs_keys is not None:
        missing = [k for k in data.obs_keys if k not in found or found[k].role == "action"]
        if missing:
            raise ValueError(f"policy (type mode): the dataset has no key(s) {missing}, which preset {cfg.preset!r} reads "
                             f"(data.obs_keys); it offers: {_offered(found)}. Choose others with "
                             "--policy.overrides='[\"data.obs_keys=[KEY,...]\"]' or another --policy.preset")
        wanted = list(data.obs_keys)
    else:
        lowdim = [k for k, e in found.items() if e.role == "lowdim" and e.encoder == "state"] if data.lowdim else []
        image = [k for k, e in found.items() if e.role == "image" and e.encoder == "vision"] if data.images else []
        if data.images and not image:
            raise ValueError(f"policy (type mode): data.images=true but the dataset has no camera; it offers: {_offered(found)}")
        wanted = lowdim + image
        if not wanted:
            raise ValueError(f"policy (type mode): no observation keys to read (data.lowdim={data.lowdim}, data.images={data.images}); "
                             f"the dataset offers: {_offered(found)}")
    actions = [k for k, e in found.items() if e.role == "action"]
    if len(actions) != 1:
        raise ValueError(f"policy (type mode): the dataset needs one 'action' feature; found {actions or 'none'}")
    ordered = [k for k in wanted if found[k].role == "lowdim"] + [k for k in wanted if found[k].role == "image"] + actions
    key_map = {k: str(found[k].source) for k in ordered}
    discrete = {k: list(found[k].discrete) for k in ordered if found[k].discrete}
    return key_map, discrete


def parse_key_map(key_map: dict[str, str]) -> dict[str, SourceRef]:
    return {k: SourceRef.parse(v, f"key_map.{k}") for k, v in key_map.items()}


def check_features(key_map: dict[str, str], features: dict[str, PolicyFeature]) -> None:
    """A clear error when the features lack one the key map reads, or a slice does not fit."""
    refs = parse_key_map(key_map)
    missing = sorted({r.field for r in refs.values()} - set(features))
    if missing:
        raise ValueError(f"policy (type mode): no feature(s) {missing} here, which this policy reads "
                         f"(its key map: {key_map}); the features are: {sorted(features)}")
    for key, ref in refs.items():
        if ref.sliced and len(range(features[ref.field].shape[-1])[ref.start:ref.stop]) == 0:
            raise ValueError(f"policy (type mode): key {key!r} reads {ref}, outside the feature's shape {features[ref.field].shape}")


def width(ref: SourceRef, feature: PolicyFeature) -> int:
    return len(range(int(feature.shape[-1]))[ref.start:ref.stop])


def run_config(cfg: Config, key_map: dict[str, str], features: dict[str, PolicyFeature], tasks: list[str]) -> Config:
    """dp's resolved run configuration: ``cfg`` with the keys, shapes, action, goal and tasks filled in."""
    refs = parse_key_map(key_map)
    roles = {k: role_of(features[r.field]) for k, r in refs.items()}
    lowdim = [k for k in refs if roles[k] == "lowdim"]
    image = [k for k in refs if roles[k] == "image"]
    action = next(k for k in refs if roles[k] == "action")
    shapes: dict[str, list[int]] = {}
    for key in lowdim:
        n = width(refs[key], features[refs[key].field])
        given = cfg.data.shapes.get(key)
        shapes[key] = list(given) if given and int(np.prod(given)) == n else [n]
    for key in image:
        c, h, w = features[refs[key].field].shape
        shapes[key] = [int(h), int(w), int(c)]
    goal = "task" if cfg.model.goal == "auto" else cfg.model.goal
    if goal == "lang":
        raise ValueError("policy (type mode): model.goal=lang (language embeddings) is not available through LeRobot; use task or none")
    if cfg.model.card_resize:
        raise ValueError("policy (type mode): model.card_resize reads a dp store's card; set model.image_size or model.image_sizes instead")
    if cfg.data.privileged_keys:  # a training aid of dp's stores: a LeRobot dataset carries no privileged state for it
        warnings.warn(f"policy (type mode): data.privileged_keys {cfg.data.privileged_keys} are trained by `dp train` from a dp store "
                      "only; this policy trains without them", stacklevel=2)
    data = dataclasses.replace(cfg.data, lowdim_keys=lowdim, image_keys=image, shapes=shapes, action_key=action,
                               action_dim=width(refs[action], features[refs[action].field]), privileged_keys=[])
    vocab = dataclasses.replace(cfg.vocab, tasks=list(tasks))
    return dataclasses.replace(cfg, data=data, model=dataclasses.replace(cfg.model, goal=goal), vocab=vocab)


def split_stats(stats: dict[str, dict[str, Any]], key_map: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    """Per-feature LeRobot statistics -> per dp key (the key's slice), for the low-dim keys and the action."""
    out = {}
    for key, ref in parse_key_map(key_map).items():
        st = stats.get(ref.field)
        if st is None or "min" not in st or np.asarray(st["min"]).ndim != 1:
            continue  # cameras: dp's encoder takes raw pixels
        out[key] = {s: (np.asarray(st[s], np.float64).reshape(-1) if s == "count" else ref.take(np.asarray(st[s], np.float64))).tolist()
                    for s in STATS if s in st}
    return out


def normalizer(dp_stats: dict[str, dict[str, list[float]]], discrete_dims: dict[str, list[int]]) -> Normalizer:
    """dp's Normalizer of these statistics."""
    try:
        return Normalizer({k: {s: np.asarray(v, np.float64) for s, v in st.items()} for k, st in dp_stats.items()}, discrete_dims)
    except DpError as exc:
        raise ValueError(f"policy (type mode): {exc}") from None


def tasks_of(meta: Any) -> list[str]:
    """A LeRobot dataset's task strings, in task-index order."""
    tasks = getattr(meta, "tasks", None)
    if tasks is None or len(tasks) == 0:
        return []
    return [str(t) for t in tasks.sort_values("task_index").index]
