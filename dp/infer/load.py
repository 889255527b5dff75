"""The one policy loader of `dp eval`, `dp node` and the benches: the policy a spec names.

Specs, tried in order: ``expert:TASK`` (a scripted expert); a folder with ``policy.onnx`` (an
export, run by ``dp.infer.OnnxPolicy``); a folder with ``model.safetensors``, a run or a checkpoint
(``dp.infer.Policy``); and, where the caller allows it (`dp node`), ``package.module:Name``: any
importable class or factory called with no arguments that has the Policy runtime API (``reset``,
``select_action``): your own policy, a teleoperation device, a test double.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from dp.config import SCHEDULES, SOLVERS
from dp.devices import onnx_providers, torch_device
from dp.errors import DpError
from dp.infer.export_format import FULL_FILE

DEVICE_FLAG = "--device"  # how errors name the device: the commands' flag


def add_sampler_arguments(parser: argparse.ArgumentParser, where: str = "") -> None:
    """``--schedule`` and ``--solver``: the sampler's settings over the run's (``diffusion.*``)."""
    parser.add_argument("--schedule", choices=SCHEDULES, default=None,
                        help=f"{where}the sampler's noise levels (default: the run's diffusion.schedule; docs/configuration.md)")
    parser.add_argument("--solver", choices=SOLVERS, default=None,
                        help=f"{where}ddim (first order) or dpmpp2m (DPM-Solver++ 2M) (default: the run's diffusion.solver)")


def is_exported(spec: str) -> bool:
    """Whether ``spec`` names an exported folder (one holding ``policy.onnx``)."""
    return (Path(spec) / FULL_FILE).is_file()


def load_policy(
    spec: str,
    *,
    rti: bool = False,
    rti_steps: int | None = None,
    rti_sigma: float | None = None,
    rti_every: int | None = None,
    replan_every: int | dict[str, int] | None = None,
    first_chunk: str | None = None,
    sampler_steps: int | None = None,
    schedule: str | None = None,
    solver: str | None = None,
    ensemble: float | None = None,
    vote: int | None = None,
    medoid: int | None = None,
    plan_ahead: int | None = None,
    importable: bool = False,
    device: str = "cpu",
) -> Any:
    """The policy ``spec`` names (see the module docstring); a DpError naming what was expected otherwise.

    ``rti`` turns real-time-iteration warm starts on; ``rti_steps``, ``rti_sigma`` and ``rti_every``
    (trained runs only: an export fixes them) choose its steps, start sigma and re-planning interval.
    ``replan_every`` samples a new chunk every N control steps instead of the policy's own interval
    (a dict: task -> N for those tasks, the others at the policy's own: :func:`interval_options`);
    ``first_chunk`` ("short" or "full", exports with ``rti`` only) picks how an episode's first chunk
    is sampled. ``sampler_steps``, ``schedule`` and ``solver`` (trained runs only) override the run's
    full-sampling steps, noise schedule and solver (:mod:`dp.diffusion.schedules`, :mod:`dp.diffusion.solvers`).
    ``ensemble`` turns on temporal ensembling of overlapping chunks with that weight decay (trained
    and exported policies); ``vote`` samples that many chunks per plan and sets the gripper by
    their majority; ``medoid`` samples that many and acts their medoid; ``plan_ahead`` samples each chunk that many control steps before it is used
    (:meth:`dp.infer.chunked_runtime.ChunkedRuntime.use_plan_ahead`). ``importable`` also accepts
    ``package.module:Name``. ``device`` (cpu, cuda, cuda:N, mps, auto; :mod:`dp.devices`) is where a
    trained policy runs in torch, or an exported one in ONNX Runtime (its providers); it is checked
    against this machine before anything loads (scripted experts and imported policies run where they run)."""
    sampler = {k: v for k, v in (("steps", sampler_steps), ("schedule", schedule), ("solver", solver)) if v is not None}
    policy = _load(spec, rti, rti_steps, rti_sigma, rti_every, replan_every, first_chunk, sampler, importable, device)
    switches = (("temporal ensembling", ensemble, "use_temporal_ensemble"), ("the discrete vote", vote, "use_discrete_vote"),
                ("the chunk medoid", medoid, "use_chunk_medoid"), ("plan-ahead", plan_ahead, "use_plan_ahead"))
    for name, value, switch in switches:
        if value is not None:
            if not callable(getattr(policy, switch, None)):
                raise DpError(f"policy {spec!r} samples no chunks: {name} applies to trained and exported policies")
            getattr(policy, switch)(value)
    return policy


def _load(spec: str, rti: bool, rti_steps: int | None, rti_sigma: float | None, rti_every: int | None,
          replan_every: int | dict[str, int] | None, first_chunk: str | None, sampler: dict[str, Any], importable: bool, device: str) -> Any:
    if sampler.get("steps", 1) < 1:
        raise DpError(f"sampler steps must be >= 1 (got {sampler['steps']})")
    if is_exported(spec):
        providers = onnx_providers(device, what=DEVICE_FLAG)
    else:
        device = torch_device(device, DEVICE_FLAG)
    if spec.startswith("expert:"):
        from dp.sim.experts import make_expert

        if rti or sampler:
            raise DpError("--rti and the sampler's settings apply to trained policies, not to a scripted expert")
        return make_expert(spec.split(":", 1)[1])
    path = Path(spec)
    if not path.exists():
        if importable and ":" in spec:
            return _import_policy(spec)
        raise DpError(f"policy {spec!r}: no such file or folder (expected expert:TASK, an exported folder or a run folder)")
    tuned = (rti_steps, rti_sigma, rti_every) != (None, None, None)
    if is_exported(spec):
        if tuned:
            raise DpError(f"{spec}: an exported policy's warm start is fixed at export; "
                          "re-export with `dp export --rti-steps K --rti-sigma S --rti-every N`")
        if sampler:
            raise DpError(f"{spec}: an exported policy's sampler ({', '.join(sampler)}) is fixed at export; "
                          "re-export with `dp export --sampler-steps N --schedule S --solver S`")
        if first_chunk is not None and not rti:
            raise DpError("--first-chunk applies to --rti (without RTI every chunk is fully sampled)")
        return _runtime("OnnxPolicy").load(path, rti=rti, first_chunk=first_chunk or "full", providers=providers,
                                            **interval_options(replan_every))
    if first_chunk is not None:
        raise DpError("--first-chunk applies to an exported folder (policy.onnx) with --rti")
    if path.is_dir():  # a run folder, a checkpoint folder (model.safetensors), or a mistake Policy.load reports
        if tuned:
            from dp.infer.rti import RTISettings

            default = RTISettings()
            settings = RTISettings(rti_steps or default.steps, default.sigma_start if rti_sigma is None else rti_sigma,
                                   rti_every or default.every)
            explicit = interval_options(replan_every) or interval_options(rti_every)  # --rti-every holds for every task
            return _runtime("Policy").load(path, device=device, rti=settings, sampler=sampler, **explicit)
        return _runtime("Policy").load(path, device=device, rti=rti, sampler=sampler, **interval_options(replan_every))
    raise DpError(f"policy {spec!r}: expected expert:TASK, a folder with policy.onnx, or a run/checkpoint folder with model.safetensors")


def interval_options(replan_every: int | dict[str, int] | None) -> dict[str, Any]:
    """A re-planning interval (``--replan-every``) as a runtime's keyword arguments: ``n_action_steps``
    for one interval (every task), ``task_action_steps`` for a table (task -> interval; the policy's
    own table is replaced, its other tasks keep its interval), nothing for None."""
    if replan_every is None:
        return {}
    return {"task_action_steps": dict(replan_every)} if isinstance(replan_every, dict) else {"n_action_steps": replan_every}


def _runtime(name: str) -> Any:
    """``dp.infer.<name>``, imported only when needed (torch, onnxruntime)."""
    try:
        import dp.infer

        return getattr(dp.infer, name)
    except (ImportError, AttributeError) as exc:
        raise DpError(f"the policy runtime dp.infer.{name} is not available here ({exc})") from None


def _import_policy(spec: str) -> Any:
    """``package.module:Name`` called with no arguments; a DpError unless it has the Policy runtime API."""
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise DpError(f"policy {spec!r}: cannot import {attr} from {module_name} ({exc})") from None
    policy = factory()
    if not callable(getattr(policy, "select_action", None)) or not callable(getattr(policy, "reset", None)):
        raise DpError(f"policy {spec!r}: {attr}() has no reset/select_action (the Policy runtime API)")
    return policy
