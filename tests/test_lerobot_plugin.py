"""The LeRobot policy plugin (integrations/lerobot_policy_mode) runs its own tests in LeRobot's
virtualenv, where LeRobot 0.4.4 and its numpy 2 live; this test starts them there, with this python
making their Push-T datasets through dp's own commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PUSHT_SRC, PUSHT_SRC_MISSING

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("DP_PEERS_LEROBOT_VENV", Path.home() / ".cache" / "dp-peers" / "lerobot"))
INSTALL = ("pip install --no-deps -e . && pip install -e 'integrations/lerobot_policy_mode[test]' with LeRobot's "
           "virtualenv active (docs/lerobot.md)")


@pytest.mark.slow
def test_plugin_in_lerobot_virtualenv():
    python = VENV / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"needs LeRobot's virtualenv at {VENV}: bash bench/peers/setup_lerobot.sh, then {INSTALL}")
    probe = subprocess.run([str(python), "-c", "import lerobot_policy_mode, pytest"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the plugin or pytest is not installed in {VENV}: {INSTALL}")
    if not os.path.isdir(PUSHT_SRC):
        pytest.skip(PUSHT_SRC_MISSING)
    out = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "integrations/lerobot_policy_mode/tests"],
                         cwd=ROOT, env={**os.environ, "DP_PYTHON": sys.executable}, capture_output=True, text=True, timeout=900)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert re.search(r"\b10 passed\b", summary) and "skipped" not in summary, summary
