"""Policy runtimes with one API (``reset``, ``select_action``, ``predict_chunk``).

``dp.infer.Policy`` runs a trained run in torch; ``dp.infer.OnnxPolicy`` runs an exported folder
with numpy and onnxruntime alone. Names are imported lazily, so that a runtime which
must not import torch (the ONNX Runtime policy) can live in this package too.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OnnxPolicy", "Policy"]


def __getattr__(name: str) -> Any:
    if name == "Policy":
        from dp.infer.policy import Policy

        return Policy
    if name == "OnnxPolicy":  # numpy + onnxruntime only: no torch
        from dp.infer.onnx_policy import OnnxPolicy

        return OnnxPolicy
    raise AttributeError(f"module 'dp.infer' has no attribute {name!r}")
