"""`dp collect` end to end: worker processes, a real store, resume after SIGKILL, teleop, `dp show`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
import yaml

from dp.cli import main
from dp.collect.collector import collect
from dp.collect.teleop import TeleopSource
from dp.data.store import EpisodeStore
from dp.errors import DpError
from dp.sim.experts import make_expert
from dp.sim.rollout import run_episode, seed_for
from dp.sim.tasks import get_task

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out

REPO = Path(__file__).resolve().parents[1]
LOWDIM = {"robot0_eef_pos": [3], "robot0_eef_quat": [4], "robot0_gripper_qpos": [2], "object": [10], "action": [7]}


@pytest.fixture(scope="module")
def camera_store(tmp_path_factory):
    """Two lift episodes with both cameras, collected by two spawned workers through the CLI."""
    out = tmp_path_factory.mktemp("collect") / "lift.zarr"
    code = main(["collect", "--task", "lift", "--episodes", "2", "--out", str(out), "--workers", "2",
                 "--cameras", "agentview,robot0_eye_in_hand", "--image-size", "48", "--seed", "7"])
    assert code == 0
    return out


def test_collect_with_two_workers_and_cameras_makes_a_store_dp_info_reads(camera_store, capsys):
    capsys.readouterr()
    assert main(["info", str(camera_store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    text = json.dumps(info)
    assert '"episodes": 2' in text and "lift the cube" in text
    with EpisodeStore.open(camera_store) as store:
        assert len(store) == 2
        assert store.control_freq == 20.0 and store.robot == "panda" and store.discrete_dims == {"action": [6]}
        assert store.roles == {
            "lowdim": ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"],
            "image": ["agentview_image", "robot0_eye_in_hand_image"],
            "action": ["action"],
        }
        for key, shape in LOWDIM.items():
            arr = store.array(key)
            assert list(arr.shape[1:]) == shape and arr.dtype == np.float32, key
        for key in ("agentview_image", "robot0_eye_in_hand_image"):
            assert store.array(key).shape[1:] == (48, 48, 3) and store.array(key).dtype == np.uint8
        metas = [store.episode_meta(i) for i in range(2)]
        assert {m["task"] for m in metas} == {"lift"} and all(m["success"] for m in metas)
        assert all(m["source"] == "expert" and m["instruction"] == "lift the cube" for m in metas)
        assert sorted(m["attempt"] for m in metas) == [0, 1]
        assert sorted(m["seed"] for m in metas) == sorted(seed_for(7, k, "collect") for k in range(2))
        # the stored actions replay the episode: the expert, reseeded, acts the same on the stored observations
        ep = store.get_episode(0)
        expert = make_expert("lift")
        expert.seed(metas[0]["seed"])
        expert.reset()
        obs0 = {k: ep[k][0] for k in ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")}
        np.testing.assert_array_equal(expert.select_action(obs0), ep["action"][0])


def test_rerun_resumes_and_refuses_a_different_layout(camera_store):
    with pytest.raises(DpError, match="same --cameras"):
        collect("lift", 4, camera_store, cameras=[], progress=False)
    summary = collect("lift", 2, camera_store, cameras=["agentview", "robot0_eye_in_hand"], image_size=48, seed=7, progress=False)
    assert summary.added == 0 and summary.attempts == 0 and summary.stored == 2


def test_dp_show_writes_a_contact_sheet_and_a_video(camera_store, tmp_path, capsys):
    with EpisodeStore.open(camera_store) as store:
        length = store.episode_bounds(1)[1] - store.episode_bounds(1)[0]
    assert main(["show", str(camera_store), "--episode", "1", "--out", str(tmp_path / "sheet.png")]) == 0
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet is not None and sheet.shape[1] == 8 * 128 and sheet.shape[0] > 2 * 128
    assert main(["show", str(camera_store), "--episode", "1", "--out", str(tmp_path / "ep.mp4")]) == 0
    video = cv2.VideoCapture(str(tmp_path / "ep.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == length
    ok, frame = video.read()
    assert ok and frame.shape[1] == 2 * 256
    assert main(["show", str(camera_store), "--episode", "9", "--out", str(tmp_path / "x.png")]) == 1
    assert "no episode 9" in capsys.readouterr().err


def test_sigkill_mid_collection_keeps_complete_episodes_and_rerun_completes(tmp_path):
    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "dp", "collect", "--task", "lift", "--episodes", "5", "--out", str(out), "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_episodes(out, proc, 1)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, alive = psutil.wait_procs(workers, timeout=15)  # orphaned workers notice and leave
    assert not alive, f"workers still running after the parent was killed: {alive}"
    with EpisodeStore.open(out, mode="a") as store:  # drops a torn tail, if the kill left one
        survived = len(store)
        assert 1 <= survived < 5
        for i in range(survived):
            ep = store.get_episode(i)
            assert len({len(v) for v in ep.values()}) == 1 and store.episode_meta(i)["success"]
    summary = collect("lift", 5, out, workers=1, progress=False)
    assert summary.added == 5 - survived
    with EpisodeStore.open(out) as store:
        metas = [store.episode_meta(i) for i in range(len(store))]
    assert len(metas) == 5
    assert len({m["seed"] for m in metas}) == 5  # resuming never repeats a seed
    assert min(m["attempt"] for m in metas[survived:]) > max(m["attempt"] for m in metas[:survived])


def test_ctrl_c_stops_workers_and_keeps_finished_episodes(tmp_path):
    out = tmp_path / "interrupted.zarr"
    cmd = [sys.executable, "-m", "dp", "collect", "--task", "lift", "--episodes", "20", "--out", str(out), "--workers", "2"]
    # as from a terminal: Ctrl-C at its default disposition, whatever an earlier test left in this worker to inherit
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_episodes(out, proc, 1)
        workers = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and b"interrupted" in err
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    with EpisodeStore.open(out, mode="a") as store:
        assert 1 <= len(store) < 20 and all(store.meta_column("success"))


def _wait_for_episodes(out: Path, proc: subprocess.Popen, n: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (out / "meta" / "episode_ends" / "zarr.json").exists():  # the store is created group by group
            with EpisodeStore.open(out) as store:
                if len(store) >= n:
                    return
        assert proc.poll() is None, "collect ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError(f"no {n} episodes in {out} after 120 s")


class ScriptedDevice:
    """A stand-in for a robosuite input device: plays the lift expert through the device interface,
    or asks for a reset after ``reset_after`` steps."""

    def __init__(self, env, reset_after: int | None = None):
        self.env = env
        self.expert = make_expert("lift", seed=1)
        self.reset_after = reset_after
        self.steps = 0

    def start_control(self):
        self.expert.reset()
        self.steps = 0

    def input2action(self):
        self.steps += 1
        if self.reset_after is not None and self.steps > self.reset_after:
            return None
        action = self.expert.select_action(self.env.observation())
        return {"right_delta": action[:6], "right_abs": np.zeros(6), "right_gripper": action[6:]}


def test_teleop_source_collects_through_the_device_interface(tmp_path):
    out = tmp_path / "teleop.zarr"
    summary = collect("lift", 1, out, source=lambda env: TeleopSource(ScriptedDevice(env), env), source_name="teleop",
                      success_hold=5, progress=False)
    assert summary.added == 1 and summary.successes == 1
    short = collect("lift", 2, out, source=lambda env: TeleopSource(ScriptedDevice(env, reset_after=6), env),
                    source_name="teleop", keep_failures=True, progress=False)
    assert short.added == 1
    with EpisodeStore.open(out) as store:
        assert [store.episode_meta(i)["source"] for i in range(2)] == ["teleop", "teleop"]
        assert store.episode_meta(0)["success"] and not store.episode_meta(1)["success"]
        assert store.episode_bounds(1)[1] - store.episode_bounds(1)[0] == 6  # the reset ended the episode


def test_teleop_without_a_display_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code = main(["collect", "--task", "lift", "--episodes", "1", "--out", str(tmp_path / "t.zarr"), "--teleop", "keyboard"])
    assert code == 1
    assert "needs a display" in capsys.readouterr().err
    assert not (tmp_path / "t.zarr").exists()


def test_bad_flags_are_clear_errors(tmp_path, capsys):
    assert main(["collect", "--task", "pour", "--episodes", "1", "--out", str(tmp_path / "a.zarr")]) == 1
    assert "known tasks: lift" in capsys.readouterr().err
    assert main(["collect", "--task", "lift", "--episodes", "1", "--out", str(tmp_path / "b.zarr"), "--cameras", "top"]) == 1
    assert "unknown camera" in capsys.readouterr().err
    assert main(["collect", "--task", "pusht", "--episodes", "1", "--out", str(tmp_path / "c.zarr")]) == 1
    assert "task 'pusht' has no scripted expert" in capsys.readouterr().err and not (tmp_path / "c.zarr").exists()
    assert main(["collect", "--task", "can", "--episodes", "1", "--out", str(tmp_path / "d.zarr"), "--release-slips", "1.5"]) == 1
    assert "--release-slips must be a share" in capsys.readouterr().err and not (tmp_path / "d.zarr").exists()


def test_release_slips_record_the_experts_open_command(tmp_path):
    """DART-style slips: the hand re-closes at the release, but the store keeps what the expert meant (open),
    so the recorded gripper closes once (the grasp) and opens once; the expert recovers and succeeds."""
    env = get_task("can").make_env()
    expert = make_expert("can", release_slips=1.0)
    executed, waypoints = [], []

    class Watched:  # the expert, with what it executes and where it is in its plan kept aside
        recorded_action = property(lambda self: expert.recorded_action)
        seed, reset = expert.seed, expert.reset

        def select_action(self, obs):
            waypoints.append(expert.waypoint_name)
            executed.append(expert.select_action(obs))
            return executed[-1]

    try:
        ep = run_episode(env, Watched(), seed_for(0, 3, "collect"))  # this seed slips after 3 open steps, for 6 steps
    finally:
        env.close()
    done, recorded = np.stack(executed)[:, 6], ep.data["action"][:, 6]
    slipped = np.flatnonzero(done != recorded)
    assert ep.success
    np.testing.assert_array_equal(slipped, np.arange(6) + slipped[0])
    assert (recorded[slipped] == -1.0).all()
    assert waypoints[slipped[0] - 3: slipped[-1] + 9] == ["release"] * 17  # 3 open, 6 slipped, then 8 open again in place
    assert int((np.diff(recorded) != 0).sum()) == 2 and int((np.diff(done) != 0).sum()) == 4  # open-close-open vs + a slip
    out = tmp_path / "slips.zarr"
    assert main(["collect", "--task", "can", "--episodes", "1", "--out", str(out), "--release-slips", "1.0"]) == 0
    stored = EpisodeStore.open(out).get_episode(0)["action"][:, 6]
    assert int((np.diff(stored) != 0).sum()) == 2


def test_intended_labels_record_the_noise_free_command(tmp_path, capsys):
    """DART proper: the expert executes its command plus exploration noise, the store keeps the command;
    with the default labels it keeps what ran."""
    spec = get_task("lift")
    runs = {}
    for labels in ("executed", "intended"):
        expert, executed = make_expert("lift", labels=labels), []

        class Watched:  # the expert, with what it executes kept aside
            recorded_action = property(lambda self, e=expert: e.recorded_action)
            seed, reset = expert.seed, expert.reset

            def select_action(self, obs, e=expert, out=executed):
                out.append(e.select_action(obs))
                return out[-1]

        env = spec.make_env()
        try:
            ep = run_episode(env, Watched(), seed_for(0, 1, "collect"))
        finally:
            env.close()
        assert ep.success
        runs[labels] = np.stack(executed), ep.data["action"]
    done, kept = runs["executed"]
    np.testing.assert_array_equal(kept, done)  # executed labels: what ran
    done, kept = runs["intended"]
    noise = done[:, :6] - kept[:, :6]
    inside = np.abs(done[:, :6]) < 1.0  # steps the clip to the action range did not touch
    assert 0.04 < noise[inside].std() < 0.06 and abs(noise[inside].mean()) < 0.01  # the exploration noise (std 0.05) is out
    np.testing.assert_array_equal(kept[:, 6], done[:, 6])  # the gripper carries no noise
    assert np.abs(np.diff(kept[:, :3], axis=0)).mean() < np.abs(np.diff(done[:, :3], axis=0)).mean() / 1.5  # smoother labels
    out = tmp_path / "intended.zarr"
    assert main(["collect", "--task", "lift", "--episodes", "1", "--out", str(out), "--expert-labels", "intended"]) == 0
    assert EpisodeStore.open(out).episode_meta(0)["expert_labels"] == "intended"
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "expert labels intended (1)" in capsys.readouterr().out
    # appending executed labels to it would mix two kinds of demonstration: refused, the store kept as it was
    assert main(["collect", "--task", "lift", "--episodes", "2", "--out", str(out)]) == 1
    assert "collected with expert_labels=intended; this run asks expert_labels=executed" in capsys.readouterr().err
    assert len(EpisodeStore.open(out)) == 1
    with pytest.raises(DpError, match="expert labels must be one of executed, intended"):
        make_expert("lift", labels="clean")


def test_success_hold_records_the_motion_that_completes_the_task(tmp_path, capsys):
    """By default an episode ends at the first solved step, when the lifted cube has barely risen; with
    --success-hold N the same start records N more steps of the expert completing the lift."""
    stores = {}
    for hold in (0, 8):
        out = tmp_path / f"hold{hold}.zarr"
        assert main(["collect", "--task", "lift", "--episodes", "1", "--out", str(out), "--success-hold", str(hold)]) == 0
        stores[hold] = EpisodeStore.open(out)
    short, held = stores[0].get_episode(0), stores[8].get_episode(0)
    n = len(short["action"])
    assert len(held["action"]) == n + 8
    np.testing.assert_allclose(held["action"][:n], short["action"], atol=1e-6)  # the same start, the same expert
    rise = lambda ep: ep["object"][-1, 2] - ep["object"][0, 2]  # the cube's height at the last frame above the first
    # robosuite's lift is solved once the cube's centre is 2 cm above its rest: the short episode stops just below
    # that, the held one records the cube carried well past it
    assert rise(short) < 0.02 and rise(held) > 0.04
    assert (held["action"][n:, 2] > 0).all() and (held["action"][n:, 6] == 1.0).all()  # still lifting, still closed
    assert stores[8].episode_meta(0)["success_hold"] == 8
    capsys.readouterr()
    assert main(["info", str(tmp_path / "hold8.zarr")]) == 0
    assert "success hold 8 (1)" in capsys.readouterr().out
    # a longer tail is the same kind of demonstration: a store takes episodes of either, and counts them
    assert main(["collect", "--task", "lift", "--episodes", "2", "--out", str(tmp_path / "hold8.zarr")]) == 0
    assert EpisodeStore.open(tmp_path / "hold8.zarr").episode_meta(1)["success_hold"] == 0
    assert main(["collect", "--task", "lift", "--episodes", "1", "--out", str(tmp_path / "bad.zarr"), "--success-hold", "-1"]) == 1
    assert "--success-hold must be >= 0, got -1" in capsys.readouterr().err and not (tmp_path / "bad.zarr").exists()


def test_robosuite_image_preset_trains_on_the_collected_cameras_and_refuses_frames_smaller_than_its_crop(camera_store, tmp_path, capsys):
    capsys.readouterr()
    # the preset crops 76 of 84-pixel frames: a store of 48-pixel frames is refused by name before training
    assert main(["train", "--data", str(camera_store), "--preset", "robosuite-image", "--out", str(tmp_path / "refused"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "model.aug_crop=76" in err and "agentview_image: 48x48" in err and "robot0_eye_in_hand_image: 48x48" in err
    assert not (tmp_path / "refused" / "model.safetensors").exists()
    run = tmp_path / "run"
    assert main(["train", "--data", str(camera_store), "--preset", "robosuite-image", "--out", str(run), "--no-progress",
                 "model.aug_crop=40", "model.d_model=32", "model.n_layers=1", "model.expert_hidden=32", "model.vision_channels=[8,8,8]",
                 "train.steps=2", "train.val_every=2", "train.ckpt_every=2", "data.val_fraction=0.5"]) == 0
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert data["lowdim_keys"] == ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]  # no object state
    assert data["image_keys"] == ["agentview_image", "robot0_eye_in_hand_image"]
