"""dp inside LeRobot (issue 38): the ``mode`` plugin's training speed against ``dp train``, and one set of
weights trained by ``lerobot-train`` evaluated by ``lerobot-eval`` in LeRobot's Push-T environment and by
``dp eval`` (bench/lerobot_plugin.py)."""

from __future__ import annotations

from typing import Any

from bench.reporting.load import Results
from bench.reporting.spec import missing
from bench.reporting.targets import Targets
from bench.reporting.text import ci, get, num, pct, shown, table

SPEED_TARGET = 0.80  # the plugin's windows/s over dp train's
AGREEMENT = "lerobot-eval and dp eval of the same weights: score gap inside both intervals"


def _speed(results: Results, targets: Targets) -> list[str]:
    rows, out = [], []
    benches = {obs: results.bench(f"lerobot_plugin_speed_{obs}") for obs in ("image", "state")}
    for obs, b in benches.items():
        ratio = b.get("ratio_windows_per_s") if b else None
        targets.check("LeRobot plugin", f"Push-T {obs}: lerobot-train windows/s over dp train's (same preset, batch, threads, workers)",
                      ratio, ">=", SPEED_TARGET, "x", fmt=lambda v: num(v, 2))
        if not b:
            out += [missing(f"lerobot_plugin_speed_{obs}"), ""]
            continue
        lr, dp = b.get("lerobot_train") or {}, b.get("dp_train") or {}
        rows.append([obs, f"`{b.get('preset')}`", b.get("batch_size"), b.get("threads"), b.get("workers"), num(lr.get("windows_per_s")),
                     num(lr.get("update_windows_per_s")), num(lr.get("data_s_per_step"), 3), num(dp.get("windows_per_s")),
                     f"{num(ratio, 2)}x", num(b.get("load_average_1min"))])
    headers = ["Observation", "Preset", "Batch", "Torch threads", "Loader workers", "lerobot-train windows/s",
               "its update alone", "data wait s/step", "dp train windows/s", "Ratio", "Load (1 min)"]
    notes = [f"{obs}: {b['note']}" for obs, b in benches.items() if (b or {}).get("note")]
    if rows:
        out = [table(headers, rows), "", *([" ".join(notes), ""] if notes else []), *out]
    return out


def _agreement(b: dict[str, Any], targets: Targets) -> list[str]:
    lr, dp = b.get("lerobot_eval"), get(b, "dp_eval", "figures")
    if not isinstance(lr, dict) or not isinstance(dp, dict):
        targets.check("LeRobot plugin", AGREEMENT, None, "<=", 0)
        return [missing("lerobot_plugin"), ""]
    a, b_ = lr["mean_score"], dp["mean_score"]
    lo_l, hi_l = lr["score_interval_95"]
    lo_d, hi_d = dp["score_ci95"]
    room = min(hi_l - a, a - lo_l, hi_d - b_, b_ - lo_d)  # each mean inside the other's interval when the gap is at most this
    targets.check("LeRobot plugin", AGREEMENT, abs(a - b_), "<=", room, fmt=lambda v: num(v, 3))
    train = b.get("lerobot_train") or {}
    rows = [["`lerobot-eval`, LeRobot's Push-T environment", lr["episodes"], f"{num(a, 3)} ({num(lo_l, 3)}–{num(hi_l, 3)})",
             pct(lr["success_rate"]), ci(lr["success_interval_95"])],
            ["`dp eval --split test`, dp's Push-T task", dp["episodes"], f"{num(b_, 3)} ({num(lo_d, 3)}–{num(hi_d, 3)})",
             pct(dp["success_rate"]), ci(dp["success_ci95"])]]
    return [f"The weights: `lerobot-train --policy.type=mode` on the `{b.get('preset')}` preset, {b.get('steps')} steps at batch "
            f"{b.get('batch_size')} ({b.get('threads')} torch thread(s), {b.get('lerobot_workers')} loader workers; "
            f"{num(train.get('wall_s', 0) / 60, 0)} min of wall time), on the LeRobot dataset `dp export-data lerobot` wrote "
            "from Diffusion Policy's 206 demonstrations. Its averaged weights act in both evaluators: LeRobot's through the plugin's "
            "`select_action`, dp's after `python -m lerobot_policy_mode.convert to-dp`. The two evaluators draw their own "
            "initial states (LeRobot's seeds, dp's test seeds), so the check is that each mean score lies inside the other's interval.",
            "", table(["Evaluator", "Episodes", "Mean score (95% CI)", "Success", "95% CI"], rows), "",
            "Commands: " + "; ".join(f"`{shown(c)}`" for c in (train.get("command"), get(b, "lerobot_eval", "command"),
                                                               get(b, "dp_eval", "convert"), get(b, "dp_eval", "command"))) + ".",
            "", *([b["note"], ""] if b.get("note") else [])]


def section_plugin(results: Results, targets: Targets) -> list[str]:
    """The plugin's speed rows and the two evaluations of one set of its weights, with issue 38's targets."""
    out = ["### dp inside LeRobot (the `mode` plugin)", "",
           "The plugin (docs/lerobot.md) makes dp's policy a LeRobot policy type: `lerobot-train` computes dp's loss on dp's model, "
           "`lerobot-eval` acts through dp's cached sampler. Speed: each trainer's windows per second after its first logging "
           "interval, LeRobot's counting its data wait, at the same preset, batch, torch threads and loader workers; LeRobot's "
           "loader decodes the dataset's videos and queries each window's frames through the `datasets` library, so its worker "
           "keeps a second core busy where dp's reads arrays from memory.", ""]
    out += _speed(results, targets)
    return out + _agreement(results.bench("lerobot_plugin") or {}, targets)
