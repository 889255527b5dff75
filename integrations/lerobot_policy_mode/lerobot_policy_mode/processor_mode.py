"""Pre- and post-processors of the ``mode`` policy, as LeRobot's diffusion policy builds its own.

The normaliser's statistics are chosen so that LeRobot's min-max map equals dp's
:class:`dp.data.normalize.Normalizer` on every dimension the policy reads: the dataset's min and max,
except where dp departs from plain min-max (flat dimensions are centred, not scaled; a two-level
dimension at -1/+1 passes through), whose min and max are set to the ones giving dp's map.
Cameras are not normalised (dp's vision encoder takes raw pixels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lerobot.processor import (
    AddBatchDimensionProcessorStep,
    DeviceProcessorStep,
    NormalizerProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    RenameObservationsProcessorStep,
    UnnormalizerProcessorStep,
)
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action
from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME

from lerobot_policy_mode import bridge
from lerobot_policy_mode.configuration_mode import ModeConfig


def dp_min_max(norm: Any, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) per dimension whose LeRobot min-max map is dp's map of ``key``."""
    st = norm.stats[key]
    lo, hi = np.array(st["min"], np.float64), np.array(st["max"], np.float64)
    scale, offset = (a.astype(np.float64) for a in norm.affine(key))
    plain = np.isclose(scale * lo + offset, -1.0, atol=1e-3) & np.isclose(scale * hi + offset, 1.0, atol=1e-3)  # float32 rounding only
    return np.where(plain, lo, (-1.0 - offset) / scale), np.where(plain, hi, (1.0 - offset) / scale)


def processor_stats(config: ModeConfig, dataset_stats: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, np.ndarray]]:
    """Per-feature statistics for LeRobot's normaliser: the dataset's (or, without a dataset, those the
    policy recorded), with each dp key's slice set to dp's map."""
    out = {f: {s: np.asarray(v, np.float64) for s, v in st.items()} for f, st in (dataset_stats or {}).items()}
    if not config.key_map:
        return out
    dp_stats = bridge.split_stats(dataset_stats, config.key_map) if dataset_stats is not None else config.dp_stats
    norm = bridge.normalizer(dp_stats, config.discrete_dims)
    features = {**config.input_features, **config.output_features}
    for key, ref in bridge.parse_key_map(config.key_map).items():
        if key not in dp_stats:
            continue
        n = int(features[ref.field].shape[-1])
        st = out.setdefault(ref.field, {s: np.full(n, np.nan) for s in ("min", "max", "mean", "std")})
        index = np.arange(n)[ref.start:ref.stop]
        lo, hi = dp_min_max(norm, key)
        replaced = {"min": lo, "max": hi, **{s: dp_stats[key][s] for s in ("mean", "std") if s in dp_stats[key]}}
        for name, values in replaced.items():
            if name in st:
                st[name] = np.array(st[name], np.float64)
                st[name][index] = values
    return out


def make_mode_pre_post_processors(
    config: ModeConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """Rename, batch, device and normalise the inputs; unnormalise the actions and move them to the CPU."""
    stats = processor_stats(config, dataset_stats)
    input_steps = [
        RenameObservationsProcessorStep(rename_map={}),
        AddBatchDimensionProcessorStep(),
        DeviceProcessorStep(device=config.device),
        NormalizerProcessorStep(
            features={**config.input_features, **config.output_features},
            norm_map=config.normalization_mapping,
            stats=stats,
        ),
    ]
    output_steps = [
        UnnormalizerProcessorStep(features=config.output_features, norm_map=config.normalization_mapping, stats=stats),
        DeviceProcessorStep(device="cpu"),
    ]
    return (
        PolicyProcessorPipeline[dict[str, Any], dict[str, Any]](steps=input_steps, name=POLICY_PREPROCESSOR_DEFAULT_NAME),
        PolicyProcessorPipeline[PolicyAction, PolicyAction](
            steps=output_steps,
            name=POLICY_POSTPROCESSOR_DEFAULT_NAME,
            to_transition=policy_action_to_transition,
            to_output=transition_to_policy_action,
        ),
    )
