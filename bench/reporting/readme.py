"""The README's ``## Results`` section: at most ten headline rows, every one on test seeds with its 95%
interval (or saying what it is instead), each linking to the results page section that holds the rest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.reporting.load import Results, SuccessRow
from bench.reporting.sections_policy import multitask_table, multitask_weakest
from bench.reporting.sections_pusht import chosen_image_run, chosen_point, cpu_minutes
from bench.reporting.spec import MULTITASK_TARGET_METHOD, target_method
from bench.reporting.text import get, num, pct

PAGE = "docs/results.md"
README_INTRO = (
    "Measured on this project's reference machine (2 CPU cores, no GPU). Success and score are on `test`\n"
    "seeds that chose nothing (`dp eval --split test`; every setting was chosen on `val` seeds), with 95%\n"
    "intervals; a difference inside the intervals is no difference. Every figure with its command, the\n"
    "curves and the rows behind these are on the [results page](docs/results.md)."
)
Row = list[str]


def _interval(bounds: list[float] | None, fmt: Callable[[float], str]) -> str:
    return f"{fmt(bounds[0])}–{fmt(bounds[1])}" if bounds and len(bounds) == 2 else "—"


def _score_and_success(run: dict | None) -> str | None:
    """"score 0.96 (0.93–0.99), success 51% (41–61%)" of an eval JSON."""
    if not isinstance(run, dict) or run.get("mean_score") is None:
        return None
    score = f"score {num(run['mean_score'], 3)} ({_interval(run.get('score_ci95'), lambda v: f'{v:.3f}')})"
    return f"{score}, success {pct(run.get('success_rate'))} ({_interval(run.get('success_ci95'), lambda v: f'{100 * v:.0f}%')})"


def _success(row: SuccessRow | None) -> str | None:
    if row is None or row.rate is None:
        return None
    return f"{pct(row.rate)} ({row.successes}/{row.episodes}; {_interval(row.ci95, lambda v: f'{100 * v:.1f}%')})"


def _sampling(row: SuccessRow) -> str:
    """What sampled the row (`dp eval` records it): "; 10-step DDIM on the fitted schedule, a new chunk every 8
    actions", or nothing for a row from before `dp eval` recorded it."""
    s = row.data.get("sampling") or {}
    if not s.get("solver"):
        return ""
    solver = {"ddim": "DDIM", "dpmpp2m": "DPM-Solver++(2M)"}.get(s["solver"], s["solver"])
    switches = [", RTI warm starts" if s.get("rti") else "",
                f", temporal ensembling (decay {s['ensemble']})" if s.get("ensemble") is not None else "",
                f", the gripper voted by {s['vote']} chunks" if s.get("vote") else "",
                f", the medoid of {s['medoid']} chunks per plan" if s.get("medoid") else "",
                f", each chunk planned {s['plan_ahead']} steps ahead" if s.get("plan_ahead") else ""]
    return (f"; {s.get('steps')}-step {solver} on the {s.get('schedule')} schedule, a new chunk every {s.get('replan_every')} "
            f"actions{''.join(switches)}")


def _find(results: Results, task: str, method: str) -> SuccessRow | None:
    return next((r for r in results.success if (r.task, r.method) == (task, method)), None)


def _pusht_rows(results: Results) -> list[Row]:
    rows = []
    state = get(results.bench("pusht"), "continued") or results.bench("pusht") or {}
    if (fig := _score_and_success(get(state, "test", "torch"))) is not None:
        minutes = get(state, "chosen", "train_s")
        rows.append(["Push-T from state (Diffusion Policy's human demonstrations, gym-pusht)", fig, "test, 100",
                     f"{num(minutes / 60, 0)} min of training on 2 cores" if minutes else "", "#push-t-human-demonstrations-the-real-environment"])
    image = results.bench(chosen_image_run(results)) or {}  # the recipe the page's image targets are checked on
    if (fig := _score_and_success(get(image, "test", "torch"))) is not None:
        cpu = cpu_minutes(image, chosen_point(image))
        rows.append(["Push-T from the 96x96 view (same data, pixels only)", fig, "test, 100",
                     (f"{num(cpu, 0)} CPU-min of training; " if cpu else "") + "recipe and checkpoint chosen on validation",
                     "#push-t-human-demonstrations-the-real-environment"])
    return rows


def _peer_rows(results: Results) -> list[Row]:
    peers = results.bench("peers") or {}
    rows = []
    for mode, what, source in (("state", "state", peers), ("image", "the 96x96 view", peers.get("image") or {})):
        ev = get(source, "eval") or {}
        if ev.get("dp") and ev.get("lerobot"):
            budget = get(source, "train", "budget_s")
            rows.append([f"Push-T from {what}, dp against LeRobot's diffusion policy at equal training time",
                         f"dp {num(ev['dp'].get('mean_score'), 3)} / {pct(ev['dp'].get('success_rate'))}, "
                         f"LeRobot {num(ev['lerobot'].get('mean_score'), 3)} / {pct(ev['lerobot'].get('success_rate'))} (score / success)",
                         f"test, {num(ev['dp'].get('episodes'), 0)} / {num(ev['lerobot'].get('episodes'), 0)}",
                         f"{num(budget / 60, 0)} min each, one thread, one run" if budget else "", "#compared-with-lerobot"])
    lat, ratios = get(peers, "speed", "latency") or {}, get(peers, "speed", "ratios") or {}
    if get(lat, "lerobot_matched", "median_ms") and get(lat, "dp_onnx_rti", "median_ms"):
        rows.append(["Time per action chunk against LeRobot at matched size (Push-T state, batch 1, one thread)",
                     f"dp {num(lat['dp_onnx_rti']['median_ms'], 1)} ms (ONNX Runtime + RTI), LeRobot "
                     f"{num(lat['lerobot_matched']['median_ms'], 0)} ms: {num(ratios.get('chunk_median_lerobot_matched_vs_dp_onnx_rti'), 0)}x",
                     "median of 200 calls", "dp's 10-step full sampling: "
                     f"{num(get(lat, 'dp_onnx', 'median_ms'), 1)} ms", "#compared-with-lerobot"])
    return rows


def _robosuite_rows(results: Results) -> list[Row]:
    rows = []
    for task, method, what, note in (("lift", "deploy", "lift, deployed: `dp node` drives the simulated controller", "ONNX + RTI over ZeroMQ, 20 Hz"),
                                     ("can", target_method("can"), "can (robosuite, state)",
                                      "`small` preset; checkpoint, schedule and interval chosen on validation"),
                                     ("can_image", target_method("can_image"), "can from two 84x84 cameras (robosuite)",
                                      "`robosuite-image` preset, the object state a training-only target, its final checkpoint "
                                      "fixed in advance; schedule and interval chosen on validation"),
                                     ("square", target_method("square"), "square (robosuite, state): the hardest single task",
                                      "`small` preset on unimodal demonstrations, checkpoint chosen on validation")):
        if (fig := _success(_find(results, task, method))) is not None:
            row = _find(results, task, method)
            rows.append([what, f"success {fig}", row.seeds.replace(" (", ", ").rstrip(")"), note + _sampling(row), "#success-in-simulation"])
    _, means, pooled = multitask_table(results)
    method = MULTITASK_TARGET_METHOD
    if means.get(method) is not None and method in pooled:
        k, n = pooled[method]
        worst = multitask_weakest(results, method)
        rows.append(["Five robosuite tasks in one language-conditioned MoDE policy", f"average success {pct(means[method])} ({k}/{n})",
                     f"test, {n}", f"weakest: {worst.task.removeprefix('multitask_')} {pct(worst.rate)}", "#multitask-language-conditioned"])
    return rows


def headline_rows(results: Results) -> list[Row]:
    """The README's rows: [what, figure, seeds, note, anchor on the results page], at most ten."""
    rows = [*_pusht_rows(results), *_peer_rows(results), *_robosuite_rows(results)]  # the latency figure is the LeRobot row's
    return rows[:10]


def readme_section(results: Results) -> str:
    """The README's Results section."""
    rows = [f"| {what} | {figure} | {seeds} | {note} | [more]({PAGE}{anchor}) |" for what, figure, seeds, note, anchor in headline_rows(results)]
    return "\n".join(["## Results", "", README_INTRO, "", "| What | Figure (95% interval) | Seeds, episodes | Setting | |",
                      "|---|---|---|---|---|", *rows, ""])


def write_readme(results: Results, path: Path) -> None:
    """Replace the ``## Results`` section of ``path`` (up to the next ``## `` heading)."""
    text = path.read_text()
    start = text.find("## Results\n")
    if start < 0:
        raise SystemExit(f"{path}: no '## Results' section to replace")
    end = text.find("\n## ", start + 1)
    path.write_text(text[:start] + readme_section(results) + ("\n" + text[end + 1:] if end >= 0 else ""))
