"""The RTI warm start without torch: its default settings and the guess each warm chunk starts from.

The guess is the previous chunk shifted by the executed steps, the last action repeated, discrete
dimensions snapped to +-1. The torch side (schedules, the warm sampler) is :mod:`dp.infer.rti`; these
live apart so that robots and command-line parsers need no torch.
"""

from __future__ import annotations

import numpy as np

# RTI defaults (steps of policy_warm, start sigma, actions executed per warm chunk), chosen by
# closed-loop success on `can`'s validation seeds (see dp/infer/rti.py).
DEFAULT_RTI_STEPS = 1
DEFAULT_RTI_SIGMA = 1.0
DEFAULT_RTI_EVERY = 4
# The first chunk of an episode with RTI (no previous chunk): a short sampler from a zero guess,
# FIRST_STEPS steps from FIRST_SIGMA (chosen on validation seeds, see dp/infer/rti.py).
DEFAULT_FIRST_STEPS = 1
DEFAULT_FIRST_SIGMA = 1.0


def shift_guess(previous: np.ndarray, executed: int, discrete_dims: list[int]) -> np.ndarray:
    """The RTI initial guess (H, A): ``previous`` (H, A) advanced by ``executed`` steps, the last
    action repeated to fill the tail, discrete dimensions snapped to +-1."""
    H = previous.shape[0]
    index = np.minimum(np.arange(H) + executed, H - 1)
    guess = np.array(previous[index], dtype=np.float32)
    return snap_discrete(guess, discrete_dims)


def snap_discrete(chunk: np.ndarray, discrete_dims: list[int]) -> np.ndarray:
    """``chunk`` (..., A) with the discrete dimensions set to +1 where >= 0 and -1 elsewhere (in place)."""
    for d in discrete_dims:
        chunk[..., d] = np.where(chunk[..., d] >= 0, 1.0, -1.0)
    return chunk
