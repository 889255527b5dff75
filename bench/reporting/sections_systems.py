"""Page sections on the systems: the deploy path, the data store and loader, dataset formats."""

from __future__ import annotations

from typing import Any

from bench.reporting.load import Results
from bench.reporting.sections_pusht import section_image_recipe, section_pusht
from bench.reporting.spec import EXPERT_TARGET, EXPERT_TARGET_DEFAULT, MISSING, TASKS, missing
from bench.reporting.targets import Targets
from bench.reporting.text import ci, get, num, pct, shown, table


def section_deploy(results: Results, targets: Targets) -> list[str]:
    out = ["## Deploy path", "",
           "`bench/deploy.py`: a `dp robot` sim controller and a `dp node`, real processes on loopback. "
           "Observation-to-command is measured by the controller; watchdog figures are how long after a command "
           "expires (or the heartbeat timeout runs out) the controller reports hold.", ""]
    dep = results.bench("deploy")
    section = "Deploy"
    have = dep is not None
    o2c, wd, jit = get(dep, "obs_to_command_ms") or {}, get(dep, "watchdog") or {}, get(dep, "jitter") or {}
    checks = [
        targets.check(section, "obs→command p99 (ms)", o2c.get("p99"), "<=", 10.0, " ms", available=have),
        targets.check(section, "watchdog: hold after command expiry, max (ms)", get(wd, "hold_after_expiry_ms", "max"), "<=", 100.0, " ms",
                      available=have),
        targets.check(section, "watchdog: hold after heartbeat timeout, max (ms)", get(wd, "hold_after_heartbeat_timeout_ms", "max"), "<=", 100.0,
                      " ms", available=have),
        targets.check(section, "State stream rate (Hz)", jit.get("state_rate_hz"), ">=", 100.0, " Hz", fmt=lambda v: f"{v:.1f}", available=have),
    ]
    if not have:
        return out + [missing("deploy"), "", table(["Metric", "Measured", "Target", "Verdict"], checks), ""]
    out += [f"Policy `{shown(dep.get('policy', '?'))}` on `{dep.get('task', '?')}`, control {num(dep.get('control_hz'), 0)} Hz, "
            f"State {num(dep.get('state_hz'), 0)} Hz.", ""]

    def stat_row(label: str, s: Any, jitter: bool = False) -> list[str]:
        s = s if isinstance(s, dict) else {}
        return [label, num(s.get("median")), num(s.get("p99")), num(s.get("max")), num(s.get("p99_abs_dev")) if jitter else "",
                num(s.get("n"), 0)]

    rows = [
        stat_row("observation → command at the controller", o2c),
        stat_row("node cycle (State in → command out)", dep.get("node_cycle_ms")),
        stat_row("policy inside the node", dep.get("policy_ms")),
        stat_row("each episode's first chunk, sampled while the robot holds", dep.get("first_chunk_ms")),
        stat_row("node loop period", jit.get("node_period_ms"), True),
        stat_row("controller tick period", jit.get("controller_tick_period_ms"), True),
        stat_row("State inter-arrival at a subscriber", jit.get("state_interarrival_ms"), True),
        stat_row("watchdog: hold after command expiry", wd.get("hold_after_expiry_ms")),
        stat_row("watchdog: held tick after command expiry", wd.get("held_tick_after_expiry_ms")),
        stat_row("watchdog: hold after heartbeat timeout", wd.get("hold_after_heartbeat_timeout_ms")),
    ]
    out += [table(["ms", "median", "p99", "max", "p99 jitter (deviation from target period)", "n"], rows), ""]
    out += [f"State stream {num(jit.get('state_rate_hz'), 1)} Hz; heartbeat timeout {num(wd.get('heartbeat_timeout_s'))} s; "
            f"{num(wd.get('trials'), 0)} watchdog trials of each kind.", ""]
    succ = dep.get("success") or {}
    if succ:
        line = f"Success through the deploy path: {pct(succ.get('success_rate'))} over {num(succ.get('episodes'), 0)} episodes"
        if succ.get("dp_eval_success_rate") is not None:
            line += (f"; `dp eval` on the same seeds {pct(succ['dp_eval_success_rate'])} "
                     f"(difference {num(succ.get('difference_points'), 1)} points)")
        out += [line + ".", ""]
    out += [table(["Metric", "Measured", "Target", "Verdict"], checks), ""]
    return out


def section_data(results: Results, targets: Targets) -> list[str]:
    out = ["## Data throughput", ""]
    data, imp, sim = results.bench("data_throughput"), results.bench("import_throughput"), results.bench("sim_collect")
    section = "Data"
    rows = [
        targets.check(section, f"store: low-dim windows/s (DataLoader, {get(data, 'workers') or 2} workers)",
                      get(data, "lowdim_windows_per_s_loader"), ">=", 50000, available=data is not None),
        targets.check(section, "store: image windows/s (2×84×84×3, obs 2, action 16)", get(data, "image_windows_per_s"), ">=", 3000,
                      available=data is not None),
        targets.check(section, "import: CALVIN frames/s (end to end)", get(imp, "calvin", "frames_per_s"), ">=", 1000,
                      fmt=lambda v: num(float(v), 0), available=imp is not None),
    ]
    info = []
    if data is not None:
        info += [["store: low-dim windows/s in process", num(get(data, "lowdim_windows_per_s_in_process")), "", ""],
                 ["store: append MB/s", num(get(data, "append_mb_per_s"), 1), "", ""]]
        sizes = [s for s in data.get("by_size") or [] if isinstance(s, dict)]
        if len(sizes) > 1:
            info.append([f"store: peak RSS growth, {num(sizes[0].get('frames'))} → {num(sizes[-1].get('frames'))} frames (MB)",
                         num(get(data, "peak_rss_mb_growth"), 1), "", ""])
    else:
        info.append(["store", missing("data_throughput"), "", ""])
    if imp is not None:
        cal, lib = imp.get("calvin") or {}, imp.get("libero") or {}
        info += [["import: CALVIN decode only / store write only (frames/s)",
                  f"{num(cal.get('decode_only_frames_per_s'), 0)} / {num(cal.get('store_write_only_frames_per_s'), 0)}", "", ""],
                 ["import: CALVIN frames/s implied by CPU time on 2 idle cores", num(cal.get("frames_per_s_implied_by_cpu_on_2_idle_cores"), 0), "", ""],
                 ["import: LIBERO frames/s (end to end)", num(lib.get("frames_per_s"), 0), "", ""],
                 ["import: machine", f"{num(imp.get('cpu_count'), 0)} CPUs, {num(imp.get('workers'), 0)} workers, "
                                     f"load average {num(imp.get('load_average_1min'))}", "", ""]]
    else:
        info.append(["import", missing("import_throughput"), "", ""])
    if sim is not None:
        for tp in sim.get("throughput") or []:
            cams = "two 84×84 cameras" if tp.get("cameras") else "state only"
            info.append([f"collection: lift frames/s, {cams}, {tp.get('workers')} worker(s)", num(tp.get("frames_per_second"), 0), "", ""])
        steps = sim.get("env_step_ms") or {}
        if steps:
            info.append(["collection: env.step ms (state only / two cameras)",
                         f"{num(steps.get('state_only'))} / {num(steps.get('two_cameras_84'))}", "", ""])
    else:
        info.append(["collection", missing("sim_collect"), "", ""])
    out += [table(["Metric", "Measured", "Target", "Verdict"], rows + info), ""]
    sizes = [s for s in get(data, "by_size") or [] if isinstance(s, dict)]
    if sizes:
        out += ["Image windows/s and peak RSS as the store grows:", "",
                table(["frames", "image windows/s", "peak RSS (MB)"],
                      [[num(s.get("frames")), num(s.get("image_windows_per_s")), num(s.get("peak_rss_mb"), 1)] for s in sizes]), ""]

    out += ["### Scripted experts", "", "Success of each task's scripted expert over the collector's seeded episodes (`bench/sim_collect.py`).", ""]
    experts = get(sim, "experts") or {}
    tasks = list(TASKS) + [t for t in experts if t not in TASKS]
    rows = []
    for task in tasks:
        e = experts.get(task)
        threshold = EXPERT_TARGET.get(task, EXPERT_TARGET_DEFAULT)
        verdict = targets.check("Scripted experts", f"{task} expert success", get(e, "success_rate"), ">=", threshold, fmt=pct,
                                available=isinstance(e, dict))
        if isinstance(e, dict):
            strategies = ", ".join(f"{k} {v}" for k, v in (e.get("strategies") or {}).items())
            rows.append([task, pct(e.get("success_rate")), ci(e.get("success_ci95")), f"{e.get('successes', '—')}/{e.get('episodes', '—')}",
                         num(e.get("mean_length"), 1), strategies or "—", verdict[2], verdict[3]])
        else:
            rows.append([task, MISSING, "", "", "", "", verdict[2], verdict[3]])
    out += [table(["Task", "Success", "95% CI", "Successes / episodes", "Mean length", "Strategies", "Target", "Verdict"], rows), ""]
    if sim is None:
        out += [missing("sim_collect"), ""]
    return out


def section_formats(results: Results, targets: Targets) -> list[str]:
    """Training on foreign-format data: Push-T (Diffusion Policy zarr) and CALVIN-shaped image inputs."""
    out = ["## Training on imported data", ""]
    image = results.bench("image_train")
    out += section_pusht(results, targets) + section_image_recipe(results)
    loader = get(image, "loader_over_step_ratio")
    targets.check("Formats", "CALVIN-shaped images: loader rate / training consumption", loader, ">=", 3.0, "x",
                  fmt=lambda v: f"{v:.1f}", available=image is not None)
    if image is None:
        out += [missing("image_train"), ""]
    else:
        out += [f"CALVIN-shaped image training (`bench/image_train.py`, {image.get('mode', '?')} mode, preset {image.get('preset')}, "
                f"2 loader workers): {num(get(image, 'end_to_end', 'samples_per_s'), 1)} samples/s end to end, "
                f"{pct(get(image, 'end_to_end', 'data_wait_share'))} of the time waiting for data; the loader alone delivers "
                f"{num(get(image, 'loader_alone', 'windows_per_s'))} windows/s, {num(loader, 1)}x what training consumes.", ""]
    return out
