"""Model size and cost: total and active parameters, FLOPs per denoising step (measured)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from dp.models.diffusion_policy import DiffusionPolicy


def param_counts(policy: DiffusionPolicy) -> dict[str, int]:
    """Total parameters, and active ones (only top_k of n_experts experts run per denoising step)."""
    total = sum(p.numel() for p in policy.parameters())
    inactive = 0
    for block in policy.net.blocks:
        moe = block.moe
        per_expert = sum(p.numel() for p in moe.experts[0].parameters())
        inactive += (moe.n_experts - moe.top_k) * per_expert
    encoders = sum(p.numel() for m in (policy.net.goal, policy.net.state, policy.net.cameras) if m is not None for p in m.parameters())
    return {"total_params": total, "active_params": total - inactive, "encoder_params": encoders}


def _example_inputs(policy: DiffusionPolicy, batch: int, device: torch.device) -> dict:
    data = policy.cfg.data
    obs = {}
    for key in policy.lowdim_keys:
        obs[key] = torch.zeros(batch, data.obs_horizon, *data.shapes[key], device=device)
    for key in policy.image_keys:
        obs[key] = torch.zeros(batch, data.obs_horizon, *data.shapes[key], dtype=torch.uint8, device=device)
    goal = {}
    if policy.net.goal.kind == "task":
        goal["task_id"] = torch.zeros(batch, dtype=torch.long, device=device)
    elif policy.net.goal.kind == "lang":
        goal["lang_emb"] = torch.zeros(batch, policy.cfg.model.lang_dim, device=device)
    return {"obs": obs, **goal}


@torch.no_grad()
def measure_flops(policy: DiffusionPolicy, batch: int = 1) -> dict[str, int]:
    """FLOPs (torch's flop counter: matmuls, convolutions, attention) of one chunk's encoders and of
    one denoising step, at batch size ``batch``, in eval mode (deterministic top-k routing)."""
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    inputs = _example_inputs(policy, batch, device)
    with FlopCounterMode(display=False) as counter:
        cond = policy.encode(inputs["obs"], inputs.get("task_id"), inputs.get("lang_emb"))
    encode_flops = counter.get_total_flops()
    x = torch.zeros(batch, policy.net.action_horizon, policy.net.action_dim, device=device)
    sigma = torch.ones(batch, device=device)
    with FlopCounterMode(display=False) as counter:
        policy.edm.denoise(policy.net, cond, x, sigma)
    step_flops = counter.get_total_flops()
    policy.train(was_training)
    steps = policy.cfg.diffusion.steps
    return {"encoder_flops": encode_flops, "flops_per_step": step_flops, "flops_per_chunk": encode_flops + steps * step_flops}
