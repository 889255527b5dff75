"""The user documentation (docs/*.md) stays true to the code.

- docs/configuration.md is exactly what ``python -m dp.config_docs`` generates, and shows every
  option of every preset with the preset's value;
- every ``dp <command>`` (and ``python -m dp.train`` / torchrun) line in the docs' shell code blocks
  and inline code, in the README's, and in each command's own ``--help`` (its examples and the
  "example:" that ends it) names a real command, and every ``--flag`` exists in that command's parser
  (the subcommand's, for ``dp import`` / ``dp export-data``) under its current spelling, not a
  deprecated alias; tasks, presets, dataset cards, launch-file variables and ``section.key=value``
  overrides shown for ``dp train`` / ``dp robot`` are real too;
- relative links between the pages point at existing pages and headings.

Fast: it builds argument parsers and reads YAML; nothing is trained, simulated or launched.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
import shlex
import typing
from pathlib import Path

import pytest
import yaml

from dp import config_docs
from dp.cli import COMMANDS, build_parser
from dp.cli_args import deprecated_aliases
from dp.config import PRESET_DIR, Config, build_config, preset_names
from dp.errors import DpError

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
SHELL_LANGS = {"bash", "sh", "shell", "console"}
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")
_PLACEHOLDER = re.compile(r"^(<[^>]*>|[A-Z][A-Z0-9_]*)$")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


# ---------------------------------------------------------------------------- configuration.md
def test_configuration_md_is_generated():
    page = DOCS / "configuration.md"
    assert page.is_file(), "docs/configuration.md is missing: run `python -m dp.config_docs`"
    assert page.read_text() == config_docs.render(), (
        "docs/configuration.md is stale (dp/config.py or dp/train/presets/*.yaml changed): "
        "regenerate it with `python -m dp.config_docs`"
    )


def _split_row(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_every_preset_option_is_in_configuration_md():
    text = (DOCS / "configuration.md").read_text()
    columns: dict[str, int] = {}
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("| option |"):
            columns = {name: i for i, name in enumerate(_split_row(line))}
        elif line.startswith("| `"):
            cells = _split_row(line)
            rows[cells[0].strip("`")] = cells
    missing = []
    for name in preset_names():
        assert name in columns, f"preset {name!r} has no column in docs/configuration.md"
        values = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text()) or {}
        for section, options in values.items():
            if not isinstance(options, dict):  # a top-level scalar (e.g. preset: NAME) is no option
                continue
            for key, value in options.items():
                option = f"{section}.{key}"
                if option not in rows:
                    missing.append(f"{name}: {option} has no row")
                elif rows[option][columns[name]] != config_docs._fmt(value):
                    missing.append(f"{name}: {option} shows {rows[option][columns[name]]!r}, the preset says {config_docs._fmt(value)!r}")
    assert not missing, "docs/configuration.md does not show the presets (regenerate it with `python -m dp.config_docs`):\n" + "\n".join(missing)


def test_every_option_has_a_meaning_and_fallbacks_name_real_fields():
    hints = typing.get_type_hints(Config)
    fields = {
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(Config)
        if dataclasses.is_dataclass(hints[section.name])
        for f in dataclasses.fields(hints[section.name])
    }
    stale = sorted(set(config_docs.FALLBACK_MEANINGS) - fields)
    assert not stale, f"dp/config_docs.py FALLBACK_MEANINGS names options that no longer exist: {stale}"
    text = (DOCS / "configuration.md").read_text()
    blank = [cells[0] for line in text.splitlines() if line.startswith("| `") and not (cells := _split_row(line))[-1]]
    assert not blank, f"options without an explanation (add a comment in dp/config.py): {blank}"


def test_config_docs_check_flag(tmp_path, capsys):
    page = tmp_path / "configuration.md"
    assert config_docs.main(["--check", "--path", str(page)]) == 1  # missing
    assert config_docs.main(["--path", str(page)]) == 0
    assert config_docs.main(["--check", "--path", str(page)]) == 0
    page.write_text(page.read_text() + "edited by hand\n")
    assert config_docs.main(["--check", "--path", str(page)]) == 1
    capsys.readouterr()


# ---------------------------------------------------------------------------- commands in the docs
def _command_lines(path: Path) -> list[tuple[str, str]]:
    """(where, command line) for every line of a shell code block and every inline code span that
    starts a dp / torchrun command."""
    text = path.read_text()
    out: list[tuple[str, str]] = []
    for m in _FENCE.finditer(text):
        if m.group(1) not in SHELL_LANGS:
            continue
        first = text.count("\n", 0, m.start(2)) + 1
        pending, start = "", first
        for offset, raw in enumerate(m.group(2).splitlines()):
            if not pending:
                start = first + offset
            line = raw.rstrip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            out.append((f"{path.name}:{start}", pending + line))
            pending = ""
    prose = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for m in _INLINE.finditer(prose):
        span = " ".join(m.group(1).split())
        if re.match(r"^(dp |python -m dp[ .]|python -m torch\.distributed\.run |torchrun )", span):
            out.append((f"{path.name}:{prose.count(chr(10), 0, m.start()) + 1}", span))
    return out


@functools.lru_cache(maxsize=None)
def _parser(name: str) -> argparse.ArgumentParser:
    return build_parser(name)


@functools.lru_cache(maxsize=1)
def _torchrun_options() -> frozenset[str]:
    from torch.distributed.run import get_args_parser

    return frozenset(_options(get_args_parser()))


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _value(args: list[str], flag: str) -> str | None:
    for i, tok in enumerate(args):
        if tok == flag and i + 1 < len(args):
            return args[i + 1]
        if tok.startswith(flag + "="):
            return tok.split("=", 1)[1]
    return None


def _real(token: str | None) -> bool:
    """A concrete value, not a placeholder such as NAME, <dir> or ${var}."""
    return token is not None and not _PLACEHOLDER.match(token) and "$" not in token


def _check_flags(where: str, prog: str, args: list[str], options: set[str], deprecated: dict[str, str] | None = None) -> list[str]:
    problems = []
    for tok in args:
        if tok.startswith("-") and not re.match(r"^-\d", tok) and tok != "-":
            flag = tok.split("=", 1)[0]
            if flag not in options:
                problems.append(f"{where}: `{prog}` has no option {flag}")
            elif deprecated and flag in deprecated:
                problems.append(f"{where}: `{prog} {flag}` is deprecated: write {deprecated[flag]}")
    return problems


def _check_dp(where: str, cmd: str, args: list[str]) -> list[str]:
    if _PLACEHOLDER.match(cmd) or cmd in ("-h", "--help", "-V", "--version"):
        return []
    if cmd not in COMMANDS:
        return [f"{where}: `dp {cmd}` is not a command (commands: {', '.join(COMMANDS)})"]
    parser = _parser(cmd)
    options, deprecated = _options(parser), deprecated_aliases(parser)
    prog = f"dp {cmd}"
    sub = _subparsers(parser)
    if sub is not None:
        choice = next((a for a in args if not a.startswith("-")), None)
        if choice is None or _PLACEHOLDER.match(choice) or "|" in choice:
            return _check_flags(where, prog, args, options, deprecated)
        if choice not in sub.choices:
            return [f"{where}: `dp {cmd} {choice}`: no such format (choices: {', '.join(sub.choices)})"]
        options |= _options(sub.choices[choice])
        deprecated |= deprecated_aliases(sub.choices[choice])
        prog = f"dp {cmd} {choice}"
    problems = _check_flags(where, prog, args, options, deprecated)
    problems += _check_values(where, cmd, args)
    return problems


def _positional_overrides(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith("-") and re.match(r"^[a-z_]+(\.[a-z_]+)+=", a)]


def _check_values(where: str, cmd: str, args: list[str]) -> list[str]:
    """Tasks, presets, cards, launch variables and config overrides the docs show must exist."""
    from dp.sim.tasks import TASKS

    problems = []
    task = _value(args, "--task")
    if cmd in ("collect", "eval", "quickstart") and _real(task):
        named = task.split(",") if cmd == "eval" else [task]  # dp eval takes several, or all (the policy's own)
        problems += [f"{where}: no task {t!r} (tasks: {', '.join(TASKS)})" for t in named if t not in TASKS and (cmd, t) != ("eval", "all")]
    for tok in args:
        if tok.startswith("expert:") and _real(tok.split(":", 1)[1]) and tok.split(":", 1)[1] not in TASKS:
            problems.append(f"{where}: {tok}: no such task (tasks: {', '.join(TASKS)})")
    if cmd == "train":
        preset = _value(args, "--preset")
        if _real(preset) and preset not in preset_names():
            problems.append(f"{where}: no preset {preset!r} (presets: {', '.join(preset_names())})")
        overrides = _positional_overrides(args)
        if overrides and all(_real(o.split("=", 1)[1]) for o in overrides):
            try:
                build_config(preset if _real(preset) and preset in preset_names() else "small", overrides)
            except DpError as exc:
                problems.append(f"{where}: dp train overrides {overrides}: {exc}")
    if cmd in ("import", "export-data"):
        card = _value(args, "--card")
        if _real(card):
            from dp.data.formats.cards import load_card

            try:
                load_card(REPO / card if (REPO / card).is_file() else card)
            except DpError as exc:
                problems.append(f"{where}: --card {card}: {exc}")
    if cmd == "robot":
        robot = _value(args, "--robot") or "robots/panda_sim.yaml"
        if (REPO / robot).is_file():
            from dp.deploy.robot_config import load_robot

            try:
                load_robot(REPO / robot, _positional_overrides(args))
            except DpError as exc:
                problems.append(f"{where}: dp robot {robot} {' '.join(_positional_overrides(args))}: {exc}")
    if cmd == "launch":
        file = next((a for a in args if not a.startswith("-")), None)
        if _real(file):
            from dp.launch import load_launch

            sets = dict(v.split("=", 1) for i, v in enumerate(args) if i and args[i - 1] == "--set" and "=" in v)
            if _value(args, "--json-out") is not None:
                sets["json_out"] = "x.json"
            try:
                load_launch(file, sets)
            except DpError as exc:
                problems.append(f"{where}: dp launch {file}: {exc}")
    return problems


def _check_line(where: str, line: str) -> list[str]:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        tokens = line.split()
    segments, current = [], []
    for tok in tokens:
        if tok in ("|", "||", "&&", ";", "&"):
            segments.append(current)
            current = []
        else:
            current.append(tok)
    segments.append(current)
    problems = []
    for toks in segments:
        for i, tok in enumerate(toks):
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if tok == "dp" and nxt is not None and (i == 0 or toks[i - 1] not in ("-m", "command:")):
                problems += _check_dp(where, nxt, toks[i + 2:])
                break
            if tok == "-m" and nxt == "dp" and i + 2 < len(toks):
                problems += _check_dp(where, toks[i + 2], toks[i + 3:])
                break
            if tok == "-m" and nxt == "dp.train":
                problems += _check_dp(where, "train", toks[i + 2:])
                break
            if tok == "torchrun" or (tok == "-m" and nxt == "torch.distributed.run"):
                rest = toks[i + (1 if tok == "torchrun" else 2):]
                end = rest.index("-m") if "-m" in rest else len(rest)
                problems += _check_flags(where, "torchrun", rest[:end], set(_torchrun_options()))
                if end + 1 < len(rest) and rest[end + 1] == "dp.train":
                    problems += _check_dp(where, "train", rest[end + 2:])
                break
    return problems


def test_docs_exist():
    names = {p.name for p in PAGES}
    for page in ("tutorial.md", "datasets.md", "drivers.md", "protocol.md", "configuration.md", "multinode.md"):
        assert page in names, f"docs/{page} is missing"


@pytest.mark.parametrize("page", [*PAGES, REPO / "README.md"], ids=lambda p: p.name)
def test_commands_and_flags_in_docs_exist(page):
    lines = _command_lines(page)
    problems = [p for where, line in lines for p in _check_line(where, line)]
    assert not problems, "the docs show commands the CLI does not have:\n" + "\n".join(problems)


def _help_lines(name: str) -> list[tuple[str, str]]:
    """(where, command line) for every ``dp`` line of a command's --help (its subcommands' too): the
    description's examples (less the comment after three spaces) and the closing example."""
    parser = _parser(name)
    sub = _subparsers(parser)
    parts = [("description", parser.description), ("example", parser.epilog)]
    parts += [(f"{choice} description", p.description) for choice, p in (sub.choices.items() if sub else ())]
    return [(f"`dp {name} --help` {part}", re.split(r"\s{3,}", raw.strip())[0])
            for part, text in parts for raw in (text or "").splitlines() if raw.strip().startswith("dp ")]


@pytest.mark.parametrize("name", COMMANDS)
def test_commands_and_flags_in_help_texts_exist(name):
    lines = _help_lines(name)
    assert any(where.endswith("example") for where, _ in lines), f"`dp {name} --help` ends with no example"
    problems = [p for where, line in lines for p in _check_line(where, line)]
    assert not problems, "the help shows commands the CLI does not have:\n" + "\n".join(problems)


def test_the_checker_catches_invented_flags():
    """The checks above would fail on a wrong command, flag, subcommand, task, override or variable."""
    bad = [
        "dp trian --data d.zarr --out r",
        "dp train --data d.zarr --out r --epochs 3",
        "dp train --data d.zarr --out r model.n_layerz=3",
        "dp import hdf5 x --out s.zarr",
        "dp import calvin x --out s.zarr --filter-key train",
        "dp eval runs/x --task pour",
        "dp launch launch/sim_deploy.yaml --set polcy=x",
        "dp robot --robot robots/panda_sim.yaml limits.max_sped=1",
        "torchrun --nnodes 2 --node_ranks 0 -m dp.train --out r",
        "dp export runs/x --out e --steps 4",  # a deprecated spelling
        "dp eval --onnx exported/x --task lift",
    ]
    for line in bad:
        assert _check_line("test", line), line
    good = ["dp train --data d.zarr --out r model.n_layers=3", "dp import calvin x --out s.zarr --segments episodes",
            "MUJOCO_GL=egl dp eval expert:lift --task lift", "dp COMMAND --help"]
    for line in good:
        assert not _check_line("test", line), line


# ---------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_links_between_pages_resolve():
    anchors = {p.name: {_slug(h) for h in re.findall(r"^#+ (.+)$", _FENCE.sub("", p.read_text()), re.M)} for p in PAGES}
    problems = []
    for page in PAGES:
        for target in _LINK.findall(_FENCE.sub("", page.read_text())):
            if re.match(r"^[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            name = file or page.name
            if not name.endswith(".md"):  # a figure or another file beside the pages
                if not (page.parent / name).is_file():
                    problems.append(f"{page.name}: link to {target}: no docs/{name}")
                continue
            if name not in anchors:
                problems.append(f"{page.name}: link to {target}: no docs/{name}")
            elif anchor and anchor not in anchors[name]:
                problems.append(f"{page.name}: link to {target}: no heading #{anchor} in {name}")
    assert not problems, "\n".join(problems)
