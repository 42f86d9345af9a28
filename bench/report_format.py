"""Formatting for bench/report.py's Markdown: reading a results dict tolerantly (a missing level, a null or a
non-number gives None, shown as "n/a"), numbers to text, and Markdown table cells, tables and chart links.
Pure functions. Rounding: requests/s to integers with thousands separators, milliseconds to 3 significant
digits, ratios to 2 decimals. bench/plots.py reads results with the same helpers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

PLOTS_DIR = "bench/results/plots"
NA = "n/a"
TIMES = "\u00d7"  # multiplication sign
MICRO = "\u00b5"  # micro sign

TARGET_ORDER = ("gateway", "inprocess", "gunicorn", "fresh_process")


# --------------------------------------------------------------------------------------------------------------
# Reading the results dict tolerantly


def num(value: Any) -> float | None:
    """`value` as a finite float, or None (missing, null, not a number, NaN/inf; bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def get_in(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]... or None as soon as a level is missing or not a dict."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def ordered(keys: Iterable[str]) -> list[str]:
    present = list(dict.fromkeys(keys))
    return [k for k in TARGET_ORDER if k in present] + sorted(k for k in present if k not in TARGET_ORDER)


# --------------------------------------------------------------------------------------------------------------
# Number formatting (None and non-numbers give "n/a")


def fmt_sig(value: Any, digits: int = 3, *, keep_zeros: bool = False) -> str:
    """`value` to `digits` significant digits, without exponent for ordinary magnitudes (1234 -> '1,230').

    With `keep_zeros`, trailing zeros that are significant stay (1.1 -> '1.10').
    """
    v = num(value)
    if v is None:
        return NA
    if v == 0:
        return "0"
    r = float(f"{v:.{digits}g}")
    if abs(r) >= 10 ** (digits - 1):
        return f"{round(r):,}"
    return f"{r:#.{digits}g}".rstrip(".") if keep_zeros else f"{r:.{digits}g}"


def fmt_num(value: Any) -> str:
    """A parameter as written (10 -> '10', 0.25 -> '0.25')."""
    v = num(value)
    return NA if v is None else f"{v:g}"


def fmt_ms(value: Any) -> str:
    """Milliseconds, 3 significant digits (no unit)."""
    return fmt_sig(value, 3, keep_zeros=True)


def fmt_rps(value: Any) -> str:
    """Requests per second (or any count): integer with thousands separators."""
    v = num(value)
    return NA if v is None else f"{round(v):,}"


def fmt_int(value: Any) -> str:
    return fmt_rps(value)


def fmt_ratio(value: Any) -> str:
    """A ratio to 2 decimals with a multiplication sign: 0.41x."""
    v = num(value)
    return NA if v is None else f"{v:,.2f}{TIMES}"


def fmt_pct(value: Any) -> str:
    """A percentage (100 % = one core for CPU figures), integer."""
    v = num(value)
    return NA if v is None else f"{round(v)} %"


def fmt_seconds(value: Any) -> str:
    v = num(value)
    return NA if v is None else f"{fmt_num(v)} s"


def fmt_value(value: Any, unit: Any) -> str:
    """A target's value in its unit ('x' ratio, 'ms', 'req/s', 'kB', '%', anything else: 3 significant digits)."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    v = num(value)
    if v is None:
        return cell(value)
    u = unit if isinstance(unit, str) else ""
    if u.lower() in ("x", TIMES, "ratio"):
        return fmt_ratio(value)
    if u in ("ms", "s"):
        return f"{fmt_ms(v)} {u}"
    if u.lower() in ("req/s", "rps", "requests/s", "throttles/s", "/s"):
        return f"{fmt_rps(value)} {u}"
    if u.lower() in ("kb", "mb", "b", "bytes", "count", "n"):
        return f"{fmt_int(v)} {u}" if abs(v) >= 100 else f"{fmt_sig(v)} {u}"
    if u == "%":
        return fmt_pct(value)
    return f"{fmt_sig(value)} {u}".rstrip()


def fmt_statuses(value: Any) -> str:
    """{'200': 98, '429': 2} -> '98 x 200, 2 x 429'."""
    statuses = as_dict(value)
    if not statuses:
        return NA
    return ", ".join(f"{fmt_int(n)} {TIMES} {code}" for code, n in sorted(statuses.items()))


def fmt_errors(value: Any, *, include_non_2xx: bool = True) -> str:
    """Total of a LOAD's errors, with the breakdown when there are any."""
    errors = as_dict(value)
    kinds = ("socket", "timeout", "non_2xx") if include_non_2xx else ("socket", "timeout")
    counts = {k: num(errors.get(k)) for k in kinds}
    if all(c is None for c in counts.values()):
        return NA
    total = sum(c or 0 for c in counts.values())
    if not total:
        return "0"
    parts = ", ".join(f"{k.replace('_', '-')} {fmt_int(c)}" for k, c in counts.items() if c)
    return f"{fmt_int(total)} ({parts})"


def cell(value: Any) -> str:
    """Text for a table cell: pipes escaped, newlines flattened."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: str, rows: list[list[str]]) -> list[str]:
    """A Markdown table; `header` is the column titles separated by '|'."""
    titles = header.split("|")
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def md_image(name: str, alt: str) -> str:
    return f"![{alt}]({PLOTS_DIR}/{name}.png)"


def target_label(results: Mapping[str, Any], target: str) -> str:
    return as_str(get_in(results, "targets_meta", target, "label")) or target


def lat_ms(load: Any, pct: str) -> str:
    return fmt_ms(get_in(load, "latency_ms", pct))
