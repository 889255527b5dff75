"""Trained policies both ways between dp and the LeRobot plugin, exactly (the same weights, the same
normaliser, the same configuration).

    python -m lerobot_policy_mode.convert to-lerobot RUN OUT [--map KEY=FEATURE ...]
    python -m lerobot_policy_mode.convert to-dp PRETRAINED OUT

``to-lerobot``: a dp run or checkpoint folder -> a LeRobot pretrained-policy folder (``config.json``,
``model.safetensors``, the pre- and post-processors) that ``lerobot-eval --policy.path``,
``lerobot-record --policy.path`` and ``ModePolicy.from_pretrained`` load. The run's configuration
becomes its preset plus the overrides that rebuild it (checked: the rebuilt configuration equals the
run's); its EMA weights fill the trained and the averaged model; its normaliser's statistics the
features. Features: the low-dim keys concatenated into ``observation.state``, each camera
``observation.images.<key>``, the action ``action``; ``--map KEY=FEATURE`` names others (e.g.
``--map img=observation.image`` for LeRobot's Push-T environment), and a folder written by
``to-dp`` keeps the names it came with.

``to-dp``: a folder the plugin saved (``lerobot-train``'s ``checkpoints/N/pretrained_model``, its
run folder, or ``to-lerobot``'s output) -> a dp checkpoint folder (``config.yaml``, the EMA weights
as ``model.safetensors``, ``normalizer.safetensors``, ``checksums.json``) that ``dp eval``,
``dp export`` and ``dp node`` load, plus ``lerobot.json``: the key map and the features, read back by
``to-lerobot``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, PolicyFeature

from dp.config import Config, load_preset
from dp.data.normalize import Normalizer
from dp.errors import DpError
from dp.models import checkpoint_files as ckpt
from lerobot_policy_mode import bridge
from lerobot_policy_mode.configuration_mode import ModeConfig
from lerobot_policy_mode.modeling_mode import ModePolicy
from lerobot_policy_mode.processor_mode import make_mode_pre_post_processors

KEYS_FILE = "lerobot.json"  # in a dp folder: the LeRobot names of its keys
# dp configuration fields the plugin fills from the key map, the features and its own fields
DERIVED = {("data", "lowdim_keys"), ("data", "image_keys"), ("data", "shapes"), ("data", "action_dim"), ("data", "action_key"),
           ("data", "obs_horizon"), ("data", "action_horizon"), ("data", "n_action_steps"), ("vocab", "tasks")}


# ---------------------------------------------------------------------------- dp -> LeRobot
def overrides_of(cfg: Config) -> list[str]:
    """The ``section.key=value`` overrides that turn ``cfg``'s preset into ``cfg`` (values as JSON, which YAML reads)."""
    base, run = load_preset(cfg.preset).to_dict(), cfg.to_dict()
    out = [f"{section}.{key}={json.dumps(value)}" for section in ("model", "diffusion", "train", "data", "vocab")
           for key, value in run[section].items() if (section, key) not in DERIVED and value != base[section][key]]
    shapes = {k: cfg.data.shapes[k] for k in cfg.data.lowdim_keys if len(cfg.data.shapes[k]) != 1}
    return out + ([f"data.shapes={json.dumps(shapes)}"] if shapes else [])


def feature_type(name: str, role: str) -> FeatureType:
    if role == "image":
        return FeatureType.VISUAL
    if role == "action":
        return FeatureType.ACTION
    return FeatureType.ENV if name == "observation.environment_state" else FeatureType.STATE


def lerobot_names(cfg: Config, mapping: dict[str, str]) -> tuple[dict[str, str], dict[str, PolicyFeature]]:
    """(key map, features) of a dp configuration: low-dim keys concatenated per feature, in order."""
    data = cfg.data
    unknown = sorted(set(mapping) - {*data.lowdim_keys, *data.image_keys})
    if unknown:
        raise ValueError(f"--map: the policy has no observation key(s) {unknown} (it reads {[*data.lowdim_keys, *data.image_keys]})")
    slices: dict[str, list[tuple[str, int, int]]] = {}
    for key in data.lowdim_keys:
        feature = mapping.get(key, "observation.state")
        if not feature.startswith("observation.") or feature.startswith("observation.image"):
            raise ValueError(f"--map {key}={feature}: a low-dim key goes to an observation.* feature other than the cameras'")
        start = slices[feature][-1][2] if feature in slices else 0
        slices.setdefault(feature, []).append((key, start, start + math.prod(data.shapes[key])))
    key_map = {key: feature if len(parts) == 1 else f"{feature}[{a}:{b}]" for feature, parts in slices.items() for key, a, b in parts}
    features = {f: PolicyFeature(feature_type(f, "lowdim"), (parts[-1][2],)) for f, parts in slices.items()}
    for key in data.image_keys:
        feature = mapping.get(key, f"observation.images.{key.removesuffix('_image').removesuffix('_rgb')}")
        if not feature.startswith("observation.image") or feature in features:
            raise ValueError(f"--map {key}={feature}: each camera goes to a feature of its own named observation.image*")
        h, w, c = data.shapes[key]
        key_map[key], features[feature] = feature, PolicyFeature(FeatureType.VISUAL, (c, h, w))
    key_map[data.action_key], features["action"] = "action", PolicyFeature(FeatureType.ACTION, (data.action_dim,))
    return key_map, features


def recorded_names(folder: Path) -> tuple[dict[str, str], dict[str, PolicyFeature]] | None:
    """The key map and features ``to-dp`` recorded in a dp folder (None if it has none)."""
    path = folder / KEYS_FILE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    features = {k: PolicyFeature(FeatureType(v["type"]), tuple(v["shape"])) for k, v in raw["features"].items()}
    return dict(raw["key_map"]), features


def to_lerobot(run: str | Path, out: str | Path, mapping: dict[str, str] | None = None) -> dict[str, Any]:
    """Write the dp policy at ``run`` as a LeRobot pretrained-policy folder at ``out``."""
    _check_out(Path(out))
    folder = ckpt.resolve_checkpoint(run)
    ckpt.verify_checkpoint(folder)
    cfg = ckpt.load_checkpoint_config(folder)
    if cfg.model.goal == "lang" or (folder / ckpt.GOALS_FILE).is_file():
        raise ValueError(f"{folder}: a language-conditioned policy (model.goal=lang) cannot run through LeRobot")
    recorded = None if mapping else recorded_names(folder)
    key_map, features = recorded or lerobot_names(cfg, mapping or {})
    normalizer = Normalizer.load(folder / ckpt.NORMALIZER_FILE)
    config = ModeConfig(preset=cfg.preset, overrides=overrides_of(cfg), n_obs_steps=cfg.data.obs_horizon, horizon=cfg.data.action_horizon,
                        n_action_steps=cfg.data.n_action_steps, key_map=key_map, tasks=list(cfg.vocab.tasks),
                        discrete_dims={k: list(v) for k, v in normalizer.discrete_dims.items()},
                        dp_stats={k: {s: v.reshape(-1).tolist() for s, v in st.items()} for k, st in normalizer.stats.items()},
                        input_features={k: f for k, f in features.items() if f.type is not FeatureType.ACTION},
                        output_features={"action": features["action"]}, device="cpu")
    rebuilt = bridge.run_config(config.dp_config(), key_map, features, config.tasks)
    if rebuilt != cfg:
        got = rebuilt.to_dict()
        diff = [f"{s}.{k}" for s, part in cfg.to_dict().items() if isinstance(part, dict) for k, v in part.items() if got[s].get(k) != v]
        raise ValueError(f"{folder}: the plugin would rebuild another configuration (differs in {diff})")
    policy = ModePolicy(config)
    ckpt.load_checked_state(policy.model, ckpt.load_weights(folder / ckpt.MODEL_FILE), str(folder / ckpt.MODEL_FILE), cfg)
    policy.ema.load_state_dict(policy.model.state_dict())
    policy.save_pretrained(out)
    for processor in make_mode_pre_post_processors(config):
        processor.save_pretrained(out)
    return {"from": str(folder), "to": str(out), "key_map": key_map, "overrides": config.overrides}


# ---------------------------------------------------------------------------- LeRobot -> dp
def find_pretrained(path: str | Path) -> Path:
    """The pretrained-policy folder at ``path``: itself, its ``pretrained_model`` or a training run's last one."""
    path = Path(path)
    for folder in (path, path / "pretrained_model", path / "checkpoints" / "last" / "pretrained_model"):
        if (folder / "config.json").is_file():
            return folder
    raise ValueError(f"{path}: no config.json here, in pretrained_model/ or in checkpoints/last/pretrained_model/ "
                     "(expected a folder the mode policy saved)")


def to_dp(pretrained: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the plugin's policy at ``pretrained`` as a dp checkpoint folder at ``out``."""
    _check_out(Path(out))
    folder = find_pretrained(pretrained)
    config = PreTrainedConfig.from_pretrained(folder)
    if not isinstance(config, ModeConfig):
        raise ValueError(f"{folder}: a {config.type!r} policy, not dp's (type mode)")
    config.device = "cpu"
    policy = ModePolicy(config)
    ckpt.load_checked_state(policy, ckpt.load_weights(folder / "model.safetensors"), str(folder / "model.safetensors"))
    cfg = policy.dp_cfg
    missing = [k for k in [*cfg.data.lowdim_keys, cfg.data.action_key] if k not in config.dp_stats]
    if missing:
        raise ValueError(f"{folder / 'config.json'}: no normalisation statistics for {missing} (dp_stats; trained without a dataset?)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt.write_policy_files(out, cfg, policy.ema.state_dict(), bridge.normalizer(config.dp_stats, config.discrete_dims))
    features = {**config.input_features, **config.output_features}
    names = {"key_map": config.key_map, "features": {k: {"type": f.type.value, "shape": list(f.shape)} for k, f in features.items()}}
    (out / KEYS_FILE).write_text(json.dumps(names, indent=1) + "\n")
    ckpt.write_checksums(out)
    return {"from": str(folder), "to": str(out), "key_map": config.key_map}


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not empty; choose another output folder")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lerobot_policy_mode.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="direction", required=True)
    a = sub.add_parser("to-lerobot", help="a dp run or checkpoint -> a LeRobot pretrained-policy folder")
    a.add_argument("run", help="dp run or checkpoint folder")
    a.add_argument("out", help="new folder for the LeRobot policy")
    a.add_argument("--map", action="append", default=[], metavar="KEY=FEATURE", help="LeRobot feature of a dp observation key (repeatable)")
    b = sub.add_parser("to-dp", help="a folder the plugin saved -> a dp checkpoint folder")
    b.add_argument("pretrained", help="pretrained_model folder (or a lerobot-train run folder: its last checkpoint)")
    b.add_argument("out", help="new folder for the dp checkpoint")
    args = parser.parse_args(argv)
    try:
        if args.direction == "to-lerobot":
            pairs = [item.partition("=") for item in args.map]
            if any(not sep or not k or not v for k, sep, v in pairs):
                raise ValueError(f"--map takes KEY=FEATURE (e.g. img=observation.image); got {args.map}")
            summary = to_lerobot(args.run, args.out, {k: v for k, _, v in pairs})
        else:
            summary = to_dp(args.pretrained, args.out)
    except (DpError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
