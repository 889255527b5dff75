"""The configuration reference (docs/configuration.md), generated from the config dataclasses.

Every option's type and default come from the dataclass fields, its explanation from the comment
on the field's line in dp/config.py (for the few fields without one, from :data:`FALLBACK_MEANINGS`
below; a comment in dp/config.py always wins), and each preset's values from its YAML. A test
(tests/test_docs.py) compares the committed page with this output, so the reference cannot drift
from the code.

    python -m dp.config_docs            write docs/configuration.md
    python -m dp.config_docs --check    exit 1 if docs/configuration.md is stale
    python -m dp.config_docs --stdout   print the page
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from pathlib import Path

import yaml

from dp import config as config_module
from dp.config import PRESET_DIR, Config, preset_names

RESOLVED = "(resolved by training)"
DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

# Meanings of the fields dp/config.py leaves without a comment (a comment there takes precedence).
FALLBACK_MEANINGS: dict[str, str] = {
    "model.n_layers": "transformer blocks",
    "model.n_heads": "attention heads",
    "model.vision_keypoints": "spatial-softmax keypoints per camera (vision_pool=keypoints)",
    "diffusion.sigma_data": "EDM sigma_data: the assumed spread of the normalised actions",
    "diffusion.sigma_min": "lowest noise level (training sigmas and the sampler schedule)",
    "diffusion.sigma_max": "highest noise level (training sigmas and the sampler schedule)",
    "diffusion.steps": "sampler steps per action chunk at inference (one network pass each)",
    "diffusion.schedule": "the sampler's noise levels: exponential (MoDE's), karras (rho) or fitted (quantiles of the training sigmas)",
    "diffusion.rho": "exponent of the karras schedule (7 in Karras et al.)",
    "diffusion.trim": "p > 0: the sampler's range is the training sigmas' p .. 1-p quantiles instead of sigma_min .. sigma_max",
    "diffusion.solver": "ddim (first order) or dpmpp2m (DPM-Solver++ 2M: second order, one pass per step)",
    "train.steps": "optimiser steps; each step is one global batch",
    "train.lr": "peak AdamW learning rate (reached after train.warmup_steps, then shaped by train.lr_schedule)",
    "train.weight_decay": "AdamW weight decay, applied to weight matrices only",
    "train.betas": "AdamW betas",
    "train.warmup_steps": "steps of linear learning-rate warmup",
    "train.grad_clip": "gradient-norm clipping (0 = off)",
    "train.seed": "seed of the initial weights, the validation split, the data order and the noise",
    "train.log_every": "steps between training rows in metrics.jsonl",
    "train.val_every": "steps between validations (EMA weights on held-out episodes)",
    "train.ckpt_every": "steps between checkpoints (the last step is always saved)",
    "train.keep_checkpoints": "checkpoints kept in RUN/checkpoints (older ones are deleted)",
    "data.action_key": "store key of the action",
    "data.obs_horizon": "observation steps per window (the current one and its history)",
}


def _field_comments(cls: type) -> dict[str, str]:
    """``field -> comment`` from the ``name: type = default  # comment`` lines of a dataclass."""
    source = inspect.getsource(cls)
    comments: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    resolved_from_here = False
    line_field: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string in names and tok.start[1] == 4:
            line_field[tok.start[0]] = tok.string
        elif tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            row = tok.start[0]
            if row in line_field:
                comments[line_field[row]] = text
            elif text.startswith("resolved by training"):
                resolved_from_here = True
                comments["__resolved_from__"] = str(row)
    if resolved_from_here:
        start = int(comments.pop("__resolved_from__"))
        for row, name in line_field.items():
            if row > start:
                comments[name] = f"{comments.get(name, '')} {RESOLVED}".strip()
    return comments


def _type_name(hint: typing.Any) -> str:
    name = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    return (name or str(hint).replace("typing.", "")).replace("|", "or")


def _default(f: dataclasses.Field) -> typing.Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _fmt(value: typing.Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    return "`" + text.replace("|", "\\|") + "`"


def render() -> str:
    """The whole reference page as Markdown."""
    presets = {name: yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text()) or {} for name in preset_names()}
    out = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m dp.config_docs` from dp/config.py and dp/train/presets/*.yaml; do not edit by hand -->",
        "",
        "A run's configuration is a preset (`dp train --preset NAME`) plus `section.key=value` overrides",
        "on the command line, e.g. `dp train --data d.zarr --out runs/x model.n_layers=6 train.steps=40000`.",
        "The resolved configuration is saved as `config.yaml` in the run and in every checkpoint.",
        f"Presets: {', '.join(f'`{p}`' for p in presets)} (in `dp/train/presets/`; each lists only what differs from the defaults).",
        "",
    ]
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = hints[section.name]
        if not dataclasses.is_dataclass(cls):
            continue
        comments = _field_comments(cls)
        out += [f"## `{section.name}`", "", (inspect.getdoc(cls) or "").strip(), ""]
        header = "| option | type | default | " + " | ".join(presets) + " | meaning |"
        out += [header, "|" + "---|" * (4 + len(presets))]
        field_hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            meaning = (comments.get(f.name) or FALLBACK_MEANINGS.get(f"{section.name}.{f.name}", "")).replace("|", "\\|")
            per_preset = [
                _fmt(presets[p][section.name][f.name]) if f.name in (presets[p].get(section.name) or {}) else ""
                for p in presets
            ]
            out.append(
                f"| `{section.name}.{f.name}` | {_type_name(field_hints[f.name])} | {_fmt(_default(f))} | "
                + " | ".join(per_preset)
                + f" | {meaning} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dp.config_docs", description="Write (or check) docs/configuration.md.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if the page differs from what the code generates")
    group.add_argument("--stdout", action="store_true", help="print the page instead of writing it")
    parser.add_argument("--path", type=Path, default=DOC_PATH, help=f"the page (default {DOC_PATH})")
    args = parser.parse_args(argv)
    assert config_module  # the dataclasses documented above
    page = render()
    if args.stdout:
        print(page, end="")
        return 0
    if args.check:
        current = args.path.read_text() if args.path.is_file() else None
        if current != page:
            print(f"{args.path} is stale: regenerate it with `python -m dp.config_docs`", file=sys.stderr)
            return 1
        print(f"{args.path} is up to date")
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(page)
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
