"""Page sections on policies: headline success, multitask, runtime and latency targets, training."""

from __future__ import annotations

from pathlib import Path

from bench.reporting.load import Results, SuccessRow, order, split_name
from bench.reporting.plots import plot_curves, plot_latency, plot_success
from bench.reporting.spec import (
    EXPECTED,
    LATENCY_CASES,
    METHODS,
    MISSING,
    MULTITASK,
    MULTITASK_AVERAGE_TARGET,
    MULTITASK_METHODS,
    MULTITASK_TARGET,
    MULTITASK_TARGET_METHOD,
    MULTITASK_WEAKEST_TARGET,
    RUNTIME_POINTS,
    RUNTIME_TASKS,
    SUCCESS_TARGETS,
    latency_modes,
    missing,
    target_method,
)
from bench.reporting.targets import Targets
from bench.reporting.text import big, ci, finite, get, num, pct, shown, table
from dp.stats import wilson_interval


def headline_table(results: Results) -> str:
    rows = []
    have = {(r.task, r.method) for r in results.success}
    for r in results.success:
        successes = f"{r.successes}/{r.episodes}" if r.successes is not None else "—"
        rows.append((order(r.task, r.method), [r.task, METHODS.get(r.method, r.method), pct(r.rate), ci(r.ci95), successes, r.seeds, r.latency()]))
    broken = {split_name(Path(p).stem, {}) for p in results.errors if Path(p).parent.name == "success"}
    for task, method in [*EXPECTED, *sorted(broken)]:
        if (task, method) not in have:
            status = "unreadable (see Inputs)" if (task, method) in broken else MISSING
            rows.append((order(task, method), [task, METHODS.get(method, method), status, "", "", "", ""]))
            have.add((task, method))
    rows.sort(key=lambda x: x[0])
    return table(["Task", "Method", "Success", "95% CI", "Successes / episodes", "Seeds (episodes)", "Latency (median / p99)"], [r for _, r in rows])


def section_success(results: Results, img: Path, rel: str) -> list[str]:
    out = ["## Success in simulation", "",
           "Seeded episodes of `dp eval` (torch, ONNX) and of `dp node` driving the simulated controller (deploy); "
           "95% Wilson intervals. Latency: the policy's time per control step (`dp eval`), or the age of the "
           "observation when its command reaches the controller (deploy). Seeds: `test` rows ran on `dp eval --split test` "
           "seeds, never used for a choice of settings; rows from *before the split* ran on seeds 5000+ that also chose "
           "the RTI defaults of their time, so their RTI rows are optimistic.", "",
           headline_table(results), ""]
    if (plot := plot_success(results.success, img / "results_success.png")) is not None:
        out += [f"![success per task and method]({rel}/{plot.name})", ""]
    if results.success:
        out += ["### How each row was produced", ""]
        for r in results.success:
            line = f"- **{r.task} · {METHODS.get(r.method, r.method)}** — `{r.path.name}`"
            if r.data.get("policy"):
                line += f", policy `{shown(r.data['policy'])}`"
            if r.data.get("mean_length") is not None or r.data.get("mean_episode_length") is not None:
                line += f", mean episode length {num(r.data.get('mean_length', r.data.get('mean_episode_length')), 1)}"
            out.append(line)
            if r.command:
                out += ["", "  ```bash", *("  " + shown(c) for c in r.command.splitlines()), "  ```"]
        out.append("")
    return out


def runtime_targets(results: Results, targets: Targets) -> None:
    """Success with RTI and with ONNX Runtime against full torch sampling, same task and seeds."""
    rate = {(r.task, r.method): r.rate for r in results.success}
    for task in RUNTIME_TASKS:
        base = rate.get((task, "torch"))
        for method in ("torch_rti", "onnx", "onnx_rti"):
            value = rate.get((task, method))
            gap = None if base is None or value is None else 100 * (base - value)
            targets.check("Success", f"{task}: {METHODS[method]} below torch (points)", gap, "<=", RUNTIME_POINTS, fmt=lambda v: f"{v:.0f}")


def success_targets(results: Results, targets: Targets) -> None:
    """Each task's success against its target, on its torch row (or the method validation chose); a row
    not run on test seeds counts as not measured."""
    rows = {(r.task, r.method): r for r in results.success}
    for task, target in SUCCESS_TARGETS.items():
        method = target_method(task)
        r = rows.get((task, method))
        on_test = r is not None and r.data.get("split") == "test"
        targets.check("Success", f"{task}: success on test seeds ({METHODS[method]})", r.rate if r else None, ">=", target,
                      fmt=pct, available=on_test)


def multitask_rows(results: Results) -> dict[tuple[str, str], SuccessRow]:
    """The multitask policies' rows by (task, method)."""
    return {(r.task.removeprefix("multitask_"), r.method): r for r in results.success if r.task.startswith("multitask_")}


def _with_figures(rows: dict[tuple[str, str], SuccessRow], method: str) -> list[SuccessRow]:
    """``method``'s rows that have a success figure, in task order; complete when one per task."""
    return [rows[(t, method)] for t in MULTITASK if (t, method) in rows and rows[(t, method)].rate is not None]


def multitask_weakest(results: Results, method: str) -> SuccessRow | None:
    """The multitask ``method``'s row of its weakest task, once every task has a figure."""
    found = _with_figures(multitask_rows(results), method)
    return min(found, key=lambda r: r.rate) if len(found) == len(MULTITASK) else None


def multitask_table(results: Results) -> tuple[str, dict[str, float | None], dict[str, tuple[int, int]]]:
    """The per-task table of the multitask policies (95% intervals; a column per method measured), each
    method's average, and its pooled (successes, episodes): the average's interval pools the tasks'
    episodes (equal episodes per task)."""
    rows = multitask_rows(results)
    methods = [m for m in MULTITASK_METHODS if m in ("mode", "dense") or any((t, m) in rows for t in MULTITASK)]
    body, means, pooled = [], {}, {}
    for method in methods:
        found = _with_figures(rows, method)
        complete = len(found) == len(MULTITASK)
        means[method] = sum(r.rate for r in found) / len(found) if complete else None
        if complete and all(r.successes is not None for r in found):
            pooled[method] = (sum(r.successes for r in found), sum(r.episodes for r in found))

    def cell(r: SuccessRow | None) -> str:
        return f"{pct(r.rate)} ({r.successes}/{r.episodes}; {ci(r.ci95)})" if r else MISSING

    for task in MULTITASK:
        body.append([task, *(cell(rows.get((task, m))) for m in methods), rows[(task, "mode")].seeds if (task, "mode") in rows else MISSING])
    average = []
    for m in methods:
        if means[m] is None:
            average.append(MISSING)
        elif m in pooled:
            k, n = pooled[m]
            average.append(f"**{pct(means[m])}** ({k}/{n}; {ci(list(wilson_interval(k, n)))})")
        else:
            average.append(f"**{pct(means[m])}**")
    body.append(["**average**", *average, ""])
    return table(["Task", *(METHODS[m] for m in methods), "Seeds"], body), means, pooled


# what each multitask column adds to the one before it, said once it is on the page
MULTITASK_STEPS = (
    ("mode_square3",
     '`square` drawn 3x as often: the MoDE run again with `"data.task_weights={square: 3}"` and twice the '
     "steps (`train.steps=18000`), so that `square` gets about half the draws, about the single-task "
     "preset's 9,000 steps, while each other task keeps about its share of the 9,000-step run."),
    ("mode_square3_bal",
     "Then two continuations of that run from its final checkpoint, 6,000 steps each (`--resume "
     "train.steps=24000`: the cosine schedule stretched, a warm restart at 4.4e-5), one with every window "
     'alike (`"data.task_weights={square: 1}"`), one with `square` still drawn 3x.'),
    ("mode_square3_bal_every8",
     "The every-8 column is the balanced continuation executing 8 actions of each chunk (`--replan-every "
     "8`) instead of the preset's 4, chosen on validation seeds."),
    ("mode_square3_bal_pertask",
     "The per-task columns execute each task's own interval, chosen per task on validation (8 for `can`, "
     "`door`, `lift`, `stack`; `square` keeps 4) and carried by the policy: `data.task_action_steps` in "
     "the checkpoint, `dp export --replan-every can=8,...` in the export; `reset(task)` applies it in "
     "torch, ONNX Runtime and `dp node`."),
    ("mode_square3_bal_pertask_fitted",
     "The fitted-schedule column adds the sampler chosen on validation: the noise schedule fitted to the "
     "training sigmas (`--schedule fitted`) instead of the preset's exponential one."),
    ("mode_first_pertask_fitted",
     "The unimodal-`square` columns continue that policy 6,000 steps (`--resume train.steps=30000`, `square` drawn 3x) "
     "with `square`'s 200 demonstrations replaced by unimodal ones (`dp collect --expert-strategies "
     "first`: one placement per initial state), its intervals and sampler fixed in advance."),
)


def section_multitask(results: Results, targets: Targets) -> list[str]:
    text, means, pooled = multitask_table(results)
    out = ["## Multitask, language-conditioned", "",
           f"One `small` policy trained on {', '.join(MULTITASK)} together, conditioned on each task's instruction "
           "(all-MiniLM-L6-v2 embeddings), evaluated per task with `dp eval`; the dense twin "
           "(`--experts 1`) has the same active FLOPs and was trained and evaluated the same way."
           + "".join(f" {step}" for method, step in MULTITASK_STEPS if method in means)
           + " Each cell gives its 95% interval; where two intervals overlap there is no difference.", "", text, ""]
    if "mode" in pooled and "dense" in pooled:
        (lo_m, hi_m), (lo_d, hi_d) = (wilson_interval(*pooled[m]) for m in ("mode", "dense"))
        verdict = ("no difference: the averages' intervals overlap" if lo_m <= hi_d and lo_d <= hi_m
                   else f"{'MoDE' if lo_m > hi_d else 'the dense twin'} is ahead outside the intervals")
        out += [f"MoDE against its dense twin at equal active FLOPs: {pct(means['mode'])} against {pct(means['dense'])} on average, "
                f"{verdict}.", ""]
    method = MULTITASK_TARGET_METHOD
    label = METHODS[method]
    weakest = multitask_weakest(results, method)
    targets.check("Multitask", f"{label}: average success over the {len(MULTITASK)} tasks", means.get(method), ">=", MULTITASK_TARGET, fmt=pct)
    targets.check("Multitask", f"{label}: average success over the {len(MULTITASK)} tasks (issue 37)", means.get(method), ">=",
                  MULTITASK_AVERAGE_TARGET, fmt=pct)
    targets.check("Multitask", f"{label}: the weakest task's success (issue 37)", weakest.rate if weakest else None, ">=", MULTITASK_WEAKEST_TARGET, fmt=pct)
    return out


def section_latency(results: Results, targets: Targets, img: Path, rel: str) -> list[str]:
    out = ["## Inference latency", "",
           "Per action chunk at batch 1, `small` preset (random weights time as trained ones do), from "
           "`bench/latency.py`. Speed-up is against torch eager uncached sampling of the same case.", ""]
    lat = results.bench("latency")
    section = "Inference latency"
    state = get(lat, "small_state") if lat else None
    eager, rti = get(state, "eager_uncached", "median_ms"), get(state, "onnx_rti", "median_ms")
    speedup = get(state, "speedup_onnx_rti_vs_eager")
    if speedup is None and finite(eager) and finite(rti) and rti > 0:
        speedup = eager / rti
    checks = [
        targets.check(section, "ONNX Runtime + RTI median, state (ms)", rti, "<=", 2.0, " ms", available=lat is not None),
        targets.check(section, "ONNX Runtime + RTI vs eager uncached, state", speedup, ">=", 10.0, "x", fmt=lambda v: f"{v:.1f}",
                      available=lat is not None),
    ]
    if lat is None:
        return out + [missing("latency"), "", table(["Metric", "Measured", "Target", "Verdict"], checks), ""]
    machine = lat.get("machine") or {}
    if machine:
        out += [f"Machine: {machine.get('cpus', '?')} CPUs ({machine.get('cpu', '?')}), {machine.get('threads', '?')} thread(s), "
                f"torch {machine.get('torch', '?')}, onnxruntime {machine.get('onnxruntime', '?')}; "
                f"RTI {get(lat, 'rti', 'steps')} step(s) from sigma {get(lat, 'rti', 'sigma_start')}.", ""]
    cases = [(k, label) for k, label in LATENCY_CASES if isinstance(lat.get(k), dict)]
    headers = ["Mode"]
    for _, label in cases:
        headers += [f"{label}: median ms", "p99 ms", "speed-up"]
    rows = []
    for mode, label in latency_modes(lat):
        row = [label]
        for key, _ in cases:
            m, base = get(lat, key, mode, "median_ms"), get(lat, key, "eager_uncached", "median_ms")
            row += [num(m, 3), num(get(lat, key, mode, "p99_ms"), 3),
                    f"{base / m:.1f}x" if finite(m) and finite(base) and m > 0 else "—"]
        rows.append(row)
    if cases:
        out += [table(headers, rows), ""]
    votes = [(label, get(lat, key, "vote"), get(lat, key, "vote_cost") or {}) for key, label in cases if get(lat, key, "vote")]
    if votes:
        out += ["Gripper vote rows: `dp eval --vote K` with " + "; ".join(
            f"{label} K = {k}, {num(cost.get('torch'), 2)}x the one-chunk torch runtime and {num(cost.get('onnx'), 2)}x ONNX Runtime's full sampling"
            for label, k, cost in votes) + " (medians of the same run).", ""]
    if (plot := plot_latency(lat, img / "results_latency.png")) is not None:
        out += [f"![latency per inference mode]({rel}/{plot.name})", ""]
    out += [table(["Metric", "Measured", "Target", "Verdict"], checks), ""]
    if results.bench("ablation_precision") is not None:
        out += ["The targets are read on fp32: a faster precision counts only where it acts as fp32 does in closed loop, "
                "and int8 did not on Push-T (section \"Export precision in closed loop\").", ""]
    flop_rows = []
    for key, label in cases:
        f, p = get(lat, key, "flops_per_chunk") or {}, get(lat, key, "params") or {}
        flop_rows.append([label, big(f.get("uncached")), big(f.get("cached")), big(f.get("cached_rti")),
                          big(f.get("dense_twin_uncached")), big(p.get("mode_total")), big(p.get("dense_twin_total"))])
    if flop_rows:
        out += ["FLOPs per chunk and parameters (MoDE against its dense twin, one expert as wide as all four):", "",
                table(["Case", "uncached", "cached", "cached + RTI", "dense twin", "MoDE params", "dense twin params"], flop_rows), ""]
    check = lat.get("rti_check")
    if isinstance(check, dict) and check.get("settings"):
        out += [f"RTI check ({shown(check.get('policy', '?'))}; {check.get('held_out_episodes', '?')} held-out episodes, "
                f"{check.get('chunks', '?')} chunks; full sampling's error against the demonstrations "
                f"{num(check.get('full_error'), 4)}):", ""]
        out += [table(["RTI steps", "start sigma", "warm error", "warm vs full", "guess error", "gripper agreement", "error contraction per step"],
                      [[s.get("steps"), s.get("sigma_start"), num(s.get("warm_error"), 4), num(s.get("warm_vs_full"), 4),
                        num(s.get("guess_error"), 4), pct(s.get("gripper_agreement")),
                        ", ".join(num(c, 3) for c in s.get("contraction") or [])] for s in check["settings"]]), ""]
    return out


def section_training(results: Results, img: Path, rel: str) -> list[str]:
    out = ["## Training", ""]
    tr = results.bench("train")
    if tr is None:
        out += ["Throughput: " + missing("train"), ""]
    else:
        out += [f"Samples/s of the `{tr.get('preset', '?')}` preset on {tr.get('device', '?')} through the real data path "
                "(`bench/train.py`), and the size of MoDE against its dense twin (equal active FLOPs).", ""]
        rows = []
        for key, label in (("state", "state only"), ("two_cameras_84", "two 84×84 cameras")):
            c = tr.get(key)
            if not isinstance(c, dict):
                continue
            m, d = c.get("mode") or {}, c.get("dense_twin") or {}
            rows.append([label, num(c.get("samples_per_s"), 1), num(c.get("batch_size"), 0), num(c.get("s_per_step"), 4),
                         f"{big(m.get('total_params'))} / {big(m.get('active_params'))}", big(m.get("flops_per_step")),
                         f"{big(d.get('total_params'))} / {big(d.get('active_params'))}", big(d.get("flops_per_step"))])
        out += [table(["Case", "samples/s", "batch", "s/step", "MoDE params total / active", "MoDE FLOPs/step",
                       "dense twin params total / active", "dense twin FLOPs/step"], rows), ""]
    out += ["### Training curves", ""]
    if not results.curves:
        return out + [f"*{MISSING}* — copy a run's `metrics.jsonl` to `bench/results/curves/<name>.jsonl`.", ""]
    if (plot := plot_curves(results.curves, img / "results_training.png")) is not None:
        out += [f"![training curves]({rel}/{plot.name})", ""]
    rows = []
    for name, recs in results.curves.items():
        start = next((r for r in recs if r.get("event") == "start"), {})
        train = [r for r in recs if r.get("event") == "train"]
        val = [r for r in recs if r.get("event") == "val" and finite(r.get("val_loss"))]
        end = next((r for r in reversed(recs) if r.get("event") == "end"), {})
        best = min(val, key=lambda r: r["val_loss"]) if val else None
        steps = max((r.get("step", 0) for r in recs if finite(r.get("step"))), default=0)
        rows.append([name, num(steps, 0), num(get(train[-1], "loss") if train else None, 4), num(val[-1]["val_loss"] if val else None, 4),
                     f"{num(best['val_loss'], 4)} @ {best['step']}" if best else "—",
                     num(val[-1].get("val_action_mse") if val else None, 4),
                     num(end.get("wall_s"), 0) + (" s" if finite(end.get("wall_s")) else ""),
                     num(get(train[-1], "samples_per_s") if train else None, 0),
                     f"{big(start.get('total_params'))} / {big(start.get('active_params'))}"])
    out += [table(["Run", "steps", "train loss", "val loss", "best val loss", "val action MSE", "wall time", "samples/s",
                   "params total / active"], rows), ""]
    return out
