"""dp and LeRobot side by side on Push-T, from state (``--obs state``, the default) or from images
(``--obs image``): same data, same machine, one run. Prints JSON and writes (merges into)
bench/results/peers.json: the state row at its top level, the image row under the key ``image``
(either mode leaves the other's results as they are).

LeRobot runs in its own venv (bench/peers/setup_lerobot.sh; LeRobot 0.4.4 pins torch<2.11), dp in
this one; every measurement is its own process with 1 thread (so its peak RSS is that phase's).

Data: Diffusion Policy's 206 Push-T demonstrations, imported for dp (`dp import dp-zarr`) and
converted for LeRobot with LeRobot's dataset API (bench/peers/convert_pusht.py), both once into
``--work``:
- state: `--card datasets/pusht_keypoints.yaml` and a conversion without images; both observe the
  agent position and the block's 9 keypoints;
- image: `--card datasets/pusht.yaml` and a conversion with ``observation.image``; both observe the
  96x96 top view and the agent position (Diffusion Policy's image Push-T), no block state.
Both sides: 2 observations, 16 actions predicted, 8 executed.

Configurations, state:
- dp: the `pusht` preset (MoDE 4 x 256, 4 SwiGLU experts top-2; EDM, 10 sampler steps);
- LeRobot default: ``DiffusionConfig()`` (conv UNet 512/1024/2048, DDPM, 100 sampler steps);
- LeRobot matched: the same with ``down_dims=(80, 160, 320)``, about dp's size.

Configurations, image (``--obs image``):
- dp: ``--dp-preset`` (default `pusht-image`: a MoDE denoiser, the view encoded by dp's FiLM-ResNet
  with spatial-softmax keypoints, trained from scratch; ``--dp-override`` changes it, e.g.
  ``model.expert_hidden=512``; the results' ``configs`` line is read from the configuration), trained
  as `dp train --preset pusht-image` does (data loaded in the training process, 1 thread);
- LeRobot matched: ``DiffusionConfig`` with ``observation.image`` (96x96) and ``observation.state``
  as inputs (no ``observation.environment_state``), LeRobot's Push-T image recipe: ResNet-18
  (``vision_backbone="resnet18"``) from scratch (``pretrained_backbone_weights=None``; nothing is
  downloaded), group norm in place of batch norm (``use_group_norm=True``), random 84x84 crops in
  training and the centre crop at inference (``crop_shape=(84, 84)``), its spatial softmax (32
  keypoints), and the state row's matched UNet ``down_dims=(80, 160, 320)`` (sized to dp's state
  denoiser there): the denoisers are of a size, each side keeps its own image encoder (LeRobot's
  ResNet-18 is much the larger); the ``sizes`` of the speed part give every count;
- LeRobot default (the 512/1024/2048 UNet with the same encoder): its size only.
Evaluation from pixels on both sides: dp through `dp eval`'s rollout, which renders the view the
policy observes (gym-pusht ``obs_type="pixels_agent_pos"``, 96x96); LeRobot on the same environment
and seeds, its observations (``pixels`` uint8 HWC, ``agent_pos``) mapped by LeRobot's own
``preprocess_observation`` (``observation.image`` float CHW in 0..1, ``observation.state``).

Parts (``--parts``, default ``speed``):
- ``speed``: training throughput (same batch, full data path, N timed steps after warm-up; wall
  and CPU seconds), latency per action chunk at batch 1 (median / p99 over ``--calls``: LeRobot's
  ``select_action`` at its default 100 steps (``--default-calls``, 5: ~16 CPU s each), dp torch, dp
  ONNX Runtime, dp ONNX Runtime + RTI at the export defaults and at Push-T's validated setting), peak
  RSS of each process; the image mode measures dp and LeRobot matched only (no validated RTI setting
  for the image policy, LeRobot's default only sized), and its throughput gives ``train`` its
  planned steps;
- ``train``: dp's preset and LeRobot at matched size trained at the same time, 1 thread each, for
  ``--budget-s`` seconds, each at its own batch (dp: the preset's; LeRobot: 64, its Push-T recipe's)
  and with its LR schedule as long as the steps it does in the budget (LeRobot's default does about
  11 CPU seconds a step and 15 CPU seconds a chunk at 100 sampler steps: too slow on this CPU to train
  or evaluate in a bounded run);
- ``eval``: both trained policies on the same test seeds of dp's Push-T task (gym-pusht, Diffusion
  Policy's protocol: max coverage over 300 steps, success at 0.95), at the same time, each starting
  no new episode after ``--eval-budget-s`` (LeRobot's 100 DDPM steps a chunk cost ~0.7 CPU s).
``--sequential`` runs the two sides of train and eval one after the other instead (for checks on a
machine without two free cores; not for the comparison).

    nice -n 10 python bench/peers/compare_lerobot.py --parts speed
    nice -n 10 python bench/peers/compare_lerobot.py --parts train,eval --budget-s 1200 --eval-budget-s 1200
    nice -n 10 python bench/peers/compare_lerobot.py --obs image --parts speed,train,eval --budget-s 3600 --eval-budget-s 1800
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
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from bench.common import cpu_model, public  # noqa: E402
from dp.stats import wilson_interval  # noqa: E402
from dp.train.trainer import cpu_has_amx  # noqa: E402

MATCHED_DIMS = "80,160,320"
# the RTI settings chosen for Push-T on validation seeds (bench/results/success/pusht__onnx_rti.cmd)
PUSHT_RTI = ["--rti-steps", "3", "--rti-sigma", "2.0", "--rti-every", "8", "--first-steps", "10", "--first-sigma", "80"]
DEFAULT_VENV = Path(os.environ.get("DP_PEERS_LEROBOT_VENV", Path.home() / ".cache" / "dp-peers" / "lerobot"))
DEFAULT_WORK = Path(os.environ.get("DP_PEERS_WORK", Path.home() / ".cache" / "dp-peers" / "work"))
ENV_1THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}


def _env(argv: list[str]) -> dict[str, str]:
    """1 thread; dp's processes (this interpreter) import dp from this checkout, whatever the working folder."""
    env = {**os.environ, **ENV_1THREAD}
    if argv[0] == sys.executable:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _json(stdout: str) -> dict:
    """A process's JSON: its whole stdout (`dp ... --json` may indent) or else its last line."""
    try:
        return json.loads(stdout)
    except ValueError:
        return json.loads(stdout.strip().splitlines()[-1])


def call(argv: list[str], what: str) -> dict:
    """Run one measurement process; its JSON output (SystemExit naming ``what`` if it fails)."""
    print(f"[peers] {what}", file=sys.stderr, flush=True)
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(argv))
    if done.returncode != 0:
        raise SystemExit(f"error: {what} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return _json(done.stdout)


def start(argv: list[str], what: str) -> subprocess.Popen:
    print(f"[peers] {what} (started)", file=sys.stderr, flush=True)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(argv))


def finish(proc: subprocess.Popen, what: str) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"error: {what} failed ({proc.returncode}): {err.strip()[-1500:]}")
    return _json(out)


@dataclass(frozen=True)
class Mode:
    """What one observation mode (``--obs``) uses: dp's dataset card and default preset, the LeRobot
    conversion's flags, and the names of its data and runs inside ``--work``."""

    card: str  # dp's dataset card (datasets/)
    preset: str  # dp's default preset (--dp-preset)
    store: str  # dp's store
    dataset: str  # the LeRobotDataset
    convert: tuple[str, ...]  # convert_pusht.py flags
    prefix: str  # of the run folders


MODES = {
    "state": Mode("pusht_keypoints.yaml", "pusht", "pusht_kp.zarr", "lerobot_pusht_state", ("--no-images",), ""),
    "image": Mode("pusht.yaml", "pusht-image", "pusht_img.zarr", "lerobot_pusht_image", (), "image_"),
}


class Sides:
    """The command lines of both sides, for the observation mode ``a.obs``."""

    def __init__(self, a):
        self.a, self.work, self.mode = a, a.work, MODES[a.obs]
        self.lr = [str(a.lerobot_python), str(HERE / "lerobot_side.py")]
        self.dp = [sys.executable, str(HERE / "dp_side.py")]
        self.store = a.work / self.mode.store
        self.dataset = a.work / self.mode.dataset
        self.dp_key = "dp_" + a.dp_preset.replace("-", "_")  # dp's entries in the results (state: dp_pusht)
        self.dp_cfg = ["--preset", a.dp_preset, *(x for o in a.dp_override for x in ("-o", o))]
        self.lr_obs = ["--obs", a.obs]

    def run(self, name: str) -> Path:
        """A run / export folder inside --work (the image mode's are prefixed ``image_``)."""
        return self.work / f"{self.mode.prefix}{name}"

    def prepare(self) -> dict:
        """The dp store and the LeRobot dataset, made once from the replay buffer."""
        self.work.mkdir(parents=True, exist_ok=True)
        made = {}
        if not (self.store / "meta").exists():
            shutil.rmtree(self.store, ignore_errors=True)
            call([sys.executable, "-m", "dp", "import", "dp-zarr", str(self.a.data), "--card", str(REPO / "datasets" / self.mode.card),
                  "--out", str(self.store), "--json", "--no-progress", "--workers", "1"], "dp import")
            made["dp_store"] = str(self.store)
        if not (self.dataset / "meta" / "info.json").exists():
            shutil.rmtree(self.dataset, ignore_errors=True)
            made["lerobot_dataset"] = call([*self.lr[:1], str(HERE / "convert_pusht.py"), str(self.a.data), "--out", str(self.dataset),
                                            *self.mode.convert], "LeRobot conversion")
        return made


def speed(s: Sides, a, keep) -> dict:
    """Sizes, throughput and latency; ``keep(result)`` is called after each measurement (nothing measured is lost).
    The image mode leaves out what only the state row measures: the RTI setting validated on state Push-T
    and LeRobot's default UNet in training and sampling (its size is still given)."""
    lr_root = ["--root", str(s.dataset), *s.lr_obs]
    state = a.obs == "state"
    run, onnx, onnx3 = s.run("dp_latency_run"), s.run("dp_latency_onnx"), s.run("dp_latency_onnx_rti3")
    for path in (run, onnx, onnx3):
        shutil.rmtree(path, ignore_errors=True)
    steps = ["--batch", str(a.batch), "--steps", str(a.steps)]
    dp, store = s.dp_key, ["--store", str(s.store), *s.dp_cfg]
    plan = [
        ("sizes", dp, [*s.dp, "size", *store]),
        ("sizes", "lerobot_matched", [*s.lr, "size", *lr_root, "--down-dims", MATCHED_DIMS]),
        ("sizes", "lerobot_default", [*s.lr, "size", *lr_root]),
        ("throughput", dp, [*s.dp, "throughput", *store, *steps, "--save", str(run)]),
        ("throughput", f"{dp}_fp32", [*s.dp, "throughput", *store, *steps, "--override", "train.amp=false"]),
        ("throughput", "lerobot_matched", [*s.lr, "throughput", *lr_root, *steps, "--down-dims", MATCHED_DIMS]),
        ("export", "dp", [sys.executable, "-m", "dp", "export", str(run), "--out", str(onnx), "--json"]),
        ("latency", "dp_torch", [*s.dp, "latency", "--run", str(run), "--calls", str(a.calls)]),
        ("latency", "dp_onnx", [*s.dp, "latency", "--onnx", str(onnx), "--calls", str(a.calls)]),
        ("latency", "dp_onnx_rti", [*s.dp, "latency", "--onnx", str(onnx), "--rti", "--calls", str(a.calls)]),
        *([("export", "dp_rti3", [sys.executable, "-m", "dp", "export", str(run), "--out", str(onnx3), "--json", *PUSHT_RTI]),
           ("latency", "dp_onnx_rti3", [*s.dp, "latency", "--onnx", str(onnx3), "--rti", "--calls", str(a.calls)])] if state else []),
        ("latency", "lerobot_matched", [*s.lr, "latency", *lr_root, "--calls", str(a.calls), "--down-dims", MATCHED_DIMS]),
        *([("throughput", "lerobot_default", [*s.lr, "throughput", *lr_root, "--batch", str(a.batch), "--steps", str(a.default_steps), "--warmup", "1"]),
           ("latency", "lerobot_default", [*s.lr, "latency", *lr_root, "--calls", str(a.default_calls), "--warmup", "1"])] if state else []),
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
        "train_samples_per_s_dp_vs_lerobot_matched": ratio(tp[dp]["samples_per_s"], tp["lerobot_matched"]["samples_per_s"]),
        "train_samples_per_cpu_s_dp_vs_lerobot_matched": ratio(tp[dp]["samples_per_cpu_s"], tp["lerobot_matched"]["samples_per_cpu_s"]),
        "train_samples_per_s_dp_fp32_vs_lerobot_matched": ratio(tp[f"{dp}_fp32"]["samples_per_s"], tp["lerobot_matched"]["samples_per_s"]),
        "chunk_median_lerobot_matched_vs_dp_onnx_rti": ratio(lat["lerobot_matched"]["median_ms"], lat["dp_onnx_rti"]["median_ms"]),
    }
    if state:  # LeRobot's default UNet was timed too
        res["ratios"].update({
            "train_samples_per_s_dp_vs_lerobot_default": ratio(tp[dp]["samples_per_s"], tp["lerobot_default"]["samples_per_s"]),
            "train_samples_per_cpu_s_dp_vs_lerobot_default": ratio(tp[dp]["samples_per_cpu_s"], tp["lerobot_default"]["samples_per_cpu_s"]),
            "chunk_median_lerobot_default_vs_dp_onnx_rti": ratio(lat["lerobot_default"]["median_ms"], lat["dp_onnx_rti"]["median_ms"]),
            "chunk_median_lerobot_default_vs_dp_torch": ratio(lat["lerobot_default"]["median_ms"], lat["dp_torch"]["median_ms"]),
        })
    return res


def planned_steps(a, speed: dict | None, dp_key: str) -> tuple[int, int]:
    """The LR schedules' lengths: the steps each tool would do in the budget on an idle core (the CPU
    seconds per step of the speed part, scaled to the batch size), unless given."""
    tp = (speed or {}).get("throughput") or {}
    if not (a.dp_steps and a.lerobot_steps) and not tp:
        raise SystemExit("error: run --parts speed first (with the same --obs), or give --dp-steps and --lerobot-steps")

    def plan(key: str, batch: int) -> int:
        return int(a.budget_s / (tp[key]["cpu_s_per_step"] * batch / tp[key]["batch_size"]))

    return a.dp_steps or plan(dp_key, a.dp_batch), a.lerobot_steps or plan("lerobot_matched", a.lerobot_batch)


def both(s: Sides, a, argvs: dict[str, list[str]], what: str) -> dict[str, dict]:
    """Run dp's and LeRobot's process of one part: at once (the comparison), or with ``--sequential``
    one after the other (a check on a machine without two free cores)."""
    procs, out = {}, {}
    for name, argv in argvs.items():
        procs[name] = start(argv, f"{name} {what}")
        if a.sequential:
            out[name] = finish(procs[name], f"{name} {what}")
    return {name: out[name] if name in out else finish(p, f"{name} {what}") for name, p in procs.items()}


def train(s: Sides, a, speed: dict | None) -> dict:
    """dp (its preset) and LeRobot (matched size) at once, 1 thread each, the same wall-clock budget, each at
    its default batch size; a run stops at its planned steps (:func:`planned_steps`) or at the budget."""
    dp_steps, lerobot_steps = planned_steps(a, speed, s.dp_key)
    runs = {"dp": s.run("train_dp"), "lerobot": s.run("train_lerobot")}
    for path in runs.values():
        shutil.rmtree(path, ignore_errors=True)
    done = both(s, a, {
        "dp": [*s.dp, "train", "--store", str(s.store), *s.dp_cfg, "--batch", str(a.dp_batch), "--budget-s", str(a.budget_s),
               "--steps-planned", str(dp_steps), "--out", str(runs["dp"])],
        "lerobot": [*s.lr, "train", "--root", str(s.dataset), *s.lr_obs, "--batch", str(a.lerobot_batch), "--budget-s", str(a.budget_s),
                    "--steps-planned", str(lerobot_steps), "--down-dims", MATCHED_DIMS, "--out", str(runs["lerobot"])],
    }, "training")
    return {"budget_s": a.budget_s, **({"sequential": True} if a.sequential else {}),
            **{name: {**r, "run": runs[name].name} for name, r in done.items()}}  # runs: inside --work


def summary(scores: list[float], successes: int) -> dict:
    """Success rate with its 95% Wilson interval, mean score with its 95% t-interval (as `dp eval`)."""
    from dp.stats import mean_interval

    n = len(scores)
    return {"episodes": n, "successes": successes, "success_rate": successes / n if n else None,
            "success_ci95": list(wilson_interval(successes, n)), "mean_score": sum(scores) / n if n else None,
            "score_ci95": list(mean_interval(scores))}


def evaluate(s: Sides, a) -> dict:
    """Both trained policies at once on the same test seeds of dp's Push-T task (dp through `dp eval`'s
    rollout, LeRobot through the same task code; in the image mode both see the 96x96 view gym-pusht
    renders), each starting no new episode after ``--eval-budget-s``; also compared on the seeds both
    finished."""
    from dp.sim.rollout import seed_for

    seeds = ",".join(str(seed_for(0, i, "test")) for i in range(a.episodes))
    budget = ["--seeds", seeds, "--budget-s", str(a.eval_budget_s)]
    runs = both(s, a, {"dp": [*s.dp, "eval", "--run", str(s.run("train_dp")), *budget],
                       "lerobot": [*s.lr, "eval", "--run", str(s.run("train_lerobot")), *budget]}, "eval")
    common = min(len(r["episodes"]) for r in runs.values())
    out = {"seeds": f"dp.sim.rollout.seed_for(0, i, 'test') for i = 0..{a.episodes - 1} (`dp eval --split test`), in order", "common_episodes": common}
    if a.sequential:
        out["sequential"] = True
    for name, r in runs.items():
        eps = r["episodes"]
        out[name] = {**summary([e["score"] for e in eps], sum(e["success"] for e in eps)), "wall_s": r["wall_s"],
                     "sampler_steps": r["sampler_steps"], "stopped_by_budget": len(eps) < a.episodes, "peak_rss_mb": r["peak_rss_mb"],
                     "on_common_seeds": summary([e["score"] for e in eps[:common]], sum(e["success"] for e in eps[:common]))}
    return out


def dp_config(preset: str, overrides: list[str]):
    """dp's configuration of ``preset`` with ``overrides`` (what dp_side.py trains)."""
    from dp.config import build_config

    return build_config(preset, overrides)


def dp_description(cfg, preset: str, overrides: list[str], batch: int, amx: bool, image: bool) -> str:
    """One line on dp's configuration, read from it (so that overrides show)."""
    m = cfg.model
    vision = ""
    if image:
        crop = f", crop {m.aug_crop} (random in training, centre at inference)" if m.aug_crop else ""
        size = f", resized to {m.image_size} px" if m.image_size else ""
        shift = f", random shifts of {m.aug_shift} px" if m.aug_shift else ""
        vision = (f"; vision: FiLM-ResNet {m.vision_channels} x {m.vision_blocks} block(s), {m.vision_pool} "
                  f"({m.vision_keypoints} keypoints), trained from scratch{crop}{size}{shift}")
    return (f"`{preset}` preset{' with ' + ', '.join(overrides) if overrides else ''}: observes {', '.join(cfg.data.obs_keys)}; "
            f"MoDE transformer {m.n_layers} x {m.d_model}, {m.n_experts} SwiGLU experts of {m.expert_hidden}, top-{m.top_k}{vision}; "
            f"EDM, {cfg.diffusion.steps} sampler steps; AdamW {cfg.train.lr:g}, EMA; training batch {batch}; "
            f"bf16 autocast: {'on (this CPU has AMX)' if amx else 'off (no AMX on this CPU)'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--obs", choices=sorted(MODES), default="state",
                   help="observation mode: state (agent + block keypoints; the top-level results) or image (the 96x96 view + "
                        "agent position; results under the key 'image')")
    p.add_argument("--parts", default="speed", help="comma-separated: speed, train, eval (default: speed)")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr",
                   help="Diffusion Policy's Push-T replay buffer")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="converted data and runs (default ~/.cache/dp-peers/work or $DP_PEERS_WORK)")
    p.add_argument("--lerobot-python", type=Path, default=DEFAULT_VENV / "bin" / "python", help="python of LeRobot's venv")
    p.add_argument("--dp-preset", default=None, help="dp's preset (default: pusht for --obs state, pusht-image for --obs image)")
    p.add_argument("--dp-override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override of dp's configuration (repeatable), e.g. model.expert_hidden=512")
    p.add_argument("--batch", type=int, default=64, help="batch size of both throughput runs (default 64)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps (dp, LeRobot matched)")
    p.add_argument("--default-steps", type=int, default=3, help="timed training steps of LeRobot's default (state only; about 11 CPU s each)")
    p.add_argument("--calls", type=int, default=200, help="latency calls (dp, LeRobot matched)")
    p.add_argument("--default-calls", type=int, default=5, help="latency calls of LeRobot's default (state only; about 15 CPU s each)")
    p.add_argument("--budget-s", type=float, default=1200.0, help="training budget of each side (wall-clock seconds)")
    p.add_argument("--dp-batch", type=int, default=None, help="dp's training batch (default: the preset's: pusht 128, pusht-image 64)")
    p.add_argument("--lerobot-batch", type=int, default=64, help="LeRobot's training batch (its Push-T recipe's)")
    p.add_argument("--dp-steps", type=int, default=0, help="dp's planned steps (LR schedule length; default: from the speed part)")
    p.add_argument("--lerobot-steps", type=int, default=0, help="LeRobot's planned steps (default: from the speed part)")
    p.add_argument("--episodes", type=int, default=100, help="test episodes of each side (at most)")
    p.add_argument("--eval-budget-s", type=float, default=1200.0, help="each side starts no new episode after this")
    p.add_argument("--sequential", action="store_true",
                   help="train (and evaluate) the two sides one after the other, not at once: for checks on a machine "
                        "without two free cores; the comparison runs them at once")
    p.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "peers.json",
                   help="the results file, merged into (default bench/results/peers.json)")
    a = p.parse_args()
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    unknown = set(parts) - {"speed", "train", "eval"}
    if unknown:
        raise SystemExit(f"error: unknown --parts {sorted(unknown)} (choose from speed, train, eval)")
    if not a.lerobot_python.exists():
        raise SystemExit(f"error: no LeRobot venv at {a.lerobot_python.parent.parent}: run bench/peers/setup_lerobot.sh first")
    a.dp_preset = a.dp_preset or MODES[a.obs].preset
    cfg = dp_config(a.dp_preset, a.dp_override)
    a.dp_batch = a.dp_batch or cfg.train.batch_size
    s = Sides(a)
    out = json.loads(a.json_out.read_text()) if a.json_out.exists() else {}
    import torch

    # each row keeps the machine it was measured on: the state row at the top level (as before the image
    # row existed), the image row in its own section
    section = out if a.obs == "state" else out.setdefault("image", {})
    section["machine"] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(), "threads_per_side": 1,
                          "cpu_amx": cpu_has_amx(),
                          "dp_torch": torch.__version__, "lerobot": "0.4.4 (bench/peers/lerobot-constraints.txt)"}
    amx = section["machine"]["cpu_amx"]
    if a.obs == "state":
        section["configs"] = {
            s.dp_key: ("MoDE transformer 4 x 256, 4 SwiGLU experts of 512, top-2; EDM, 10 sampler steps; AdamW 3e-4, EMA; training batch 128; "
                       f"bf16 autocast: {'on (this CPU has AMX)' if amx else 'off (no AMX on this CPU)'}")
            if a.dp_preset == "pusht" and not a.dp_override and a.dp_batch == 128 else dp_description(cfg, a.dp_preset, a.dp_override, a.dp_batch, amx, a.obs == "image"),
            "lerobot_default": "`DiffusionConfig()`: conv UNet 512/1024/2048, DDPM, 100 sampler steps; Adam 1e-4, cosine, 500 warm-up steps; training batch 64",
            "lerobot_matched": f"`DiffusionConfig(down_dims=({MATCHED_DIMS}))`, otherwise the defaults: about dp's parameter count",
        }
    else:
        section["configs"] = {
            s.dp_key: dp_description(cfg, a.dp_preset, a.dp_override, a.dp_batch, amx, a.obs == "image"),
            "lerobot_default": "`DiffusionConfig()` with observation.image (96x96) + observation.state: ResNet-18 from scratch "
                               "(pretrained_backbone_weights=None), random 84x84 crops (centre at inference), group norm, spatial softmax "
                               "(32 keypoints); conv UNet 512/1024/2048, DDPM, 100 sampler steps (size only: too slow to train here)",
            "lerobot_matched": f"the same with `down_dims=({MATCHED_DIMS})` (as the state row's matched UNet), trained with Adam 1e-4, cosine, "
                               f"500 warm-up steps; training batch {a.lerobot_batch}",
        }
    section["prepared"] = s.prepare()
    t0 = time.time()
    for part in parts:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        head = {"started_utc": started, "command": "python bench/peers/compare_lerobot.py " + " ".join(sys.argv[1:]),
                "load_average_1min_at_start": round(os.getloadavg()[0], 2)}

        def keep(partial: dict) -> None:
            section[part] = {**head, **partial, "complete": False}
            a.json_out.write_text(json.dumps(public(out), indent=2) + "\n")

        if part == "speed":
            result = speed(s, a, keep)
        elif part == "train":
            result = train(s, a, section.get("speed"))
        else:
            result = evaluate(s, a)
        section[part] = {**head, **result}
        a.json_out.write_text(json.dumps(public(out), indent=2) + "\n")  # after each part: nothing measured is lost
    section["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(public(section if a.obs == "image" else out), indent=2))


if __name__ == "__main__":
    main()
