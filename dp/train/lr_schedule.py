"""The learning-rate schedule: diffusers' warmup + cosine / linear / constant schedulers, and the rate a
resumed run continues from."""

from __future__ import annotations

import torch

from dp.config import TrainConfig

# train.lr_schedule -> the diffusers scheduler: linear warmup over train.warmup_steps, then this shape
LR_SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def lr_scheduler(optimizer: torch.optim.Optimizer, tcfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule of ``train.lr_schedule`` (validated by the Trainer)."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(LR_SCHEDULES[tcfg.lr_schedule], optimizer, num_warmup_steps=tcfg.warmup_steps, num_training_steps=tcfg.steps)


def follow_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, optimizer: torch.optim.Optimizer) -> list[float]:
    """Set ``optimizer``'s rates to ``scheduler``'s at its current step and return them. After a resume the
    optimizer holds the checkpoint's rates; the schedule is built from ``train.steps``, so a run resumed
    with more steps (a stretched schedule) continues from the new schedule's rate, not the old one's
    (which a finished cosine run had taken to zero). With unchanged steps the rates are the same."""
    rates = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, rate in zip(optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = rates  # what get_last_lr() reports until the next step
    return rates
