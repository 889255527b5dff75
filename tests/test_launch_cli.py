"""`dp launch`: launch files, prefixed logs, restart policies, clean stops (Ctrl-C and a required
process dying), and the shipped sim_deploy.yaml driving real processes to a finished job."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from dp.link.transport import free_port

from dp.errors import DpError
from dp.launch import command_line, load_launch
from dp.testing.robot_harness import spawn_dp

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, processes: list[dict], vars: dict | None = None) -> Path:
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump({"description": "test", "vars": vars or {}, "processes": processes}))
    return path


def py(code: str, **kw) -> dict:
    return {"command": Path(sys.executable).name, "args": ["-c", code], **kw}


def pids(output: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"\[launch\] started (\S+) \(pid (\d+)\)", output)}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_shipped_launch_files_resolve():
    for name in ("sim_deploy", "sim_teleop_record", "train_ddp"):
        file, spec = load_launch(REPO / "launch" / f"{name}.yaml", {})
        assert spec.processes and all("${" not in " ".join(p.args) for p in spec.processes), name
    _, spec = load_launch("sim_deploy", {"policy": "exported/lift", "port": "6000"})
    node = next(p for p in spec.processes if p.name == "node")
    assert command_line(node)[:3] == [sys.executable, "-m", "dp"]
    assert "exported/lift" in node.args and "tcp://127.0.0.1:6000" in node.args


def test_bad_launch_files_name_file_and_key(tmp_path):
    with pytest.raises(DpError, match="not a variable"):
        load_launch("sim_deploy", {"nope": "1"})
    with pytest.raises(DpError, match=r"test.yaml: processes\[0\].args: unknown variable \$\{missing\}"):
        load_launch(write(tmp_path, [py("pass", name="a", args=["${missing}"])]), {})
    with pytest.raises(DpError, match="restart must be never"):
        load_launch(write(tmp_path, [py("pass", name="a", restart="always")]), {})
    with pytest.raises(DpError, match="duplicate name"):
        load_launch(write(tmp_path, [py("pass", name="a"), py("pass", name="a")]), {})
    with pytest.raises(DpError, match="unknown key"):
        load_launch(write(tmp_path, [py("pass", name="a", colour="red")]), {})


def test_prefixes_restarts_and_a_dying_required_process(tmp_path):
    marker = tmp_path / "runs"
    flaky = f"import sys, pathlib; p = pathlib.Path({str(marker)!r}); p.write_text(p.read_text() + 'x' if p.exists() else 'x'); print('try', len(p.read_text())); sys.exit(3)"
    file = write(tmp_path, [
        py("import time; print('sleeping', flush=True); time.sleep(60)", name="sleeper", required=False),
        py(flaky, name="flaky", required=False, restart="on-failure", max_restarts=2, restart_delay=0.1),
        py("import time, sys; time.sleep(${delay}); print('bye'); sys.exit(5)", name="main"),
    ], vars={"delay": "1.5"})
    t0 = time.monotonic()
    proc = spawn_dp(["launch", str(file)])
    rc = proc.popen.wait(30)
    out = proc.output
    assert rc == 1, out  # a required process died with an error: the launch fails
    assert time.monotonic() - t0 < 15
    assert "[sleeper] sleeping" in out and "[main]    bye" in out and "[flaky]   try 3" in out, out
    assert marker.read_text() == "xxx"  # one run + two restarts
    assert "main (required) exited with code 5: stopping everything" in out
    assert "stopping sleeper" in out
    assert all(gone(pid) for pid in pids(out).values())


def test_sim_deploy_runs_episodes_and_stops_everything(tmp_path):
    report = tmp_path / "deploy.json"
    proc = spawn_dp(["launch", "launch/sim_deploy.yaml", "--set", f"port={free_port()}", "--set", "episodes=1",
                     "--json-out", str(report)])
    assert proc.popen.wait(120) == 0, proc.output
    figures = json.loads(report.read_text())
    assert figures["episodes"] == 1 and figures["success_rate"] == 1.0
    out = proc.output
    assert "[robot]" in out and "[node] " in out and "node finished: stopping the others" in out
    started = pids(out)
    assert set(started) == {"robot", "node"} and all(gone(pid) for pid in started.values())
    assert "dp robot: stopped" in out  # the controller shut down cleanly on SIGINT


def test_ctrl_c_stops_both_processes_and_exits_non_zero():
    proc = spawn_dp(["launch", "sim_deploy", "--set", f"port={free_port()}"])
    try:
        proc.wait_for(r"\[node\].*episode \d+ started", 90)
        time.sleep(1.0)
        proc.popen.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the launch
        rc = proc.popen.wait(20)
    finally:
        proc.stop()
    out = proc.output
    assert rc == 130, out
    assert "interrupted: stopping everything" in out and "stopping node" in out and "stopping robot" in out
    assert out.index("stopping node") < out.index("stopping robot")  # last started, first stopped
    assert all(gone(pid) for pid in pids(out).values())
    assert "dp robot: stopped" in out
