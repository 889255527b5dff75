"""The peer comparison (dp against LeRobot's DiffusionPolicy on Push-T), on the page and in the README."""

from __future__ import annotations

from typing import Any

from bench.reporting.load import Results
from bench.reporting.spec import MISSING, missing
from bench.reporting.targets import Targets
from bench.reporting.text import big, ci, finite, get, num, pct, score_ci, table


# issue 17: dp against LeRobot's DiffusionPolicy on Push-T (bench/peers/compare_lerobot.py -> peers.json)
PEER_CONFIGS = (("dp_pusht", "dp, `pusht` preset"), ("lerobot_matched", "LeRobot, matched size"), ("lerobot_default", "LeRobot, default"))
PEER_TRAINING = (("dp_pusht", "dp, `pusht` preset", "dp_pusht"), ("dp_pusht_fp32", "dp, `pusht` preset, fp32 (`train.amp=false`)", "dp_pusht"),
                 ("lerobot_matched", "LeRobot, matched size", "lerobot_matched"), ("lerobot_default", "LeRobot, default", "lerobot_default"))
PEER_RUNTIMES = (("lerobot_default", "LeRobot `select_action`, default"), ("lerobot_matched", "LeRobot `select_action`, matched size"),
                 ("dp_torch", "dp torch"), ("dp_onnx", "dp ONNX Runtime"), ("dp_onnx_rti", "dp ONNX Runtime + RTI (export defaults)"),
                 ("dp_onnx_rti3", "dp ONNX Runtime + RTI (Push-T's validated setting)"))


def peers_score_gap(peers: dict | None) -> float | None:
    """dp's mean Push-T score minus LeRobot's, on the test seeds both evaluated."""
    dp, lr = (get(peers, "eval", side, "on_common_seeds", "mean_score") for side in ("dp", "lerobot"))
    return dp - lr if finite(dp) and finite(lr) else None


def _every_seed_common(peers: dict | None) -> bool:
    """Whether both tools finished the same episodes (then the common-seed figures repeat the whole ones)."""
    return get(peers, "eval", "common_episodes") == get(peers, "eval", "dp", "episodes") == get(peers, "eval", "lerobot", "episodes")


def peers_success_rows(peers: dict | None, dp_label: str = "dp, `pusht` preset") -> list[list[str]]:
    """Rows of the equal-training-time comparison: each tool on all its episodes, then on the seeds both finished."""
    rows = []
    for common in ((False,) if _every_seed_common(peers) else (False, True)):
        for side, label in (("dp", dp_label), ("lerobot", "LeRobot, matched size")):
            tr, ev = get(peers, "train", side) or {}, get(peers, "eval", side) or {}
            ev = ev.get("on_common_seeds") if common else ev
            if not ev:
                continue
            score = f"{num(ev.get('mean_score'), 3)} ({score_ci(ev.get('score_ci95') or [None, None])})"
            rows.append([label + (" (seeds both finished)" if common else ""), f"{num(tr.get('steps'), 0)} × {num(tr.get('batch_size'), 0)}",
                         pct(ev.get("success_rate")), ci(ev.get("success_ci95")), f"{num(ev.get('successes'), 0)}/{num(ev.get('episodes'), 0)}", score])
    return rows


def section_peers(results: Results, targets: Targets) -> list[str]:
    """dp against LeRobot's DiffusionPolicy: same Push-T data, same machine, one run (issue 17)."""
    out = ["## Compared with LeRobot", ""]
    peers = results.bench("peers")
    ratios = get(peers, "speed", "ratios") or {}
    tp_ratio = ratios.get("train_samples_per_s_dp_vs_lerobot_matched")
    targets.check("LeRobot", "training samples/s, dp / LeRobot at matched size", tp_ratio, ">=", 3.0, "x",
                  fmt=lambda v: f"{v:.2f}", available=peers is not None)
    targets.check("LeRobot", "chunk latency, LeRobot default `select_action` / dp ONNX + RTI",
                  ratios.get("chunk_median_lerobot_default_vs_dp_onnx_rti"), ">=", 50.0, "x", fmt=lambda v: f"{v:,.0f}",
                  available=peers is not None)
    targets.check("LeRobot", "Push-T score at equal training time, dp − LeRobot (same seeds)", peers_score_gap(peers), ">=", 0.0,
                  fmt=lambda v: f"{v:+.3f}", available=peers is not None)
    image = get(peers, "image")
    targets.check("LeRobot", "image Push-T score at equal training time, dp − LeRobot (same seeds)", peers_score_gap(image), ">=", 0.0,
                  fmt=lambda v: f"{v:+.3f}", available=image is not None)
    if peers is None:
        return out + [missing("peers"), ""]
    speed, machine = peers.get("speed") or {}, peers.get("machine") or {}
    out += [f"`bench/peers/compare_lerobot.py` runs LeRobot {machine.get('lerobot', '?')} in its own virtualenv "
            "(`bench/peers/setup_lerobot.sh`) and dp side by side on Diffusion Policy's 206 Push-T demonstrations, converted "
            "for LeRobot with its own dataset API (`bench/peers/convert_pusht.py`): both observe the agent position and the "
            "block's 9 keypoints, 2 observations, 16 actions predicted, 8 executed. One thread each, on this machine "
            f"({machine.get('cpu_count', '?')} cores), in one run (started {speed.get('started_utc', '?')}). {_load_text(speed)} "
            f"torch {machine.get('dp_torch', '?')} for dp, "
            f"{get(speed, 'throughput', 'lerobot_matched', 'torch') or '?'} (LeRobot's pin) for LeRobot.", "",
            *(f"- {label}: {get(peers, 'configs', key)}" for key, label in PEER_CONFIGS if get(peers, "configs", key)), ""]
    sizes, tp = speed.get("sizes") or {}, speed.get("throughput") or {}
    rows = []
    for key, label, size_key in PEER_TRAINING:
        if key not in tp:
            continue
        t, z = tp[key], sizes.get(size_key) or {}
        rows.append([label, big(z.get("total_params", z.get("params"))), big(z.get("flops_per_sample_step")), num(t.get("batch_size"), 0),
                     f"{num(t.get('steps'), 0)} (+{num(t.get('warmup'), 0)})", num(t.get("samples_per_s"), 1), num(t.get("s_per_step"), 3),
                     num(t.get("samples_per_cpu_s"), 1), num(t.get("data_s_per_step"), 3), num(t.get("peak_rss_mb"), 0)])
    out += ["Training throughput (the full data path: loader, step, optimiser; dp also updates its EMA):", "",
            table(["Config", "params", "FLOPs / sample / denoising step", "batch", "timed steps (+warm-up)", "samples/s",
                   "s/step", "samples per CPU s", "data s/step", "peak RSS MB"], rows), ""]
    lat = speed.get("latency") or {}
    rows = [[label, num(get(lat, key, "sampler_steps"), 0), num(get(lat, key, "median_ms"), 2), num(get(lat, key, "p99_ms"), 2),
             num(get(lat, key, "cpu_ms_mean"), 2), num(get(lat, key, "calls"), 0), num(get(lat, key, "peak_rss_mb"), 0)]
            for key, label in PEER_RUNTIMES if key in lat]
    out += ["Latency per action chunk, batch 1 (LeRobot: `reset` + `select_action`, which samples a whole chunk, with its "
            "pre- and post-processors; dp: `predict_chunk`; the ONNX rows run in a process without torch):", "",
            table(["Runtime", "sampler steps", "median ms", "p99 ms", "CPU ms / chunk", "calls", "peak RSS MB"], rows), ""]
    cpu = {key: get(lat, key, "cpu_ms_mean") for key, _ in PEER_RUNTIMES}
    if all(finite(cpu[k]) and cpu[k] > 0 for k in ("lerobot_default", "lerobot_matched", "dp_onnx_rti", "dp_torch")):
        out += [f"In CPU time per chunk, LeRobot's default `select_action` costs {cpu['lerobot_default'] / cpu['dp_onnx_rti']:,.0f}x "
                f"dp ONNX Runtime + RTI and {cpu['lerobot_default'] / cpu['dp_torch']:,.0f}x dp torch; at matched size "
                f"{cpu['lerobot_matched'] / cpu['dp_onnx_rti']:,.0f}x and {cpu['lerobot_matched'] / cpu['dp_torch']:,.1f}x "
                "(100 DDPM steps a chunk against dp's 10 sampler steps, or 1 to 3 warm-started ones).", ""]
    rows = peers_success_rows(peers)
    if rows:
        ev, tr = peers.get("eval") or {}, peers.get("train") or {}
        out += [f"Success at equal training time: both trained at once, one thread each, with a budget of {num(tr.get('budget_s'), 0)} s "
                f"of wall clock (used: dp {num(get(tr, 'dp', 'wall_s'), 0)} s, LeRobot {num(get(tr, 'lerobot', 'wall_s'), 0)} s), then evaluated on the same Push-T test "
                f"seeds ({ev.get('seeds', '?')}) with Diffusion Policy's protocol (at most 300 steps, score = max min(coverage / 0.95, 1), "
                "success at coverage 0.95); success with its 95% Wilson interval, mean score with its 95% t-interval.", "",
                table(["Tool", "steps × batch", "Success", "95% CI", "Successes / episodes", "mean score (95% CI)"], rows), ""]
        a, b = (get(ev, side, "on_common_seeds", "score_ci95") or [None, None] for side in ("dp", "lerobot"))
        if all(finite(v) for v in (*a, *b)) and a[0] <= b[1] and b[0] <= a[1]:
            out += ["On the seeds both finished the two scores' 95% intervals overlap: this run does not separate the tools.", ""]
        plan = [f"{name} {num(get(tr, key, 'steps'), 0)} of {num(get(tr, key, 'steps_planned'), 0)} planned steps "
                f"(peak RSS {num(get(tr, key, 'peak_rss_mb'), 0)} MB)" for key, name in (("dp", "dp"), ("lerobot", "LeRobot"))]
        short = any(finite(get(tr, k, "steps")) and finite(get(tr, k, "steps_planned")) and get(tr, k, "steps") < 0.9 * get(tr, k, "steps_planned")
                    for k in ("dp", "lerobot"))
        out += ["Training reached " + "; ".join(plan) + ". Each schedule (warm-up, then cosine decay) was planned for the budget "
                "from the CPU seconds per step above" + ("; a process that got less CPU than an idle core did not finish its schedule." if short else ".")
                + f" The machine's load average was {num(get(tr, 'load_average_1min_at_start'), 2)} at the start of training.", ""]
        stopped = [f"{name} after {num(get(ev, key, 'episodes'), 0)} episodes ({num(get(ev, key, 'sampler_steps'), 0)} sampler steps a chunk)"
                   for key, name in (("dp", "dp"), ("lerobot", "LeRobot")) if get(ev, key, "stopped_by_budget")]
        if stopped:
            out += ["Evaluation stopped at its time budget: " + "; ".join(stopped) + ".", ""]
    else:
        out += [f"Success at equal training time: *{MISSING}* (`--parts train,eval`).", ""]
    fd, fl = get(sizes, "dp_pusht", "flops_per_sample_step"), get(sizes, "lerobot_matched", "flops_per_sample_step")
    sd, sl = get(tp, "dp_pusht", "samples_per_cpu_s"), get(tp, "lerobot_matched", "samples_per_cpu_s")
    if finite(tp_ratio) and tp_ratio < 3.0 and all(finite(v) for v in (fd, fl, sd, sl)):
        cpu_ratio = ratios.get("train_samples_per_cpu_s_dp_vs_lerobot_matched")
        fp32 = get(tp, "dp_pusht_fp32", "samples_per_s")
        bf16 = (f" dp's default trains under bf16 autocast on a CPU with AMX tiles, as this one has: {get(tp, 'dp_pusht', 'samples_per_s') / fp32:.2f}x "
                f"its fp32 speed ({num(ratios.get('train_samples_per_s_dp_fp32_vs_lerobot_matched'))}x LeRobot in fp32)."
                if finite(fp32) and fp32 > 0 and get(peers, "machine", "cpu_amx") else "")
        out += [f"Why dp trains only {tp_ratio:.2f}x as many samples/s as LeRobot at matched size ({num(cpu_ratio)}x per CPU second): at about the same parameter "
                f"count its transformer does {fd / fl:.1f}x the FLOPs per sample ({big(fd)} against {big(fl)}; every layer sees "
                "all the observation and action tokens, where the UNet halves the 16-step sequence at each stage), while it "
                f"turns CPU time into FLOPs {sd * fd / (sl * fl):.1f}x as fast.{bf16} Reaching 3x at matched size would take a model "
                "with fewer FLOPs per sample (narrower, or fewer tokens per layer), not a faster training loop.", ""]
    rows = peers_success_rows(image, "dp, `pusht-image` preset")
    out += ["### Image Push-T at equal training time", "",
            "The same comparison from pixels (`--obs image`): both observe the 96x96 view and the agent position; LeRobot with "
            "its ResNet-18 encoder (no pretrained weights), random 84x84 crops, GroupNorm and spatial-softmax keypoints, the "
            "UNet at the matched size above; dp with the `pusht-image` preset.", ""]
    out += [table(["Tool", "steps × batch", "Success", "95% CI", "Successes / episodes", "mean score (95% CI)"], rows), ""] if rows else [
        f"*{MISSING}* — `nice -n 10 python bench/peers/compare_lerobot.py --obs image --parts speed,train,eval --budget-s 3600 "
        "--eval-budget-s 1800`", ""]
    return out


def _load_text(part: dict) -> str:
    """How busy the machine was when a part started (its 1-minute load average, where recorded)."""
    load = part.get("load_average_1min_at_start")
    if not finite(load):
        return ("Wall-clock figures were taken while other jobs shared the cores; the CPU seconds (each process's own CPU time) "
                "are what that sharing inflates least.")
    quiet = "the machine otherwise idle" if load < 1.0 else "other jobs sharing the cores: the CPU seconds (each process's own CPU time) are what that inflates least"
    return f"Load average {load:.2f} at the start ({quiet}); each measurement runs alone, one after another."


def _less(theirs: Any, ours: Any) -> str:
    return f"{theirs / ours:.1f}x" if finite(theirs) and finite(ours) and ours > 0 else "—"


def peers_readme_table(results: Results) -> list[str]:
    """The README's short dp-against-LeRobot table (issue 17), from peers.json."""
    peers = results.bench("peers")
    if peers is None:
        return []
    tp, lat, r = get(peers, "speed", "throughput") or {}, get(peers, "speed", "latency") or {}, get(peers, "speed", "ratios") or {}
    rows = [["Training at matched size, samples/s (per CPU s)",
             f"{num(get(tp, 'dp_pusht', 'samples_per_s'), 1)} ({num(get(tp, 'dp_pusht', 'samples_per_cpu_s'), 1)})",
             f"{num(get(tp, 'lerobot_matched', 'samples_per_s'), 1)} ({num(get(tp, 'lerobot_matched', 'samples_per_cpu_s'), 1)})",
             f"{num(r.get('train_samples_per_s_dp_vs_lerobot_matched'))}x ({num(r.get('train_samples_per_cpu_s_dp_vs_lerobot_matched'))}x)"],
            ["Chunk latency, batch 1, median ms (dp ONNX + RTI; LeRobot default `select_action`)",
             num(get(lat, "dp_onnx_rti", "median_ms"), 1), num(get(lat, "lerobot_default", "median_ms"), 0),
             f"{num(r.get('chunk_median_lerobot_default_vs_dp_onnx_rti'), 0)}x faster"],
            ["Peak RSS, MB: training, batch 64 / acting (dp ONNX + RTI; LeRobot default)",
             f"{num(get(tp, 'dp_pusht', 'peak_rss_mb'), 0)} / {num(get(lat, 'dp_onnx_rti', 'peak_rss_mb'), 0)}",
             f"{num(get(tp, 'lerobot_default', 'peak_rss_mb'), 0)} / {num(get(lat, 'lerobot_default', 'peak_rss_mb'), 0)}",
             f"{_less(get(tp, 'lerobot_default', 'peak_rss_mb'), get(tp, 'dp_pusht', 'peak_rss_mb'))} / "
             f"{_less(get(lat, 'lerobot_default', 'peak_rss_mb'), get(lat, 'dp_onnx_rti', 'peak_rss_mb'))} less"]]
    ev = get(peers, "eval") or {}
    if ev.get("dp") and ev.get("lerobot"):
        cell = lambda e: f"{num(e.get('mean_score'), 3)} / {pct(e.get('success_rate'))} ({num(e.get('successes'), 0)}/{num(e.get('episodes'), 0)})"
        gap = peers_score_gap(peers)
        rows.append([f"Push-T at equal training time ({num(get(peers, 'train', 'budget_s'), 0)} s budget, LeRobot at matched size): score / success",
                     cell(ev["dp"]), cell(ev["lerobot"]), f"{gap:+.3f} score" + ("" if _every_seed_common(peers) else " on the seeds both finished") if gap is not None else "—"])
    return ["Compared with LeRobot 0.4.4 on Push-T (state; same data, same machine, one thread each, in one run; "
            "[details](docs/results.md#compared-with-lerobot)):", "", table(["Figure", "dp", "LeRobot", "dp against LeRobot"], rows), ""]
