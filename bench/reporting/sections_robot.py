"""Page section on the robot side under attack and in real time: planning ahead of chunk boundaries,
the operator's Stop, the workspace box, bad input (issue 35)."""

from __future__ import annotations

from bench.reporting.load import Results
from bench.reporting.spec import missing
from bench.reporting.targets import Targets
from bench.reporting.text import get, num, pct, table

PLAN_AHEAD = (("plan_ahead_pusht", "Push-T, 10 Hz"), ("plan_ahead_lift", "lift, 20 Hz"), ("plan_ahead_lift_torch", "lift, 20 Hz, torch"))


def count(value: float) -> str:
    return f"{value:.0f}"


def opened(results: Results, name: str, title: str) -> tuple[list[str], dict | None]:
    """A subsection's heading and the bench ``name``'s JSON; the heading says "not measured yet" without it."""
    res = results.bench(name)
    return [f"### {title}", ""] + ([missing(name), ""] if res is None else []), res


def section_robot(results: Results, targets: Targets) -> list[str]:
    return ["## The robot side: planning ahead, Stop, the box, bad input", ""] + plan_ahead(results, targets) + \
        stop(results, targets) + box(results, targets) + bad_input(results)


def plan_ahead(results: Results, targets: Targets) -> list[str]:
    out = ["### Holds at chunk boundaries", "",
           "`bench/plan_ahead.py`: `dp robot` + `dp node --episodes N` in real time on test seeds, the node sampling the "
           "next chunk only when its queue runs out (`--plan-ahead off`) or ahead of it (`auto`), beside `dp eval` on the "
           "same seeds. Holds are the controller's watchdog holds during episodes.", ""]
    rows = []
    for name, label in PLAN_AHEAD:
        res = results.bench(name)
        if res is None:
            out += [f"{label}: " + missing(name), ""]
            continue
        for mode, row in res.get("deploy", {}).items():
            o2c = row.get("obs_to_command_ms") or {}
            lead = row.get("plan_ahead_lead") or {}
            replan = row.get("replan_every") or {}
            superseded = row.get("superseded_by")  # an earlier code's row, kept for the record; the target is checked on its successor
            shown_mode = f"`{mode}`" + (f" (superseded by `{superseded}`)" if superseded else "")
            rows.append([label, shown_mode, num(row.get("episodes"), 0), pct(row.get("success_rate")), num(row.get("mean_score"), 3),
                         num(get(row, "holds_during_episodes", "command_expired") or 0, 0),
                         f"{num(row.get('held_ticks'), 0)} / {num(row.get('ticks'), 0)}", num(row.get("late_plans"), 0),
                         f"{num(lead.get('min'), 0)}–{num(lead.get('max'), 0)}" if lead else "—",
                         f"{num(replan.get('min'), 0)}–{num(replan.get('max'), 0)}" if replan else "—",
                         f"{num(o2c.get('median'))} / {num(o2c.get('p99_worst_pair'))}", num(row.get("load_average_1min"))])
            if mode.startswith("auto") and not superseded:
                section = f"Plan-ahead ({label}, {mode})"
                targets.check(section, "command_expired holds during episodes", get(row, "holds_during_episodes", "command_expired") or 0,
                              "<=", 0, fmt=count)
                targets.check(section, "obs→command p99 (ms)", o2c.get("p99_worst_pair"), "<=", row.get("half_period_ms", 0), " ms")
        for kind, ev in (res.get("dp_eval") or {}).items():
            out_row = [label, f"`dp eval` ({kind.replace('_', ' ')})", num(ev.get("episodes"), 0), pct(ev.get("success_rate")),
                       num(ev.get("mean_score"), 3)] + [""] * 7
            rows.append(out_row)
    notes = [f"{label}: {results.bench(name)['note']}" for name, label in PLAN_AHEAD if (results.bench(name) or {}).get("note")]
    if rows:
        out += [f"- {n}" for n in notes] + ([""] if notes else []) + [table(["Robot", "Node / reference", "Episodes", "Success", "Mean score", "command_expired holds",
                       "Held ticks / ticks", "Late plans", "Lead (steps)", "Re-plan every", "obs→command median / p99 (ms)",
                       "Load (1 min)"], rows), ""]
    return out


def stop(results: Results, targets: Targets) -> list[str]:
    out, res = opened(results, "abuse_stop", "Stop always wins; nothing replays")
    if res is None:
        return out
    full, reset, replay = res.get("stop_with_full_table", {}), res.get("reset_after_stop", {}), res.get("replays", {})
    lat = full.get("stop_latency_ms") or {}
    out += [f"`bench/abuse_stop.py` on a `dp robot` sim controller: a node drives while {num(full.get('senders_tracked'), 0)} senders fill "
            f"its sender table. An operator's Stop from a new sender: median {num(lat.get('median'))} ms, max {num(lat.get('max'))} ms "
            f"over {num(full.get('trials'), 0)} trials (`dp stop` confirmed in {num(full.get('dp_stop_confirmed_ms'), 0)} ms). "
            f"{num(reset.get('resets_sent'), 0)} Resets after a Stop cleared it {num(reset.get('stops_cleared_by_a_reset'), 0)} times "
            f"(the arm moved {num(reset.get('arm_moved_mm_while_stopped'))} mm); {num(replay.get('replayed'), 0)} recorded Resets, "
            f"Stops, Releases and heartbeats replayed at once and after eviction: {num(replay.get('accepted'), 0)} accepted.", ""]
    targets.check("Stop", "operator Stop with the sender table full, max (ms)", lat.get("max"), "<=", 100.0, " ms")
    targets.check("Stop", "replays accepted", replay.get("accepted"), "<=", 0, fmt=count)
    targets.check("Stop", "Stops cleared by a Reset", reset.get("stops_cleared_by_a_reset"), "<=", 0, fmt=count)
    return out


def box(results: Results, targets: Targets) -> list[str]:
    out, res = opened(results, "abuse_box", "The workspace box under hostile commands")
    if res is None:
        return out
    attacks = res.get("attacks") or {}
    rows = [[name.replace("_", " "), f"`{a.get('mode', '?')}`", " ".join(a.get("overrides") or []) or "—", num(a.get("ticks"), 0),
             num(a.get("started_outside_mm")), num(a.get("ticks_to_get_inside"), 0), num(a.get("ticks_outside"), 0),
             num(a.get("max_outside_mm")), num(a.get("outward_ticks"), 0), num(a.get("rejected"), 0)]
            for name, a in attacks.items() if isinstance(a, dict)]
    out += ["`bench/abuse_box.py`: hostile command sequences against a `dp robot` sim controller, tick by tick. Where the "
            "robot file's box is moved below the arm, it starts outside and is driven back in; ticks outside count from then "
            "on. Outward ticks: ticks with motion commanded that left an arm outside the box further from it.", "",
            table(["Attack", "Mode", "Robot-file overrides", "Ticks", "Started outside (mm)", "Ticks to get inside",
                   "Ticks outside after", "Max outside after (mm)", "Outward ticks", "Messages refused"], rows), ""]
    targets.check("Box", "ticks outside the box, all attacks", sum(a.get("ticks_outside", 0) for a in attacks.values() if isinstance(a, dict)),
                  "<=", 0, fmt=count)
    return out


def bad_input(results: Results) -> list[str]:
    out, res = opened(results, "abuse_data", "Bad input on the data side")
    if res is None:
        return out
    rows = []
    for attack, runs in (res.get("attacks") or {}).items():
        for run, r in runs.items():
            rows.append([f"{attack.replace('_', ' ')}: {run.replace('_', ' ')}", f"`{r.get('command', '')}`", num(r.get("exit_code"), 0),
                         num(r.get("stderr_lines"), 0), "yes" if r.get("clean") else "**no**"])
    out += ["`bench/abuse_data.py`: corrupt inputs through the real CLI; each error is one line, and nothing wrong is written.", "",
            table(["Attack", "Command", "Exit", "stderr lines", "Nothing wrong written"], rows), ""]
    return out
