"""The export's self-check: each graph in ONNX Runtime against the uncached, routed torch model.

Continuous action dimensions must agree within ``CHECK_TOLERANCE[precision]`` of the action scale,
discrete ones in level. ONNX Runtime runs the graphs on the CPU provider unless given others
(`dp export --device cuda` checks them on the CUDA provider too); the torch reference runs where the
policy is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dp.devices import CPU_PROVIDER, onnx_session
from dp.errors import DpError
from dp.infer.export_format import FIRST_FILE, FULL_FILE, WARM_FILE
from dp.export.graph_inputs import example_inputs
from dp.infer.policy import Policy
from dp.infer.rti import warm_sample
from dp.infer.rti_guess import snap_discrete

CHECK_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.2}  # of the action scale (max |action|, at least 1)


def reference_chunks(policy: Policy, feeds: dict[str, np.ndarray], sigmas: torch.Tensor, warm: bool) -> np.ndarray:
    """The uncached, routed torch model on graph inputs ``feeds``: (1, H, A) raw actions, not snapped."""
    model = policy.model
    obs = model.observation_batch({k: feeds[k] for k in policy.obs_keys})
    goal = {k: torch.from_numpy(feeds[k]).to(policy.device) for k in ("task_id", "lang_emb") if k in feeds}
    noise = torch.from_numpy(feeds["noise"]).to(policy.device)
    sigmas = sigmas.to(policy.device)
    with torch.no_grad():
        cond = model.encode(obs, **goal)
        if warm:
            guess = model.normalize_action(torch.from_numpy(feeds["guess"]).to(policy.device))
            x = warm_sample(model, cond, guess, noise, sigmas)
        else:
            x = model.solve(cond, noise * sigmas[0], sigmas)
        return model.unnormalize_action(x).cpu().numpy().astype(np.float32)


def check_against_torch(policy: Policy, path: Path, sigmas: torch.Tensor, warm: bool, tolerance: float = 1e-4, trials: int = 3,
                        providers: list[Any] | None = None) -> float:
    """Run the exported file in ONNX Runtime (on ``providers``, default the CPU's) and the uncached,
    routed torch model on ``trials`` random inputs; a DpError if a continuous action dimension differs
    by more than ``tolerance`` (relative to the action scale) or a discrete one another level (where
    torch is not within the tolerance of the levels' middle). Returns the largest difference in the continuous dimensions."""
    session = onnx_session(path, providers or [CPU_PROVIDER])
    continuous = [d for d in range(policy.action_dim) if d not in policy.discrete_dims]
    worst = 0.0
    for trial in range(trials):
        feeds = example_inputs(policy, warm, seed=1 + trial)
        got = session.run(None, feeds)[0]
        want = reference_chunks(policy, feeds, sigmas, warm)
        scale = max(1.0, float(np.abs(want).max()))
        diff = float(np.abs(got - want)[..., continuous].max()) if continuous else 0.0
        if not diff <= tolerance * scale:
            raise DpError(f"{path.name}: ONNX Runtime and the torch model disagree by {diff:.3g} (tolerance {tolerance * scale:.3g}); the export is wrong")
        dims = policy.discrete_dims
        middle = np.mean(policy.discrete_levels, axis=0)
        clear = np.abs(want[..., dims] - middle) > tolerance * scale
        snapped = snap_discrete(want.copy(), dims, policy.discrete_levels)[..., dims]
        if np.any((snapped != got[..., dims]) & clear):
            raise DpError(f"{path.name}: ONNX Runtime and the torch model choose another level for a discrete action dimension; the export is wrong")
        worst = max(worst, diff)
    return worst


def check_export(policy: Policy, folder: Path, spec: dict[str, Any], providers: list[Any], tolerance: float) -> dict[str, float]:
    """Every graph of the export in ``folder`` (``spec``: its policy.yaml) checked against torch with
    ONNX Runtime on ``providers``; the largest difference of each graph, by file name."""
    schedules = {FULL_FILE: (spec["sampler"]["sigmas"], False), WARM_FILE: (spec["rti"]["sigmas"], True), FIRST_FILE: (spec["first"]["sigmas"], False)}
    return {name: check_against_torch(policy, folder / name, torch.tensor(sigmas), warm, tolerance, providers=providers)
            for name, (sigmas, warm) in schedules.items()}
