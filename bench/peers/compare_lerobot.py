"""dp and LeRobot side by side on Push-T (state), same data, same machine, one run. Prints JSON and
writes (merges into) bench/results/peers.json.

LeRobot runs in its own venv (bench/peers/setup_lerobot.sh; LeRobot 0.4.4 pins torch<2.11), dp in
this one; every measurement is its own process with 1 thread (so its peak RSS is that phase's).

Data: Diffusion Policy's 206 Push-T demonstrations, imported for dp (`dp import dp-zarr --card
datasets/pusht_keypoints.yaml`) and converted for LeRobot with LeRobot's dataset API
(bench/peers/convert_pusht.py); both observe the agent position and the block's 9 keypoints.

Configurations:
- dp: the `pusht` preset (MoDE 4 x 256, 4 SwiGLU experts top-2; EDM, 10 sampler steps);
- LeRobot default: ``DiffusionConfig()`` (conv UNet 512/1024/2048, DDPM, 100 sampler steps);
- LeRobot matched: the same with ``down_dims=(80, 160, 320)``, about dp's size.

Parts (``--parts``, default ``speed``):
- ``speed``: training throughput (same batch, full data path, N timed steps after warm-up; wall
  and CPU seconds), latency per action chunk at batch 1 (median / p99 over ``--calls``: LeRobot's
  ``select_action`` at its default 100 steps (``--default-calls``, 5: ~16 CPU s each), dp torch, dp
  ONNX Runtime, dp ONNX Runtime + RTI at the export defaults and at Push-T's validated setting), peak
  RSS of each process;
- ``train``: dp's default and LeRobot at matched size trained at the same time, 1 thread each, for
  ``--budget-s`` seconds (LeRobot's default does about 11 CPU seconds a step and 15 CPU seconds a
  chunk at 100 sampler steps: too slow on this CPU to train or evaluate in a bounded run);
- ``eval``: both trained policies on the same test seeds of dp's Push-T task (gym-pusht, Diffusion
  Policy's protocol: max coverage over 300 steps, success at 0.95), at the same time, each starting
  no new episode after ``--eval-budget-s`` (LeRobot's 100 DDPM steps a chunk cost ~0.7 CPU s).

    nice -n 10 python bench/peers/compare_lerobot.py --parts speed
    nice -n 10 python bench/peers/compare_lerobot.py --parts train,eval --budget-s 1200 --eval-budget-s 1200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from dp.stats import wilson_interval  # noqa: E402
from dp.train.trainer import cpu_has_amx  # noqa: E402

MATCHED_DIMS = "80,160,320"
# the RTI settings chosen for Push-T on validation seeds (bench/results/success/pusht__onnx_rti.cmd)
PUSHT_RTI = ["--rti-steps", "3", "--rti-sigma", "2.0", "--rti-every", "8", "--first-steps", "10", "--first-sigma", "80"]
DEFAULT_VENV = Path(os.environ.get("DP_PEERS_LEROBOT_VENV", Path.home() / ".cache" / "dp-peers" / "lerobot"))
DEFAULT_WORK = Path(os.environ.get("DP_PEERS_WORK", Path.home() / ".cache" / "dp-peers" / "work"))
ENV_1THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}


def _env() -> dict[str, str]:
    return {**os.environ, **ENV_1THREAD}


def _json(stdout: str) -> dict:
    """A process's JSON: its whole stdout (`dp ... --json` may indent) or else its last line."""
    try:
        return json.loads(stdout)
    except ValueError:
        return json.loads(stdout.strip().splitlines()[-1])


def call(argv: list[str], what: str) -> dict:
    """Run one measurement process; its JSON output (SystemExit naming ``what`` if it fails)."""
    print(f"[peers] {what}", file=sys.stderr, flush=True)
    done = subprocess.run(argv, capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        raise SystemExit(f"error: {what} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return _json(done.stdout)


def start(argv: list[str], what: str) -> subprocess.Popen:
    print(f"[peers] {what} (started)", file=sys.stderr, flush=True)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def finish(proc: subprocess.Popen, what: str) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"error: {what} failed ({proc.returncode}): {err.strip()[-1500:]}")
    return _json(out)


class Sides:
    """The command lines of both sides."""

    def __init__(self, a):
        self.a, self.work = a, a.work
        self.lr = [str(a.lerobot_python), str(HERE / "lerobot_side.py")]
        self.dp = [sys.executable, str(HERE / "dp_side.py")]
        self.store = a.work / "pusht_kp.zarr"
        self.dataset = a.work / "lerobot_pusht_state"

    def prepare(self) -> dict:
        """The dp store and the LeRobot dataset, made once from the replay buffer."""
        self.work.mkdir(parents=True, exist_ok=True)
        made = {}
        if not (self.store / "meta").exists():
            shutil.rmtree(self.store, ignore_errors=True)
            call([sys.executable, "-m", "dp", "import", "dp-zarr", str(self.a.data), "--card", str(REPO / "datasets" / "pusht_keypoints.yaml"),
                  "--out", str(self.store), "--json", "--no-progress", "--workers", "1"], "dp import")
            made["dp_store"] = str(self.store)
        if not (self.dataset / "meta" / "info.json").exists():
            shutil.rmtree(self.dataset, ignore_errors=True)
            made["lerobot_dataset"] = call([*self.lr[:1], str(HERE / "convert_pusht.py"), str(self.a.data), "--out", str(self.dataset), "--no-images"],
                                           "LeRobot conversion")
        return made


def speed(s: Sides, a, keep) -> dict:
    """Sizes, throughput and latency; ``keep(result)`` is called after each measurement (nothing measured is lost)."""
    lr_root = ["--root", str(s.dataset)]
    run, onnx, onnx3 = s.work / "dp_latency_run", s.work / "dp_latency_onnx", s.work / "dp_latency_onnx_rti3"
    for path in (run, onnx, onnx3):
        shutil.rmtree(path, ignore_errors=True)
    steps = ["--batch", str(a.batch), "--steps", str(a.steps)]
    plan = [
        ("sizes", "dp_pusht", [*s.dp, "size", "--store", str(s.store)]),
        ("sizes", "lerobot_matched", [*s.lr, "size", *lr_root, "--down-dims", MATCHED_DIMS]),
        ("sizes", "lerobot_default", [*s.lr, "size", *lr_root]),
        ("throughput", "dp_pusht", [*s.dp, "throughput", "--store", str(s.store), *steps, "--save", str(run)]),
        ("throughput", "dp_pusht_fp32", [*s.dp, "throughput", "--store", str(s.store), *steps, "--override", "train.amp=false"]),
        ("throughput", "lerobot_matched", [*s.lr, "throughput", *lr_root, *steps, "--down-dims", MATCHED_DIMS]),
        ("export", "dp", [sys.executable, "-m", "dp", "export", str(run), "--out", str(onnx), "--json"]),
        ("latency", "dp_torch", [*s.dp, "latency", "--run", str(run), "--calls", str(a.calls)]),
        ("latency", "dp_onnx", [*s.dp, "latency", "--onnx", str(onnx), "--calls", str(a.calls)]),
        ("latency", "dp_onnx_rti", [*s.dp, "latency", "--onnx", str(onnx), "--rti", "--calls", str(a.calls)]),
        ("export", "dp_rti3", [sys.executable, "-m", "dp", "export", str(run), "--out", str(onnx3), "--json", *PUSHT_RTI]),
        ("latency", "dp_onnx_rti3", [*s.dp, "latency", "--onnx", str(onnx3), "--rti", "--calls", str(a.calls)]),
        ("latency", "lerobot_matched", [*s.lr, "latency", *lr_root, "--calls", str(a.calls), "--down-dims", MATCHED_DIMS]),
        ("throughput", "lerobot_default", [*s.lr, "throughput", *lr_root, "--batch", str(a.batch), "--steps", str(a.default_steps), "--warmup", "1"]),
        ("latency", "lerobot_default", [*s.lr, "latency", *lr_root, "--calls", str(a.default_calls), "--warmup", "1"]),
    ]
    res: dict = {"sizes": {}, "throughput": {}, "latency": {}}
    for group, name, argv in plan:
        value = call(argv, f"{group}: {name}")
        if group != "export":
            res[group][name] = value
            keep(res)
    tp, lat = res["throughput"], res["latency"]

    def ratio(x: float, y: float) -> float:
        return round(x / y, 2)

    res["ratios"] = {
        "train_samples_per_s_dp_vs_lerobot_matched": ratio(tp["dp_pusht"]["samples_per_s"], tp["lerobot_matched"]["samples_per_s"]),
        "train_samples_per_cpu_s_dp_vs_lerobot_matched": ratio(tp["dp_pusht"]["samples_per_cpu_s"], tp["lerobot_matched"]["samples_per_cpu_s"]),
        "train_samples_per_s_dp_fp32_vs_lerobot_matched": ratio(tp["dp_pusht_fp32"]["samples_per_s"], tp["lerobot_matched"]["samples_per_s"]),
        "train_samples_per_s_dp_vs_lerobot_default": ratio(tp["dp_pusht"]["samples_per_s"], tp["lerobot_default"]["samples_per_s"]),
        "train_samples_per_cpu_s_dp_vs_lerobot_default": ratio(tp["dp_pusht"]["samples_per_cpu_s"], tp["lerobot_default"]["samples_per_cpu_s"]),
        "chunk_median_lerobot_default_vs_dp_onnx_rti": ratio(lat["lerobot_default"]["median_ms"], lat["dp_onnx_rti"]["median_ms"]),
        "chunk_median_lerobot_matched_vs_dp_onnx_rti": ratio(lat["lerobot_matched"]["median_ms"], lat["dp_onnx_rti"]["median_ms"]),
        "chunk_median_lerobot_default_vs_dp_torch": ratio(lat["lerobot_default"]["median_ms"], lat["dp_torch"]["median_ms"]),
    }
    return res


def planned_steps(a, speed: dict | None) -> tuple[int, int]:
    """The LR schedules' lengths: the steps each tool would do in the budget on an idle core (the CPU
    seconds per step of the speed part, scaled to the batch size), unless given."""
    tp = (speed or {}).get("throughput") or {}
    if not (a.dp_steps and a.lerobot_steps) and not tp:
        raise SystemExit("error: run --parts speed first, or give --dp-steps and --lerobot-steps")

    def plan(key: str, batch: int) -> int:
        return int(a.budget_s / (tp[key]["cpu_s_per_step"] * batch / tp[key]["batch_size"]))

    return a.dp_steps or plan("dp_pusht", a.dp_batch), a.lerobot_steps or plan("lerobot_matched", a.lerobot_batch)


def train(s: Sides, a, speed: dict | None) -> dict:
    """dp (default) and LeRobot (matched size) at once, 1 thread each, the same wall-clock budget, each at
    its default batch size; a run stops at its planned steps (:func:`planned_steps`) or at the budget."""
    dp_steps, lerobot_steps = planned_steps(a, speed)
    runs = {"dp": s.work / "train_dp", "lerobot": s.work / "train_lerobot"}
    for path in runs.values():
        shutil.rmtree(path, ignore_errors=True)
    procs = {
        "dp": start([*s.dp, "train", "--store", str(s.store), "--batch", str(a.dp_batch), "--budget-s", str(a.budget_s),
                     "--steps-planned", str(dp_steps), "--out", str(runs["dp"])], "dp training"),
        "lerobot": start([*s.lr, "train", "--root", str(s.dataset), "--batch", str(a.lerobot_batch), "--budget-s", str(a.budget_s),
                          "--steps-planned", str(lerobot_steps), "--down-dims", MATCHED_DIMS, "--out", str(runs["lerobot"])],
                         "LeRobot (matched size) training"),
    }
    return {"budget_s": a.budget_s,
            **{name: {**finish(p, f"{name} training"), "run": runs[name].name} for name, p in procs.items()}}  # runs: inside --work


def summary(scores: list[float], successes: int) -> dict:
    """Success rate with its 95% Wilson interval, mean score with its 95% t-interval (as `dp eval`)."""
    from dp.stats import mean_interval

    n = len(scores)
    return {"episodes": n, "successes": successes, "success_rate": successes / n if n else None,
            "success_ci95": list(wilson_interval(successes, n)), "mean_score": sum(scores) / n if n else None,
            "score_ci95": list(mean_interval(scores))}


def evaluate(s: Sides, a) -> dict:
    """Both trained policies at once on the same test seeds of dp's Push-T task (dp through `dp eval`'s
    rollout, LeRobot through the same task code), each starting no new episode after ``--eval-budget-s``;
    also compared on the seeds both finished."""
    from dp.sim.rollout import seed_for

    seeds = ",".join(str(seed_for(0, i, "test")) for i in range(a.episodes))
    budget = ["--seeds", seeds, "--budget-s", str(a.eval_budget_s)]
    procs = {"dp": start([*s.dp, "eval", "--run", str(s.work / "train_dp"), *budget], "dp eval"),
             "lerobot": start([*s.lr, "eval", "--run", str(s.work / "train_lerobot"), *budget], "LeRobot eval")}
    runs = {name: finish(p, f"{name} eval") for name, p in procs.items()}
    common = min(len(r["episodes"]) for r in runs.values())
    out = {"seeds": f"dp.sim.rollout.seed_for(0, i, 'test') for i = 0..{a.episodes - 1} (`dp eval --split test`), in order", "common_episodes": common}
    for name, r in runs.items():
        eps = r["episodes"]
        out[name] = {**summary([e["score"] for e in eps], sum(e["success"] for e in eps)), "wall_s": r["wall_s"],
                     "sampler_steps": r["sampler_steps"], "stopped_by_budget": len(eps) < a.episodes, "peak_rss_mb": r["peak_rss_mb"],
                     "on_common_seeds": summary([e["score"] for e in eps[:common]], sum(e["success"] for e in eps[:common]))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="speed", help="comma-separated: speed, train, eval (default: speed)")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr",
                   help="Diffusion Policy's Push-T replay buffer")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="converted data and runs (default ~/.cache/dp-peers/work or $DP_PEERS_WORK)")
    p.add_argument("--lerobot-python", type=Path, default=DEFAULT_VENV / "bin" / "python", help="python of LeRobot's venv")
    p.add_argument("--batch", type=int, default=64, help="batch size of both throughput runs (default 64)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps (dp, LeRobot matched)")
    p.add_argument("--default-steps", type=int, default=3, help="timed training steps of LeRobot's default (about 11 CPU s each)")
    p.add_argument("--calls", type=int, default=200, help="latency calls (dp, LeRobot matched)")
    p.add_argument("--default-calls", type=int, default=5, help="latency calls of LeRobot's default (about 15 CPU s each)")
    p.add_argument("--budget-s", type=float, default=1200.0, help="training budget of each side (wall-clock seconds)")
    p.add_argument("--dp-batch", type=int, default=128, help="dp's training batch (the pusht preset's)")
    p.add_argument("--lerobot-batch", type=int, default=64, help="LeRobot's training batch (its Push-T recipe's)")
    p.add_argument("--dp-steps", type=int, default=0, help="dp's planned steps (LR schedule length; default: from the speed part)")
    p.add_argument("--lerobot-steps", type=int, default=0, help="LeRobot's planned steps (default: from the speed part)")
    p.add_argument("--episodes", type=int, default=100, help="test episodes of each side (at most)")
    p.add_argument("--eval-budget-s", type=float, default=1200.0, help="each side starts no new episode after this")
    p.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "peers.json")
    a = p.parse_args()
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    unknown = set(parts) - {"speed", "train", "eval"}
    if unknown:
        raise SystemExit(f"error: unknown --parts {sorted(unknown)} (choose from speed, train, eval)")
    if not a.lerobot_python.exists():
        raise SystemExit(f"error: no LeRobot venv at {a.lerobot_python.parent.parent}: run bench/peers/setup_lerobot.sh first")
    s = Sides(a)
    out = json.loads(a.json_out.read_text()) if a.json_out.exists() else {}
    import torch

    out["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "threads_per_side": 1, "cpu_amx": cpu_has_amx(),
                      "dp_torch": torch.__version__, "lerobot": "0.4.4 (bench/peers/lerobot-constraints.txt)"}
    out["configs"] = {
        "dp_pusht": "MoDE transformer 4 x 256, 4 SwiGLU experts of 512, top-2; EDM, 10 sampler steps; AdamW 3e-4, EMA; training batch 128; "
                    f"bf16 autocast: {'on (this CPU has AMX)' if out['machine']['cpu_amx'] else 'off (no AMX on this CPU)'}",
        "lerobot_default": "`DiffusionConfig()`: conv UNet 512/1024/2048, DDPM, 100 sampler steps; Adam 1e-4, cosine, 500 warm-up steps; training batch 64",
        "lerobot_matched": f"`DiffusionConfig(down_dims=({MATCHED_DIMS}))`, otherwise the defaults: about dp's parameter count",
    }
    out["prepared"] = s.prepare()
    t0 = time.time()
    for part in parts:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        head = {"started_utc": started, "command": "python bench/peers/compare_lerobot.py " + " ".join(sys.argv[1:]),
                "load_average_1min_at_start": round(os.getloadavg()[0], 2)}

        def keep(partial: dict) -> None:
            out[part] = {**head, **partial, "complete": False}
            a.json_out.write_text(json.dumps(out, indent=2) + "\n")

        if part == "speed":
            result = speed(s, a, keep)
        elif part == "train":
            result = train(s, a, out.get("speed"))
        else:
            result = evaluate(s, a)
        out[part] = {**head, **result}
        a.json_out.write_text(json.dumps(out, indent=2) + "\n")  # after each part: nothing measured is lost
    out["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
