"""`dp eval`: the harness on the scripted lift expert, the interval, the policy loader."""

from __future__ import annotations

import json

import cv2
import pytest

from dp.cli import main
from dp.errors import DpError
from dp.eval.eval_cmd import eval_tasks
from dp.eval.evaluate import evaluate
from dp.infer.load import load_policy
from dp.sim.experts import LiftExpert
from dp.sim.rollout import seed_for
from dp.stats import wilson_interval
from dp.testing.clockwork import Clockwork

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out


def test_dp_eval_of_the_lift_expert_reports_its_success_and_writes_a_video(tmp_path, capsys):
    code = main(["eval", "expert:lift", "--task", "lift", "--split", "test", "--episodes", "10", "--seed", "3", "--json",
                 "--video", str(tmp_path / "videos"), "--video-episodes", "1"])
    assert code == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["episodes"] == 10 and figures["success_rate"] >= 0.9
    low, high = figures["success_ci95"]
    assert low <= figures["success_rate"] <= high and high <= 1.0
    assert 20 < figures["mean_length"] < 200
    assert figures["latency_ms"]["calls"] == pytest.approx(10 * figures["mean_length"])
    assert 0 < figures["latency_ms"]["median"] <= figures["latency_ms"]["p99"]
    assert figures["split"] == "test" and figures["seeds"] == [seed_for(3, i, "test") for i in range(10)]
    assert figures["milestones"]["grasped"] >= figures["successes"]  # no lift without a grasp
    assert len(figures["videos"]) == 1
    video = cv2.VideoCapture(figures["videos"][0])
    ok, frame = video.read()
    assert ok and frame.shape == (256, 512, 3)  # both cameras side by side
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == figures["lengths"][0] + 1  # the first frame, then one per step


def test_dp_eval_in_two_worker_processes_gives_the_figures_of_one_process(tmp_path, capsys):
    args = ["eval", "expert:lift", "--task", "lift", "--split", "test", "--episodes", "4", "--seed", "5", "--json"]
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out)
    assert main([*args, "--workers", "2", "--video", str(tmp_path), "--video-episodes", "1"]) == 0
    two = json.loads(capsys.readouterr().out)
    for key in ("seeds", "lengths", "scores", "successes", "milestones"):
        assert two[key] == one[key], key
    assert two["latency_ms"]["calls"] == sum(two["lengths"])
    assert len(two["videos"]) == 1 and (tmp_path / "lift_ep000_success.mp4").stat().st_size > 0
    assert main([*args, "--workers", "0"]) == 1
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err


def test_eval_seeds_are_apart_from_collection_seeds():
    collect = {seed_for(0, i, "collect") for i in range(1000)}
    assert not collect & {seed_for(0, i, "eval") for i in range(1000)}


def test_wilson_interval_matches_reference_values():
    low, high = wilson_interval(9, 10)
    assert low == pytest.approx(0.5958, abs=1e-4) and high == pytest.approx(0.9821, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_evaluate_calls_reset_with_the_instruction_and_renders_declared_cameras():
    class Recorder(LiftExpert):
        image_keys = ["agentview_image"]

        def __init__(self):
            from dp.sim.tasks import get_task

            super().__init__(get_task("lift"))
            self.instructions, self.shapes = [], set()

        def reset(self, instruction=None):
            self.instructions.append(instruction)
            super().reset(instruction)

        def select_action(self, obs):
            self.shapes.add(obs["agentview_image"].shape)
            return super().select_action(obs)

    policy = Recorder()
    result = evaluate(policy, "lift", 1, split="val", image_size=32, progress=False)
    assert policy.instructions == ["lift the cube"] and policy.shapes == {(32, 32, 3)}
    assert result.episodes == 1 and len(result.latency_ms) == result.lengths[0]


def test_milestones_say_where_a_failing_policy_stopped(capsys):
    class Still:
        """Holds the arm still with the gripper open: never grasps, never succeeds."""

        def reset(self, instruction=None):
            pass

        def select_action(self, obs):
            return [0, 0, 0, 0, 0, 0, -1]

    result = evaluate(Still(), "square", 1, split="val", progress=False)
    assert result.successes == 0 and result.lengths == [400]
    assert result.as_dict()["milestones"] == {"grasped": 0, "lifted": 0, "on the peg": 0}


def test_load_policy_errors_name_what_was_expected(tmp_path, capsys):
    assert isinstance(load_policy("expert:lift"), LiftExpert)
    with pytest.raises(DpError, match="known tasks"):
        load_policy("expert:pour")
    with pytest.raises(DpError, match="no such file"):
        load_policy(str(tmp_path / "missing"))
    with pytest.raises(DpError, match="scripted expert"):
        load_policy("expert:lift", rti=True)
    assert main(["eval", "--task", "lift"]) == 1
    assert "name the policy" in capsys.readouterr().err
    assert main(["eval", "--onnx", str(tmp_path), "--task", "lift"]) == 1  # the deprecated spelling of POLICY
    err = capsys.readouterr().err
    assert "--onnx is deprecated" in err and f"{tmp_path}: no model.safetensors" in err


def test_dp_eval_of_several_tasks_pools_their_episodes_and_names_the_weakest(tmp_path, capsys):
    # the lift expert on lift and on door: it lifts, and it never turns the lever (door runs to its horizon)
    assert main(["eval", "expert:lift", "--task", "lift,door", "--episodes", "2", "--json-out", str(tmp_path / "two.json")]) == 0
    out = capsys.readouterr().out
    figures = json.loads((tmp_path / "two.json").read_text())
    assert list(figures["tasks"]) == ["lift", "door"]
    assert [figures["tasks"][t]["successes"] for t in ("lift", "door")] == [2, 0]
    assert figures["average"]["successes"] == 2 and figures["average"]["episodes"] == 4 and figures["average"]["success_rate"] == 0.5
    assert figures["average"]["success_ci95"] == pytest.approx(list(wilson_interval(2, 4)))
    assert figures["weakest"] == {"task": "door", "success_rate": 0.0}
    assert "average over 2 tasks (val seeds): success 2/4 = 50.0%" in out and "weakest door 0.0%" in out
    assert main(["eval", "expert:lift", "--task", "lift,cann"]) == 1
    assert "cann is not a simulated task" in capsys.readouterr().err
    assert main(["eval", "expert:lift", "--task", "all"]) == 1  # an expert names no tasks of its own
    assert "names no tasks of its own" in capsys.readouterr().err
    assert eval_tasks("all", Clockwork(instructions={"square": "fit the nut", "can": "pick the can"})) == ["can", "square"]
