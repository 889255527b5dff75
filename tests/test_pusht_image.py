"""Image Push-T through every path: a policy trained on Diffusion Policy's 96x96 views, evaluated from
the pixels gym-pusht renders in torch and ONNX (+ RTI), and the errors an image policy gives (a store
without the image key: tests/test_pusht.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("gym_pusht", reason='Push-T tests need the optional extra: pip install -e ".[pusht]"')

from dp.cli import main  # noqa: E402
from dp.errors import DpError  # noqa: E402
from dp.infer import OnnxPolicy, Policy  # noqa: E402
from dp.sim.rollout import seed_for  # noqa: E402
from dp.sim.tasks import get_task  # noqa: E402

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out


@pytest.fixture(scope="module")
def exported(pusht_image_export):
    return pusht_image_export


def _eval(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["eval", *argv, "--task", "pusht", "--episodes", "2", "--split", "val", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_an_image_policy_runs_from_pixels_in_torch_onnx_and_onnx_rti(pusht_image_run, exported, capsys):
    torch_figures = _eval(capsys, str(pusht_image_run))
    onnx_figures = _eval(capsys, str(exported))
    rti_figures = _eval(capsys, str(exported), "--rti")
    seeds = [seed_for(0, i, "val") for i in range(2)]
    for figures in (torch_figures, onnx_figures, rti_figures):
        assert figures["seeds"] == seeds and figures["episodes"] == 2 and len(figures["scores"]) == 2, figures
    # each row says what sampled it: the export carries the checkpoint's sampler, RTI its own interval
    assert torch_figures["sampling"]["replan_every"] == 8 and torch_figures["sampling"]["rti"] is False
    assert onnx_figures["sampling"] == torch_figures["sampling"]
    assert rti_figures["sampling"] == {**torch_figures["sampling"], "replan_every": 4, "rti": True}
    # the same seeds, the same noise stream: the export acts as the checkpoint does, step for step
    np.testing.assert_allclose(onnx_figures["scores"], torch_figures["scores"], atol=0.02)


def test_the_export_sees_the_centre_crop_torch_sees(pusht_image_run, exported):
    """The crop and the resize to 64 are inside the graph: torch and ONNX give the same chunk for one view."""
    torch_policy, onnx_policy = Policy.load(pusht_image_run), OnnxPolicy.load(exported)
    env = get_task("pusht").make_env(["top"])
    obs = env.reset(3)
    env.close()
    noise = np.random.default_rng(0).standard_normal((torch_policy.action_horizon, 2)).astype(np.float32)
    want = torch_policy.predict_chunk(obs, noise=noise)
    np.testing.assert_allclose(onnx_policy.predict_chunk(obs, noise=noise), want, atol=1e-2 * np.abs(want).max())


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_a_frame_of_the_wrong_size_or_channels_is_refused_by_name(pusht_image_run, exported, runtime):
    policy = Policy.load(pusht_image_run) if runtime == "torch" else OnnxPolicy.load(exported)
    obs = {"agent_pos": np.array([200.0, 300.0], np.float32), "img": np.zeros((84, 84, 3), np.uint8)}
    with pytest.raises(DpError, match=r"observation 'img': expected a uint8 image of shape \(96, 96, 3\), got uint8 \(84, 84, 3\)"):
        policy.select_action(obs)
    obs["img"] = np.zeros((96, 96, 4), np.uint8)
    with pytest.raises(DpError, match=r"'img'.*\(96, 96, 3\).*\(96, 96, 4\)"):
        policy.select_action(obs)

