"""Per-task re-planning intervals (``data.task_action_steps``): a multitask policy executes as many
actions of each chunk as its goal's task wants, in torch, in its ONNX export and in the node."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from dp.cli_args import replan_interval
from dp.config import build_config
from dp.data.normalize import Normalizer
from dp.errors import DpError
from dp.export.onnx_export import export_policy
from dp.infer import OnnxPolicy, Policy
from dp.infer.load import load_policy
from dp.models.diffusion_policy import DiffusionPolicy
from dp.testing.clockwork import Clockwork

H = 10
LOWDIM = {"robot0_eef_pos": [3], "object": [5]}
INSTRUCTIONS = {"can": "pick the can", "square": "fit the square nut"}


def clockwork(table: dict[str, int] | None) -> Clockwork:
    """A two-task runtime (default interval 4, chunks of 10) whose chunk from observation t is ``100 t + k``."""
    return Clockwork(every=4, horizon=H, instructions=INSTRUCTIONS, table=table)


def test_each_task_re_plans_at_its_own_interval_and_the_others_at_the_policys():
    policy = clockwork({"can": 8})
    policy.reset("can")
    assert policy.n_action_steps == 8 and policy.run(10) == [0, 1, 2, 3, 4, 5, 6, 7, 800, 801]
    policy.reset("fit the square nut")  # an instruction names its task
    assert policy.n_action_steps == 4 and policy.run(6) == [0, 1, 2, 3, 400, 401]
    policy.reset("pick the can")
    assert policy.run(9)[-1] == 800
    assert clockwork({}).interval_for("can") == 4  # no table: one interval for every task


def test_the_sampling_an_evaluation_records_names_each_tasks_interval():
    policy = clockwork({"can": 8})
    assert policy.sampling("can") == {"replan_every": 8, "rti": False}  # a runtime without a diffusion sampler names none
    assert policy.sampling("fit the square nut")["replan_every"] == 4 and policy.sampling()["replan_every"] == 4
    assert clockwork({}).sampling("can")["replan_every"] == 4


def test_the_recorded_sampling_names_the_switches_that_change_the_actions():
    policy = clockwork({})
    policy.use_temporal_ensemble(0.01)
    policy.use_discrete_vote(3)
    assert policy.sampling() == {"replan_every": 4, "rti": False, "ensemble": 0.01, "vote": 3}
    policy.use_temporal_ensemble(None)
    policy.use_discrete_vote(1)  # one voter is no vote
    policy.use_plan_ahead(2)
    assert policy.sampling() == {"replan_every": 4, "rti": False, "plan_ahead": 2}


def test_a_lead_must_fit_every_tasks_interval_and_a_switch_shortens_one_set_for_an_episode():
    policy = clockwork({"can": 8})
    with pytest.raises(DpError, match=r"in \[1, 2\] \(the re-planning interval 8"):
        policy.use_plan_ahead(3)  # square's 4 leaves room for 4, can's 8 for 2 of a 10-step chunk
    policy.reset("square")
    policy.use_plan_ahead(4, every=4)  # the node's choice for this episode
    policy.reset("can")
    assert (policy.n_action_steps, policy.plan_ahead_lead) == (8, 2)
    policy.use_plan_ahead(2)
    other = Clockwork(every=8, horizon=H, instructions=INSTRUCTIONS, table={"can": 4})
    other.reset("can")
    with pytest.raises(DpError, match=r"in \[1, 2\] \(the re-planning interval 8"):
        other.use_plan_ahead(3)  # in a can episode, checked against square's 8 too: its next episode may be square's
    assert policy.run(10) == [0, 1, 2, 3, 4, 5, 6, 7, 602, 603]  # planned from step 6, used from 2 steps in


@pytest.mark.parametrize("table, match", [({"cann": 8}, "'cann', not a task of this policy"), ({"can": 0}, "in \\[1, 10\\]"),
                                          ({"can": 11}, "in \\[1, 10\\]"), ({"can": 2.5}, "whole numbers"), ({"can": True}, "whole numbers")])
def test_bad_tables_are_refused_naming_what_is_wrong(table, match):
    with pytest.raises(DpError, match=match):
        clockwork(table)


def test_the_command_line_takes_one_interval_or_a_table():
    assert replan_interval("8") == 8
    assert replan_interval("can=8, square=4") == {"can": 8, "square": 4}
    for text in ("can=x", "can", "=8", "can=8=2", ",", "can=8,can=4"):
        with pytest.raises(argparse.ArgumentTypeError, match="TASK=N"):
            replan_interval(text)


def random_policy(**kwargs) -> Policy:
    """A tiny two-task torch Policy (task goals) whose config stores can's interval: 2 of an 8-step chunk."""
    torch.manual_seed(0)
    cfg = build_config("tiny", ["model.goal=task", "data.obs_horizon=2", "data.action_horizon=8", "data.n_action_steps=5",
                                "data.task_action_steps={can: 2}"])
    cfg.data.lowdim_keys = list(LOWDIM)
    cfg.data.shapes = {k: list(v) for k, v in LOWDIM.items()}
    cfg.data.action_dim = 4
    cfg.vocab.tasks, cfg.vocab.instructions = sorted(INSTRUCTIONS), dict(INSTRUCTIONS)
    model = DiffusionPolicy(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stats = {"robot0_eef_pos": {"min": -np.ones(3), "max": np.ones(3)}, "object": {"min": -np.ones(5), "max": np.ones(5)},
             "action": {"min": np.array([-0.5, -1, -2, -1]), "max": np.array([0.5, 1, 0, 1])}}
    return Policy(model, Normalizer(stats, {"action": [3]}), seed=3, **kwargs)


def actions(policy, task: str, steps: int = 7) -> np.ndarray:
    rng = np.random.default_rng(5)
    policy.seed(3)
    policy.reset(task)
    return np.stack([policy.select_action({k: rng.uniform(-1, 1, v).astype(np.float32) for k, v in LOWDIM.items()})
                     for _ in range(steps)])


def test_torch_and_onnx_act_each_tasks_stored_interval_as_a_policy_with_that_interval(tmp_path):
    policy = random_policy()
    assert policy.task_action_steps == {"can": 2}
    for task, every in (("can", 2), ("square", 5)):
        np.testing.assert_array_equal(actions(policy, task), actions(random_policy(n_action_steps=every), task))
    assert not np.allclose(actions(policy, "can"), actions(random_policy(n_action_steps=5), "can"))  # the interval matters
    assert random_policy(n_action_steps=3).task_action_steps == {}  # one interval given: every task runs it
    export_policy(policy, tmp_path / "export", control_freq=20.0, source="test")
    spec = yaml.safe_load((tmp_path / "export" / "policy.yaml").read_text())
    assert spec["action"]["n_action_steps"] == 5 and spec["action"]["task_n_action_steps"] == {"can": 2}
    exported = OnnxPolicy.load(tmp_path / "export", seed=3)
    for task in INSTRUCTIONS:
        np.testing.assert_allclose(actions(exported, task), actions(policy, task), atol=1e-4)
    assert load_policy(str(tmp_path / "export"), replan_every={"square": 3}).task_action_steps == {"square": 3}
    assert load_policy(str(tmp_path / "export"), replan_every=3).task_action_steps == {}
    # RTI keeps its own interval (chosen for the warm start), as it does over n_action_steps, unless a table is given
    assert random_policy(rti=True).task_action_steps == {} and OnnxPolicy.load(tmp_path / "export", rti=True).task_action_steps == {}
    assert load_policy(str(tmp_path / "export"), rti=True, replan_every={"can": 2}).task_action_steps == {"can": 2}


def test_the_node_gives_each_episode_its_tasks_interval_before_choosing_the_lead():
    from dp.deploy.node import InferenceNode

    policy = clockwork({"can": 8})
    node = InferenceNode(policy, SimpleNamespace(), instruction="can", episodes=0, plan_ahead="auto")
    node.info = SimpleNamespace(seed=0, control_hz=20.0, instruction=None)
    node._prime = lambda s: None  # no controller State to observe here: the lead is chosen from no timed plan
    for episode, (task, every) in enumerate((("can", 8), ("square", 4), ("can", 8))):
        node.instruction = task
        node._start_episode(SimpleNamespace(episode=episode, tick=0))
        assert (policy.n_action_steps, policy.plan_ahead_lead) == (every, 2)
    assert node.report.replan_every == [8, 4, 8]


def test_training_refuses_a_table_naming_a_task_it_does_not_have(tmp_path):
    from dp.testing.reach_store import make_store
    from dp.train.trainer import Trainer

    stores = [str(make_store(tmp_path / f"{t}.zarr", episodes=2, length=20, tasks=(t,), seed=i)) for i, t in enumerate(("reach", "retreat"))]
    with pytest.raises(DpError, match="'cann', not a task of this policy \\(its tasks: reach, retreat\\)"):
        Trainer(build_config("tiny", ["data.val_fraction=0", "data.task_action_steps={cann: 8}"]), stores, tmp_path / "run",
                resume=False, progress=False)
    trainer = Trainer(build_config("tiny", ["data.val_fraction=0", "data.task_action_steps={retreat: 2}"]), stores, tmp_path / "ok",
                      resume=False, progress=False)
    assert trainer.cfg.data.task_action_steps == {"retreat": 2}
