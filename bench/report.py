"""Markdown report of a benchmark-suite results file (`bench/suite.py`'s JSON), for BENCHMARKS.md.

Run: `.venv/bin/python bench/report.py [RESULTS_JSON] [--markdown FILE]` (default results:
`bench/results/suite-latest.json`). Without `--markdown` the section is printed; with it, the lines strictly
between the marker lines `<!-- suite:begin -->` and `<!-- suite:end -->` of FILE are replaced by the section and
every other byte of FILE is left as it was (an error, and no change, if the markers are missing, repeated or out
of order).

The section has: when and how the run was made (command, machine, versions, load generator, raw results
file), the pass/fail table of the suite's `targets`, one table per scenario present in the file, and under the
tables links to the charts of `bench/plots.py` (`bench/results/plots/<name>.png`). Every figure comes from the
JSON (nothing is hard-coded); missing scenarios are left out and missing or null values show as `n/a`. Rounding:
requests/s to integers with thousands separators, milliseconds to 3 significant digits, ratios to 2 decimals.

`render_markdown(results, results_path)` builds the section; `replace_marked_section(text, section)` does the
substitution on a string.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_RESULTS = Path("bench/results/suite-latest.json")
PLOTS_DIR = "bench/results/plots"
BEGIN_MARKER = "<!-- suite:begin -->"
END_MARKER = "<!-- suite:end -->"
NA = "n/a"
TIMES = "\u00d7"  # multiplication sign
MICRO = "\u00b5"  # micro sign

TARGET_ORDER = ("gateway", "inprocess", "gunicorn", "fresh_process")
SCENARIO_ORDER = (
    "throughput",
    "latency_vs_load",
    "cold_start",
    "burst",
    "throttling",
    "functions",
    "payloads",
    "memory",
)


class MarkerError(ValueError):
    """The Markdown file does not have exactly one begin marker line followed by exactly one end marker line."""


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


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def get_in(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]... or None as soon as a level is missing or not a dict."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _str(value: Any) -> str | None:
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
        return _cell(value)
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


def _cell(value: Any) -> str:
    """Text for a table cell: pipes escaped, newlines flattened."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: str, rows: list[list[str]]) -> list[str]:
    """A Markdown table; `header` is the column titles separated by '|'."""
    titles = header.split("|")
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _image(name: str, alt: str) -> str:
    return f"![{alt}]({PLOTS_DIR}/{name}.png)"


def target_label(results: Mapping[str, Any], target: str) -> str:
    return _str(get_in(results, "targets_meta", target, "label")) or target


def _lat(load: Any, pct: str) -> str:
    return fmt_ms(get_in(load, "latency_ms", pct))


# --------------------------------------------------------------------------------------------------------------
# Sections


def _header(results: Mapping[str, Any], results_path: str) -> list[str]:
    out: list[str] = []
    run: list[str] = []
    started = _str(results.get("started_utc"))
    if started:
        run.append(f"Run started {started}")
    elapsed = num(results.get("elapsed_s"))
    if elapsed is not None:
        run.append(f"took {fmt_rps(elapsed)} s")
    command = _str(results.get("command"))
    text = ", ".join(run) + ". " if run else ""
    if command:
        text += f"Command: `{command}`. "
    text += f"Raw results: [`{results_path}`]({results_path})."
    out += [text, ""]

    machine = as_dict(results.get("machine"))
    parts: list[str] = []
    cpus = num(machine.get("cpus"))
    if cpus is not None:
        parts.append(f"{fmt_int(cpus)} CPU{'s' if cpus != 1 else ''}")
    memory = num(machine.get("memory_mb"))
    if memory is not None:
        parts.append(f"{fmt_int(memory)} MB RAM")
    if _str(machine.get("kernel")):
        parts.append(f"Linux kernel {machine['kernel']}")
    if _str(machine.get("python")):
        parts.append(f"Python {machine['python']}")
    if _str(machine.get("platform")):
        parts.append(f"`{machine['platform']}`")
    out.append(f"- Machine: {', '.join(parts) if parts else NA}.")

    versions = as_dict(results.get("versions"))
    commit = _str(versions.get("gateway_commit"))
    libs = [f"{name} {v}" for name, v in versions.items() if name != "gateway_commit" and v is not None]
    line = f"- Versions: {', '.join(libs) if libs else NA}"
    if commit:
        line += f"; gateway commit `{commit}`"
    out.append(line + ".")
    loadgen = _str(results.get("load_generator"))
    if loadgen:
        out.append(f"- Load generator: {loadgen}.")
    meta = as_dict(results.get("targets_meta"))
    if meta:
        out.append("- Targets: " + "; ".join(f"`{k}` = {target_label(results, k)}" for k in ordered(meta)) + ".")
    return out


def _targets(results: Mapping[str, Any]) -> list[str]:
    targets = [t for t in _list(results.get("targets")) if isinstance(t, dict)]
    if not targets:
        return []
    rows = []
    for t in targets:
        met = t.get("met")
        marker = "met" if met is True else "**not met**" if met is False else NA
        goal = t.get("target")
        goal_text = fmt_value(goal, t.get("unit")) if num(goal) is not None else _str(goal) or NA
        rows.append([_str(t.get("name")) or NA, fmt_value(t.get("value"), t.get("unit")), goal_text, marker])
    met_count = sum(1 for t in targets if t.get("met") is True)
    return [
        "### Targets",
        "",
        f"{met_count} of {len(targets)} targets met.",
        "",
        *_table("Target|Value|Goal|Met", rows),
    ]


def _throughput(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    loads = as_dict(s.get("results"))
    cpu = as_dict(s.get("cpu"))
    base = num(get_in(loads, "inprocess", "throughput_rps"))
    rows = []
    for target in ordered([*loads, *cpu]):
        load = loads.get(target)
        rps = num(get_in(load, "throughput_rps"))
        vs = fmt_ratio(rps / base) if rps is not None and base else NA
        rows.append(
            [
                target_label(results, target),
                fmt_rps(rps),
                vs,
                _lat(load, "p50"),
                _lat(load, "p90"),
                _lat(load, "p99"),
                fmt_errors(get_in(load, "errors")),
                fmt_pct(get_in(cpu, target, "server_cpu_pct")),
                fmt_pct(get_in(cpu, target, "tree_cpu_pct")),
                fmt_sig(get_in(load, "client_cpu_us_per_request")),
            ]
        )
    detail = []
    if num(s.get("connections")) is not None:
        detail.append(f"{fmt_int(s['connections'])} keep-alive connections")
    if num(s.get("duration_s")) is not None:
        detail.append(f"{fmt_seconds(s['duration_s'])} per target")
    out = [
        "### Warm throughput",
        "",
        "Closed loop, no-op handler" + (f", {', '.join(detail)}" if detail else "") + ". CPU: 100 % = one core "
        "(server process, and its whole process tree).",
        "",
        *_table(f"Target|req/s|vs (a)|p50 ms|p90 ms|p99 ms|errors|server CPU|tree CPU|client CPU {MICRO}s/req", rows),
    ]
    ratios = {k: v for k, v in as_dict(s.get("ratios")).items() if num(v) is not None}
    if ratios:
        out += ["", "Ratios: " + ", ".join(f"{k} {fmt_ratio(v)}" for k, v in ratios.items()) + "."]
    return [*out, "", _image("throughput", "Warm throughput per target")]


def _latency_vs_load(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    targets = as_dict(s.get("targets"))
    rows = []
    for target in ordered(targets):
        t = as_dict(targets[target])
        max_rps = num(t.get("max_rps"))
        for point in _list(t.get("points")):
            load = get_in(point, "result")
            fraction = num(get_in(point, "fraction"))
            share = f"{fmt_num(fraction * 100)} % of {fmt_rps(max_rps)}" if fraction is not None else NA
            rows.append(
                [
                    target_label(results, target),
                    share,
                    fmt_rps(get_in(point, "rate_rps")),
                    fmt_rps(get_in(load, "throughput_rps")),
                    _lat(load, "p50"),
                    _lat(load, "p90"),
                    _lat(load, "p99"),
                    _lat(load, "p99.9"),
                    fmt_errors(get_in(load, "errors")),
                    fmt_int(get_in(load, "late_sends")),
                    fmt_int(get_in(load, "unfinished")),
                ]
            )
    fractions = [f for f in (num(x) for x in _list(s.get("fractions"))) if f is not None]
    intro = "Open loop (constant arrival rate)"
    if fractions:
        shares = ", ".join(f"{fmt_num(f * 100)} %" for f in fractions)
        intro += f" at {shares} of each target's closed-loop maximum"
    intro += "; latency counted from the intended send time (coordinated omission corrected)."
    out = ["### Latency vs load", "", intro, ""]
    header = "Target|load (share of max req/s)|offered req/s|achieved req/s|p50 ms|p90 ms|p99 ms|p99.9 ms|errors"
    out += _table(header + "|late sends|unfinished", rows)
    overhead = as_dict(s.get("overhead"))
    if overhead:
        out += [
            "",
            f"Gateway overhead at {fmt_rps(overhead.get('rate_rps'))} req/s: client p50 "
            f"{fmt_ms(overhead.get('client_p50_ms'))} ms, handler mean {fmt_ms(overhead.get('handler_mean_ms'))} ms, "
            f"overhead p50 **{fmt_ms(overhead.get('overhead_p50_ms'))} ms**.",
        ]
    return [*out, "", _image("latency_vs_load", "Latency percentiles vs offered load")]


def _summary_row(what: str, summary: Any, n: Any = None) -> list[str]:
    return [
        what,
        fmt_int(n if n is not None else get_in(summary, "n")),
        fmt_ms(get_in(summary, "p50")),
        fmt_ms(get_in(summary, "p90")),
        fmt_ms(get_in(summary, "p99")),
        fmt_ms(get_in(summary, "max")),
        fmt_ms(get_in(summary, "mean")),
    ]


SUMMARY_HEADER = "What|n|p50 ms|p90 ms|p99 ms|max ms|mean ms"


def _cold_start(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    rows = []
    fn = as_dict(s.get("fresh_function"))
    if fn:
        what = "Gateway: first invoke of a fresh function (client)"
        rows.append(_summary_row(what, fn.get("client_ms"), fn.get("n")))
        if fn.get("init_duration_ms") is not None:
            rows.append(_summary_row("... of which Init Duration (REPORT)", fn.get("init_duration_ms")))
    fp = as_dict(s.get("fresh_process"))
    if fp:
        rows.append(
            _summary_row(target_label(results, "fresh_process") + " (client)", fp.get("client_ms"), fp.get("n"))
        )
    sz = as_dict(s.get("scale_from_zero"))
    if sz:
        envs = fmt_int(sz.get("environments"))
        rows.append(_summary_row(f"Scale from zero: {envs} environments started at once", sz.get("client_ms")))
    out = ["### Cold start", "", *_table(SUMMARY_HEADER, rows)]
    notes = []
    ratio = num(s.get("ratio_p50"))
    if ratio is not None:
        notes.append(f"p50 ratio {_ratio_direction(ratio, fn, fp)}: **{fmt_ratio(ratio)}**.")
    if sz and num(sz.get("errors")) is not None:
        notes.append(f"Scale-from-zero errors: {fmt_int(sz.get('errors'))}.")
    if notes:
        out += ["", " ".join(notes)]
    return [*out, "", _image("cold_start", "Cold-start latency distributions")]


def _ratio_direction(ratio: float, fn: dict[str, Any], fp: dict[str, Any]) -> str:
    """Which way round the suite's p50 ratio is, read from the two p50s in the file (if they are there)."""
    a = num(get_in(fp, "client_ms", "p50"))
    b = num(get_in(fn, "client_ms", "p50"))
    if a and b:
        if math.isclose(ratio, a / b, rel_tol=0.02):
            return "(fresh process / gateway)"
        if math.isclose(ratio, b / a, rel_tol=0.02):
            return "(gateway / fresh process)"
    return "(as computed by the suite)"


def _burst(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    summary = s.get("client_ms")
    row = [
        fmt_int(s.get("concurrency")),
        fmt_int(s.get("environments")),
        fmt_ms(s.get("elapsed_ms")),
        fmt_ms(get_in(summary, "p50")),
        fmt_ms(get_in(summary, "p90")),
        fmt_ms(get_in(summary, "p99")),
        fmt_ms(get_in(summary, "max")),
        fmt_statuses(s.get("statuses")),
    ]
    header = "simultaneous invokes|environments|wall time ms|p50 ms|p90 ms|p99 ms|max ms|statuses"
    return [
        "### Burst",
        "",
        "Simultaneous invocations of one function; environments = how many served them.",
        "",
        *_table(header, [row]),
    ]


def _throttling(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    load = s.get("result")
    row = [
        fmt_int(s.get("connections")),
        fmt_seconds(s.get("duration_s")),
        fmt_rps(s.get("throttles_per_s")),
        fmt_rps(s.get("baseline_rps")),
        fmt_ratio(s.get("ratio")),
        _lat(load, "p50"),
        _lat(load, "p99"),
        fmt_statuses(get_in(load, "statuses")),
        fmt_errors(get_in(load, "errors"), include_non_2xx=False),
    ]
    header = "connections|duration|throttles/s|baseline req/s|ratio|p50 ms|p99 ms|statuses|socket/timeout errors"
    return [
        "### Throttling",
        "",
        "Closed loop against a throttled function (answers are 429s), vs the baseline's requests/s in the same run.",
        "",
        *_table(header, [row]),
    ]


def _functions(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    rows = []
    for key in ("one", "many"):
        part = as_dict(s.get(key))
        if not part:
            continue
        load = part.get("result")
        rows.append(
            [
                fmt_int(part.get("functions")),
                fmt_int(part.get("environments")),
                fmt_rps(get_in(load, "throughput_rps")),
                _lat(load, "p50"),
                _lat(load, "p99"),
                fmt_errors(get_in(load, "errors")),
            ]
        )
    intro = "Warm closed-loop throughput with requests spread over many functions"
    if num(s.get("zipf_s")) is not None:
        intro += f" (Zipf popularity, s = {fmt_num(s['zipf_s'])})"
    intro += " vs one function."
    if num(s.get("ratio")) is not None:
        intro += f" Ratio many / one: **{fmt_ratio(s['ratio'])}**."
    header = "functions|environments|req/s|p50 ms|p99 ms|errors"
    return ["### Many functions", "", intro, "", *_table(header, rows)]


def _payloads(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    rows = []
    for size in _list(s.get("sizes")):
        loads = as_dict(get_in(size, "results"))
        base = num(get_in(loads, "inprocess", "throughput_rps"))
        label = _str(get_in(size, "label")) or f"{fmt_int(get_in(size, 'bytes'))} B"
        for target in ordered(loads):
            load = loads[target]
            rps = num(get_in(load, "throughput_rps"))
            rows.append(
                [
                    label,
                    target_label(results, target),
                    fmt_rps(rps),
                    fmt_ratio(rps / base) if rps is not None and base else NA,
                    _lat(load, "p50"),
                    _lat(load, "p99"),
                    fmt_errors(get_in(load, "errors")),
                ]
            )
    detail = []
    if num(s.get("connections")) is not None:
        detail.append(f"{fmt_int(s['connections'])} connections")
    if num(s.get("duration_s")) is not None:
        detail.append(f"{fmt_seconds(s['duration_s'])} per size and target")
    intro = "Closed loop, a request body of each size" + (f" ({', '.join(detail)})" if detail else "") + "."
    header = "payload|target|req/s|vs (a)|p50 ms|p99 ms|errors"
    image = _image("payloads", "Latency and throughput vs payload size")
    return ["### Payload size", "", intro, "", *_table(header, rows), "", image]


def _memory(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    rows = []
    for key, what in (("uss_kb", "USS (private)"), ("pss_kb", "PSS (proportional)"), ("rss_kb", "RSS")):
        summary = s.get(key)
        if summary is None:
            continue
        rows.append(
            [
                what,
                fmt_int(get_in(summary, "n")),
                fmt_int(get_in(summary, "p50")),
                fmt_int(get_in(summary, "p90")),
                fmt_int(get_in(summary, "max")),
                fmt_int(get_in(summary, "mean")),
            ]
        )
    intro = "Memory of one idle warm environment"
    if num(s.get("idle_environments")) is not None:
        intro += f" ({fmt_int(s['idle_environments'])} idle environments measured)"
    intro += "."
    if num(s.get("zygote_uss_kb")) is not None:
        intro += f" Zygote USS: {fmt_int(s['zygote_uss_kb'])} kB."
    header = "per environment|n|p50 kB|p90 kB|max kB|mean kB"
    return ["### Memory", "", intro, "", *_table(header, rows)]


SECTIONS = {
    "throughput": _throughput,
    "latency_vs_load": _latency_vs_load,
    "cold_start": _cold_start,
    "burst": _burst,
    "throttling": _throttling,
    "functions": _functions,
    "payloads": _payloads,
    "memory": _memory,
}


def render_markdown(results: dict[str, Any], results_path: str) -> str:
    """The Markdown section for `results` (loaded from `results_path`, linked as given); ends with a newline."""
    out = [
        f"<!-- Generated by bench/report.py from {results_path}: edit the script or rerun it, not this text. -->",
        "",
        *_header(results, results_path),
    ]
    targets = _targets(results)
    if targets:
        out += ["", *targets]
    scenarios = as_dict(results.get("scenarios"))
    for name in SCENARIO_ORDER:
        scenario = scenarios.get(name)
        if isinstance(scenario, dict):
            out += ["", *SECTIONS[name](results, scenario)]
    others = sorted(k for k in scenarios if k not in SECTIONS)
    if others:
        out += ["", "Also in the results file, not tabulated here: " + ", ".join(f"`{k}`" for k in others) + "."]
    if not scenarios:
        out += ["", "No scenario results in this file."]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Markers


def replace_marked_section(text: str, section: str) -> str:
    """`text` with the lines strictly between its marker lines replaced by `section` (MarkerError if unusable).

    A marker line is a line whose content, stripped of surrounding whitespace, is exactly the marker. The new
    lines use the begin marker's line ending; everything outside the two markers is returned unchanged.
    """
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN_MARKER]
    ends = [i for i, line in enumerate(lines) if line.strip() == END_MARKER]
    if len(begins) != 1 or len(ends) != 1:
        raise MarkerError(
            f"need exactly one {BEGIN_MARKER!r} line and one {END_MARKER!r} line, found {len(begins)} and {len(ends)}"
        )
    begin, end = begins[0], ends[0]
    if end < begin:
        raise MarkerError(f"{END_MARKER!r} comes before {BEGIN_MARKER!r}")
    begin_line = lines[begin]
    newline = "\r\n" if begin_line.endswith("\r\n") else "\r" if begin_line.endswith("\r") else "\n"
    body = section.strip("\n").split("\n")
    new = newline.join(line.rstrip("\r") for line in body) + newline + newline  # blank line before the end marker
    return "".join(lines[:begin]) + begin_line + new + "".join(lines[end:])


def update_markdown_file(path: Path, section: str) -> None:
    """Replace the marked section of the file at `path` (bytes outside the markers kept; no change on error)."""
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    new = replace_marked_section(text, section)
    if new == text:
        return
    tmp = path.with_name(f".{path.name}.report-tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(new)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------------
# CLI


def _display_path(path: Path) -> str:
    """The path to link: the time-stamped twin of a `*-latest.json` if one is byte-identical; relative to cwd."""
    if path.name.endswith("-latest.json"):
        prefix = path.name[: -len("latest.json")]
        try:
            data = path.read_bytes()
            twins = sorted(p for p in path.parent.glob(f"{prefix}*.json") if p.name != path.name)
            path = next((p for p in reversed(twins) if p.read_bytes() == data), path)
        except OSError:
            pass
    try:
        shown = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = path
    return shown.as_posix()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("results", nargs="?", type=Path, default=DEFAULT_RESULTS, help="suite results JSON")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="replace the marked section of FILE")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"report: cannot read {args.results}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(results, dict):
        print(f"report: {args.results} is not a JSON object", file=sys.stderr)
        return 2
    section = render_markdown(results, _display_path(args.results))
    if args.markdown is None:
        sys.stdout.write(section)
        return 0
    try:
        update_markdown_file(args.markdown, section)
    except (OSError, MarkerError) as exc:
        print(f"report: {args.markdown}: {exc}", file=sys.stderr)
        return 1
    print(f"report: updated the suite section of {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
