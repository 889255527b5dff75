"""One CLI vocabulary: POLICY the same way in every command, the renamed flags and their deprecated
old spellings, `--split val` by default, `dp --version`, and help texts that list every format and
end with an example the parser accepts.

Fast: argument parsers and a few `python -m dp` processes; nothing is trained, simulated or exported.
"""

from __future__ import annotations

import ast
import inspect
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import dp
from dp import cli_args
from dp.cli import COMMANDS, build_parser
from dp.cli_args import policy_of, version
from dp.errors import DpError

POLICY_COMMANDS = {  # command -> the arguments it needs besides POLICY
    "eval": ["--task", "lift"],
    "export": ["--out", "exported/lift"],
    "node": [],
}
# (command, old spelling, new spelling, value, the value parsed, the new flag's destination)
ALIASES = [
    ("export", "--steps", "--sampler-steps", "4", 4, "sampler_steps"),
    ("export", "--n-action-steps", "--replan-every", "2", 2, "replan_every"),
    ("eval", "--onnx", "--policy", "exported/lift", "exported/lift", "policy_flag"),
]
FORMAT_NAMES = {"calvin": "CALVIN", "libero": "LIBERO", "dp-zarr": "Diffusion Policy Zarr", "lerobot": "LeRobot"}


def _dp(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dp", *argv], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", POLICY_COMMANDS)
def test_policy_is_positional_or_a_flag_and_named_once(name):
    parser, rest = build_parser(name), POLICY_COMMANDS[name]
    positional = parser.parse_args(["runs/lift", *rest])
    flag = parser.parse_args(["--policy", "runs/lift", *rest])
    assert policy_of(positional) == policy_of(flag) == "runs/lift"
    with pytest.raises(DpError, match="named twice"):
        policy_of(parser.parse_args(["runs/lift", "--policy", "runs/can", *rest]))
    with pytest.raises(DpError, match="name the policy: POLICY or --policy POLICY"):
        policy_of(parser.parse_args(rest))


@pytest.mark.parametrize(("name", "old", "new", "text", "value", "dest"), ALIASES, ids=lambda v: v if isinstance(v, str) else None)
def test_a_deprecated_spelling_parses_as_the_new_flag_and_warns_once(name, old, new, text, value, dest, capsys):
    rest = POLICY_COMMANDS[name] if dest == "policy_flag" else ["runs/lift", *POLICY_COMMANDS[name]]
    parser = build_parser(name)
    modern = parser.parse_args([new, text, *rest])
    assert not capsys.readouterr().err
    legacy = parser.parse_args([old, text, *rest])
    err = capsys.readouterr().err
    assert getattr(legacy, dest) == getattr(modern, dest) == value and vars(legacy) == vars(modern)
    assert err.count("\n") == 1 and err.startswith(f"dp {name}: {old} is deprecated, use ") and new in err, err
    assert getattr(parser.parse_args(rest), dest) is None  # the alias sets no default of its own


def test_the_export_refuses_an_expert_or_an_exported_folder(tmp_path):
    from dp.export.export_cmd import _source

    with pytest.raises(DpError, match="scripted expert has no network to export"):
        _source("expert:lift")
    (tmp_path / "policy.onnx").write_bytes(b"")
    with pytest.raises(DpError, match="already an exported folder"):
        _source(str(tmp_path))
    assert _source("runs/lift") == "runs/lift"


def test_eval_seeds_default_to_the_validation_split():
    from dp.eval.evaluate import evaluate

    assert build_parser("eval").parse_args(["expert:lift", "--task", "lift"]).split == "val"
    assert inspect.signature(evaluate).parameters["split"].default == "val"
    assert "test split" in build_parser("node").format_help()  # `dp node --episodes` says which seeds it uses


def test_version_and_its_flags():
    assert version() == dp.__version__
    for flag in ("--version", "-V"):
        done = _dp(flag)
        assert done.returncode == 0 and done.stdout == f"dp {dp.__version__}\n", done


def test_cli_args_is_foundation_only():
    tree = ast.parse(Path(cli_args.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names} == {"dp.errors"}


def test_the_command_list_names_every_format():
    usage = _dp("--help")
    assert usage.returncode == 0
    lines = {line.split()[0]: line for line in usage.stdout.splitlines() if line.startswith("  ")}
    for name in ("import", "export-data"):
        choices = next(a for a in build_parser(name)._actions if a.choices and isinstance(a.choices, dict)).choices
        assert set(choices) <= set(FORMAT_NAMES), f"name the new format of dp {name} in FORMAT_NAMES and in its help"
        missing = [FORMAT_NAMES[c] for c in choices if FORMAT_NAMES[c] not in lines[name]]
        assert not missing, f"`dp --help` line of {name} omits {missing}: {lines[name]}"
    assert "robomimic" in lines["import"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_help_ends_with_an_example_its_parser_accepts(name, capsys):
    parser = build_parser(name)
    text = parser.format_help()
    example = text.rstrip().splitlines()[-1].strip()
    assert text.rstrip().splitlines()[-2] == "example:" and example.startswith(f"dp {name} "), text[-300:]
    try:
        parser.parse_args(shlex.split(example)[2:])
    except SystemExit:
        pytest.fail(f"`dp {name} --help` ends with an example its parser refuses: {example}\n{capsys.readouterr().err}")
    assert "deprecated" not in capsys.readouterr().err


def test_the_quickstart_stages_speak_the_current_vocabulary(capsys):
    from dp.quickstart import FAST, plan

    for stage in plan(Path("qs"), "lift", FAST, 5555):
        args = build_parser(stage.command).parse_args(stage.argv)
        if stage.command == "eval":
            assert args.split == "test", stage  # the figures the quickstart reports
    assert "deprecated" not in capsys.readouterr().err


def test_the_node_samples_fully_unless_rti_is_switched_on(capsys):
    parser = build_parser("node")
    assert parser.parse_args(["exported/lift"]).rti is False  # full sampling by default (issue 37: the warm start did not win)
    assert parser.parse_args(["exported/lift", "--rti"]).rti is True
    assert parser.parse_args(["exported/lift", "--rti=on"]).rti is True and parser.parse_args(["exported/lift", "--rti=off"]).rti is False
    with pytest.raises(SystemExit):
        parser.parse_args(["exported/lift", "--rti=maybe"])
    assert "expected on or off, got 'maybe'" in capsys.readouterr().err


def test_torchruns_entry_point_reports_errors_as_dp_train_does(tmp_path):
    missing = tmp_path / "nope.zarr"
    argv = ["--data", str(missing), "--out", str(tmp_path / "run")]
    via_dp = _dp("train", *argv)
    via_module = subprocess.run([sys.executable, "-m", "dp.train", *argv], capture_output=True, text=True, timeout=120)
    assert via_dp.returncode == via_module.returncode == 1
    assert via_module.stderr.startswith("dp train: error: ") and "nope.zarr" in via_module.stderr
    assert via_module.stderr == via_dp.stderr


def test_torchruns_entry_point_has_dp_trains_help(capsys):
    from dp.train import train_cmd
    from dp.train.__main__ import main

    via_dp = build_parser("train").format_help()
    with pytest.raises(SystemExit) as shown:
        main(["--help"])
    assert shown.value.code == 0
    words = lambda text: text.replace("python -m dp.train", "dp train").split()  # the usage line wraps by the program's name
    assert words(capsys.readouterr().out) == words(via_dp)  # options, description and example alike
    assert via_dp.rstrip().endswith(train_cmd.EXAMPLE)
