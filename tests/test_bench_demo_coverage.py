"""bench/pusht_demo_coverage.py: a stored Push-T state placed in gym-pusht gives the coverage the
environment itself reported for it, and renders the stored view again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.pusht_demo_coverage import place  # noqa: E402
from dp.sim.pusht import import_gym_pusht  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_placing_a_state_gives_the_coverage_the_environment_reported_and_the_reset_order_does_not():
    gym = import_gym_pusht()
    live = gym.make("gym_pusht/PushT-v0", obs_type="state").unwrapped
    probe = gym.make("gym_pusht/PushT-v0", obs_type="state").unwrapped
    live.reset(seed=5)
    probe.reset(seed=0)
    rng = np.random.default_rng(0)
    target = np.array([256.0, 256.0])
    for _ in range(60):  # push towards the centre with some noise, so that the block moves and turns
        _, _, _, _, info = live.step(np.clip(target + rng.normal(0, 60, 2), 0, 512))
        state = np.array([*info["pos_agent"], *info["block_pose"]])
        place(probe, state)
        assert probe._get_coverage() == pytest.approx(info["coverage"], abs=1e-6)
    # the target's own pose covers it whole; gym-pusht's reset sets the position before the angle, which moves a
    # turned block off it
    goal = np.array([100.0, 100.0, 256.0, 256.0, np.pi / 4])
    place(probe, goal)
    assert probe._get_coverage() == pytest.approx(1.0, abs=1e-6)
    probe.reset(options={"reset_to_state": goal})
    assert probe._get_coverage() < 0.5


@pytest.mark.slow
def test_the_command_reads_a_store_and_renders_its_views_again(pusht_image_run, tmp_path):
    store = pusht_image_run.parent / "pusht_img.zarr"
    out = tmp_path / "cov.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "pusht_demo_coverage.py"), "--store", str(store), "--frames-checked", "20",
                    "--no-progress", "--json-out", str(out)], check=True, capture_output=True)
    st = json.loads(out.read_text())["stores"][0]
    assert st["episodes"] == 3 and st["sources"] == ["dp-zarr"]
    q = st["max_coverage_quantiles"]
    assert 0.0 <= q["0.0"] <= q["0.5"] <= q["1.0"] <= 1.0
    assert st["placement_check"]["frames"] == 20 and st["placement_check"]["mean_abs_pixel_diff"] < 0.5  # the stored views, again
