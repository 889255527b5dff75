"""Dataset cards: YAML files in ``datasets/`` that describe a foreign dataset's keys for `dp import`.

A card names, for every key of our store, where it comes from in the foreign data and its role::

    name: libero
    format: libero                 # calvin | libero | dp-zarr | lerobot
    robot: panda
    control_freq: 20
    gripper_close: 1               # the action value that closes the gripper
    keys:
      - {key: agentview_image, source: [obs/agentview_rgb, obs/agentview_image], role: image}
      - {key: robot0_eef_quat, source: [obs/robot0_eef_quat, "robot_states[5:9]"], role: lowdim}
      - {key: action, source: actions, role: action, discrete_dims: [6]}

``source`` is a field of the foreign data (an HDF5 path inside a demo, an npz key, a zarr data key),
or a list of alternatives tried in order; ``name[a:b]`` takes a slice of the last axis. Optional
entry fields: ``flatten`` (merge the source's last two axes before any slice: Push-T's ``keypoint``
(9, 2) per frame becomes 18 values, x0 y0 x1 y1 ..., since low-dim keys are vectors), ``camera`` (a name `--cameras` selects), ``variant`` (a name `--actions` selects),
``optional`` (skip the key when the source is absent), ``negate_dims`` (dims multiplied by -1 on
import and export), ``discrete_dims`` (dims that are discrete, e.g. the gripper), ``aliases``
(other names of this key in our stores, used by export), ``description``. Any other field, at the
top level or in an entry, is an error: a typo never passes silently.

What feeds the policy (``dp train`` reads the card a store was imported with, kept in the store's
``dataset_card`` attribute): an entry's ``encoder`` names the policy encoder the key feeds by default:
``vision`` (image keys: a goal-conditioned FiLM-ResNet per camera; the default for role image),
``state`` (low-dim keys: the state MLP; the default for role lowdim) or ``none`` (kept in the store,
fed only when named in ``data.obs_keys``, e.g. privileged simulator state). ``resize`` (image keys)
is the square size the vision encoder resizes that camera to when the preset takes the card's
sizes (``model.card_resize``). The optional top-level ``language`` mapping says where language goals
come from: ``key`` (the episode metadata holding the embedding, ``lang_emb``), ``source`` and
``instruction`` (where the format keeps them; documentation) and ``encoder`` (the sentence encoder
that made dataset-provided embeddings; absent when the data has instruction text only, which
training embeds with the offline encoder, see dp/data/language.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dp.errors import DpError
from dp.files import read_yaml

CARDS_DIR = Path(__file__).resolve().parents[3] / "datasets"
FORMATS = ("calvin", "libero", "dp-zarr", "lerobot")
ROLES = ("image", "lowdim", "action")
ENCODERS = ("vision", "state", "none")
_DEFAULT_ENCODER = {"image": "vision", "lowdim": "state", "action": "none"}
_TOP_FIELDS = {"name", "format", "description", "robot", "control_freq", "gripper_close", "language", "keys"}
_KEY_FIELDS = {"key", "source", "role", "camera", "variant", "optional", "negate_dims", "discrete_dims", "aliases", "description",
               "encoder", "resize", "flatten"}
_LANGUAGE_FIELDS = {"key", "source", "instruction", "encoder"}
_SOURCE_RE = re.compile(r"^([^\[\]]+?)(?:\[(-?\d*):(-?\d*)\])?$")


@dataclass(frozen=True)
class SourceRef:
    """A field of the foreign data, optionally a slice ``[start:stop]`` of its last axis."""

    field: str
    start: int | None = None
    stop: int | None = None
    flatten: bool = False  # merge the last two axes first (the entry's ``flatten``)

    @classmethod
    def parse(cls, text: str, where: str) -> SourceRef:
        match = _SOURCE_RE.match(text.strip()) if isinstance(text, str) else None
        if not match:
            raise DpError(f"{where}: source {text!r} is not 'field' or 'field[start:stop]'")
        name, start, stop = match.groups()
        return cls(name, int(start) if start else None, int(stop) if stop else None)

    @property
    def sliced(self) -> bool:
        return self.start is not None or self.stop is not None

    def take(self, arr: np.ndarray) -> np.ndarray:
        if self.flatten and arr.ndim >= 2:
            arr = arr.reshape(*arr.shape[:-2], arr.shape[-2] * arr.shape[-1])
        return arr[..., self.start : self.stop] if self.sliced else arr

    def __str__(self) -> str:
        if not self.sliced:
            return self.field
        return f"{self.field}[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"


@dataclass(frozen=True)
class KeySpec:
    """One key of our store and where it comes from."""

    key: str
    sources: tuple[SourceRef, ...]
    role: str
    camera: str | None = None
    variant: str | None = None
    optional: bool = False
    negate_dims: tuple[int, ...] = ()
    discrete_dims: tuple[int, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""
    encoder: str | None = None  # None: the role's default (image -> vision, lowdim -> state)
    resize: int | None = None
    flatten: bool = False

    @property
    def policy_encoder(self) -> str:
        """The policy encoder this key feeds by default: vision, state or none."""
        return self.encoder or _DEFAULT_ENCODER[self.role]

    @property
    def export_field(self) -> str | None:
        """The foreign field export writes this key to: the first alternative that is not a slice."""
        return next((s.field for s in self.sources if not s.sliced), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "source": [str(s) for s in self.sources], "role": self.role}
        for name in ("camera", "variant", "description", "encoder", "resize"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        for name in ("optional", "flatten"):
            if getattr(self, name):
                out[name] = True
        for name in ("negate_dims", "discrete_dims", "aliases"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        return out


@dataclass(frozen=True)
class LanguageSpec:
    """Where a dataset's language goals come from (the card's ``language`` mapping)."""

    key: str = "lang_emb"  # episode metadata that holds the goal embedding
    source: str = ""  # where the format keeps the embeddings (documentation)
    instruction: str = ""  # where the format keeps the instruction text (documentation)
    encoder: str | None = None  # sentence encoder of dataset-provided embeddings (None: the data has text only)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        for name in ("source", "instruction", "encoder"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class DatasetCard:
    """A parsed, validated dataset card."""

    name: str
    format: str
    keys: tuple[KeySpec, ...]
    description: str = ""
    robot: str | None = None
    control_freq: float | None = None
    gripper_close: float | None = None
    language: LanguageSpec | None = None
    origin: str = field(default="<dict>", compare=False)

    # ----------------------------------------------------------------- selection
    def select(self, *, cameras: list[str] | None = None, variant: str | None = None) -> DatasetCard:
        """The card restricted to some cameras (None: all) and one variant (None: the first listed)."""
        known_cams = sorted({k.camera for k in self.keys if k.camera})
        if cameras is not None:
            unknown = [c for c in cameras if c not in known_cams]
            if unknown:
                raise DpError(f"{self.origin}: unknown camera(s) {', '.join(unknown)} (this card has: {', '.join(known_cams) or 'none'})")
        variants = sorted({k.variant for k in self.keys if k.variant})
        if variant is not None and variant not in variants:
            raise DpError(f"{self.origin}: no variant {variant!r} (this card has: {', '.join(variants) or 'none'})")
        # default: the variant the card lists first
        chosen = variant if variant is not None else next((k.variant for k in self.keys if k.variant), None)
        keys = tuple(
            k for k in self.keys
            if (k.camera is None or cameras is None or k.camera in cameras) and (k.variant is None or k.variant == chosen)
        )
        return replace(self, keys=keys)

    def spec(self, key: str) -> KeySpec | None:
        return next((k for k in self.keys if k.key == key), None)

    def spec_for_store_key(self, store_key: str) -> KeySpec | None:
        """The entry for a key of our store, by name or by one of its aliases."""
        return self.spec(store_key) or next((k for k in self.keys if store_key in k.aliases), None)

    # ----------------------------------------------------------------- store attributes
    def roles(self, present: list[str] | None = None) -> dict[str, list[str]]:
        roles: dict[str, list[str]] = {r: [] for r in ("lowdim", "image", "action")}
        for k in self.keys:
            if present is None or k.key in present:
                roles[k.role].append(k.key)
        return roles

    def discrete_dims(self, present: list[str] | None = None) -> dict[str, list[int]]:
        return {k.key: list(k.discrete_dims) for k in self.keys if k.discrete_dims and (present is None or k.key in present)}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "format": self.format}
        for name in ("description", "robot", "control_freq", "gripper_close"):
            if getattr(self, name) not in (None, ""):
                out[name] = getattr(self, name)
        if self.language is not None:
            out["language"] = self.language.to_dict()
        out["keys"] = [k.to_dict() for k in self.keys]
        return out


def card_from_dict(raw: Any, origin: str = "<dict>") -> DatasetCard:
    """Validate a card given as a dict (from YAML or JSON); every problem is a DpError naming the field."""
    if not isinstance(raw, dict):
        raise DpError(f"{origin}: a dataset card must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_FIELDS)
    if unknown:
        raise DpError(f"{origin}: unknown card key(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(_TOP_FIELDS))})")
    for required in ("name", "format", "keys"):
        if required not in raw:
            raise DpError(f"{origin}: card needs {required!r}")
    if raw["format"] not in FORMATS:
        raise DpError(f"{origin}: format {raw['format']!r} is not one of {', '.join(FORMATS)}")
    if not isinstance(raw["keys"], list) or not raw["keys"]:
        raise DpError(f"{origin}: 'keys' must be a non-empty list of entries")
    keys = tuple(_key_spec(entry, f"{origin}: keys[{i}]") for i, entry in enumerate(raw["keys"]))
    seen: set[tuple[str, str | None]] = set()
    for spec in keys:
        if (spec.key, spec.variant) in seen:
            raise DpError(f"{origin}: key {spec.key!r} appears twice" + (f" for variant {spec.variant!r}" if spec.variant else ""))
        seen.add((spec.key, spec.variant))
    return DatasetCard(
        name=str(raw["name"]),
        format=raw["format"],
        keys=keys,
        description=str(raw.get("description") or "").strip(),
        robot=_optional(raw, "robot", str, origin),
        control_freq=_optional(raw, "control_freq", float, origin),
        gripper_close=_optional(raw, "gripper_close", float, origin),
        language=_language(raw.get("language"), f"{origin}: language"),
        origin=origin,
    )


def _language(raw: Any, where: str) -> LanguageSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise DpError(f"{where}: must be a mapping (key, source, instruction, encoder), got {raw!r}")
    unknown = sorted(set(raw) - _LANGUAGE_FIELDS)
    if unknown:
        raise DpError(f"{where}: unknown card key(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(_LANGUAGE_FIELDS))})")
    for name, value in raw.items():
        if value is not None and not isinstance(value, str):
            raise DpError(f"{where}: {name!r} must be text, got {value!r}")
    key = raw.get("key") or "lang_emb"
    if "/" in key:
        raise DpError(f"{where}: 'key' must be an episode metadata name without '/', got {key!r}")
    return LanguageSpec(key=key, source=raw.get("source") or "", instruction=raw.get("instruction") or "",
                        encoder=raw.get("encoder") or None)


def load_card(name_or_path: str | Path) -> DatasetCard:
    """Load a card by path, or by name from ``datasets/<name>.yaml``."""
    path = Path(name_or_path)
    if not path.suffix and not path.is_file():  # a name (even if a folder of that name is here, e.g. the data)
        path = CARDS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CARDS_DIR.glob("*.yaml"))
        raise DpError(f"{name_or_path}: no such dataset card (cards in {CARDS_DIR}: {', '.join(known) or 'none'})")
    return card_from_dict(read_yaml(path), str(path))


def card_for_export(recorded: Any, origin: str, card: DatasetCard | None, fmt: str) -> DatasetCard:
    """The card an export to ``fmt`` maps keys with: ``card`` when given, else the store's ``recorded``
    card when it is one of ``fmt`` (the store came from that format), else the format's default card."""
    if card is not None:
        return card
    if isinstance(recorded, dict) and recorded.get("format") == fmt:
        return card_from_dict(recorded, origin)
    return load_card(fmt)


def _optional(raw: dict, name: str, kind: type, origin: str) -> Any:
    value = raw.get(name)
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise DpError(f"{origin}: {name!r} must be {kind.__name__}, got {value!r}") from None


def _int_list(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise DpError(f"{where}: must be a list of integers, got {value!r}")
    return tuple(value)


def _key_spec(entry: Any, where: str) -> KeySpec:
    if not isinstance(entry, dict):
        raise DpError(f"{where}: each key entry must be a mapping, got {entry!r}")
    if "key" in entry:
        where = f"{where} ({entry['key']!r})"
    unknown = sorted(set(entry) - _KEY_FIELDS)
    if unknown:
        raise DpError(f"{where}: unknown card key(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(_KEY_FIELDS))})")
    for required in ("key", "source", "role"):
        if required not in entry:
            raise DpError(f"{where}: entry needs {required!r}")
    key = entry["key"]
    if not isinstance(key, str) or not key or "/" in key:
        raise DpError(f"{where}: 'key' must be a store key name without '/', got {key!r}")
    if entry["role"] not in ROLES:
        raise DpError(f"{where}: role {entry['role']!r} is not one of {', '.join(ROLES)}")
    raw_sources = entry["source"] if isinstance(entry["source"], list) else [entry["source"]]
    if not raw_sources:
        raise DpError(f"{where}: 'source' is empty")
    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise DpError(f"{where}: 'aliases' must be a list of key names")
    encoder = entry.get("encoder")
    if encoder is not None:
        allowed = {"image": ("vision", "none"), "lowdim": ("state", "none"), "action": ("none",)}[entry["role"]]
        if encoder not in allowed:
            raise DpError(f"{where}: encoder {encoder!r} is not one of {', '.join(allowed)} (for role {entry['role']})")
    resize = entry.get("resize")
    if resize is not None:
        if entry["role"] != "image":
            raise DpError(f"{where}: 'resize' applies to image keys only (role is {entry['role']})")
        if not isinstance(resize, int) or isinstance(resize, bool) or resize < 1:
            raise DpError(f"{where}: 'resize' must be a positive integer (pixels), got {resize!r}")
    flatten = entry.get("flatten", False)
    if not isinstance(flatten, bool) or (flatten and entry["role"] == "image"):
        raise DpError(f"{where}: 'flatten' must be true or false, and applies to low-dim and action keys only, got {flatten!r}")
    return KeySpec(
        key=key,
        sources=tuple(replace(SourceRef.parse(s, where), flatten=flatten) for s in raw_sources),
        role=entry["role"],
        camera=str(entry["camera"]) if entry.get("camera") is not None else None,
        variant=str(entry["variant"]) if entry.get("variant") is not None else None,
        optional=bool(entry.get("optional", False)),
        negate_dims=_int_list(entry.get("negate_dims", []), f"{where}: negate_dims"),
        discrete_dims=_int_list(entry.get("discrete_dims", []), f"{where}: discrete_dims"),
        aliases=tuple(aliases),
        description=str(entry.get("description") or ""),
        encoder=encoder,
        resize=resize,
        flatten=flatten,
    )
