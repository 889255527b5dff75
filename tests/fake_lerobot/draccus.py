"""A stand-in for draccus, as much of it as dp's LeRobot driver and the fake LeRobot use: a registry
of config classes by name, and ``decode`` of a mapping into a config dataclass."""

from __future__ import annotations

import dataclasses
from typing import Any

_REGISTRIES: dict[type, dict[str, type]] = {}


class DecodingError(Exception):
    pass


class ChoiceRegistry:
    """A config base whose subclasses register under names (``type: so101_follower``)."""

    @classmethod
    def _choices(cls) -> dict[str, type]:
        root = next(c for c in cls.__mro__ if ChoiceRegistry in c.__bases__)
        return _REGISTRIES.setdefault(root, {})

    @classmethod
    def register_subclass(cls, name: str):
        def register(subclass: type) -> type:
            cls._choices()[name] = subclass
            return subclass
        return register

    @classmethod
    def get_choice_class(cls, name: str) -> type:
        return cls._choices()[name]

    @classmethod
    def get_known_choices(cls) -> dict[str, type]:
        return dict(cls._choices())

    @classmethod
    def get_choice_name(cls, subclass: type) -> str:
        return next(name for name, c in cls._choices().items() if c is subclass)


def decode(cls: type, raw: dict[str, Any]) -> Any:
    """``cls(**raw)``; a field whose metadata names ``choices`` (a registry) holds a mapping of
    configs, each decoded as the class its ``type`` names."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise DecodingError(f"The fields {unknown} are not valid for {cls.__name__}")
    values = dict(raw)
    for name, value in raw.items():
        registry = fields[name].metadata.get("choices")
        if registry is not None:
            values[name] = {key: decode(registry.get_choice_class(sub["type"]), {k: v for k, v in sub.items() if k != "type"})
                            for key, sub in value.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise DecodingError(str(exc)) from None
