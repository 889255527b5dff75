"""The results page: every section in order, the targets overview, the quickstart and the inputs."""

from __future__ import annotations

import os
from pathlib import Path

from bench.reporting.load import Results
from bench.reporting.readme import headline_rows
from bench.reporting.sections_ablation import section_ablation
from bench.reporting.sections_peers import section_peers
from bench.reporting.sections_plugin import section_plugin
from bench.reporting.sections_policy import (
    runtime_targets,
    success_targets,
    section_latency,
    section_multitask,
    section_success,
    section_training,
)
from bench.reporting.sections_robot import section_robot
from bench.reporting.sections_sampler import section_sampler
from bench.reporting.sections_systems import section_data, section_deploy, section_formats
from bench.reporting.spec import BENCHES, HOW, MET, MISSING, NOT_MET
from bench.reporting.targets import Targets
from bench.reporting.text import num, pct, shown, table


def section_quickstart(results: Results) -> list[str]:
    out = ["## Quickstart", ""]
    qs = results.quickstart
    if qs is None:
        return out + [f"*{MISSING}* — `dp quickstart && cp quickstart/report.json bench/results/quickstart.json`", ""]
    sizes = qs.get("sizes") or {}
    out.append(f"`dp quickstart` on `{qs.get('task', '?')}`: {num(qs.get('seconds'), 0)} s in all "
               f"({num(sizes.get('episodes'), 0)} demonstrations, `{sizes.get('preset', '?')}` preset, {num(sizes.get('train_steps'), 0)} steps).")
    if qs.get("fast"):
        out.append("This is a `--fast` smoke run: its success rates mean nothing.")
    out.append("")
    stages = qs.get("stages") or {}
    out += [table(["Stage", "seconds", "command"], [[name, num(s.get("seconds"), 1), f"`{shown(s.get('command', ''), qs.get('out'), 'quickstart')}`"] for name, s in stages.items()]), ""]
    s = qs.get("summary") or {}
    rows = []
    for path, label in (("torch", "torch"), ("onnx", "ONNX Runtime")):
        p = s.get(path) or {}
        rows.append([label, pct(p.get("success_rate")), num(p.get("episodes"), 0), f"policy {num(p.get('policy_ms_median'))} ms (median)"])
    d = s.get("deploy") or {}
    rows.append(["deploy", pct(d.get("success_rate")), num(d.get("episodes"), 0),
                 f"obs→command {num(d.get('obs_to_command_ms_median'))} ms median, {num(d.get('obs_to_command_ms_p99'))} ms p99"])
    out += [table(["Path", "Success", "Episodes", "Latency"], rows), ""]
    return out


def section_inputs(results: Results) -> list[str]:
    out = ["## Inputs", "", f"Read from `{shown(results.root)}` (see `bench/results/README.md`).", ""]
    rows = []
    for name in BENCHES:
        path = results.root / f"{name}.json"
        status = "read" if name in results.benches else ("unreadable" if str(path) in results.errors else MISSING)
        rows.append([f"`{name}.json`", status, f"`{HOW[name]}`"])
    rows.append(["`success/*.json`", f"{len(results.success)} file(s)", "`dp eval ... --json-out`, `dp node ... --json-out`"])
    rows.append(["`curves/*.jsonl`", f"{len(results.curves)} file(s)", "a run's `metrics.jsonl`"])
    rows.append(["`quickstart.json`", "read" if results.quickstart is not None else MISSING, "`dp quickstart`'s `report.json`"])
    out += [table(["File", "Status", "Written by"], rows), ""]
    if results.errors:
        out += ["Unreadable inputs:", ""] + [f"- `{p}`: {e}" for p, e in sorted(results.errors.items())] + [""]
    return out


PLOTS = ("results_success.png", "results_latency.png", "results_training.png")


def section_summary(results: Results, targets_line: str) -> list[str]:
    """The headline rows (the README's), then how many targets are met."""
    rows = [[what, figure, seeds, note, f"[below](#{anchor.lstrip('#')})"] for what, figure, seeds, note, anchor in headline_rows(results)]
    return ["## Summary", "",
            "The headline figures (the README's table): success and score on `test` seeds that chose nothing, with 95% "
            "intervals; every setting was chosen on `val` seeds.", "",
            table(["What", "Figure (95% interval)", "Seeds, episodes", "Setting", ""], rows), "", targets_line, ""]


def section_notes(results: Results) -> list[str]:
    """Hand-written experiment notes (``notes.md`` beside the JSONs): measurements that chose a default."""
    path = results.root / "notes.md"
    return [path.read_text().rstrip(), ""] if path.is_file() else []


def build_page(results: Results, out: Path, img: Path) -> str:
    """The page's markdown; writes the plots it links into ``img`` (and removes those it no longer has data for)."""
    for name in PLOTS:
        (img / name).unlink(missing_ok=True)
    rel = Path(os.path.relpath(img, out.parent)).as_posix()
    targets = Targets()
    success = section_success(results, img, rel)
    success_targets(results, targets)
    runtime_targets(results, targets)
    ablation = section_ablation(results)
    sampler = section_sampler(results, targets)
    multitask = section_multitask(results, targets)
    latency = section_latency(results, targets, img, rel)
    deploy = section_deploy(results, targets) + section_robot(results, targets)
    data = section_data(results, targets)
    formats = section_formats(results, targets)
    training = section_training(results, img, rel)
    peers = section_peers(results, targets) + section_plugin(results, targets)
    quickstart = section_quickstart(results)
    inputs = section_inputs(results)
    verdicts = [r[4] for r in targets.rows]
    tally = f"{verdicts.count(MET)} targets met, {verdicts.count(NOT_MET)} not met, {verdicts.count(MISSING)} {MISSING} ([Targets](#targets))."
    overview = ["## Targets", "", tally, "", table(["Section", "Metric", "Measured", "Target", "Verdict"], targets.rows), ""]
    head = ["# Results", "",
            f"Generated by `python bench/report.py` from the benchmark outputs in `{shown(results.root)}`; edit those, not this page. "
            "Targets come from the project's issues; an input that has not been measured yet says so. The sections: "
            "the summary; how well policies do (robosuite tasks, multitask, Push-T against the field, LeRobot side by side); "
            "what limits success; the sampler and the warm start; how fast inference is; the robot side; the data path; training; the targets; notes.", ""]
    parts = [head, section_summary(results, tally), success, multitask, formats, peers, ablation, sampler, latency, deploy, data, training,
             overview, section_notes(results), quickstart, inputs]
    return "\n".join(line for part in parts for line in part).rstrip() + "\n"
