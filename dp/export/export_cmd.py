"""Export a trained policy to ONNX: a folder that runs with numpy and onnxruntime alone (no torch).
POLICY (positional or --policy) is a run folder (its latest checkpoint) or a checkpoint folder.

Writes DIR/policy.onnx (a chunk from noise, the full sampler), DIR/policy_warm.onnx (a chunk from the
previous one: real-time-iteration warm start), DIR/policy_first.onnx (an episode's first chunk with a
short sampler), DIR/policy.weights (the weights of all three, each stored once) and DIR/policy.yaml
(keys, shapes, horizons, rates, sampler, RTI and first-chunk settings, goal vocabulary, precision,
file hashes). Experts are cached, the sampler unrolled, normalisation inside the graphs; every graph
is validated with the ONNX checker and against the uncached torch model. `--precision fp16|int8`
shrinks the weights (float16 storage; int8 dynamic quantisation). `--device cuda` checks the graphs
on ONNX Runtime's CUDA provider too (the export itself is traced on the CPU). Run it with
`dp eval DIR --task TASK` or `dp node DIR`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from tqdm import tqdm

from dp.cli_args import add_deprecated_alias, add_policy_argument, policy_of, replan_interval
from dp.devices import CPU_PROVIDER, add_device_argument, onnx_providers, provider_names
from dp.errors import DpError
from dp.infer.export_format import EXPORT_FILES, GRAPH_FILES, PRECISIONS, SPEC_FILE, WEIGHTS_FILE
from dp.infer.load import add_sampler_arguments, interval_options, is_exported
from dp.infer.rti_guess import DEFAULT_FIRST_SIGMA, DEFAULT_FIRST_STEPS, DEFAULT_RTI_EVERY, DEFAULT_RTI_SIGMA, DEFAULT_RTI_STEPS

STAGES = 5  # caching, the exports, the shared weights file, the check against torch, policy.yaml
EXAMPLE = "dp export runs/lift --out exported/lift"  # ends `dp export --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_policy_argument(parser, "run folder (its latest checkpoint) or checkpoint folder to export")
    parser.add_argument("--out", required=True, help="folder to write the graphs, policy.weights and policy.yaml into")
    add_deprecated_alias(parser, "--steps", parser.add_argument(
        "--sampler-steps", type=int, default=None, metavar="N", help="full-sampling denoising steps of policy.onnx (default: the run's diffusion.steps)"))
    add_sampler_arguments(parser)
    parser.add_argument("--rti-steps", type=int, default=DEFAULT_RTI_STEPS, help=f"denoising steps of policy_warm.onnx (default {DEFAULT_RTI_STEPS})")
    parser.add_argument("--rti-sigma", type=float, default=DEFAULT_RTI_SIGMA, help=f"noise level the warm start's guess is noised to (default {DEFAULT_RTI_SIGMA})")
    parser.add_argument("--rti-every", type=int, default=DEFAULT_RTI_EVERY,
                        help=f"with RTI on, a new warm chunk every this many control steps (default {DEFAULT_RTI_EVERY})")
    parser.add_argument("--first-steps", type=int, default=DEFAULT_FIRST_STEPS,
                        help=f"with RTI on, denoising steps of an episode's first chunk (policy_first.onnx; default {DEFAULT_FIRST_STEPS})")
    parser.add_argument("--first-sigma", type=float, default=DEFAULT_FIRST_SIGMA,
                        help=f"noise level the first chunk starts from, around a zero guess (default {DEFAULT_FIRST_SIGMA})")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="weights: fp32, fp16 (half the size, float32 arithmetic) or int8 (dynamic quantisation; about a quarter)")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="torch's ONNX exporter: torchscript (default, fast) or dynamo (current; needs onnxscript, ~8x slower)")
    add_deprecated_alias(parser, "--n-action-steps", parser.add_argument(
        "--replan-every", type=replan_interval, default=None, metavar="N|TASK=N,...",
        help="without RTI, sample a new chunk every N control steps: the actions executed per chunk (default: the run's "
             "data.n_action_steps and data.task_action_steps); TASK=N,... exports per-task intervals (e.g. chosen on "
             "validation) that every runtime and the node apply at reset(TASK)"))
    parser.add_argument("--control-freq", type=float, default=None, help="control rate in Hz to record (default: the training store's)")
    add_device_argument(parser, "where ONNX Runtime also checks the graphs against torch (the CPU check always runs)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")


def _prepare_out(out: Path) -> None:
    """Refuse to write into a folder that holds anything but a previous export."""
    if out.exists() and not out.is_dir():
        raise DpError(f"{out}: exists and is not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES)
        if foreign:
            raise DpError(f"{out}: holds other files ({', '.join(foreign[:5])}); choose an empty or a previous export folder")


def _source(spec: str) -> str:
    """POLICY as a folder to export: a run or checkpoint folder, not an expert or an export."""
    if spec.startswith("expert:"):
        raise DpError(f"{spec}: a scripted expert has no network to export; POLICY must be a run or checkpoint folder")
    if is_exported(spec):
        raise DpError(f"{spec}: already an exported folder (policy.onnx); export the run or checkpoint folder it came from")
    return spec


def run(args: argparse.Namespace) -> int:
    providers = onnx_providers(args.device)
    on_device = providers != [CPU_PROVIDER]  # export_policy checks every graph on the CPU provider itself
    source = _source(policy_of(args))

    from dp.export.export_check import CHECK_TOLERANCE, check_export  # torch and onnx load only when the command runs
    from dp.export.onnx_export import export_policy
    from dp.infer.policy import Policy
    from dp.infer.rti import RTISettings

    out = Path(args.out)
    _prepare_out(out)
    if args.sampler_steps is not None and args.sampler_steps < 1:
        raise DpError(f"--sampler-steps must be >= 1, got {args.sampler_steps}")
    start = time.perf_counter()
    policy = Policy.load(source, sampler={"schedule": args.schedule, "solver": args.solver}, **interval_options(args.replan_every))
    rti = RTISettings(args.rti_steps, args.rti_sigma, args.rti_every, args.first_steps, args.first_sigma)
    if not 1 <= rti.every <= policy.action_horizon:
        raise DpError(f"--rti-every must be in [1, {policy.action_horizon}] (the chunk length), got {rti.every}")
    rti.for_model(policy.model, args.sampler_steps)  # a bad --rti-* or --first-* fails here, before anything is written
    rti.first_for_model(policy.model, args.sampler_steps)
    tmp = out.with_name(f".tmp-{out.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    with tqdm(total=STAGES + on_device, desc="dp export", unit="stage", disable=args.json) as bar:

        def progress(done: str) -> None:
            bar.set_postfix_str(done)
            bar.update(1)

        try:
            spec = export_policy(policy, tmp, steps=args.sampler_steps, rti=rti, control_freq=args.control_freq, source=str(Path(source).resolve()),
                                 progress=progress, precision=args.precision, exporter=args.exporter)
            device_check = None
            if on_device:
                device_check = check_export(policy, tmp, spec, providers, CHECK_TOLERANCE[args.precision])
                progress(f"graphs match torch on {args.device}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if out.is_dir():
        shutil.rmtree(out)
    tmp.rename(out)
    summary = {
        "out": str(out),
        "files": {name: spec["files"][name]["bytes"] for name in (*GRAPH_FILES, WEIGHTS_FILE)},
        "precision": args.precision,
        "sampler_steps": spec["sampler"]["steps"],
        "n_action_steps": spec["action"]["n_action_steps"],
        "task_n_action_steps": spec["action"]["task_n_action_steps"],
        "rti": {"steps": rti.steps, "sigma_start": rti.sigma_start},
        "first": {"steps": rti.first_steps, "sigma_start": rti.first_sigma},
        "control_freq": spec["control_freq"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    if device_check is not None:
        summary["device_check"] = {"device": args.device, "providers": provider_names(providers),
                                   "max_abs_diff_vs_torch": {name: float(f"{diff:.3g}") for name, diff in device_check.items()}}
    if args.json:
        print(json.dumps(summary))
    else:
        sizes = ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in summary["files"].items())
        per_task = ", ".join(f"{task} {n}" for task, n in summary["task_n_action_steps"].items())
        print(f"exported {source} -> {out} ({args.precision}: {sizes}, {SPEC_FILE}); {summary['sampler_steps']} sampler steps, "
              f"{summary['n_action_steps']} actions per chunk{f' (by task: {per_task})' if per_task else ''}, "
              f"RTI {rti.steps} step(s) from sigma {rti.sigma_start}, a new chunk every {rti.every} steps, "
              f"first chunk {rti.first_steps} step(s) from sigma {rti.first_sigma}; {summary['seconds']} s")
        if device_check is not None:
            print(f"checked against torch on {args.device} ({', '.join(provider_names(providers))}): largest difference "
                  f"{max(device_check.values()):.3g}")
        if spec["control_freq"] is None:
            print("note: no control rate recorded (training store not found); pass --control-freq HZ")
    return 0
