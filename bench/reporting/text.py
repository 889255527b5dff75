"""Formatting for the page: numbers, percentages, intervals, tables, and paths made portable."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


PROJECT = Path(__file__).resolve().parents[1]
_ABS_PATH = re.compile(r"(?<![\w.~-])/[\w.+-]+(?:/[\w.+-]+)*")


def shown(text: Any, base: str | None = None, base_name: str = "") -> str:
    """``text`` with this machine's paths made portable: a path inside the project relative to it, one
    inside ``base`` relative to ``base_name``, any other the last part of it (the run's name)."""
    def portable(match: re.Match) -> str:
        path = Path(match.group(0))
        for root, name in ((Path(base), base_name) if base else (None, ""), (PROJECT, "")):
            if root is not None and path.is_relative_to(root):
                return (Path(name) / path.relative_to(root)).as_posix() if name or path != root else "."
        return path.name or str(path)
    return _ABS_PATH.sub(portable, str(text))


def num(v: Any, digits: int = 2) -> str:
    """A number for a table: thousands separators for large values, '—' when absent."""
    if not finite(v):
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if finite(v) else "—"


def score_ci(bounds: Any) -> str:
    """A mean score's interval as "0.945–0.985", '—' when absent."""
    return "–".join(num(b, 3) for b in bounds) if isinstance(bounds, list) and len(bounds) == 2 else "—"


def ci(bounds: Any) -> str:
    if not bounds or len(bounds) != 2 or not all(finite(b) for b in bounds):
        return "—"
    return f"{100 * bounds[0]:.1f}–{100 * bounds[1]:.1f}%"


def big(v: Any) -> str:
    """Parameter / FLOP counts: 1.2M, 3.4G."""
    if not finite(v):
        return "—"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return str(v)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def get(d: Any, *keys: str) -> Any:
    """d[k1][k2]...; None where any level is absent."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d
