"""bench/report.py: the results page from hand-written benchmark JSONs in their real structures."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from dp.stats import wilson_interval

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _stats(median, p99, mx, n=100, **extra):
    return {"n": n, "median": median, "p99": p99, "max": mx, **extra}


def _eval(task, episodes, successes, ci, policy="runs/lift", latency=0.8):
    """`dp eval --json-out` (EvalResult.as_dict plus the policy spec)."""
    return {"policy": policy, "task": task, "episodes": episodes, "successes": successes, "success_rate": successes / episodes,
            "success_ci95": ci, "mean_length": 80.0, "lengths": [80] * episodes,
            "latency_ms": {"median": latency, "p99": 3 * latency, "calls": 80 * episodes}, "seeds": list(range(episodes)), "videos": []}


def _timed(median, p99):
    return {"median_ms": median, "p99_ms": p99, "calls": 200}


def write_results(root: Path) -> None:
    (root / "success").mkdir(parents=True)
    (root / "curves").mkdir()
    dump = lambda path, obj: path.write_text(json.dumps(obj, indent=2))  # noqa: E731

    dump(root / "data_throughput.json", {
        "episode_length": 200, "cameras": "2x84x84x3", "obs_horizon": 2, "action_horizon": 16, "workers": 2,
        "by_size": [{"frames": 2000, "image_windows_per_s": 2600, "peak_rss_mb": 400.0},
                    {"frames": 8000, "image_windows_per_s": 2500, "peak_rss_mb": 410.5}],
        "lowdim_windows_per_s_in_process": 250000, "lowdim_windows_per_s_loader": 61234, "image_windows_per_s": 2500,
        "append_mb_per_s": 120.5, "peak_rss_mb_growth": 10.5, "store_bytes_on_disk": 1000000,
        "targets": {"lowdim_windows_per_s>=50000": True, "image_windows_per_s>=3000": False}})
    phases = {"frames": 1920, "episodes": 30, "seconds": 1.5, "frames_per_s": 1280.4, "decode_only_frames_per_s": 2000.0,
              "store_write_only_frames_per_s": 5000.0, "cpu_ms_per_frame": {"import_total": 1.2, "decode_in_workers": 1.0, "store_write": 0.2},
              "frames_per_s_implied_by_cpu_on_2_idle_cores": 1666.7}
    dump(root / "import_throughput.json", {
        "cpu_count": 2, "workers": 2, "calvin": {"image_sizes": {"rgb_static": 200, "rgb_gripper": 84}, "window": 64, "npz_kb_per_frame": 150.0, **phases},
        "libero": {"image_sizes": {"agentview": 128, "eye_in_hand": 128}, **phases, "frames_per_s": 900.0},
        "target_calvin_frames_per_s": 1000, "calvin_meets_target": True, "load_average_1min": 1.5, "generate_seconds": 3.0})
    sizes = {"total_params": 4_000_000, "active_params": 2_500_000, "encoder_params": 10_000, "encoder_flops": 20_000,
             "flops_per_step": 5_000_000, "flops_per_chunk": 50_000_000}
    dump(root / "train.json", {
        "preset": "small", "device": "cpu",
        "state": {"samples_per_s": 812.3, "batch_size": 64, "s_per_step": 0.0788, "threads": 2, "mode": sizes, "dense_twin": sizes},
        "two_cameras_84": {"samples_per_s": 95.1, "batch_size": 64, "s_per_step": 0.673, "threads": 2, "mode": sizes, "dense_twin": sizes}})
    section = {
        "eager_uncached": _timed(24.0, 30.0), "cached": _timed(8.0, 9.0), "cached_rti": _timed(2.5, 3.0),
        "onnx_full": _timed(5.0, 6.0), "onnx_rti": _timed(1.5, 2.0), "speedup_onnx_rti_vs_eager": 16.0,
        "flops_per_chunk": {"uncached": 9_000_000, "cached": 6_000_000, "cached_rti": 1_200_000, "dense_twin_uncached": 12_000_000},
        "params": {"mode_total": 4_000_000, "dense_twin_total": 4_100_000}, "onnx_bytes": {"policy.onnx": 100, "policy_warm.onnx": 100}}
    dump(root / "latency.json", {
        "machine": {"cpus": 2, "cpu": "x86_64", "threads": 1, "torch": "2.5", "onnxruntime": "1.19"},
        "rti": {"steps": 2, "sigma_start": 0.5},
        "small_state": section,
        "small_two_cameras_84": {**section, "onnx_rti": _timed(4.0, 5.0), "speedup_onnx_rti_vs_eager": 6.0},
        "targets": {"onnx_rti_median_le_2ms": True, "onnx_rti_10x_faster_than_eager": True},
        "rti_check": {"chunks": 40, "full_error": 0.05, "policy": "tiny preset trained here", "data": None, "held_out_episodes": 8,
                      "settings": [{"steps": 2, "sigma_start": 0.5, "warm_error": 0.06, "warm_vs_full": 0.02, "guess_error": 0.1,
                                    "gripper_agreement": 0.98, "contraction": [1.0, 0.4, 0.1]}]}})
    dump(root / "deploy.json", {
        "policy": "expert:lift", "task": "lift", "control_hz": 20.0, "state_hz": 100.0,
        "obs_to_command_ms": _stats(1.2, 12.5, 20.0), "node_cycle_ms": _stats(0.5, 1.0, 2.0), "policy_ms": _stats(0.1, 0.3, 0.5),
        "jitter": {"node_period_ms": _stats(50.0, 51.0, 52.0, std=0.3, p99_abs_dev=0.9, max_abs_dev=2.0),
                   "controller_tick_period_ms": _stats(50.0, 50.5, 51.0, std=0.1, p99_abs_dev=0.4, max_abs_dev=1.0),
                   "state_rate_hz": 99.9, "state_interarrival_ms": _stats(10.0, 11.0, 12.0, std=0.2, p99_abs_dev=1.0, max_abs_dev=2.0)},
        "watchdog": {"hold_after_expiry_ms": _stats(20.0, 45.0, 52.0, n=20), "held_tick_after_expiry_ms": _stats(40.0, 60.0, 70.0, n=20),
                     "hold_after_heartbeat_timeout_ms": _stats(25.0, 48.0, 55.0, n=20), "heartbeat_timeout_s": 0.25, "trials": 20},
        "success": {"episodes": 50, "success_rate": 0.96, "mean_episode_length": 90.0, "wall_seconds": 300.0,
                    "dp_eval_success_rate": 0.98, "dp_eval_mean_length": 89.0, "difference_points": -2.0},
        "targets": {}})
    expert = lambda k, n: {"episodes": n, "successes": k, "success_rate": k / n, "success_ci95": [0.5, 0.99], "mean_length": 100.0,  # noqa: E731
                           "strategies": {"top": k}, "frames_per_second": 500.0}
    dump(root / "sim_collect.json", {
        "experts": {"lift": expert(49, 50), "stack": expert(40, 50), "can": expert(48, 50), "door": expert(50, 50), "square": expert(36, 50)},
        "throughput": [{"workers": 1, "cameras": [], "episodes": 12, "frames": 1200, "seconds": 2.0, "frames_per_second": 600.0},
                       {"workers": 2, "cameras": ["agentview", "robot0_eye_in_hand"], "episodes": 12, "frames": 1200, "seconds": 6.0,
                        "frames_per_second": 200.0}],
        "env_step_ms": {"state_only": 1.1, "two_cameras_84": 4.2}, "cpu_count": 2})

    dump(root / "success" / "lift__torch.json", _eval("lift", 50, 47, [0.8378, 0.9793]))
    (root / "success" / "lift__torch.cmd").write_text("dp train --data data/lift.zarr --out runs/lift\n"
                                                      "dp eval runs/lift --task lift --episodes 50 --json-out bench/results/success/lift__torch.json\n")
    dump(root / "success" / "lift__onnx_rti.json", {**_eval("lift", 50, 45, [0.7864, 0.9565], policy="exported/lift", latency=1.4), "split": "test"})
    # `dp node --json-out`: no success_ci95, no latency_ms; the report computes the Wilson interval
    dump(root / "success" / "lift__deploy.json", {
        "episodes": 20, "successes": 19, "success_rate": 0.95, "mean_episode_length": 85.0, "obs_to_command_ms": _stats(1.25, 4.0, 6.0),
        "cycle_ms": _stats(0.4, 1.0, 1.5), "policy_ms": _stats(0.3, 0.8, 1.0), "period_ms": _stats(50.0, 51.0, 52.0),
        "rejected_states": 0, "send_failures": 0, "policy_errors": 0, "resyncs": 0, "per_episode": []})
    dump(root / "success" / "multitask_lift__mode.json", _eval("lift", 30, 24, [0.6269, 0.9051]))
    (root / "success" / "multitask_lift__dense.json").write_text("{not json")

    rows = [{"event": "start", "step": 0, "world_size": 1, "device": "cpu", "total_params": 254159, "active_params": 155855}]
    for step in range(10, 110, 10):
        rows.append({"event": "train", "step": step, "epoch": 1, "loss": 1.0 / step, "grad_norm": 1.0, "lr": 1e-3 * step / 100,
                     "samples_per_s": 1800.0, "elapsed_s": step / 10})
        if step % 50 == 0:
            rows.append({"event": "val", "step": step, "val_loss": 2.0 / step, "val_action_mse": 0.5 / step})
    rows.append({"event": "end", "step": 100, "run": "runs/lift", "wall_s": 12.0, "loss": 0.01})
    (root / "curves" / "lift_small.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"event": "tra')

    dump(root / "ablation_can.json", {"about": "can, validation seeds.", "findings": ["more steps help"], "rows": [
        {"question": "training steps", "setting": "5000 steps", "train_min": 42.4, "split": "val", "episodes": 50, "successes": 45,
         "success_rate": 0.9, "success_ci95": [0.786, 0.957], "command": "dp eval runs/can --task can --split val --episodes 50"},
        {"question": "milestones", "setting": "3000 steps", "split": "val", "episodes": 50, "successes": 40, "success_rate": 0.8,
         "success_ci95": [0.67, 0.888], "milestones": {"grasped": 48, "lifted": 44}}]})
    dump(root / "quickstart.json", {
        "out": "/tmp/qs", "task": "lift", "fast": False, "seconds": 700.0,
        "sizes": {"episodes": 100, "preset": "small", "train_steps": 2000, "batch_size": 64, "eval_episodes": 20, "deploy_episodes": 5},
        "stages": {"collect": {"status": "ok", "command": "dp collect --task lift --episodes 100 --out /tmp/qs/data/lift.zarr", "seconds": 60.0},
                   "train": {"status": "ok", "command": "dp train --data /tmp/qs/data/lift.zarr", "seconds": 500.0}},
        "summary": {"torch": {"success_rate": 0.9, "episodes": 20, "policy_ms_median": 0.7},
                    "onnx": {"success_rate": 0.85, "episodes": 20, "policy_ms_median": 0.3},
                    "deploy": {"success_rate": 1.0, "episodes": 5, "obs_to_command_ms_median": 1.1, "obs_to_command_ms_p99": 4.2}}})


def _row(page: str, *cells: str) -> str:
    """The table line holding all ``cells`` as substrings, in order (each after the previous one)."""
    for line in page.splitlines():
        if not line.startswith("|"):
            continue
        pos = 0
        for c in cells:
            pos = line.find(c, pos)
            if pos < 0:
                break
            pos += len(c)
        else:
            return line
    raise AssertionError(f"no table row with {cells}")


def test_full_page(report, tmp_path, capsys):
    results = tmp_path / "results"
    write_results(results)
    out = tmp_path / "docs" / "results.md"
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = out.read_text()

    # headline: success, CI, counts; the deploy row's CI is computed (Wilson), missing rows say so
    assert "| lift | torch | 94.0% | 83.8–97.9% | 47/50 | before the split (50) | 0.80 / 2.4 ms per step |" in page
    assert _row(page, "lift", "ONNX Runtime + RTI", "90.0%", "45/50", "test (50)", "1.40 / 4.2 ms per step")
    assert _row(page, "training steps", "5000 steps", "42", "val (50)", "90.0%", "78.6–95.7%", "45/50")
    assert _row(page, "| training steps | 5000 steps | 42 |", "45/50 | — |")  # a row without milestones
    assert _row(page, "| milestones | 3000 steps |", "40/50 | grasped 48, lifted 44 |")
    assert "- more steps help" in page and "dp eval runs/can --task can --split val --episodes 50" in page
    lo, hi = wilson_interval(19, 20)
    assert _row(page, "lift", "deploy", "95.0%", f"{100 * lo:.1f}–{100 * hi:.1f}%", "19/20", "1.25 / 4.0 ms obs→command")
    assert _row(page, "multitask_lift", "MoDE", "80.0%", "24/30")
    assert _row(page, "lift", "torch + RTI", "not measured yet")
    assert _row(page, "lift_image", "torch", "not measured yet")
    assert "dp eval runs/lift --task lift --episodes 50" in page  # the .cmd file is shown
    assert "multitask_lift__dense.json" in page and "Unreadable" in page  # a broken file is named, not fatal

    # target verdicts
    assert _row(page, "low-dim windows/s", "61,234", "≥ 50,000", "| met |")
    assert _row(page, "image windows/s", "2,500", "≥ 3,000", "not met")
    assert _row(page, "CALVIN frames/s (end to end)", "1,280", "≥ 1,000", "| met |")
    assert _row(page, "ONNX Runtime + RTI median, state", "1.50 ms", "≤ 2.00 ms", "| met |")
    assert _row(page, "vs eager uncached", "16.0x", "≥ 10.0x", "| met |")
    assert _row(page, "obs→command p99", "12.50 ms", "≤ 10.00 ms", "not met")
    assert _row(page, "hold after command expiry, max", "52.00 ms", "≤ 100.00 ms", "| met |")
    assert _row(page, "State stream rate", "99.9 Hz", "not met")
    assert _row(page, "| stack |", "80.0%", "≥ 90.0%", "not met")
    assert _row(page, "| square |", "72.0%", "≥ 70.0%", "| met |")
    assert _row(page, "| door |", "100.0%", "| met |")
    # issue 6: RTI / ONNX against full torch sampling, in points; issue 9: the multitask table and its average
    assert _row(page, "lift: ONNX Runtime + RTI below torch (points)", "| 4 |", "≤ 3", "not met")
    assert _row(page, "lift: ONNX Runtime below torch (points)", "not measured yet")
    assert _row(page, "| lift |", "80.0% (24/30; 62.7–90.5%)", "not measured yet")
    assert _row(page, "average success over the 5 tasks", "not measured yet", "≥ 92.0%")

    # latency table: per mode, speed-up against eager in each case
    assert _row(page, "ONNX Runtime + RTI |", "1.500", "2.000", "16.0x", "4.000", "5.000", "6.0x")
    assert _row(page, "torch eager, uncached", "24.000", "1.0x")
    # training: curves summary, throughput; quickstart; collection throughput
    assert _row(page, "lift_small", "100", "0.0100", "0.0200", "0.0200 @ 100", "12 s")
    assert _row(page, "state only", "812.3", "64")
    assert _row(page, "| torch |", "90.0%", "20", "policy 0.70 ms")
    assert _row(page, "collection: lift frames/s, two 84×84 cameras, 2 worker(s)", "200")
    assert page.count("not measured yet") >= 2
    assert "2 not met" not in page and "not met" in page

    for name in ("results_success.png", "results_latency.png", "results_training.png"):
        png = tmp_path / "docs" / "img" / name
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
        assert f"](img/{name})" in page


def test_multitask_average_pools_the_tasks_episodes(report, tmp_path):
    from bench.reporting.load import load
    from bench.reporting.sections_policy import multitask_table
    from bench.reporting.spec import METHODS, MULTITASK, MULTITASK_TARGET_METHOD

    (tmp_path / "success").mkdir()
    target = MULTITASK_TARGET_METHOD  # a third column: the method issue 37's targets read
    successes = {"mode": [90, 91, 92, 93, 94], "dense": [80] * 5, target: [88, 86, 84, 82, 61]}
    for i, task in enumerate(MULTITASK):
        for method, ks in successes.items():
            ci = list(wilson_interval(ks[i], 100))
            (tmp_path / "success" / f"multitask_{task}__{method}.json").write_text(json.dumps({**_eval(task, 100, ks[i], ci), "split": "test"}))
    text, means, pooled = multitask_table(load(tmp_path))
    lo, hi = wilson_interval(460, 500)  # 90 + 91 + 92 + 93 + 94 over five tasks of 100
    assert means["mode"] == pytest.approx(0.92) and means["dense"] == pytest.approx(0.80) and means[target] == pytest.approx(0.802)
    assert f"**92.0%** (460/500; {100 * lo:.1f}–{100 * hi:.1f}%)" in text and "**80.0%** (400/500;" in text
    assert _row(text, "| square |", "94.0% (94/100;", "80.0% (80/100;", "61.0% (61/100;", "test (100)")
    assert METHODS[target] in text.splitlines()[0]  # a column of its own
    assert pooled == {"mode": (460, 500), "dense": (400, 500), target: (401, 500)}
    page = report.build_page(load(tmp_path), tmp_path / "page.md", tmp_path / "img")
    assert "MoDE is ahead outside the intervals" in page
    # issue 37's targets read the target method: its average and its weakest task
    weakest, average, label = min(successes[target]), sum(successes[target]) / 5, METHODS[target]
    assert _row(page, f"{label}: the weakest task's success (issue 37)", f"{weakest:.1f}%", "60.0%", "| met |")
    assert _row(page, f"{label}: average success over the 5 tasks (issue 37)", f"{average:.1f}%", "85.0%")


def test_success_targets_count_only_test_seeds(report, tmp_path):
    from bench.reporting.load import load
    from bench.reporting.sections_policy import success_targets
    from bench.reporting.spec import METHODS
    from bench.reporting.spec import target_method as chosen
    from bench.reporting.targets import Targets

    (tmp_path / "success").mkdir()
    # each task's chosen row, plus a better-looking plain torch row on square that must not count
    for task, method, k, split in (("lift", chosen("lift"), 100, "test"), ("stack", chosen("stack"), 90, "test"),
                                   ("can", chosen("can"), 99, "val"), ("lift_image", chosen("lift_image"), 100, "test"),
                                   ("square", "torch", 99, "test"), ("square", chosen("square"), 80, "test")):
        data = {**_eval(task, 100, k, list(wilson_interval(k, 100))), "split": split}
        (tmp_path / "success" / f"{task}__{method}.json").write_text(json.dumps(data))
    targets = Targets()
    success_targets(load(tmp_path), targets)
    rows = {r[1]: r[2:] for r in targets.rows}

    def row(task):
        return rows[f"{task}: success on test seeds ({METHODS[chosen(task)]})"]

    assert row("lift") == ["100.0%", "≥ 100.0%", "met"]
    assert row("stack") == ["90.0%", "≥ 95.0%", "**not met**"]
    assert row("can")[0] == "not measured yet"  # 99% on validation seeds is not a result
    assert row("lift_image")[2] == "met"
    assert row("can_image")[0] == "not measured yet"
    # square is checked on the setting validation chose, not on the better-looking torch row
    assert chosen("square") != "torch" and row("square")[:2] == ["80.0%", "≥ 85.0%"]


def test_missing_inputs_say_not_measured(report, tmp_path, capsys):
    results = tmp_path / "empty"
    results.mkdir()
    out = tmp_path / "docs" / "results.md"
    img = tmp_path / "docs" / "img"
    img.mkdir(parents=True)
    (img / "results_latency.png").write_bytes(b"stale")
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    page = out.read_text()
    assert _row(page, "lift", "torch", "not measured yet")
    assert _row(page, "low-dim windows/s", "not measured yet", "≥ 50,000", "not measured yet")
    assert _row(page, "obs→command p99", "not measured yet")
    assert _row(page, "| square |", "not measured yet", "≥ 70.0%")
    assert "python bench/latency.py > bench/results/latency.json" in page
    assert "0 targets met, 0 not met" in page
    assert "Training curves" in page and "Quickstart" in page
    assert not list(img.glob("*.png"))  # no data, no plot; the stale one is gone
    assert "](img/" not in page


def test_readme_section_is_rewritten_in_place(report, tmp_path):
    results = tmp_path / "results"
    write_results(results)
    readme = tmp_path / "README.md"
    readme.write_text("# dp\n\nintro\n\n## Results\n\nold figures\n\n## Documentation\n\n- docs\n")
    sampling = {"solver": "dpmpp2m", "schedule": "fitted", "steps": 5, "replan_every": 8, "rti": False}  # what `dp eval` records
    (results / "success" / "can__preset_sampler.json").write_text(json.dumps({**_eval("can", 100, 98, [0.93, 0.994]), "sampling": sampling}))
    voted = {**sampling, "solver": "ddim", "steps": 10, "replan_every": 4, "vote": 3}  # a switch that changes the actions
    from bench.reporting.spec import target_method

    square = results / "success" / f"square__{target_method('square')}.json"  # the row the README's square line reads
    square.write_text(json.dumps({**_eval("square", 100, 79, [0.70, 0.858]), "sampling": voted}))
    can_image = results / "success" / f"can_image__{target_method('can_image')}.json"  # the row the README's image line reads
    can_image.write_text(json.dumps({**_eval("can", 100, 90, [0.826, 0.945]), "sampling": sampling}))
    assert report.main(["--results", str(results), "--out", str(tmp_path / "r.md"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# dp\n\nintro\n\n## Results\n") and text.endswith("## Documentation\n\n- docs\n")
    assert "old figures" not in text and "not measured yet" not in text
    rows = [line for line in text.split("## Results")[1].splitlines() if line.startswith("| ") and not line.startswith("| What")]
    assert 2 <= len(rows) <= 10, rows  # a headline, not the page: measured rows only, at most ten
    assert _row(text, "lift, deployed", "success 95.0% (19/20; ", "[more](docs/results.md#success-in-simulation)")
    assert "Time per action chunk, `small` preset" not in text  # the latency figure is the LeRobot row's
    assert _row(text, "can from two 84x84 cameras", "success 90.0% (90/100; ", "schedule and interval chosen on validation; 5-step")
    assert _row(text, "can (robosuite, state)", "success 98.0% (98/100; ",
                "chosen on validation; 5-step DPM-Solver++(2M) on the fitted schedule, a new chunk every 8 actions")
    assert _row(text, "square (robosuite, state)", "success 79.0% (79/100; ",
                "10-step DDIM on the fitted schedule, a new chunk every 4 actions, the gripper voted by 3 chunks")
    readme.write_text("# dp\n")
    with pytest.raises(SystemExit, match="no '## Results' section"):
        report.main(["--results", str(results), "--out", str(tmp_path / "r.md"), "--readme", str(readme)])


def test_headline_only(report, tmp_path, capsys):
    results = tmp_path / "results"
    write_results(results)
    assert report.main(["--results", str(results), "--headline"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("| Task | Method | Success | 95% CI |")
    assert "| lift | torch | 94.0% | 83.8–97.9% | 47/50 |" in text
    assert "##" not in text and "Target" not in text
    assert not (tmp_path / "docs").exists()


def test_pusht_image_targets_are_checked_on_the_recipe_validation_chose(report, tmp_path):
    from bench.reporting.load import load
    from bench.reporting.sections_pusht import section_pusht
    from bench.reporting.targets import Targets

    def point(step, score, success, **clock):
        return {"step": step, "episodes": 50, "mean_score": score, "success_rate": success, **clock}

    def bench(curve, chosen, test_score, **extra):
        return {"preset": "pusht-image", "curve": curve, "chosen": {"step": chosen, "why": "best mean score on validation seeds"},
                "test": {"torch": {"mean_score": test_score, "success_rate": 0.3, "successes": 30, "episodes": 100}}, **extra}

    runs = {"pusht_image": bench([point(8000, 0.82, 0.28, train_s=600.0)], 8000, 0.81, train_wall_s=600.0, train_cpu_s=900.0),
            "pusht_image_obs1": bench([point(6000, 0.80, 0.2, train_cpu_s=3000.0), point(10000, 0.86, 0.3, train_cpu_s=6000.0)], 10000, 0.85),
            "pusht_image_priv": bench([point(9000, 0.86, 0.2, train_cpu_s=5400.0)], 9000, 0.99)}  # ties obs1's score, fewer successes
    for name, data in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    targets = Targets()
    page = "\n".join(section_pusht(load(tmp_path), targets))
    rows = {r[1]: r[2:] for r in targets.rows}
    assert rows["pusht_image_obs1: test mean score (torch)"][:2] == ["0.85", "≥ 0.90"]
    assert not any(k.startswith(("pusht_image:", "pusht_image_priv:")) for k in rows)  # only the chosen recipe is checked
    assert rows["pusht_image_obs1: training CPU minutes of the chosen checkpoint"] == ["100", "≤ 180", "met"]
    assert "`pusht_image_obs1`" in page and page.count("Validation curve") == 3
    assert "| 8000 | 10.0 | 15 | 50 | 0.820 | 28.0% |" in page  # CPU minutes from the run's CPU / wall ratio
    assert "| 10000 | 0.0 | 100 | 50 | 0.860 | 30.0% |" in page  # CPU minutes as logged
    from bench.reporting.readme import headline_rows
    headline = {row[0]: row for row in headline_rows(load(tmp_path))}["Push-T from the 96x96 view (same data, pixels only)"]
    assert headline[1].startswith("score 0.850") and headline[3].startswith("100 CPU-min of training")  # the recipe chosen


def test_plan_ahead_targets_skip_rows_a_later_run_superseded(report, tmp_path):
    from bench.reporting.load import load
    from bench.reporting.sections_robot import plan_ahead
    from bench.reporting.targets import Targets

    def mode(holds, p99, **extra):
        return {"episodes": 100, "success_rate": 0.5, "holds_during_episodes": {"command_expired": holds} if holds else {},
                "held_ticks": holds, "ticks": 3000, "obs_to_command_ms": {"median": 2.0, "p99_worst_pair": p99}, "half_period_ms": 50.0,
                **extra}

    deploy = {"off": mode(500, 80.0), "auto (old)": mode(3, 14.0, superseded_by="auto"), "auto": mode(0, 11.0)}
    (tmp_path / "plan_ahead_pusht.json").write_text(json.dumps({"deploy": deploy}))
    targets = Targets()
    page = "\n".join(plan_ahead(load(tmp_path), targets))
    checked = {(r[0], r[1]): r[4] for r in targets.rows}
    assert checked == {("Plan-ahead (Push-T, 10 Hz, auto)", "command_expired holds during episodes"): "met",
                       ("Plan-ahead (Push-T, 10 Hz, auto)", "obs→command p99 (ms)"): "met"}
    assert "| Push-T, 10 Hz | `auto (old)` (superseded by `auto`) | 100 | 50.0% |" in page  # kept in the table, not checked


def test_committed_page_and_readme_match_the_results(report, tmp_path, monkeypatch):
    """docs/results.md and the README's results section are what bench/report.py makes of bench/results:
    an edit to a result or a note without `python bench/report.py [--readme README.md]` fails here."""
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    page = tmp_path / "docs" / "results.md"
    monkeypatch.chdir(ROOT)  # the page names its inputs as the README's command does: bench/results
    assert report.main(["--results", "bench/results", "--out", str(page), "--readme", str(readme)]) == 0
    assert page.read_text() == (ROOT / "docs" / "results.md").read_text(), "docs/results.md is stale: run python bench/report.py"
    assert readme.read_text() == (ROOT / "README.md").read_text(), "README's results are stale: run python bench/report.py --readme README.md"


def test_pusht_state_target_is_checked_on_the_setting_best_on_validation(report, tmp_path):
    from bench.reporting.load import load

    def figures(setting, steps, successes, score, split, n):
        return {"setting": setting, "passes_per_chunk": steps, "split": split, "successes": successes, "episodes": n,
                "success_rate": successes / n, "success_ci95": list(wilson_interval(successes, n)), "mean_score": score,
                "score_ci95": [score - 0.03, score + 0.02]}
    rows = [figures("ddim:exponential:10", 10, 30, 0.95, "val", 50), figures("ddim:exponential:20", 20, 33, 0.97, "val", 50),
            figures("ddim:exponential:5", 5, 28, 0.94, "val", 50)]
    test = [figures("ddim:exponential:10", 10, 55, 0.951, "test", 100), figures("ddim:exponential:20", 20, 66, 0.962, "test", 100),
            figures("ddim:exponential:5", 5, 50, 0.930, "test", 100)]
    bench = {"bench": "sampler_choice", "checkpoint": "runs/pusht/checkpoints/step_0006000", "task": "pusht",
             "training": {"step": 6000, "wall_min": 110.0, "cpu_min": 107.0}, "episodes": 50, "seed": 0, "rows": rows,
             "chosen": "ddim:exponential:5", "best": "ddim:exponential:20", "why": "test", "test_episodes": 100, "test_rows": test,
             "chunk_latency_ms": {}}
    results = tmp_path / "results"
    results.mkdir()
    (results / "sampler_pusht.json").write_text(json.dumps(bench))
    page = report.build_page(load(results), tmp_path / "page.md", tmp_path / "img")
    assert "| `ddim:exponential:20` (best on validation) |" in page and "| `ddim:exponential:5` (chosen) |" in page
    assert "Push-T state mean score, test, the best setting on validation (sampler_pusht), <= 120 CPU-min of training | 0.962 | ≥ 0.950 | met |" in page
    assert "Push-T state success, test, the best setting on validation (sampler_pusht), <= 120 CPU-min of training | 66.0% | ≥ 65.0% | met |" in page
    bench["training"]["cpu_min"] = 130.0  # over the budget: the figures do not count
    (results / "sampler_pusht.json").write_text(json.dumps(bench))
    page = report.build_page(load(results), tmp_path / "page.md", tmp_path / "img")
    assert "Push-T state success, test, the best setting on validation (sampler_pusht), <= 120 CPU-min of training | — | ≥ 65.0% | **not met** |" in page
    # the cheapest choice may be the reference itself: it is found by its setting, not by its place among the test rows
    bench.update(chosen="ddim:exponential:10", test_rows=test[:2], chunk_latency_ms={"ddim:exponential:10": {"median_ms": 50.0, "per_action_ms": 6.25},
                                                                                  "ddim:exponential:20": {"median_ms": 100.0, "per_action_ms": 12.5}})
    (results / "sampler_pusht.json").write_text(json.dumps(bench))
    page = report.build_page(load(results), tmp_path / "page.md", tmp_path / "img")
    assert "| `ddim:exponential:10` (reference, chosen) |" in page and "| `ddim:exponential:20` (best on validation) |" in page
    assert _row(page, "`ddim:exponential:20` (best on validation)", "| 100", "| 12.50 |") and "| ms per action |" in page
    assert "inside 10-step DDIM's interval | 10 | ≤ 5 | **not met** |" in page
    assert "10-step DDIM over the choice | 1.00x | ≥ 2.00x | **not met** |" in page
    # a later run is checked when its best validation row ranks first (mean score, then success), not for its test figures
    later = {**bench, "rows": [figures("ddim:exponential:10", 10, 20, 0.98, "val", 50)], "best": "ddim:exponential:10",
             "test_rows": [figures("ddim:exponential:10", 10, 40, 0.93, "test", 100)], "training": {"step": 5000, "cpu_min": 84.0}}
    (results / "pusht_state_budget.json").write_text(json.dumps(later))
    page = report.build_page(load(results), tmp_path / "page.md", tmp_path / "img")
    assert "Push-T state success, test, the best setting on validation (pusht_state_budget), <= 120 CPU-min of training | 40.0% |" in page
    later["rows"][0]["mean_score"] = 0.96  # below the first run's best (0.97): the first run is checked
    bench["training"]["cpu_min"] = 107.0
    (results / "pusht_state_budget.json").write_text(json.dumps(later))
    (results / "sampler_pusht.json").write_text(json.dumps(bench))
    page = report.build_page(load(results), tmp_path / "page.md", tmp_path / "img")
    assert "Push-T state success, test, the best setting on validation (sampler_pusht), <= 120 CPU-min of training | 66.0% |" in page


def test_sampler_targets_are_read_on_the_tasks_last_run(report, tmp_path):
    """Push-T's sampler runs are shown in the order made; the passes target is read on the last (the current policy)."""
    from bench.reporting.load import load

    def row(setting, passes, successes, score, n=100):
        return {"setting": setting, "passes_per_chunk": passes, "successes": successes, "episodes": n, "success_rate": successes / n,
                "success_ci95": list(wilson_interval(successes, n)), "mean_score": score, "score_ci95": [score - 0.03, score + 0.02]}

    def run(chosen, test):
        return {"bench": "sampler_choice", "checkpoint": "runs/pusht/checkpoints/step_0005000", "task": "pusht", "training": {"step": 5000},
                "episodes": 50, "seed": 0, "rows": [row(r["setting"], r["passes_per_chunk"], 25, 0.96, 50) for r in test],
                "chosen": chosen, "why": "test", "test_episodes": 100, "test_rows": test,
                "chunk_latency_ms": {test[0]["setting"]: {"median_ms": 80.0}, chosen: {"median_ms": 25.0}}}
    results = tmp_path / "results"
    results.mkdir()
    earlier = run("ddim:exponential:5", [row("ddim:exponential:10", 10, 40, 0.956), row("ddim:exponential:5", 5, 32, 0.90)])
    (results / "sampler_pusht.json").write_text(json.dumps(earlier))
    page = report.build_page(load(results), tmp_path / "page.md", tmp_path / "img")
    assert "| pusht: network passes per chunk at test success (and score) inside 10-step DDIM's interval | 10 | ≤ 5 | **not met** |" in page
    later = run("dpmpp2m:exponential:3", [row("ddim:exponential:10", 10, 50, 0.940), row("dpmpp2m:exponential:3", 3, 45, 0.964)])
    (results / "sampler_pusht_windows.json").write_text(json.dumps(later))
    page = report.build_page(load(results), tmp_path / "page.md", tmp_path / "img")
    assert "| pusht: network passes per chunk at test success (and score) inside 10-step DDIM's interval | 3 | ≤ 5 | met |" in page
    assert "| pusht: full-sampling (first-chunk) latency, 10-step DDIM over the choice | 3.20x | ≥ 2.00x | met |" in page
    assert page.index("`sampler_pusht` (an earlier policy") < page.index("`sampler_pusht_windows`:")  # both shown, in order
    assert "| `ddim:exponential:5` (chosen) | 5 | 32.0% |" in page


def test_the_export_check_reads_the_three_pairings_as_measured(report):
    from bench.reporting.sections_pusht import _lockstep_block
    from bench.reporting.targets import Targets

    def pair(a, b, a_wins, b_wins, p):
        return {f"{a}_successes": a_wins, f"{b}_successes": b_wins, f"{a}_only": 1, f"{b}_only": 1, "episodes": 200, "mcnemar_p": p,
                "score_difference": -0.01, "score_difference_ci95": [-0.02, 0.0]}

    def block(p_export, p_again, p_between, ratio=5e-5):
        b = {"lockstep": {"episodes": 10, "steps": 2000, "max_over_scale": ratio, "action_difference": {"median": 1e-4, "p99": 1e-3, "max": 0.02}},
             "paired": pair("torch", "export", 107, 96, p_export), "paired_torch_again": pair("torch", "torch_again", 107, 97, p_again),
             "paired_export_torch_again": pair("torch_again", "export", 97, 96, p_between)}
        targets = Targets()
        return "\n".join(_lockstep_block(b, targets)), targets.rows[0][-1]

    page, verdict = block(0.02, 0.01, 1.0)
    assert "| torch against the ONNX export | 107 / 96 of 200 | 1 | 1 | 0.020 |" in page and verdict == "met"
    assert "alike (107 successes against 97 and 96): rounding alone opens the gap the export shows" in page
    assert "No pair differs by more than chance" in block(0.3, 0.4, 0.9)[0]
    assert "this page does not explain" in block(0.01, 0.4, 0.02)[0]  # the export alone differs: not rounding's spread
    assert block(0.3, 0.4, 0.9, ratio=2e-4)[1] == "**not met**"  # actions further apart than the export's check allows
