"""The targets checked on the page, collected for its overview table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.reporting.spec import MET, MISSING, NOT_MET
from bench.reporting.text import finite, num


@dataclass
class Targets:
    """Every target checked on the page: (section, metric, measured, target, verdict)."""

    rows: list[list[str]] = field(default_factory=list)

    def check(self, section: str, metric: str, value: Any, op: str, threshold: float, unit: str = "",
              fmt=num, available: bool = True) -> list[str]:
        """One target row (metric, measured, target, verdict), recorded for the overview."""
        if value is None or not available:
            measured, verdict = MISSING, MISSING
        elif not finite(value):
            measured, verdict = "—", NOT_MET
        else:
            ok = value >= threshold if op == ">=" else value <= threshold
            measured, verdict = f"{fmt(value)}{unit}", MET if ok else NOT_MET
        row = [metric, measured, f"{op} {fmt(threshold)}{unit}".replace(">=", "≥").replace("<=", "≤"), verdict]
        self.rows.append([section, *row])
        return row
