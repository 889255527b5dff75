"""A trained or exported policy as the actor of `dp collect --policy`: its roll-outs on collect seeds, kept
where they succeed, become demonstrations (self-improvement by filtered behaviour cloning: the episodes
show what the policy solves, with the simulator's success check as the filter).

It loads policies, so it sits on top of the policy stack, beside `dp eval`, not under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dp.errors import DpError
from dp.eval.evaluate import check_fit, policy_cameras
from dp.infer.load import load_policy
from dp.sim.rollout import ActionSource
from dp.sim.tasks import SimEnv, get_task


@dataclass(frozen=True)
class PolicySource:
    """A picklable factory of the policy ``policy`` names (what :func:`dp.infer.load.load_policy`
    takes); its own sampler acts, on one torch thread per worker."""

    policy: str

    @property
    def settings(self) -> dict[str, Any]:
        """What each episode keeps in its metadata: one store, one policy's roll-outs."""
        return {"policy": self.policy}

    def __call__(self, env: SimEnv) -> ActionSource:
        import torch

        torch.set_num_threads(1)
        return load_policy(self.policy)


def policy_source(task: str, policy: str, cameras: list[str]) -> tuple[PolicySource, list[str]]:
    """The source for ``policy`` acting in ``task`` and the cameras to record: ``cameras``, or the
    policy's own when none are given. A DpError when the policy cannot act in the task or a camera
    it observes would not be recorded (the store could not train it again)."""
    spec = get_task(task)
    actor = load_policy(policy)
    check_fit(actor, spec)
    needed = policy_cameras(actor, spec)
    missing = [c for c in needed if c not in cameras]
    if cameras and missing:
        raise DpError(f"--cameras {','.join(cameras)}: the policy observes camera(s) {missing}; record them too")
    return PolicySource(policy), cameras or needed
