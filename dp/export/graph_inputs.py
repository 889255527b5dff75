"""The inputs of an exported policy graph: their names, shapes and dtypes, and plausible examples.

Inputs, in order: low-dim keys (1, To, *shape) float32, image keys (1, To, H, W, C) uint8, the goal
(``task_id`` (1,) int64 or ``lang_emb`` (1, E) float32, if any), ``noise`` (1, H, A) standard normal,
and for the warm entry point ``guess`` (1, H, A) raw actions.
"""

from __future__ import annotations

import numpy as np

from dp.errors import DpError
from dp.infer.policy import Policy
from dp.infer.rti_guess import snap_discrete


def graph_inputs(policy: Policy, warm: bool) -> list[tuple[str, list[int], str]]:
    """(name, shape, dtype) of each graph input, in the order :class:`PolicyGraph` takes them."""
    data = policy.cfg.data
    To, chunk = data.obs_horizon, [1, policy.action_horizon, policy.action_dim]
    specs = [(k, [1, To, *data.shapes[k]], "float32") for k in policy.lowdim_keys]
    specs += [(k, [1, To, *data.shapes[k]], "uint8") for k in policy.image_keys]
    if policy.cfg.model.goal == "task":
        specs.append(("task_id", [1], "int64"))
    elif policy.cfg.model.goal == "lang":
        specs.append(("lang_emb", [1, policy.cfg.model.lang_dim], "float32"))
    specs.append(("noise", chunk, "float32"))
    if warm:
        specs.append(("guess", chunk, "float32"))
    names = [name for name, _, _ in specs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise DpError(f"observation key(s) {clash} clash with the graph's own inputs (task_id, lang_emb, noise, guess); rename them in the store")
    return specs


def example_inputs(policy: Policy, warm: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible random inputs: low-dim values and guesses inside the normaliser's range, random images."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape, dtype in graph_inputs(policy, warm):
        if name in policy.lowdim_keys:
            unit = rng.uniform(-1, 1, shape).astype(np.float32)
            out[name] = policy.normalizer.unnormalize(name, unit).astype(np.float32)
        elif name in policy.image_keys:
            out[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif name == "task_id":
            out[name] = np.zeros(shape, dtype=np.int64)
        elif name == "lang_emb":
            emb = next(iter(policy.goals.values()), None)
            out[name] = np.asarray(emb, dtype=np.float32).reshape(shape) if emb is not None else rng.normal(size=shape).astype(np.float32)
        elif name == "noise":
            out[name] = rng.standard_normal(shape).astype(np.float32)
        else:  # guess: a raw action chunk, discrete dims at -1/+1 normalised (at the data's levels raw)
            unit = rng.uniform(-1, 1, shape).astype(np.float32)
            snap_discrete(unit, policy.discrete_dims)  # -1/+1: the levels in normalised units
            out[name] = policy.normalizer.unnormalize(policy.action_key, unit).astype(np.float32)
    return out
