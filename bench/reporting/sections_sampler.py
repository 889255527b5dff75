"""The sampler and the warm start (issue 37): which schedule and solver each policy samples with, chosen
on validation seeds and reported on test seeds, and what the RTI warm start buys at equal network passes."""

from __future__ import annotations

from typing import Any

from bench.common import best_row, scored
from bench.reporting.load import Results
from bench.reporting.spec import SAMPLER_RUNS, SAMPLER_TASKS, WARM_START_TASKS, missing
from bench.reporting.targets import Targets
from bench.reporting.text import ci, finite, num, pct, score_ci, shown, table

PUSHT_STATE_TARGET = {"score": 0.95, "success": 0.65, "cpu_min": 120}
# the Push-T state runs measured with bench/sampler_choice.py, in the order they were made
PUSHT_STATE_RUNS = ("sampler_pusht", "pusht_state_budget", "pusht_state_windows", "pusht_state_fitted", "pusht_state_seed1", "pusht_state_s41")


def _figure(r: dict[str, Any], task: str) -> list[str]:
    """Success (with its interval) and, where the task has a score of its own (:func:`bench.common.scored`),
    the mean score (with its interval)."""
    score, bounds = r.get("mean_score"), r.get("score_ci95") or []
    shown_score = f"{num(score, 3)} ({score_ci(bounds)})" if scored(task) and finite(score) and len(bounds) == 2 else "—"
    return [pct(r.get("success_rate")), ci(r.get("success_ci95")), f"{r.get('successes')}/{r.get('episodes')}", shown_score]


def _equal_at_fewer_passes(task: str, b: dict[str, Any]) -> float | None:
    """The chosen setting's passes per chunk where its test success (and, where the task is scored, its
    score) lies inside the reference's test interval, as the bench chose on validation seeds; the
    reference's passes otherwise; None before the test rows (or without the choice among them)."""
    rows, chosen = b.get("test_rows") or [], _test_row(b, b.get("chosen"))
    if not rows or not chosen:
        return None
    ref = rows[0]
    inside = chosen["success_rate"] >= ref["success_ci95"][0]
    if scored(task):
        inside = inside and chosen["mean_score"] >= ref["score_ci95"][0]
    return chosen["passes_per_chunk"] if inside else ref["passes_per_chunk"]


def _latency_ratio(b: dict[str, Any]) -> float | None:
    """The reference's median time per chunk over the choice's (same run, interleaved)."""
    times = b.get("chunk_latency_ms") or {}
    rows, chosen = b.get("test_rows") or [], b.get("chosen")
    if not rows or rows[0]["setting"] not in times or chosen not in times:
        return None
    return times[rows[0]["setting"]]["median_ms"] / times[chosen]["median_ms"]


def _test_row(b: dict[str, Any], setting: str | None) -> dict[str, Any]:
    """The test row of ``setting`` ({} where it was not tested)."""
    return next((r for r in b.get("test_rows") or [] if r["setting"] == setting), {})


def _sampler_targets(task: str, b: dict[str, Any], targets: Targets) -> list[list[str]]:
    """Issue 37's targets on ``task`` (not measured yet where ``b`` is empty)."""
    passes = _equal_at_fewer_passes(task, b)
    rows = [targets.check("Sampler", f"{task}: network passes per chunk at test success (and score) inside 10-step DDIM's interval",
                          passes, "<=", 5, fmt=lambda v: num(v, 0)),
            targets.check("Sampler", f"{task}: full-sampling (first-chunk) latency, 10-step DDIM over the choice", _latency_ratio(b), ">=", 2.0, "x")]
    return rows


def _best_setting(task: str, b: dict[str, Any]) -> str | None:
    """The setting that ranked first on validation (recorded by the bench, or ranked here for older files)."""
    rows = b.get("rows") or []
    return b.get("best") or (best_row(rows, task)["setting"] if rows else None)


def _best_on_test(task: str, b: dict[str, Any]) -> dict[str, Any]:
    """The test row of the setting best on validation ({} where it was not tested)."""
    return _test_row(b, _best_setting(task, b))


def _sampler_task(task: str, results: Results, targets: Targets) -> list[str]:
    """The task's sampler_choice runs in the order made (:data:`SAMPLER_RUNS`), the targets read on the last one."""
    runs = [(name, b) for name in SAMPLER_RUNS[task] if (b := results.bench(name))]
    out = [f"### `{task}`", ""]
    if not runs:
        _sampler_targets(task, {}, targets)
        return out + [missing(SAMPLER_RUNS[task][-1]), ""]
    for name, b in runs[:-1]:
        out += [f"`{name}` (an earlier policy of this task; the targets are read on the last run below):", "", *_grid(task, b)]
    name, b = runs[-1]
    rows = _sampler_targets(task, b, targets)
    heading = [f"`{name}`:", ""] if len(runs) > 1 else []
    return out + heading + _grid(task, b) + [table(["Metric", "Measured", "Target", "Verdict"], rows), ""]


def _grid(task: str, b: dict[str, Any]) -> list[str]:
    """One sampler_choice run: its checkpoint, the validation grid and the test rows."""
    out = []
    training = b.get("training") or {}
    out.append(f"Checkpoint `{shown(b.get('checkpoint'))}` (step {training.get('step', '?')}; "
               f"{num(training.get('cpu_min'), 0)} CPU-min, {num(training.get('wall_min'), 0)} min of wall time of training). "
               f"Validation: {b.get('episodes')} episodes per setting on `val` seeds (base seed {b.get('seed')}); chosen: "
               f"`{b.get('chosen')}` ({b.get('why')}).{' ' + b['note'] if b.get('note') else ''}")
    out.append("")
    headers = ["Setting (solver:schedule:steps[:trim])", "Passes per chunk", "Success", "95% CI", "Successes", "Mean score (95% CI)"]
    out += ["Validation seeds:", "", table(headers, [[f"`{r['setting']}`", r["passes_per_chunk"], *_figure(r, task)] for r in b.get("rows") or []]), ""]
    times = b.get("chunk_latency_ms") or {}
    test = b.get("test_rows") or []
    if test:
        best, chosen = _best_setting(task, b), b.get("chosen")
        roles = lambda i, r: [role for role, ok in (("reference", i == 0), ("best on validation", r["setting"] == best),
                                                    ("chosen", r["setting"] == chosen)) if ok]
        per_action = any("per_action_ms" in t for t in times.values())  # benches before it timed chunks only
        body = [[f"`{r['setting']}` ({', '.join(roles(i, r))})", r["passes_per_chunk"], *_figure(r, task),
                 f"{num(times.get(r['setting'], {}).get('median_ms'))} / {num(times.get(r['setting'], {}).get('p99_ms'))}",
                 *([num(times.get(r['setting'], {}).get('per_action_ms'), 2)] if per_action else [])]
                for i, r in enumerate(test)]
        out += [f"Test seeds ({b.get('test_episodes')} episodes each, never used for a choice); time per fully sampled chunk: torch, "
                "batch 1, one thread, experts cached, interleaved" + ("; per action: the chunk over the actions executed from it" if per_action else "")
                + ":", "", table([*headers, "Chunk ms (median / p99)", *(["ms per action"] if per_action else [])], body), ""]
    return out


def _pusht_state_budget(results: Results, targets: Targets) -> list[str]:
    """Issue 37's Push-T state target (score and success within 120 CPU-minutes of training), checked on test
    seeds with the setting best on validation, of the run whose best validation row ranks first."""
    runs = [(name, b) for name in PUSHT_STATE_RUNS if (b := results.bench(name)) and b.get("rows")]
    out = [f"### Push-T state within {PUSHT_STATE_TARGET['cpu_min']} CPU-minutes of training", "",
           "Issue 37's target, checked on the Push-T state runs measured with `bench/sampler_choice.py` "
           f"({', '.join(f'`{name}`' for name, _ in runs) or 'none yet'}): of the run whose best setting on validation ranks "
           "first (mean score, then success), that setting on test seeds, if the checkpoint's training stayed in the budget.", ""]
    for name, b in runs:
        if name != "sampler_pusht":  # sampler_pusht is shown above
            out += [f"`{name}`:", "", *_grid("pusht", b)]
    bests = [{**best_row(b["rows"], "pusht"), "run": i} for i, (_, b) in enumerate(runs)]  # each run's best on validation
    name, b = runs[best_row(bests, "pusht")["run"]] if runs else ("", {})  # then the best of those
    best, cpu = _best_on_test("pusht", b), (b.get("training") or {}).get("cpu_min")
    within = finite(cpu) and cpu <= PUSHT_STATE_TARGET["cpu_min"]
    budget = f"test, the best setting on validation ({name or '—'}), <= {PUSHT_STATE_TARGET['cpu_min']} CPU-min of training"
    rows = [targets.check("Sampler", f"Push-T state mean score, {budget}", best.get("mean_score") if within else float("nan"),
                          ">=", PUSHT_STATE_TARGET["score"], fmt=lambda v: num(v, 3), available=bool(best)),
            targets.check("Sampler", f"Push-T state success, {budget}", best.get("success_rate") if within else float("nan"),
                          ">=", PUSHT_STATE_TARGET["success"], fmt=pct, available=bool(best))]
    return out + [table(["Metric", "Measured", "Target", "Verdict"], rows), ""]


def _warm_start_task(task: str, b: dict[str, Any]) -> list[str]:
    headers = ["Mode", "Passes per executed action", "Success", "95% CI", "Successes", "Mean score (95% CI)"]
    body = [[f"`{r['mode']}`", num(r.get("passes_per_action")), *_figure(r, task)] for r in b.get("rows") or []]
    return [f"### Warm start on `{task}`", "", f"{b.get('episodes')} episodes per mode on `val` seeds (base seed {b.get('seed')}); "
            f"{b.get('note', '')}.", "", table(headers, body), ""]


def section_sampler(results: Results, targets: Targets) -> list[str]:
    """Per task: the sampler grid on validation seeds, the reference and the choice on test seeds with
    their chunk latency, and the warm-start modes (the findings are in the experiment notes)."""
    out = ["## The sampler and the warm start", "",
           "Training draws log(sigma) around log(0.5) (MoDE's recipe); MoDE's 10-step exponential schedule from 80 to 0.001 "
           "spends about half its network passes where training never looked. `bench/sampler_choice.py` compares schedules "
           "(exponential, Karras, one fitted to the training sigmas, trimmed) and solvers (DDIM, DPM-Solver++(2M)) on validation "
           "seeds and stores the cheapest setting inside the best one's interval in the checkpoint (`dp eval`, `dp export` and "
           "`dp node` read it); `bench/warm_start.py` compares full sampling and RTI warm starts (the shifted previous chunk or a "
           "zero guess, RTI-DP's re-planning every step) at the network passes each spends per executed action. Modes: "
           "`full:N:E` N steps from noise every E control steps; `rti:K:S:E[:zero]` K steps from sigma S every E.", ""]
    for task in SAMPLER_TASKS:
        out += _sampler_task(task, results, targets)
    out += _pusht_state_budget(results, targets)
    for task in WARM_START_TASKS:
        w = results.bench(f"warm_start_{task}")
        out += _warm_start_task(task, w) if w else [f"### Warm start on `{task}`", "", missing(f"warm_start_{task}"), ""]
    return out
