"""`dp quickstart --fast`: the whole path, end to end, in real processes."""

from __future__ import annotations

import pytest

import json
import subprocess
import sys

from dp.data.store import EpisodeStore
from dp.quickstart import FAST

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out


def test_quickstart_fast_writes_every_artefact_and_a_complete_report(tmp_path):
    out = tmp_path / "qs"
    proc = subprocess.run([sys.executable, "-m", "dp", "quickstart", "--fast", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dp quickstart: lift" in proc.stdout and "Go further" in proc.stdout

    with EpisodeStore.open(out / "data" / "lift.zarr") as store:
        assert len(store) == FAST.episodes
        assert all(store.episode_meta(i)["task"] == "lift" for i in range(len(store)))
    run = out / "runs" / "lift"
    assert (run / "model.safetensors").stat().st_size > 10_000 and (run / "config.yaml").is_file()
    for name in ("policy.onnx", "policy_warm.onnx", "policy.yaml"):
        assert (out / "exported" / "lift" / name).stat().st_size > 0, name

    report = json.loads((out / "report.json").read_text())
    assert list(report["stages"]) == ["collect", "train", "eval", "export", "eval-onnx", "deploy"]
    assert all(s["status"] == "ok" and s["seconds"] > 0 for s in report["stages"].values())
    summary = report["summary"]
    assert summary["torch"]["episodes"] == summary["onnx"]["episodes"] == FAST.eval_episodes
    assert summary["deploy"]["episodes"] == FAST.deploy_episodes
    stages = report["stages"]
    for path, stage in (("torch", "eval"), ("onnx", "eval-onnx"), ("deploy", "deploy")):
        figures = stage_figures = stages[stage]["figures"]  # what the stage's own JSON says
        assert summary[path]["success_rate"] == figures["successes"] / figures["episodes"], (path, summary[path], figures)
        if path != "deploy":  # every episode either succeeded or ran to the task's horizon
            ends = [length for length, score in zip(stage_figures["lengths"], stage_figures["scores"]) if score < 1]
            assert sum(score == 1 for score in stage_figures["scores"]) == figures["successes"] and len(set(ends)) <= 1
    torch_eval, onnx_eval = stages["eval"]["figures"], stages["eval-onnx"]["figures"]
    assert torch_eval["split"] == onnx_eval["split"] == "test" and torch_eval["seeds"] == onnx_eval["seeds"]  # the same test seeds
    assert stages["deploy"]["figures"]["policy_errors"] == 0 and stages["deploy"]["figures"]["rejected_states"] == 0
    assert summary["torch"]["policy_ms_median"] > 0 and summary["onnx"]["policy_ms_median"] > 0
    assert 0 < summary["deploy"]["obs_to_command_ms_median"] <= summary["deploy"]["obs_to_command_ms_p99"]


def test_a_failing_stage_is_named(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dp", "quickstart", "--fast", "--task", "juggle", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "stage 'collect' failed" in proc.stderr and "juggle" in proc.stderr
