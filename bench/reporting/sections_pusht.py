"""The Push-T page section: human demonstrations, gym-pusht scores per runtime."""

from __future__ import annotations

from typing import Any

from bench.common import best_row
from bench.reporting.load import Results
from bench.reporting.spec import missing
from bench.reporting.targets import Targets
from bench.reporting.text import ci, finite, get, num, pct, score_ci, table


PUSHT_ROWS = (("torch", "torch, full sampling"), ("torch_every4", "torch, full sampling, a new chunk every 4 (run on a loaded machine: its latency is not comparable)"),
              ("onnx", "ONNX Runtime, full sampling"),
              ("onnx_every4", "ONNX Runtime, full sampling, a new chunk every 4"),
              ("onnx_every8", "ONNX Runtime, full sampling, a new chunk every 8"),
              ("onnx_rti", "ONNX Runtime + RTI (settings chosen on validation seeds)"),
              ("onnx_rti_defaults", "ONNX Runtime + RTI, the defaults chosen on `can` (1 step from sigma 1.0, every 4)"),
              ("deploy", "deploy (`dp node` + `dp robot`, ONNX + the chosen RTI)"))
PUSHT_RTI_WHY = (
    "Why RTI's defaults lose on Push-T: they were chosen on `can`, whose actions are small deltas. Push-T's actions are "
    "absolute target positions normalised over the arena, so a start sigma of 1.0 is noise of about a quarter of the "
    "arena, and a single step from there returns the denoiser's average at that noise level (between the ways round "
    "the T) rather than one of them; re-planning every 4 steps also switches plans more often than the 8 actions per "
    "chunk the policy was trained to execute. Three warm steps restore a sample, and the trained 8 executed steps keep "
    "the plan. RTI's settings are therefore a per-policy choice, made on validation seeds and fixed at export "
    "(`dp export --rti-steps K --rti-sigma S --rti-every N`, here with the first chunk fully sampled: "
    "`--first-steps 10 --first-sigma 80`), as `bench/pusht.py` does.")


PUSHT_HEADER = ["Policy", "Mean score", "95% CI (x100)", "Success", "95% CI", "Successes / episodes", "Latency median / p99"]


def _pusht_rows(tests: Any) -> list[list[Any]]:
    """One table row per Push-T test result present in ``tests`` (PUSHT_ROWS order)."""
    rows = []
    for key, what in PUSHT_ROWS:
        r = get(tests, key)
        if isinstance(r, dict):
            lat = r.get("latency_ms") or {}
            rows.append([what, num(r.get("mean_score"), 3), ci(r.get("score_ci95")).replace("%", ""), pct(r.get("success_rate")),
                         ci(r.get("success_ci95")), f"{r.get('successes')}/{r.get('episodes')}",
                         f"{num(lat.get('median'))} / {num(lat.get('p99'), 1)} ms"])
    return rows


# issue 36: the image recipes run through bench/pusht.py, in the order they were tried (bench name, recipe)
PUSHT_IMAGE_RUNS = (
    ("pusht_image", "the first `pusht-image` recipe: two observation steps, 8,500 steps on two threads"),
    ("pusht_image_obs1", "one observation step, 10,000 steps on one thread"),
    ("pusht_image_priv", "one observation step and the block's keypoints as privileged state, 9,000 steps on one thread"),
    ("pusht_image_priv15k", "the same run resumed to 15,000 steps on one thread (`train.steps=15000` on `--resume`: the cosine "
                            "schedule stretched, so the rate restarts at about 36% of its peak and falls to zero at step 15,000)"),
    ("pusht_image_windows", "the same recipe trained afresh on a 15,000-step schedule, with training windows that end where the "
                            "executed actions are recorded (`data.pad_executed=false`, the default since session 26), on one thread"),
    ("pusht_image_25k", "the preset as it stands trained afresh in bf16 autocast on a CPU with AMX (15,000 steps in 101 CPU minutes), "
                        "then resumed to 25,000 steps (`train.steps=25000` on `--resume`, a warm restart): 176 CPU minutes in all"),
)


def chosen_point(b: dict[str, Any] | None) -> dict[str, Any]:
    """The validation-curve point of the checkpoint a Push-T run chose ({} when absent)."""
    step = get(b, "chosen", "step")
    return next((p for p in get(b, "curve") or [] if isinstance(p, dict) and p.get("step") == step), {})


def chosen_image_run(results: Results) -> str:
    """The image recipe whose chosen checkpoint scored best on validation seeds (mean score, then success):
    the one the page's image targets are checked on."""
    points = [{**chosen_point(b), "run": name} for name, _ in PUSHT_IMAGE_RUNS if (b := results.bench(name)) is not None]
    return best_row(points, "pusht")["run"] if points else PUSHT_IMAGE_RUNS[0][0]


def cpu_minutes(b: dict[str, Any], point: dict[str, Any]) -> float | None:
    """Training CPU minutes at a curve point: logged per step, or (runs that logged CPU time only in total)
    the point's wall time scaled by the run's CPU / wall ratio; plus the CPU time outside the trainer the
    budget counts (``extra_cpu_s``: the roll-outs a self-improved run trained on)."""
    extra = b.get("extra_cpu_s") or 0.0
    if finite(point.get("train_cpu_s")):
        return (point["train_cpu_s"] + extra) / 60
    wall, cpu = b.get("train_wall_s"), b.get("train_cpu_s")
    if finite(point.get("train_s")) and finite(wall) and finite(cpu) and wall:
        return (point["train_s"] * cpu / wall + extra) / 60
    return None


def _pusht_block(b: dict[str, Any] | None, name: str, label: str, minutes: int) -> list[str]:
    """One Push-T run (bench/pusht.py): its chosen checkpoint, test rows, validation curve and RTI settings."""
    if b is None:
        return [missing(name), ""]
    trained, cpu = get(b, "chosen", "train_s"), b.get("train_cpu_s")
    spent = (f"the run trained {num((b.get('train_wall_s') or 0) / 60, 1)} min of wall time in all"
             + (f", {num(cpu / 60, 0)} CPU minutes of its training process" if finite(cpu) else ", on a shared machine"))
    out = [f"**{label}**, preset `{b.get('preset')}`: checkpoint of step {get(b, 'chosen', 'step')}, the "
           f"{get(b, 'chosen', 'why')} ({num(trained / 60 if finite(trained) else None, 1)} min of training; the target allows {minutes} "
           f"{'CPU ' if name != 'pusht' else ''}minutes; {spent}).", ""]
    rows = _pusht_rows(b.get("test"))
    out += [table(PUSHT_HEADER, rows) if rows else "No test rows: the validation curve only (`--test-episodes 0`).", ""]
    bases = get(b, "test", "deploy", "seed_bases") or []  # written before the deploy launches split one dp eval run's episodes
    if len(bases) > 1:
        out += [f"The deploy row ran its launches on base seeds {', '.join(map(str, bases))}: its first half on the episodes of the "
                "rows above, the rest on other test seeds (unpaired).", ""]
    cont = b.get("continued")
    if isinstance(cont, dict) and (rows := _pusht_rows(cont.get("test"))):
        c = cont.get("chosen") or {}
        t = c.get("train_s")
        out += [f"The same run continued: checkpoint of step {c.get('step')}, the {c.get('why')} "
                f"({num(t / 60 if finite(t) else None, 1)} min of training on the shared machine):", "",
                table(PUSHT_HEADER, rows), ""]
    curve = [p for p in b.get("curve") or [] if isinstance(p, dict)]
    if curve:
        extra = b.get("extra_cpu_s")
        out += ["Validation curve (each checkpoint on validation seeds; the training CPU minutes as the trainer logged them, or, "
                "for a run that logged only its total, its wall time scaled by the run's CPU / wall ratio"
                + (f"; with the {num(extra / 60, 1)} CPU minutes of the roll-outs it trained on" if finite(extra) else "") + "):", "",
                table(["Step", "Training time (min)", "Training CPU (min)", "Episodes", "Mean score", "Success"],
                      [[p.get("step"), num((p.get("train_s") or 0) / 60, 1), num(cpu_minutes(b, p), 0), p.get("episodes"),
                        num(p.get("mean_score"), 3), pct(p.get("success_rate"))] for p in curve]), ""]
    rti = [r for r in b.get("rti_val") or [] if isinstance(r, dict)]
    if rti:
        out += ["RTI settings on validation seeds (warm steps, start sigma, a new chunk every N):", "",
                table(["Steps", "Start sigma", "Every", "Episodes", "Mean score", "Success"],
                      [[r.get("steps"), r.get("sigma"), r.get("every"), r.get("episodes"), num(r.get("mean_score"), 3),
                        pct(r.get("success_rate"))] for r in rti]), ""]
        if len(rti) == 1:
            out += ["One RTI setting was tried on this run (nothing chosen between settings here): the one an earlier image run "
                    "chose on validation seeds.", ""]
        out += [PUSHT_RTI_WHY, ""]
    return out


def _pusht_targets(targets: Targets, b: dict[str, Any] | None, name: str, score_target: float, success_target: float) -> None:
    torch_row = get(b, "test", "torch")
    targets.check("Push-T", f"{name}: test mean score (torch)", get(torch_row, "mean_score"), ">=", score_target, available=b is not None)
    targets.check("Push-T", f"{name}: test success (torch)", get(torch_row, "success_rate"), ">=", success_target,
                  fmt=pct, available=b is not None)
    # the gaps: 0.02 of score (2 points of success) for ONNX and ONNX + RTI, 0.03 (3 points) for the deploy path
    for key, limit in (("onnx", 0.02), ("onnx_rti", 0.02), ("deploy", 0.03)):
        for field, what, fmt in (("mean_score", "mean score gap", lambda v: f"{v:.3f}"),
                                 ("success_rate", "success gap", lambda v: f"{100 * v:.0f} point{'' if round(100 * v) == 1 else 's'}")):
            base, other = get(torch_row, field), get(b, "test", key, field)
            gap = round(abs(other - base), 9) if finite(other) and finite(base) else None  # 0.46 - 0.44 is 2 points, not 2.0000001
            targets.check("Push-T", f"{name}: {key} vs torch, {what}", gap, "<=", limit, fmt=fmt, available=gap is not None)


PAIRINGS = (("paired", "torch", "the ONNX export", "export"), ("paired_torch_again", "torch", "torch again (other rounding)", "torch_again"),
            ("paired_export_torch_again", "torch_again", "the ONNX export", "export"))


def _paired_row(p: dict[str, Any], a: str, what: str, b: str) -> list[Any]:
    return [f"{a.replace('_', ' ')} against {what}", f"{p.get(f'{a}_successes')} / {p.get(f'{b}_successes')} of {p.get('episodes')}",
            p.get(f"{a}_only"), p.get(f"{b}_only"), num(p.get("mcnemar_p"), 3),
            f"{num(p.get('score_difference'), 3)} ({score_ci(p.get('score_difference_ci95'))})"]


def _lockstep_block(b: dict[str, Any] | None, targets: Targets) -> list[str]:
    """Whether the image export acts as its torch policy does (bench/export_lockstep.py): actions in lockstep,
    and the outcomes of both on the same test seeds, beside torch's own spread when only rounding changes."""
    name = "export_lockstep_pusht_image"
    lock = get(b, "lockstep") or {}
    ratio = lock.get("max_over_scale")
    targets.check("Push-T", "image export: largest action difference from torch in closed loop, over the action scale",
                  ratio, "<=", 1e-4, fmt=lambda v: f"{v:.1e}", available=finite(ratio))
    if b is None:
        return ["**Does the export act as torch does?**", "", missing(name), ""]
    diff = lock.get("action_difference") or {}
    n = get(b, "paired", "episodes")
    out = ["**Does the export act as torch does?** (`bench/export_lockstep.py`, the `pusht_image_windows` run's chosen checkpoint and its "
           f"ONNX export.) In lockstep, torch drove {lock.get('episodes')} test episodes ({lock.get('steps')} steps) and the export, seeded "
           f"alike, acted on the same observations: their actions differed by {num(diff.get('median'), 4)} px at the median, "
           f"{num(diff.get('p99'), 4)} at the 99th percentile and {num(diff.get('max'), 4)} at most ({num(ratio * 1e6 if finite(ratio) else None, 0)} "
           "millionths of the action scale), inside the export's own check tolerance (1e-4 of the scale). Closed loop turns such "
           f"differences into different episodes. On {n} test seeds (base seeds 0 and 1), three evaluations of the same checkpoint: "
           "torch in one process (two threads, as the test rows above), torch again with one thread per process "
           "(`dp eval --workers 2`: only the float rounding differs) and the ONNX export, paired episode by episode:", ""]
    rows = [_paired_row(p, a, what, other) for key, a, what, other in PAIRINGS if isinstance(p := b.get(key), dict)]
    out += [table(["Pair (first against second)", "Successes", "Only the first solved", "Only the second solved",
                   "Exact McNemar p", "Score difference, second − first (95% CI)"], rows), ""]
    p_export, p_again, p_between = (get(b, key, "mcnemar_p") for key, *_ in PAIRINGS)
    if all(finite(p) for p in (p_export, p_again, p_between)):
        first, again, export = (get(b, "paired", "torch_successes"), get(b, "paired_torch_again", "torch_again_successes"),
                                get(b, "paired", "export_successes"))
        if p_between >= 0.05 and p_export < 0.05 and p_again < 0.05:
            out += [f"The export and torch again differ from each other by no more than chance, and both differ from the first torch "
                    f"run alike ({first} successes against {again} and {export}): rounding alone opens the gap the export shows, so the "
                    "export loses nothing to torch that another float rounding of torch itself does not. One evaluation's success on "
                    "Push-T moves by several points with the rounding alone; the torch-against-export success gaps on this page are "
                    "of this kind.", ""]
        elif min(p_export, p_again, p_between) >= 0.05:
            out += [f"No pair differs by more than chance ({first}, {again} and {export} successes): the export loses nothing to torch "
                    "that another float rounding of torch itself does not.", ""]
        else:
            out += ["The export's outcomes differ from torch's otherwise than torch's own with another rounding: a difference the "
                    "actions in lockstep do not show, and this page does not explain.", ""]
    return out


def section_pusht(results: Results, targets: Targets) -> list[str]:
    """Push-T from Diffusion Policy's human demonstrations in gym-pusht (bench/pusht.py): test rows with
    score and success, the validation curve against training time, and the RTI settings tried; from
    pixels, each recipe tried, the targets checked on the one chosen on validation seeds."""
    out = ["### Push-T: human demonstrations, the real environment", "",
           "`bench/pusht.py`: Diffusion Policy's 206 demonstrations, `gym_pusht/PushT-v0`, Diffusion Policy's protocol "
           "(at most 300 steps; score = max over steps of min(coverage / 0.95, 1); success = coverage reached 0.95). "
           "Choices (checkpoint, RTI settings) on validation seeds (`dp eval --split val`), figures on test seeds "
           "(`--split test`, base seed 0); mean score with a 95% t-interval, success with a 95% Wilson interval.", ""]
    state = results.bench("pusht")
    _pusht_targets(targets, state, "pusht", 0.90, 0.60)
    out += _pusht_block(state, "pusht", "state (agent position + 9 keypoints)", 90)
    chosen = chosen_image_run(results)
    image = results.bench(chosen)
    _pusht_targets(targets, image, chosen, 0.90, 0.50)
    spent = cpu_minutes(image, chosen_point(image)) if image else None
    targets.check("Push-T", f"{chosen}: training CPU minutes of the chosen checkpoint", spent, "<=", 180, fmt=lambda v: f"{v:.0f}",
                  available=spent is not None)
    out += [f"**From pixels** (the 96x96 view + the agent position). The image targets are checked on the recipe whose chosen "
            f"checkpoint scored best on validation seeds: `{chosen}`.", ""]
    for name, recipe in PUSHT_IMAGE_RUNS:
        if (b := results.bench(name)) is not None or name == chosen:
            out += _pusht_block(b, name, f"image, {recipe}", 180)
    return out + _demo_coverage_block(results.bench("pusht_demo_coverage")) + _lockstep_block(results.bench("export_lockstep_pusht_image"), targets)


SOURCES = {"dp-zarr": "Diffusion Policy's human demonstrations (`dp import dp-zarr`)",
           "policy": "a policy's successful roll-outs (`dp collect --policy`)"}


def _demo_coverage_block(b: dict[str, Any] | None) -> list[str]:
    """How far the stores' episodes push the block in gym-pusht's geometry (bench/pusht_demo_coverage.py)."""
    if b is None:
        return [missing("pusht_demo_coverage"), ""]
    rows = []
    for st in b.get("stores") or []:
        q, f, check = st.get("max_coverage_quantiles") or {}, st.get("final_coverage_quantiles") or {}, st.get("placement_check") or {}
        rows.append([", ".join(SOURCES.get(x, f"`{x}`") for x in st.get("sources") or []), st.get("episodes"), num(q.get("0.5"), 3),
                     f"{num(q.get('0.1'), 3)}–{num(q.get('0.9'), 3)}", num(q.get("1.0"), 3), num(f.get("0.5"), 3),
                     f"{st.get('episodes_reaching_success_coverage')}/{st.get('episodes')}", num(check.get("mean_abs_pixel_diff"), 3)])
    return ["**How far the demonstrations push the block** (`bench/pusht_demo_coverage.py`): each stored frame's block pose placed in "
            "`gym_pusht/PushT-v0` (angle first, then position: the placement that renders the stored views again, last column) "
            "and its coverage of the target as the environment computes it; per episode its maximum over the frames. A store "
            "holds the observation before each action, so a roll-out kept for reaching 0.95 ends on the frame before it "
            "did.", "",
            table(["Episodes from", "Episodes", "Max coverage, median", "10th–90th percentile", "Highest", "Last frame, median",
                   f"Reaching {num(b.get('success_coverage'), 2)}", "Views rendered again: mean abs. pixel difference (0-255)"], rows), ""]


def recipe_baseline(b: dict[str, Any]) -> str:
    """What a round of bench/image_recipe.py varied from: its recorded preset settings (the first round,
    which predates the record, ran on the former preset)."""
    r = b.get("preset_recipe")
    if not r:
        return "the former `pusht-image` preset (64-pixel resize, 6-pixel shift, experts of 512)"
    size = "full resolution" if r.get("image_size") is None else f"a {r['image_size']}-pixel resize"
    aug = f"random {r['aug_crop']}-pixel crops at {size}" if r.get("aug_crop") else f"{r.get('aug_shift')}-pixel shifts at {size}"
    return (f"the `pusht-image` preset as the first round chose it ({aug}, experts of {r.get('expert_hidden')}, encoder stages "
            f"{r.get('vision_channels')}, {r.get('vision_pool')} pooling, {r.get('obs_horizon')} observation steps, learning rate {r.get('lr')})")


def recipe_round(b: dict[str, Any]) -> list[str]:
    """One round of bench/image_recipe.py: what it varied from, its table and its findings."""
    out = [f"`bench/image_recipe.py`: each variant is {recipe_baseline(b)} plus its overrides, trained on Diffusion Policy's 206 "
           f"demonstrations with one thread for {num(b.get('budget_cpu_min'), 0)} CPU minutes (its step time measured first, its "
           "step count set to fit, the cosine schedule ending at the budget; two variants at a time). Figures: the EMA weights at the "
           "end on the held-out demonstration episodes (1,024 windows): the diffusion loss at fixed sigmas and noise, and the mean "
           "squared error of sampled chunks against the demonstrations (normalised actions). One run per variant (seed 0): "
           f"differences of a few percent are no difference. {b.get('note', '')}", "",
           table(["Variant", "Overrides", "Step (s, 1 thread)", "Windows/s", "Steps in the budget", "Val loss", "Val action MSE"],
                 [[r.get("name"), " ".join(r.get("overrides") or []) or "—", num(r.get("s_per_step"), 2), num(r.get("windows_per_s"), 0),
                   r.get("steps"), num(r.get("val_loss"), 4), num(r.get("val_action_mse"), 4)]
                  for r in b.get("variants") or [] if isinstance(r, dict)]), ""]
    return out + [f"- {line}" for line in b.get("findings") or []] + ([""] if b.get("findings") else [])


def section_image_recipe(results: Results) -> list[str]:
    """Issue 36: the image recipe's choices at equal CPU time (bench/image_recipe.py) and where an image
    training step spends its time before and after (bench/image_step.py)."""
    out = ["### Push-T from pixels: the recipe at equal CPU time", ""]
    for name in ("image_recipe", "image_recipe_round2"):
        b = results.bench(name)
        out += [missing(name), ""] if b is None else recipe_round(b)
    rows = [(name, results.bench(name)) for name in ("image_step_preset", "image_step")]
    if all(r is None for _, r in rows):
        return out + [missing("image_step"), ""]
    out += ["Where a training step spends its time (`bench/image_step.py`, one thread, batch 64, the same real batches; "
            "the former preset, then the chosen recipe):", "",
            table(["Recipe", "Step (ms)", "Windows/s", "Encoders fwd+bwd (ms)", "Denoiser + optimiser (ms)", "Augmentation (ms)",
                   "One batch of data, one core (ms)", "Load (1 min)"],
                  [[label, num(r.get("step_ms"), 0), num(r.get("windows_per_s"), 1), num(r.get("encoder_fwd_bwd_ms"), 0),
                    num(r.get("denoiser_and_optimiser_ms"), 0), num(r.get("augment_ms"), 0), num(r.get("data_ms_one_core"), 0),
                    num(r.get("load_average_1min"), 2)]
                   for (name, r), label in zip(rows, ("former preset", "chosen recipe")) if r is not None]), ""]
    return out
