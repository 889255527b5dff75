"""What `dp node --policy SPEC` runs: anything with the Policy runtime API (``reset``, ``select_action``).

The specs of `dp eval` (``dp.sim.evaluate.load_policy``): ``expert:TASK``, an exported folder
(``policy.onnx``, run by ``dp.infer.OnnxPolicy``, with RTI warm starts unless ``rti=False``), a
run or checkpoint folder (``dp.infer.Policy``); and one more for robots: ``package.module:Name``,
any importable class or factory called with no arguments (your own policy, a teleoperation
device, a test double).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from dp.errors import DpError


def load_policy(spec: str, *, rti: bool = True) -> Any:
    """The policy ``spec`` names (see the module docstring); a DpError naming it otherwise."""
    module_name, sep, attr = spec.partition(":")
    if sep and module_name != "expert" and not Path(spec).exists():
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise DpError(f"policy {spec!r}: cannot import {attr} from {module_name} ({exc})") from None
        policy = factory()
        if not callable(getattr(policy, "select_action", None)) or not callable(getattr(policy, "reset", None)):
            raise DpError(f"policy {spec!r}: {attr}() has no reset/select_action (the Policy runtime API)")
        return policy
    from dp.sim.evaluate import load_policy as load_eval_policy

    return load_eval_policy(spec, rti=rti and (Path(spec) / "policy.onnx").is_file())
