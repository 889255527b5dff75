"""docs/runtime.md's complete example runs as written: its Python blocks drive gym-pusht with a small
image Push-T policy (conftest.py::pusht_image_run), in torch and then its ONNX export with RTI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gym_pusht", reason='Push-T tests need the optional extra: pip install -e ".[pusht]"')

pytestmark = pytest.mark.slow  # trains, simulates or runs processes: `pytest -m "not slow"` leaves it out

PAGE = Path(__file__).resolve().parents[1] / "docs" / "runtime.md"
STEPS = 12  # the page's 300 steps, shortened: the loop, not the score, is under test


def example_blocks() -> list[str]:
    """The Python blocks of the page's "A complete example" section, in order."""
    section = PAGE.read_text().split("## A complete example", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_runtime_page_example_runs_in_torch_and_onnx(pusht_image_run, pusht_image_export, capsys):
    blocks = example_blocks()
    assert len(blocks) == 2, "the example section should hold the torch loop and the ONNX loop"
    code = "\n".join(blocks)
    assert "MAX_STEPS = 300" in code and '"runs/pusht_image"' in code and '"runs/pusht_image_onnx"' in code
    code = (code.replace("MAX_STEPS = 300", f"MAX_STEPS = {STEPS}")
            .replace('"runs/pusht_image_onnx"', repr(str(pusht_image_export)))
            .replace('"runs/pusht_image"', repr(str(pusht_image_run))))
    scope: dict = {}
    exec(compile(code, str(PAGE), "exec"), scope)  # noqa: S102 (the page's own code)
    assert f"after {STEPS} steps" in capsys.readouterr().out  # the torch loop ran every step
    assert 0.0 <= scope["best"] <= 1.0
    assert type(scope["policy"]).__name__ == "OnnxPolicy" and scope["step"] == STEPS - 1  # and the ONNX loop too
    action = scope["policy"].select_action({"img": scope["obs"]["pixels"], "agent_pos": scope["obs"]["agent_pos"]})
    assert action.shape == (2,) and np.isfinite(action).all()
