"""The normaliser as part of the model: raw observations and actions to the normalised space and back.

Holds each key's affine map (:meth:`dp.data.normalize.Normalizer.affine`) as float32 buffers and
applies it with the same functions the training windows use (:func:`dp.data.normalize.apply_affine`),
so that training, the torch runtime and the ONNX export (which traces this module) compute the same
numbers. The buffers are not saved with the weights: a checkpoint's ``normalizer.safetensors`` stays
their one source.
"""

from __future__ import annotations

import torch
from torch import nn

from dp.data.normalize import Normalizer, apply_affine, invert_affine
from dp.errors import DpError


class Normalization(nn.Module):
    """Per-key ``normalize`` / ``unnormalize`` on torch tensors (last axis = dimensions)."""

    def __init__(self, normalizer: Normalizer, keys: list[str]):
        super().__init__()
        self.index = {key: i for i, key in enumerate(keys)}  # buffer names must not depend on key spelling
        for key, i in self.index.items():
            scale, offset = normalizer.affine(key)
            self.register_buffer(f"scale{i}", torch.from_numpy(scale.copy()), persistent=False)
            self.register_buffer(f"offset{i}", torch.from_numpy(offset.copy()), persistent=False)

    def _affine(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        if key not in self.index:
            raise DpError(f"normalization: no map for key {key!r} (has: {', '.join(self.index)})")
        i = self.index[key]
        return getattr(self, f"scale{i}"), getattr(self, f"offset{i}")

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """Raw values of ``key`` -> [-1, 1]."""
        return apply_affine(x, *self._affine(key))

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> raw values of ``key``."""
        return invert_affine(x, *self._affine(key))
