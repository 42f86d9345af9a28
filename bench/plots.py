"""PNG charts of a benchmark-suite results file (`bench/suite.py`'s JSON), rendered with matplotlib (Agg).

Run: `.venv/bin/python bench/plots.py [RESULTS_JSON] [--out-dir DIR]` (defaults: `bench/results/suite-latest.json`
and `bench/results/plots/`). Writes, for each scenario present in the file (the suite can run a subset with
`--only`; missing scenarios, targets and null values are skipped without error):

* `throughput.png`: warm no-op requests/s per target (bars), each annotated with its value and its ratio to the
  in-process baseline (a);
* `latency_vs_load.png`: p50 / p90 / p99 latency (ms, log scale) vs offered open-loop load (requests/s), one
  colour per target and one line style per percentile;
* `cold_start.png`: ECDFs (log x) of the gateway's first-invoke latency of fresh functions and of the
  fresh-process baseline's per-invocation latency, with the p50 of each marked;
* `payloads.png`: p50 latency and throughput vs request payload size for each target measured.

File names are fixed; every title states the machine's cores and the run's date. `render(results, out_dir)`
returns the paths written. matplotlib is imported only when rendering (it is in the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report_format import as_dict, get_in, num, ordered, target_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_RESULTS = Path("bench/results/suite-latest.json")
DEFAULT_OUT_DIR = Path("bench/results/plots")
DPI = 110

# The targets' colours (their display order is bench.report's TARGET_ORDER).
TARGET_COLOURS = {"gateway": "#1f77b4", "inprocess": "#2ca02c", "gunicorn": "#ff7f0e", "fresh_process": "#d62728"}
EXTRA_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
TIMES = "\u00d7"  # multiplication sign, for ratios
PERCENTILE_STYLES: tuple[tuple[str, Literal["-", "--", ":"], str], ...] = (
    ("p50", "-", "o"),
    ("p90", "--", "s"),
    ("p99", ":", "^"),
)


# --------------------------------------------------------------------------------------------------------------
# Reading the results dict tolerantly (the helpers are bench.report's)


def _run_detail(scenario: Mapping[str, Any], per: str = "") -> str:
    """ " (32 connections, 10 s)" from a closed-loop scenario's settings; "" when it has none."""
    detail = []
    conns = num(scenario.get("connections"))
    if conns is not None:
        detail.append(f"{int(conns)} connections")
    duration = num(scenario.get("duration_s"))
    if duration is not None:
        detail.append(f"{duration:g} s{per}")
    return f" ({', '.join(detail)})" if detail else ""


def _colour(target: str, index: int) -> str:
    return TARGET_COLOURS.get(target, EXTRA_COLOURS[index % len(EXTRA_COLOURS)])


def _positive(values: Iterable[Any]) -> list[float]:
    out: list[float] = []
    for v in values:
        f = num(v)
        if f is not None and f > 0:
            out.append(f)
    return out


def _machine_line(results: Mapping[str, Any]) -> str:
    """'2 CPUs, 2026-11-23' (whatever of the two the file has)."""
    parts: list[str] = []
    cpus = num(get_in(results, "machine", "cpus"))
    if cpus is not None:
        parts.append(f"{int(cpus)} CPU{'s' if int(cpus) != 1 else ''}")
    started = results.get("started_utc")
    if isinstance(started, str) and started:
        parts.append(started[:10])
    return ", ".join(parts) if parts else "unknown machine"


def _title(results: Mapping[str, Any], what: str) -> str:
    return f"{what}\n({_machine_line(results)})"


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _plain_log_ticks(axis: Any) -> None:
    """Label a log axis with plain numbers (0.3, 2, 100) instead of powers of ten."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        """LogFormatter's choice of which ticks get a label, written as %g."""

        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _fmt_rps(value: float) -> str:
    return f"{round(value):,}"


def _fmt_ms(value: float) -> str:
    return f"{round(value):,}" if abs(value) >= 1000 else f"{value:.3g}"


# --------------------------------------------------------------------------------------------------------------
# The charts (each returns None when the file has nothing to draw)


def _throughput(results: Mapping[str, Any]) -> Figure | None:
    from matplotlib.figure import Figure

    scenario = as_dict(get_in(results, "scenarios", "throughput"))
    loads = as_dict(scenario.get("results"))
    bars: list[tuple[str, float]] = []
    for target in ordered(loads):
        rps = num(get_in(loads, target, "throughput_rps"))
        if rps is not None:
            bars.append((target, rps))
    if not bars:
        return None
    baseline = next((rps for target, rps in bars if target == "inprocess"), None)

    fig = Figure(figsize=(8.5, 5.2), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    xs = range(len(bars))
    colours = [_colour(t, i) for i, (t, _) in enumerate(bars)]
    ax.bar(xs, [rps for _, rps in bars], color=colours, width=0.6)
    top = max(rps for _, rps in bars)
    for x, (target, rps) in zip(xs, bars, strict=True):
        text = f"{_fmt_rps(rps)} req/s"
        if baseline:
            text += "\n(baseline a)" if target == "inprocess" else f"\n{rps / baseline:.2f}{TIMES} (a)"
        ax.annotate(text, (x, rps), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, top * 1.22 if top > 0 else 1)
    ax.set_xticks(list(xs), [target_label(results, t).replace(" ", "\n", 1) for t, _ in bars], fontsize=9)
    ax.set_xlabel("target")
    ax.set_ylabel("throughput (requests/s)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    what = "Warm no-op throughput, closed loop" + _run_detail(scenario)
    ax.set_title(_title(results, what))
    return fig


def _latency_vs_load(results: Mapping[str, Any]) -> Figure | None:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    targets = as_dict(get_in(results, "scenarios", "latency_vs_load", "targets"))
    series: list[tuple[str, dict[str, list[tuple[float, float]]]]] = []
    for target in ordered(targets):
        points = get_in(targets, target, "points")
        lines: dict[str, list[tuple[float, float]]] = {}
        for point in points if isinstance(points, list) else []:
            rate = num(get_in(point, "rate_rps"))
            if rate is None:
                continue
            for pct, _, _ in PERCENTILE_STYLES:
                ms = num(get_in(point, "result", "latency_ms", pct))
                if ms is not None and ms > 0:
                    lines.setdefault(pct, []).append((rate, ms))
        if lines:
            series.append((target, lines))
    if not series:
        return None

    fig = Figure(figsize=(8.5, 5.2), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    styles = {pct: (ls, marker) for pct, ls, marker in PERCENTILE_STYLES}
    for i, (target, lines) in enumerate(series):
        colour = _colour(target, i)
        for pct, pts in lines.items():
            pts.sort()
            ls, marker = styles[pct]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, linestyle=ls, marker=marker, markersize=4)
        max_rps = num(get_in(targets, target, "max_rps"))
        if max_rps is not None and max_rps > 0:
            ax.axvline(max_rps, color=colour, linestyle="-.", linewidth=0.8, alpha=0.6)
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_xlim(left=0)
    ax.set_xlabel("offered load (requests/s, open loop)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.grid(which="both", alpha=0.25)
    target_handles = [Line2D([], [], color=_colour(t, i), linewidth=2) for i, (t, _) in enumerate(series)]
    first = ax.legend(target_handles, [target_label(results, t) for t, _ in series], loc="upper left", fontsize=8)
    ax.add_artist(first)
    used = [p for p, _, _ in PERCENTILE_STYLES if any(p in lines for _, lines in series)]
    pct_handles = [Line2D([], [], color="black", linestyle=styles[p][0], marker=styles[p][1]) for p in used]
    ax.legend(
        [*pct_handles, Line2D([], [], color="grey", linestyle="-.", linewidth=0.8)],
        [*used, "closed-loop max"],
        loc="upper center",
        fontsize=8,
    )
    ax.set_title(_title(results, "Latency vs offered load (coordinated-omission corrected)"))
    return fig


def _cold_start(results: Mapping[str, Any]) -> Figure | None:
    from matplotlib.figure import Figure

    scenario = as_dict(get_in(results, "scenarios", "cold_start"))
    groups: list[tuple[str, str, list[float], float | None]] = []
    for key, target, what in (
        ("fresh_function", "gateway", "gateway: first invoke of a fresh function (50 ms after its creation)"),
        ("right_after_create", "right_after_create", "gateway: first invoke right after CreateFunction"),
        ("right_after_update", "right_after_update", "gateway: first invoke right after UpdateFunctionCode"),
        ("fresh_process", "fresh_process", f"{target_label(results, 'fresh_process')}"),
    ):
        part = as_dict(scenario.get(key))
        samples = _positive(part.get("samples_ms") or [])
        if samples:
            groups.append((target, what, samples, num(get_in(part, "client_ms", "p50"))))
    if not groups:
        return None

    fig = Figure(figsize=(8.5, 5.2), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for i, (target, what, samples, p50) in enumerate(groups):
        colour = _colour(target, i)
        xs = sorted(samples)
        ys = [(k + 1) / len(xs) for k in range(len(xs))]
        ax.step(xs, ys, where="post", color=colour, linewidth=1.8, label=f"{what} (n={len(xs)})")
        if p50 is None or p50 <= 0:
            p50 = _median(samples)
        ax.axvline(p50, color=colour, linestyle="--", linewidth=1)
        ax.annotate(
            f"p50 {_fmt_ms(p50)} ms",
            (p50, 0.02),
            xytext=(4, 4 + 14 * i),
            textcoords="offset points",
            color=colour,
            fontsize=9,
        )
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("client-side latency of the invocation (ms, log scale)")
    ax.set_ylabel("fraction of invocations \u2264 x (ECDF)")
    ax.grid(which="both", alpha=0.25)
    ax.legend(loc="best", fontsize=8)
    what = "Cold start: first invokes on the gateway vs a fresh process per invoke"
    ratio = num(scenario.get("ratio_p50"))
    if ratio is not None:
        what += f" (p50 ratio {ratio:.2f})"
    ax.set_title(_title(results, what))
    return fig


def _payloads(results: Mapping[str, Any]) -> Figure | None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    scenario = as_dict(get_in(results, "scenarios", "payloads"))
    sizes = scenario.get("sizes")
    rows: list[tuple[float, str, dict[str, Any]]] = []
    for size in sizes if isinstance(sizes, list) else []:
        nbytes = num(get_in(size, "bytes"))
        if nbytes is None or nbytes <= 0:
            continue
        label = get_in(size, "label")
        rows.append((nbytes, label if isinstance(label, str) else f"{nbytes:g} B", as_dict(get_in(size, "results"))))
    rows.sort(key=lambda r: r[0])
    targets = ordered(t for _, _, loads in rows for t in loads)
    latency: dict[str, list[tuple[float, float]]] = {}
    throughput: dict[str, list[tuple[float, float]]] = {}
    for nbytes, _, loads in rows:
        for target in targets:
            ms = num(get_in(loads, target, "latency_ms", "p50"))
            if ms is not None and ms > 0:
                latency.setdefault(target, []).append((nbytes, ms))
            rps = num(get_in(loads, target, "throughput_rps"))
            if rps is not None and rps > 0:
                throughput.setdefault(target, []).append((nbytes, rps))
    if not latency and not throughput:
        return None

    fig = Figure(figsize=(11, 4.8), dpi=DPI, layout="constrained")
    ax_lat, ax_rps = fig.subplots(1, 2)
    for ax, data, ylabel in (
        (ax_lat, latency, "p50 latency (ms, log scale)"),
        (ax_rps, throughput, "throughput (requests/s, log scale)"),
    ):
        for i, target in enumerate(targets):
            pts = data.get(target)
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker="o",
                    color=_colour(target, i),
                    label=target_label(results, target),
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.set_xticks([r[0] for r in rows], [r[1] for r in rows])
        ax.xaxis.set_minor_locator(NullLocator())  # the sizes are the ticks
        ax.set_xlabel("request payload size (bytes, log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(which="both", alpha=0.25)
        if data:
            ax.legend(fontsize=8)
    ax_lat.set_title("p50 latency")
    ax_rps.set_title("throughput")
    what = "Payload size, closed loop" + _run_detail(scenario, " per size")
    fig.suptitle(_title(results, what))
    return fig


CHARTS = (
    ("throughput.png", _throughput),
    ("latency_vs_load.png", _latency_vs_load),
    ("cold_start.png", _cold_start),
    ("payloads.png", _payloads),
)


# --------------------------------------------------------------------------------------------------------------
# Entry points


def render(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the charts for the scenarios present in `results` into `out_dir` (created); return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    written: list[Path] = []
    for name, draw in CHARTS:
        fig = draw(results)
        if fig is None:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / name
        # No timestamp in the metadata: the same results give the same bytes.
        fig.savefig(path, dpi=DPI, metadata={"Software": None})
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("results", nargs="?", type=Path, default=DEFAULT_RESULTS, help="suite results JSON")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where the PNGs go")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"plots: cannot read {args.results}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(results, dict):
        print(f"plots: {args.results} is not a JSON object", file=sys.stderr)
        return 2
    written = render(results, args.out_dir)
    for path in written:
        print(path)
    if not written:
        print("plots: nothing to plot (no throughput, latency_vs_load, cold_start or payloads data)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
