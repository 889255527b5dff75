"""What the benchmark scripts share: how their JSON ends and where it goes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def emit(out: dict[str, Any], started: float, json_out: Path | None) -> None:
    """Add the wall time since ``started`` (perf_counter) and the 1-minute load to ``out``, print it
    as JSON on stdout and, with ``json_out``, write it there too."""
    out["total_s"] = round(time.perf_counter() - started, 1)
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    text = json.dumps(out, indent=2)
    print(text)
    if json_out:
        json_out.write_text(text + "\n")
