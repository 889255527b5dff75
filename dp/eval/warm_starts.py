"""Offline analysis of RTI warm starts: replay held-out episodes open loop and compare with full sampling.

Used by ``bench/latency.py --rti-sweep`` to choose the RTI settings (:mod:`dp.infer.rti`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dp.infer.policy import Policy
from dp.infer.rti import RTISettings, contraction_profile, warm_sample
from dp.infer.rti_guess import shift_guess, snap_discrete


def _window(episode: dict[str, np.ndarray], keys: list[str], t: int, obs_horizon: int) -> dict[str, np.ndarray]:
    """The observation window (1, To, ...) ending at frame ``t`` (the first frame repeats, as in training)."""
    frames = np.clip(np.arange(t - obs_horizon + 1, t + 1), 0, None)
    return {k: episode[k][frames][None] for k in keys}


def _summary(full_err: list[float], stats: dict[RTISettings, dict[str, list]]) -> dict[str, Any]:
    return {
        "chunks": len(full_err),
        "full_error": float(np.mean(full_err)),
        "settings": [
            {
                "steps": s.steps,
                "sigma_start": s.sigma_start,
                "warm_error": float(np.mean(st["warm"])),
                "warm_vs_full": float(np.mean(st["vs_full"])),
                "guess_error": float(np.mean(st["guess"])),
                "gripper_agreement": float(np.mean(st["grip"])),
                "contraction": [round(float(v), 4) for v in np.mean(st["contraction"], axis=0)],
            }
            for s, st in stats.items()
        ],
    }


@torch.no_grad()
def evaluate_warm_starts(
    policy: Policy,
    episodes: list[tuple[dict[str, np.ndarray], str | None]],
    settings: list[RTISettings],
    seed: int = 0,
    perturbation: float = 0.1,
) -> dict[str, Any]:
    """Replay held-out episodes open loop, a chunk every ``n_action_steps`` frames, and compare RTI
    chains (each chunk warm-started from the previous one of the same chain) with full sampling.

    ``episodes``: (arrays by key, instruction or None). Per setting: the mean absolute error of warm
    chunks against the demonstrated actions (``warm_error``, continuous dims, raw units), against the
    full-sampling chunk from the same noise (``warm_vs_full``), of the guess itself (``guess_error``),
    the gripper agreement with the demonstration, and the contraction profile of a ``perturbation``
    (normalised units) added to the guess (:func:`dp.infer.rti.contraction_profile`). ``full_error``:
    full sampling. The routed (uncached) model runs throughout.
    """
    model, key = policy.model, policy.action_key
    H, n, To = policy.action_horizon, policy.n_action_steps, policy.obs_horizon
    continuous = [d for d in range(policy.action_dim) if d not in policy.discrete_dims]
    generator = torch.Generator().manual_seed(seed)
    sigmas = {s: s.for_model(model, policy.steps) for s in settings}
    schedule = model.schedule(policy.steps)
    full_err: list[float] = []
    stats: dict[RTISettings, dict[str, list]] = {s: {"warm": [], "vs_full": [], "guess": [], "grip": [], "contraction": []} for s in settings}

    def raw(chunk_n: torch.Tensor) -> np.ndarray:
        return snap_discrete(model.unnormalize_action(chunk_n[0]).cpu().numpy().astype(np.float32), policy.discrete_dims, policy.discrete_levels)

    for episode, instruction in episodes:
        goal = policy.lookup_goal(instruction)
        length = len(episode[key])
        previous = {s: None for s in settings}
        for t in range(0, length, n):
            obs = model.observation_batch(_window(episode, policy.obs_keys, t, To))
            truth = episode[key][np.minimum(np.arange(t, t + H), length - 1)]
            noise = torch.randn(1, H, policy.action_dim, generator=generator).to(policy.device)
            cond = model.encode(obs, **goal)
            full = raw(model.solve(cond, noise * schedule[0], schedule))
            full_err.append(float(np.abs(full - truth)[:, continuous].mean()))
            for s in settings:
                if previous[s] is None:
                    previous[s] = full
                    continue
                guess = shift_guess(previous[s], n, policy.discrete_dims, policy.discrete_levels)
                guess_n = model.normalize_action(torch.from_numpy(guess[None]).to(policy.device))
                chunk = raw(warm_sample(model, cond, guess_n, noise, sigmas[s]))
                delta = torch.randn(guess_n.shape, generator=generator).to(policy.device) * perturbation
                st = stats[s]
                st["warm"].append(float(np.abs(chunk - truth)[:, continuous].mean()))
                st["vs_full"].append(float(np.abs(chunk - full)[:, continuous].mean()))
                st["guess"].append(float(np.abs(guess - truth)[:, continuous].mean()))
                st["grip"].append(float((chunk[:, policy.discrete_dims] == truth[:, policy.discrete_dims]).mean()) if policy.discrete_dims else 1.0)
                st["contraction"].append(contraction_profile(model, cond, guess_n, noise, sigmas[s], delta))
                previous[s] = chunk
    return _summary(full_err, stats)
