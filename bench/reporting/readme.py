"""The README's ``## Results`` section, rewritten from the same inputs."""

from __future__ import annotations

from pathlib import Path

from bench.reporting.load import Results
from bench.reporting.sections_peers import peers_readme_table
from bench.reporting.sections_policy import headline_table, multitask_table
from bench.reporting.spec import LATENCY_CASES, MISSING, MULTITASK, latency_modes
from bench.reporting.text import get, num, pct, shown, table


README_INTRO = (
    "Measured on this project's reference machine (2 CPU cores, no GPU); every figure, its command and\n"
    "the plots are on the [results page](docs/results.md). Policies use the `small` preset and state\n"
    "observations unless the task says `image`. Seeds: `test` rows ran on `dp eval --split test` seeds that\n"
    "chose nothing; rows from before the split ran on seeds that also chose their RTI settings. Latency is\n"
    "per `select_action` call (median: a queued action; p99: a new chunk) while other jobs shared the\n"
    "machine; the clean per-chunk figures are in the latency table below."
)


def readme_section(results: Results) -> str:
    """The README's Results section: the measured headline rows, the multitask table, per-chunk latency
    and one line of data, training and deploy figures, all from the benchmark JSONs."""
    out = ["## Results", "", README_INTRO, "", *(line for line in headline_table(results).splitlines() if MISSING not in line and not line.startswith("| multitask_")), ""]
    text, means, _ = multitask_table(results)
    if any(v is not None for v in means.values()):
        out += [f"Multitask, language-conditioned ({', '.join(MULTITASK)} in one policy; MoDE against its dense twin):", "", text, ""]
    lat = results.bench("latency")
    if lat is not None:
        cases = [k for k, _ in LATENCY_CASES if isinstance(lat.get(k), dict)]
        rows = [[label, *(f"{num(get(lat, k, mode, 'median_ms'), 1)} / {num(get(lat, k, mode, 'p99_ms'), 1)}" for k in cases)]
                for mode, label in latency_modes(lat)]
        headers = ["Inference, `small` preset, batch 1, 1 thread", *(f"{label}: median / p99 ms per chunk" for k, label in LATENCY_CASES if k in cases)]
        out += [table(headers, rows), ""]
    out += peers_readme_table(results)
    data, imp, train, image, dep = (results.bench(n) or {} for n in ("data_throughput", "import_throughput", "train", "image_train", "deploy"))
    facts = []
    if data:
        facts.append(f"Store: {num(data.get('lowdim_windows_per_s_loader'))} low-dim and {num(data.get('image_windows_per_s'))} image "
                     "windows/s through the loader.")
    if imp:
        facts.append(f"Import: CALVIN {num(get(imp, 'calvin', 'frames_per_s'), 0)} frames/s, LIBERO {num(get(imp, 'libero', 'frames_per_s'), 0)} frames/s.")
    if train:
        facts.append(f"Training: {num(get(train, 'state', 'samples_per_s'), 0)} samples/s (state), "
                     f"{num(get(train, 'two_cameras_84', 'samples_per_s'), 0)} samples/s (two cameras).")
    for name, what in (("pusht", "state"), ("pusht_image", "image")):
        rows = get(results.bench(name), "test") or {}
        if isinstance(rows.get("torch"), dict):
            parts = ", ".join(f"{label} {num(get(rows, k, 'mean_score'), 3)} / {pct(get(rows, k, 'success_rate'))}"
                              for k, label in (("torch", "torch"), ("onnx", "ONNX"), ("onnx_rti", "ONNX + RTI"), ("deploy", "deploy"))
                              if isinstance(rows.get(k), dict))
            facts.append(f"Push-T ({what}, human demonstrations, gym-pusht, {get(rows, 'torch', 'episodes')} test episodes; "
                         f"mean score / success): {parts}.")
    if image:
        facts.append(f"CALVIN-shaped image training: the loader delivers {num(get(image, 'loader_over_step_ratio'), 1)}x what the model consumes.")
    if dep:
        facts.append(f"Deploy path ({shown(dep.get('policy', '?'))}): {pct(get(dep, 'success', 'success_rate'))} success, "
                     f"observation-to-command median {num(get(dep, 'obs_to_command_ms', 'median'))} ms, "
                     f"p99 {num(get(dep, 'obs_to_command_ms', 'p99'))} ms.")
    if facts:
        out += [" ".join(facts), ""]
    return "\n".join(out)


def write_readme(results: Results, path: Path) -> None:
    """Replace the ``## Results`` section of ``path`` (up to the next ``## `` heading)."""
    text = path.read_text()
    start = text.find("## Results\n")
    if start < 0:
        raise SystemExit(f"{path}: no '## Results' section to replace")
    end = text.find("\n## ", start + 1)
    path.write_text(text[:start] + readme_section(results) + ("\n" + text[end + 1:] if end >= 0 else ""))
