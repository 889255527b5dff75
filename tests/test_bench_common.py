"""bench/common.py: published results name no path of the machine that measured them."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import ROOT, emit, public, write_json  # noqa: E402


def test_public_takes_this_machines_paths_out_of_every_string(tmp_path, capsys):
    tmp = tempfile.gettempdir()
    out = {"command": f"{sys.executable} -m dp eval {ROOT}/runs/can --json-out {tmp}/work/val.json",
           "venv": [f"{Path.home()}/.cache/dp-peers/lerobot/bin/lerobot-train", 3], "seed": 0, "run": str(ROOT)}
    assert public(out) == {"command": "python -m dp eval runs/can --json-out work/val.json",
                           "venv": ["~/.cache/dp-peers/lerobot/bin/lerobot-train", 3], "seed": 0, "run": "."}
    write_json(out, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == public(out)
    assert json.loads(capsys.readouterr().out) == public(out)


def test_no_committed_result_names_a_path_of_this_machine():
    roots = (f"{ROOT}/", f"{tempfile.gettempdir()}/", f"{Path.home()}/", sys.executable)
    named = [f"{path.relative_to(ROOT)}: {root}" for path in sorted((ROOT / "bench" / "results").rglob("*"))
             if path.is_file() for root in roots if root in path.read_text()]
    assert not named


def test_emit_records_the_cpu_and_load_a_figure_was_measured_on(tmp_path, capsys):
    out = tmp_path / "bench.json"
    emit({"bench": "x"}, 0.0, out)
    written = json.loads(out.read_text())
    assert written == json.loads(capsys.readouterr().out)
    assert isinstance(written["cpu"], str) and written["cpu"].strip()
    if Path("/proc/cpuinfo").is_file() and " amx_tile" in Path("/proc/cpuinfo").read_text():
        assert written["cpu"].endswith("+AMX")
    assert written["load_average_1min"] >= 0 and written["total_s"] > 0
    emit({"bench": "x", "cpu": "given"}, 0.0, out)
    assert json.loads(out.read_text())["cpu"] == "given"  # a bench that names its CPU keeps its own
