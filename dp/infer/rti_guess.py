"""The RTI warm start without torch: its default settings and the guess each warm chunk starts from.

The guess is the previous chunk shifted by the executed steps, the last action repeated, discrete
dimensions snapped to their two levels (-1/+1 unless the data's are others:
:func:`dp.data.levels.discrete_levels`). The torch side (schedules, the warm sampler) is :mod:`dp.infer.rti`; these
live apart so that robots and command-line parsers need no torch.
"""

from __future__ import annotations

import numpy as np

# RTI defaults (steps of policy_warm, start sigma, actions executed per warm chunk), chosen by
# closed-loop success on `can`'s validation seeds (results page, "Experiment notes").
DEFAULT_RTI_STEPS = 1
DEFAULT_RTI_SIGMA = 1.0
DEFAULT_RTI_EVERY = 4
# The first chunk of an episode with RTI (no previous chunk): a short sampler from a zero guess,
# FIRST_STEPS steps from FIRST_SIGMA (chosen on validation seeds, same page).
DEFAULT_FIRST_STEPS = 1
DEFAULT_FIRST_SIGMA = 1.0


Levels = tuple[np.ndarray, np.ndarray] | None  # (low, high) per discrete dimension; None: -1 and +1


def shift_guess(previous: np.ndarray, executed: int, discrete_dims: list[int], levels: Levels = None) -> np.ndarray:
    """The RTI initial guess (H, A): ``previous`` (H, A) advanced by ``executed`` steps, the last
    action repeated to fill the tail, discrete dimensions snapped to their levels."""
    H = previous.shape[0]
    index = np.minimum(np.arange(H) + executed, H - 1)
    guess = np.array(previous[index], dtype=np.float32)
    return snap_discrete(guess, discrete_dims, levels)


def snap_discrete(chunk: np.ndarray, discrete_dims: list[int], levels: Levels = None) -> np.ndarray:
    """``chunk`` (..., A) with each discrete dimension set to its high level where at or above the
    middle of its two levels, else to its low one (in place; levels default to -1 and +1)."""
    for i, d in enumerate(discrete_dims):
        low, high = (-1.0, 1.0) if levels is None else (float(levels[0][i]), float(levels[1][i]))
        chunk[..., d] = np.where(chunk[..., d] >= (low + high) / 2, high, low)
    return chunk


def vote_discrete(chunks: np.ndarray, discrete_dims: list[int], levels: Levels = None) -> np.ndarray:
    """The first of ``chunks`` (K, H, A) with each discrete dimension set to the majority of all K."""
    chunk = chunks[0].copy()
    for d in discrete_dims:
        chunk[:, d] = chunks[:, :, d].mean(0)
    return snap_discrete(chunk, discrete_dims, levels)


def medoid_chunk(chunks: np.ndarray, executed: int, discrete_dims: list[int], levels: Levels = None) -> np.ndarray:
    """The one of ``chunks`` (K, H, A) nearest the others: the least sum of squared distances to them over
    the first ``executed`` actions (those a robot acts), its discrete dimensions snapped. A sample, not
    a blend: the mean of chunks that push different ways is a push none of them intended."""
    acted = chunks[:, :executed].reshape(len(chunks), -1).astype(np.float64)
    spread = ((acted[:, None] - acted[None]) ** 2).sum(-1).sum(1)
    return snap_discrete(chunks[int(np.argmin(spread))].copy(), discrete_dims, levels)
