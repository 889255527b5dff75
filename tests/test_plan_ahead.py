"""Plan-ahead in the policy runtime (issue 35): each chunk is sampled in a worker thread from the
observation ``lead`` steps before the current chunk runs out, used from ``lead`` steps in; the RTI
guess is the chunk in flight; a late plan is waited for at the step it is due, never skipped."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dp.errors import DpError
from dp.testing.clockwork import Clockwork

H, EVERY = 10, 4


def test_without_plan_ahead_a_chunk_is_sampled_when_the_queue_runs_out():
    assert Clockwork().run(9) == [0, 1, 2, 3, 400, 401, 402, 403, 800]


@pytest.mark.parametrize("lead", [1, 2, 4])
def test_each_plan_comes_from_the_observation_lead_steps_before_it_is_used(lead):
    policy = Clockwork()
    policy.use_plan_ahead(lead)
    actions = policy.run(21)
    expected = []
    for t in range(21):  # the first chunk at once; then switches every EVERY steps, planned `lead` steps earlier
        planned = 0 if t < EVERY else (t // EVERY) * EVERY - lead
        expected.append(100 * planned + (t - planned))
    assert actions == expected
    assert any(name.startswith("plan-ahead") for name in policy.threads)


def test_a_late_plan_is_waited_for_at_its_step_and_the_steps_before_it_do_not_wait():
    policy = Clockwork()
    policy.use_plan_ahead(2)
    assert policy.run(2) == [0, 1]  # step 2 launches the next plan (2 actions left)
    policy.gate = threading.Event()
    acted = []
    thread = threading.Thread(target=lambda: [acted.append(float(policy.select_action({"x": np.array([t])})[0])) for t in (2, 3, 4)])
    thread.start()
    thread.join(2.0)  # steps 2 and 3 act from the queue while the plan is held back ...
    assert acted == [2, 3] and thread.is_alive()  # ... and step 4 waits for it
    policy.gate.set()
    thread.join(5.0)
    assert acted == [2, 3, 202] and policy.late_plans == 1


def test_the_chunk_past_its_re_planning_point_is_offered_as_a_look_ahead():
    policy = Clockwork()
    policy.use_plan_ahead(2)
    policy.run(5)  # step 4 switched to the plan from step 2: its actions 2..5 queued, 6..9 the tail
    np.testing.assert_array_equal(policy.pending_actions()[:, 0], [203, 204, 205])
    np.testing.assert_array_equal(policy.lookahead_actions()[:, 0], [206, 207, 208, 209])
    policy.reset()
    assert policy.lookahead_actions().shape == (0, 1)


def test_the_rti_guess_is_the_chunk_in_flight_advanced_to_the_plans_observation():
    policy = Clockwork(rti=True)
    policy.use_plan_ahead(2)
    policy.run(9)
    first, second, third = policy.guesses[:3]
    assert first is None  # the episode's first chunk: no previous one
    np.testing.assert_array_equal(second, [2, 3, 4, 5, 6, 7, 8, 9, 9, 9])  # chunk 0 advanced by 2 (planned at step 2)
    np.testing.assert_array_equal(third, [204, 205, 206, 207, 208, 209, 209, 209, 209, 209])  # chunk 2 advanced by 4


def test_reset_forgets_the_plan_in_flight():
    policy = Clockwork()
    policy.use_plan_ahead(3)
    policy.run(3)
    policy.reset()
    assert policy.run(2) == [0, 1]


def test_leads_the_chunk_cannot_cover_and_ensembling_are_refused():
    policy = Clockwork()
    with pytest.raises(DpError, match=r"plan-ahead lead must be .* in \[1, 4\]"):
        policy.use_plan_ahead(5)
    with pytest.raises(DpError, match="in \\[1, 4\\]"):
        policy.use_plan_ahead(0)
    policy.use_plan_ahead(2)
    with pytest.raises(DpError, match="do not combine"):
        policy.use_temporal_ensemble(0.01)
    policy.use_plan_ahead(None)
    policy.use_temporal_ensemble(0.01)
    with pytest.raises(DpError, match="do not combine"):
        policy.use_plan_ahead(2)


def test_the_node_plans_ahead_by_enough_steps_and_re_plans_sooner_when_the_chunk_is_short():
    from dp.deploy.node import plan_ahead_for

    assert plan_ahead_for([0.01] * 20, 0.1, 16, 8) == (1, 8, True)  # fast plans: one step ahead
    assert plan_ahead_for([0.15] * 20, 0.1, 16, 8) == (3, 8, True)  # 1.5 x 150 ms at 10 Hz
    assert plan_ahead_for([0.15] * 20, 0.05, 10, 8) == (5, 5, True)  # 20 Hz, chunk 10: re-plan every 5
    assert plan_ahead_for([0.15] * 20 + [5.0], 0.05, 10, 8) == (5, 5, True)  # one outlier is not the 95th percentile
    assert plan_ahead_for([0.5] * 20, 0.05, 10, 8) == (5, 5, False)  # 15 steps needed: half the chunk is the most
    assert plan_ahead_for([], 0.05, 10, 8) == (2, 8, True)  # no plan timed yet: 1.5 periods
