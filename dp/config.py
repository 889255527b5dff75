"""Run configuration: dataclasses loaded from YAML presets, with ``section.key=value`` overrides.

A run's configuration has four user-facing sections (``model``, ``diffusion``, ``train``, ``data``)
plus ``vocab`` (the goal vocabulary found in the training data). Presets live in
``dp/train/presets/<name>.yaml`` and only list what differs from the dataclass defaults. The
resolved configuration (presets + overrides + what training learned from the data: keys, shapes,
tasks) is saved as ``config.yaml`` in every run and checkpoint, and rebuilt with :func:`load_config`.

The YAML + override helper (:func:`apply_overrides`, :func:`from_dict`) is generic over any
nested dataclass; values given on the command line are parsed as YAML (``model.n_layers=4``,
``data.obs_keys=[robot0_eef_pos,object]``, ``data.images=true``) and checked against the field types.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import yaml

from dp.errors import DpError
from dp.files import read_yaml

PRESET_DIR = Path(__file__).parent / "train" / "presets"


@dataclass
class ModelConfig:
    """The MoDE denoiser and its observation / goal encoders."""

    d_model: int = 256  # transformer width
    n_layers: int = 4
    n_heads: int = 4
    n_experts: int = 4  # 1 = the dense baseline, through the same code
    top_k: int = 2  # experts used per denoising step
    expert_hidden: int = 512  # SwiGLU hidden width of one expert
    attention: str = "causal"  # "causal" (MoDE) or "full"
    dropout: float = 0.0  # residual / attention dropout
    lb_weight: float = 0.01  # load-balancing loss weight
    z_loss_weight: float = 0.0  # router z-loss weight (0 = off)
    goal: str = "auto"  # "auto" (lang if every episode has lang_emb, else task), "task", "lang" (instructions without lang_emb are embedded once, offline, and cached in the store), "none"
    lang_dim: int = 384  # size of the language embedding
    state_hidden: int = 256  # hidden width of the low-dim state MLP
    vision_channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # FiLM-ResNet stage widths
    vision_blocks: int = 1  # residual blocks per stage
    vision_pool: str = "keypoints"  # "keypoints" (spatial softmax) or "avg"
    vision_keypoints: int = 32
    image_size: int | None = None  # resize every camera to this square size in the encoder (None: model.card_resize sizes, else as stored)
    card_resize: bool = False  # resize each camera to the `resize` of the store's dataset card (the benchmark's MoDE input size)
    image_sizes: dict[str, int] = field(default_factory=dict)  # per-camera resize, wins over image_size (filled from the card by training with card_resize)
    aug_shift: int = 4  # random-shift augmentation in pixels during training (0 = off)
    aug_crop: int = 0  # square crop of every camera before any resize: random in training, the centre at inference (Diffusion Policy: 84 of 96); 0 = off
    privileged_weight: float = 1.0  # weight of the loss of predicting data.privileged_keys from the cameras' features (training only)


SCHEDULES = ("exponential", "karras", "fitted")  # diffusion.schedule (dp.diffusion.schedules)
SOLVERS = ("ddim", "dpmpp2m")  # diffusion.solver (dp.diffusion.solvers)


@dataclass
class DiffusionConfig:
    """EDM preconditioning, training sigmas and the sampler."""

    sigma_data: float = 0.5
    sigma_min: float = 0.001
    sigma_max: float = 80.0
    train_loc: float | None = None  # log-logistic location of log(sigma); None = log(sigma_data)
    train_scale: float = 0.5  # log-logistic scale
    steps: int = 10  # sampler steps (network passes) per chunk at inference
    schedule: str = "exponential"  # the sampler's sigmas: "exponential", "karras" or "fitted" (dp.diffusion.schedules)
    rho: float = 7.0  # Karras schedule exponent
    trim: float = 0.0  # p > 0: sample only between the training sigmas' p and 1 - p quantiles
    solver: str = "ddim"  # "ddim" (first order) or "dpmpp2m" (DPM-Solver++ 2M; dp.diffusion.solvers)


@dataclass
class TrainConfig:
    """Optimiser, schedule, checkpoints and logging."""

    steps: int = 20000
    batch_size: int = 256  # global batch (split over processes)
    lr: float = 3e-4
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 500
    lr_schedule: str = "cosine"  # after the warmup: "cosine" (decay to 0 at train.steps), "linear" (to 0) or "constant"
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # maximum EMA decay
    ema_power: float = 0.75  # EMA warm-up: decay = 1 - (1 + step) ** -power, capped at ema_decay
    amp: bool = True  # bf16 autocast on a GPU, and on a CPU with AMX bf16 tiles (elsewhere fp32)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"...
    seed: int = 0
    num_workers: int = -1  # DataLoader workers; -1 = 0 for low-dim data, 2 with images
    log_every: int = 50
    tensorboard: bool | None = None  # also log metrics to RUN/tensorboard; None: when the tensorboard package is installed
    val_every: int = 1000
    val_batches: int = 4  # batches of held-out windows per validation
    ckpt_every: int = 1000
    keep_checkpoints: int = 2
    threads: int = 0  # torch CPU threads per process (0 = cores / processes)
    noise_draws: int = 1  # noise levels trained per window: the observation is encoded once and the denoiser trained on this many (sigma, noise) draws of it


@dataclass
class DataConfig:
    """Which keys feed the policy and how windows are cut. Resolved fields are filled by training."""

    stores: list[str] = field(default_factory=list)  # resolved: the training stores
    obs_keys: list[str] | None = None  # None: the store's state-encoder keys (if lowdim) + vision-encoder keys (if images), by role and dataset card
    images: bool = False  # add the store's image keys (card encoder: vision) to the default obs keys
    lowdim: bool = True  # add the store's low-dim keys (card encoder: state) to the default obs keys
    action_key: str = "action"
    obs_horizon: int = 1
    action_horizon: int = 10  # the predicted chunk
    n_action_steps: int = 8  # actions executed from each chunk
    pad_executed: bool = False  # true: a window on every frame, so near an episode's end the executed actions repeat its last one; false: Diffusion Policy's pad_after = n_action_steps - 1, windows end where every executed action is a recorded one
    val_fraction: float = 0.1  # share of episodes held out for validation
    pad_lowdim: bool = False  # zero-pad low-dim vectors whose width differs across stores (multitask state policies); runtimes pad narrower observations alike
    task_action_steps: dict[str, int] = field(default_factory=dict)  # multitask, at inference without RTI: actions executed from each chunk for the named tasks (the others: n_action_steps), e.g. chosen on validation and written into a checkpoint's config.yaml
    task_weights: dict[str, float] = field(default_factory=dict)  # multitask: relative sampling weight of each task's training windows (tasks not named weigh 1; {} = every window alike)
    privileged_keys: list[str] = field(default_factory=list)  # low-dim keys the policy does not observe (e.g. an object's pose) that its vision encoders learn to predict in training; nothing at inference
    # resolved by training:
    lowdim_keys: list[str] = field(default_factory=list)
    image_keys: list[str] = field(default_factory=list)
    shapes: dict[str, list[int]] = field(default_factory=dict)  # per-frame shape of every obs key and privileged key
    action_dim: int = 0


@dataclass
class VocabConfig:
    """The goal vocabulary of the training data (resolved by training)."""

    tasks: list[str] = field(default_factory=list)  # task_id indexes this list
    instructions: dict[str, str] = field(default_factory=dict)  # task -> language instruction
    lang_encoder: str = ""  # sentence encoder of the goal embeddings ("" = unknown: new instructions cannot be embedded)


@dataclass
class Config:
    preset: str = "small"
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_task_intervals(table: dict[str, int], tasks: list[str], horizon: int) -> dict[str, int]:
    """``table`` (``data.task_action_steps``: task -> actions executed per chunk) checked against the policy's ``tasks``
    and chunk length ``horizon`` (by training, the runtimes and the export)."""
    unknown = sorted(set(table) - set(tasks))
    if unknown:
        raise DpError(f"per-task re-planning intervals name {', '.join(map(repr, unknown))}, not a task of this policy "
                      f"(its tasks: {', '.join(tasks) or 'none'})")
    bad = {task: n for task, n in table.items() if isinstance(n, bool) or not isinstance(n, Integral) or not 1 <= n <= horizon}
    if bad:
        raise DpError(f"per-task re-planning intervals must be whole numbers in [1, {horizon}] (the chunk length); got {bad}")
    return {task: int(n) for task, n in table.items()}


# ---------------------------------------------------------------------------- generic helpers
def _check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` converted to the annotated type ``hint``, or a DpError naming ``where``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, where)
            except DpError as exc:
                errors.append(str(exc))
        raise DpError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise DpError(f"{where}: expected a list, got {value!r}")
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_t, val_t = typing.get_args(hint)
        if not isinstance(value, dict):
            raise DpError(f"{where}: expected a mapping, got {value!r}")
        return {_check_value(k, key_t, where): _check_value(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise DpError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise DpError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                as_float = float(value)
            except ValueError:
                pass
            else:
                if as_float.is_integer():
                    return int(as_float)
        raise DpError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
        raise DpError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise DpError(f"{where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    return value


def from_dict(cls: type, values: dict[str, Any] | None, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) nested dict, checking keys and types."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise DpError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise DpError(f"{where}: unknown key(s) {unknown}; known: {', '.join(sorted(names))}")
    kwargs = {k: _check_value(v, hints[k], f"{where}.{k}" if where != "config" else k) for k, v in values.items()}
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("shapes", "instructions"):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["model.n_layers=4", "data.images=true"]`` -> nested dict with YAML-parsed values."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise DpError(f"override {item!r}: expected section.key=value (e.g. model.n_layers=4)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise DpError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DpError(f"override {item!r}: {part!r} is set twice")
        node[parts[-1]] = value
    return nested


def apply_overrides(obj: Any, items: list[str]) -> Any:
    """A copy of dataclass ``obj`` with ``key=value`` overrides applied (checked against field types)."""
    merged = _merge(dataclasses.asdict(obj), parse_overrides(items))
    return from_dict(type(obj), merged)


# ---------------------------------------------------------------------------- presets
def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> Config:
    """The configuration of preset ``name`` (dataclass defaults + the preset's YAML)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise DpError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    values = yaml.safe_load(path.read_text()) or {}
    return from_dict(Config, _merge({"preset": name}, values), "config")


def build_config(preset: str, overrides: list[str] | None = None) -> Config:
    """Preset + command-line overrides."""
    return apply_overrides(load_preset(preset), list(overrides or []))


def load_config(path: str | Path) -> Config:
    """A saved ``config.yaml`` (a run's or a checkpoint's)."""
    path = Path(path)
    if not path.is_file():
        raise DpError(f"{path}: config file not found")
    values = read_yaml(path)
    try:
        return from_dict(Config, values, "config")
    except DpError as exc:
        raise DpError(f"{path}: {exc}") from exc


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
