"""bench/sampler_choice.py: the choice rule and where the choice is stored (the evaluations are `dp eval`'s)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import best_row  # noqa: E402
from bench.sampler_choice import choose, interval_of, parse_setting, replan_intervals, write_choice  # noqa: E402
from dp.config import load_config  # noqa: E402
from dp.stats import wilson_interval  # noqa: E402


def row(setting: str, successes: int, score: float, n: int = 50) -> dict:
    values = parse_setting(setting)
    return {"setting": setting, **values, "replan_every": interval_of(setting), "passes_per_chunk": values["steps"], "successes": successes, "episodes": n,
            "success_rate": successes / n, "success_ci95": list(wilson_interval(successes, n)), "mean_score": score,
            "score_ci95": [score - 0.03, min(1.0, score + 0.03)]}


def test_the_cheapest_setting_inside_the_best_ones_interval_is_chosen():
    rows = [row("ddim:exponential:10", 40, 0.95), row("ddim:exponential:5", 25, 0.90), row("dpmpp2m:karras:5", 38, 0.94),
            row("dpmpp2m:exponential:3", 20, 0.85)]
    assert choose(rows, "pusht")["setting"] == "dpmpp2m:karras:5"  # 5 passes, inside 10-step DDIM's intervals
    assert choose(rows, "can")["setting"] == "dpmpp2m:karras:5"
    rows[2] = row("dpmpp2m:karras:5", 38, 0.85)  # its score falls outside the best score's interval
    assert choose(rows, "pusht")["setting"] == "ddim:exponential:10"
    assert choose(rows, "can")["setting"] == "dpmpp2m:karras:5"  # success alone still fits


def test_with_several_intervals_the_fewest_passes_per_executed_action_inside_the_interval_wins():
    rows = [row("ddim:exponential:10@4", 40, 0.95), row("ddim:exponential:5@4", 37, 0.95), row("ddim:exponential:10@8", 38, 0.95)]
    assert choose(rows, "can")["setting"] == "ddim:exponential:10@8"  # 1.25 passes an action, as 5@4, with more successes
    rows.append(row("ddim:exponential:5@8", 39, 0.95))
    assert choose(rows, "can")["setting"] == "ddim:exponential:5@8"  # 0.625 passes an action
    rows[-1] = row("ddim:exponential:5@8", 20, 0.95)  # outside the best row's interval: not a candidate
    assert choose(rows, "can")["setting"] == "ddim:exponential:10@8"


def test_intervals_parse_and_bad_ones_are_refused():
    assert parse_setting("ddim:fitted:10@8") == parse_setting("ddim:fitted:10")
    assert (interval_of("ddim:fitted:10@8"), interval_of("ddim:fitted:10")) == (8, None)
    assert (replan_intervals(None), replan_intervals("4"), replan_intervals("4,8")) == ([None], [4], [4, 8])
    for bad in ("0", "4,4", "4,x", ""):
        with pytest.raises(SystemExit, match="--replan-every"):
            replan_intervals(bad)
    with pytest.raises(SystemExit, match="after @"):
        interval_of("ddim:fitted:10@0")


def test_the_best_setting_ranks_score_first_on_pusht_and_success_first_elsewhere():
    rows = [row("ddim:exponential:10", 30, 0.95), row("ddim:exponential:20", 33, 0.94), row("dpmpp2m:karras:5", 20, 0.96)]
    assert best_row(rows, "pusht")["setting"] == "dpmpp2m:karras:5"
    assert best_row(rows, "can")["setting"] == "ddim:exponential:20"
    rows[2] = row("dpmpp2m:karras:5", 20, 0.95)  # a tie on score goes to success
    assert best_row(rows, "pusht")["setting"] == "ddim:exponential:10"
    tied = [row("ddim:karras:5", 20, 0.95), row("ddim:fitted:5", 20, 0.95)]  # a full tie goes to the earlier row
    assert best_row(tied, "pusht")["setting"] == best_row(tied, "can")["setting"] == "ddim:karras:5"
    unscored = [{"setting": "none", "success_rate": 0.5, "mean_score": None}, row("ddim:karras:5", 10, 0.5)]
    assert best_row(unscored, "pusht")["setting"] == "ddim:karras:5"  # a missing score counts as 0
    assert best_row(unscored, "can")["setting"] == "none"


def test_settings_parse_and_bad_ones_are_refused():
    assert parse_setting("dpmpp2m:fitted:4:0.01") == {"solver": "dpmpp2m", "schedule": "fitted", "steps": 4, "trim": 0.01}
    with pytest.raises(SystemExit, match="solver:schedule:steps"):
        parse_setting("dpmpp2m:5")


def test_the_choice_is_stored_in_the_checkpoint_config_without_touching_the_run_config(tmp_path):
    from dp.config import build_config, dump_config

    run_config = tmp_path / "config.yaml"
    run_config.write_text(dump_config(build_config("tiny")))
    ckpt = tmp_path / "step_1"
    ckpt.mkdir()
    (ckpt / "config.yaml").symlink_to(run_config)  # as a run's checkpoint may link it
    write_choice(ckpt, row("dpmpp2m:karras:5:0.001", 38, 0.94), "test note")
    cfg = load_config(ckpt / "config.yaml")
    assert (cfg.diffusion.solver, cfg.diffusion.schedule, cfg.diffusion.steps, cfg.diffusion.trim) == ("dpmpp2m", "karras", 5, 0.001)
    assert (ckpt / "config.yaml").read_text().startswith("# diffusion sampler chosen by bench/sampler_choice.py: test note")
    assert yaml.safe_load(run_config.read_text())["diffusion"]["solver"] == "ddim"  # the link's target is untouched
    assert cfg.data.n_action_steps == build_config("tiny").data.n_action_steps  # no interval named: the policy's own stays
    write_choice(ckpt, row("ddim:fitted:10@3", 40, 0.95), "with an interval")
    cfg = load_config(ckpt / "config.yaml")
    assert (cfg.diffusion.schedule, cfg.data.n_action_steps) == ("fitted", 3)


def test_warm_start_modes_parse_and_bad_ones_are_refused():
    from bench.warm_start import parse_mode

    assert parse_mode("full:10:4") == {"kind": "full", "steps": 10, "every": 4}
    assert parse_mode("rti:3:2.0:1:zero") == {"kind": "rti", "steps": 3, "sigma": 2.0, "every": 1, "guess": "zero"}
    for bad in ("rti:3:2.0", "rti:3:2.0:1:noise", "full:ten:4"):
        with pytest.raises(SystemExit, match="expected full:N:E"):
            parse_mode(bad)


@pytest.mark.slow
def test_chunk_latency_times_each_setting_and_fewer_passes_take_less_time(tmp_path, one_torch_thread):
    """The latency half of --test-episodes: one chunk per call with each sampler, measured in the same run."""
    from bench.sampler_choice import chunk_latency
    from dp.config import build_config
    from dp.models.checkpoint_files import resolve_checkpoint
    from dp.testing.reach_store import make_store
    from dp.train import trainer

    store = make_store(tmp_path / "s.zarr", episodes=2, length=12)
    trainer.train(build_config("tiny", ["train.steps=1"]), [str(store)], tmp_path / "run", progress=False)
    settings = ["ddim:exponential:10", "dpmpp2m:karras:2", "dpmpp2m:karras:2@2"]
    times = chunk_latency(resolve_checkpoint(tmp_path / "run"), settings, calls=30)
    assert set(times) == set(settings)
    assert all(t["calls"] == 30 and 0 < t["median_ms"] <= t["p99_ms"] for t in times.values())
    assert times["dpmpp2m:karras:2"]["median_ms"] < 0.7 * times["ddim:exponential:10"]["median_ms"]
    # per executed action: the chunk over the setting's interval, else the policy's own (the preset's)
    own = build_config("tiny", []).data.n_action_steps
    assert times["ddim:exponential:10"]["per_action_ms"] == pytest.approx(times["ddim:exponential:10"]["median_ms"] / own)
    assert times["dpmpp2m:karras:2@2"]["per_action_ms"] == pytest.approx(times["dpmpp2m:karras:2@2"]["median_ms"] / 2)
    # one interval for every setting (--replan-every 3): each chunk is spread over 3 actions
    times = chunk_latency(resolve_checkpoint(tmp_path / "run"), ["dpmpp2m:karras:2"], calls=5, replan_every=3)
    assert times["dpmpp2m:karras:2"]["per_action_ms"] == pytest.approx(times["dpmpp2m:karras:2"]["median_ms"] / 3)


@pytest.mark.slow
def test_each_setting_is_evaluated_from_a_checkpoint_that_loads_with_it(tmp_path, one_torch_thread):
    """The evaluation folder of a setting is a checkpoint of its own: loading it gives that setting's
    sampler, not the original checkpoint's (a folder of symlinks resolved back to the original once)."""
    from bench.sampler_choice import evaluation_folder
    from dp.config import build_config
    from dp.infer import Policy
    from dp.models.checkpoint_files import resolve_checkpoint
    from dp.testing.reach_store import make_store
    from dp.train import trainer

    store = make_store(tmp_path / "s.zarr", episodes=2, length=12)
    trainer.train(build_config("tiny", ["train.steps=1"]), [str(store)], tmp_path / "run", progress=False)
    ckpt = resolve_checkpoint(tmp_path / "run")
    folder = evaluation_folder(ckpt, "dpmpp2m:karras:4:0.01", tmp_path / "work", "val")
    assert resolve_checkpoint(folder) == folder
    policy = Policy.load(folder)
    d = policy.cfg.diffusion
    assert (policy.steps, d.solver, d.schedule, d.trim) == (4, "dpmpp2m", "karras", 0.01)
    assert Policy.load(ckpt).steps == build_config("tiny").diffusion.steps  # the original is untouched
