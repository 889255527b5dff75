"""The ablation sections: what limits success on a task, each setting on validation seeds (issue 16)."""

from __future__ import annotations

from bench.reporting.load import Results
from bench.reporting.spec import ABLATIONS, missing
from bench.reporting.text import ci, num, pct, score_ci, shown, table


def section_ablation(results: Results) -> list[str]:
    """One section per ablation bench: the setting, its training time, the seeds and the success."""
    out: list[str] = []
    for name, title in ABLATIONS.items():
        out += [f"## {title}", ""]
        b = results.bench(name)
        if b is None:
            out += [missing(name), ""]
            continue
        out += [str(b.get("about", "")), ""]
        rows = [r for r in b.get("rows") or [] if isinstance(r, dict)]
        headers = ["Question", "Setting", "Training (min)", "Seeds (episodes)", "Success", "95% CI", "Successes"]
        body = [[r.get("question"), r.get("setting"), num(r.get("train_min"), 0), f"{r.get('split')} ({r.get('episodes')})",
                 pct(r.get("success_rate")), ci(r.get("success_ci95")), f"{r.get('successes')}/{r.get('episodes')}"] for r in rows]
        if any("mean_score" in r for r in rows):  # Push-T: the coverage score beside success
            headers += ["Mean score", "Score 95% CI"]
            for row, r in zip(body, rows):
                row += [num(r.get("mean_score"), 3), score_ci(r.get("score_ci95"))]
        reached = [r["milestones"] if isinstance(r.get("milestones"), dict) else {} for r in rows]
        if any(reached):  # where the failures stopped (dp eval)
            headers.append("Milestones reached")
            for row, counts in zip(body, reached):
                row.append(", ".join(f"{name} {k}" for name, k in counts.items()) or "—")
        out += [table(headers, body), ""]
        out += [f"- {line}" for line in b.get("findings") or []]
        if b.get("findings"):
            out.append("")
        commands = [shown(r["command"]) for r in rows if r.get("command")]
        if commands:
            out += ["Commands (each row's `dp eval`; the runs as in the success section):", "", "```bash", *commands, "```", ""]
    return out

