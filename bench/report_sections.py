"""The sections of bench/report.py's Markdown, one function per part: the run's header (command, machine,
versions), the targets table, and one table per suite scenario (`SECTIONS`, by scenario name), each followed by
its chart's link where bench/plots.py draws one. Every figure comes from the results dict; a section gets the
whole results (for target labels) and its scenario's dict, and returns its lines. The sections of the paths earlier
issues added (runtimes, async, urls: each next to the synchronous Python invoke) are in bench/report_paths.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from bench import report_paths
from bench.report_format import (
    MICRO,
    NA,
    as_dict,
    as_list,
    as_str,
    fmt_errors,
    fmt_int,
    fmt_ms,
    fmt_num,
    fmt_pct,
    fmt_ratio,
    fmt_rps,
    fmt_seconds,
    fmt_sig,
    fmt_statuses,
    fmt_value,
    get_in,
    lat_ms,
    md_image,
    md_table,
    num,
    ordered,
    target_label,
)


def render_header(results: Mapping[str, Any], results_path: str) -> list[str]:
    out: list[str] = []
    run: list[str] = []
    started = as_str(results.get("started_utc"))
    if started:
        run.append(f"Run started {started}")
    elapsed = num(results.get("elapsed_s"))
    if elapsed is not None:
        run.append(f"took {fmt_rps(elapsed)} s")
    command = as_str(results.get("command"))
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
    if as_str(machine.get("kernel")):
        parts.append(f"Linux kernel {machine['kernel']}")
    if as_str(machine.get("python")):
        parts.append(f"Python {machine['python']}")
    if as_str(machine.get("platform")):
        parts.append(f"`{machine['platform']}`")
    out.append(f"- Machine: {', '.join(parts) if parts else NA}.")

    versions = as_dict(results.get("versions"))
    commit = as_str(versions.get("gateway_commit"))
    libs = [f"{name} {v}" for name, v in versions.items() if name != "gateway_commit" and v is not None]
    line = f"- Versions: {', '.join(libs) if libs else NA}"
    if commit:
        line += f"; gateway commit `{commit}`"
    out.append(line + ".")
    loadgen = as_str(results.get("load_generator"))
    if loadgen:
        out.append(f"- Load generator: {loadgen}.")
    meta = as_dict(results.get("targets_meta"))
    if meta:
        out.append("- Targets: " + "; ".join(f"`{k}` = {target_label(results, k)}" for k in ordered(meta)) + ".")
    return out


def render_targets(results: Mapping[str, Any]) -> list[str]:
    targets = [t for t in as_list(results.get("targets")) if isinstance(t, dict)]
    if not targets:
        return []
    rows = []
    for t in targets:
        met = t.get("met")
        marker = "met" if met is True else "**not met**" if met is False else NA
        goal = t.get("target")
        goal_text = fmt_value(goal, t.get("unit")) if num(goal) is not None else as_str(goal) or NA
        rows.append([as_str(t.get("name")) or NA, fmt_value(t.get("value"), t.get("unit")), goal_text, marker])
    met_count = sum(1 for t in targets if t.get("met") is True)
    return [
        "### Targets",
        "",
        f"{met_count} of {len(targets)} targets met.",
        "",
        *md_table("Target|Value|Goal|Met", rows),
    ]


_THROUGHPUT_COLUMNS = (
    f"Target|req/s|vs (a)|p50 ms|p90 ms|p99 ms|errors|server CPU|tree CPU|server CPU {MICRO}s/req|"
    f"workers CPU {MICRO}s/req|server CPU/req vs (a)|client CPU {MICRO}s/req"
)

#: the targets whose server process answers the requests itself (the others' hands them to workers or children)
_SERVES_ITSELF = ("gateway", "inprocess")


def _throughput(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    loads = as_dict(s.get("results"))
    cpu = as_dict(s.get("cpu"))
    base = num(get_in(loads, "inprocess", "throughput_rps"))
    base_cpu = get_in(cpu, "inprocess", "server_us_per_request")
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
                lat_ms(load, "p50"),
                lat_ms(load, "p90"),
                lat_ms(load, "p99"),
                fmt_errors(get_in(load, "errors")),
                fmt_pct(get_in(cpu, target, "server_cpu_pct")),
                fmt_pct(get_in(cpu, target, "tree_cpu_pct")),
                fmt_sig(get_in(cpu, target, "server_us_per_request")),
                fmt_sig(get_in(cpu, target, "workers_us_per_request")),
                report_paths.ratio(get_in(cpu, target, "server_us_per_request"), base_cpu)
                if target in _SERVES_ITSELF
                else NA,
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
        "(server process, and its whole process tree); per request: the server process's CPU time, its workers' "
        "(environments, gunicorn workers, interpreters), and the server process's over (a)'s where the server "
        "process answers the requests itself (the gateway, (a); (b)'s and (c)'s hand them to other processes).",
        "",
        *md_table(_THROUGHPUT_COLUMNS, rows),
    ]
    ratios = {k: v for k, v in as_dict(s.get("ratios")).items() if num(v) is not None}
    if ratios:
        out += ["", "Ratios: " + ", ".join(f"{k} {fmt_ratio(v)}" for k, v in ratios.items()) + "."]
    cpu_ratio = report_paths.ratio(get_in(cpu, "gateway", "server_us_per_request"), base_cpu)
    if cpu_ratio != NA:
        out += ["", f"Gateway CPU per warm invocation / (a)'s CPU per request: **{cpu_ratio}**."]
    return [*out, "", md_image("throughput", "Warm throughput per target")]


def _latency_vs_load(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    targets = as_dict(s.get("targets"))
    rows = []
    for target in ordered(targets):
        t = as_dict(targets[target])
        max_rps = num(t.get("max_rps"))
        for point in as_list(t.get("points")):
            load = get_in(point, "result")
            fraction = num(get_in(point, "fraction"))
            share = f"{fmt_num(fraction * 100)} % of {fmt_rps(max_rps)}" if fraction is not None else NA
            rows.append(
                [
                    target_label(results, target),
                    share,
                    fmt_rps(get_in(point, "rate_rps")),
                    fmt_rps(get_in(load, "throughput_rps")),
                    lat_ms(load, "p50"),
                    lat_ms(load, "p90"),
                    lat_ms(load, "p99"),
                    lat_ms(load, "p99.9"),
                    fmt_errors(get_in(load, "errors")),
                    fmt_int(get_in(load, "late_sends")),
                    fmt_int(get_in(load, "unfinished")),
                ]
            )
    fractions = [f for f in (num(x) for x in as_list(s.get("fractions"))) if f is not None]
    intro = "Open loop (constant arrival rate)"
    if fractions:
        shares = ", ".join(f"{fmt_num(f * 100)} %" for f in fractions)
        intro += f" at {shares} of each target's closed-loop maximum"
    intro += "; latency counted from the intended send time (coordinated omission corrected)."
    out = ["### Latency vs load", "", intro, ""]
    header = "Target|load (share of max req/s)|offered req/s|achieved req/s|p50 ms|p90 ms|p99 ms|p99.9 ms|errors"
    out += md_table(header + "|late sends|unfinished", rows)
    overhead = as_dict(s.get("overhead"))
    if overhead:
        out += [
            "",
            f"Gateway overhead at {fmt_rps(overhead.get('rate_rps'))} req/s: client p50 "
            f"{fmt_ms(overhead.get('client_p50_ms'))} ms, handler mean {fmt_ms(overhead.get('handler_mean_ms'))} ms, "
            f"overhead p50 **{fmt_ms(overhead.get('overhead_p50_ms'))} ms**.",
        ]
        if overhead.get("baseline_p50_ms") is not None:
            out[-1] += (
                f" (a) at the same rate, same client: p50 {fmt_ms(overhead.get('baseline_p50_ms'))} ms, what the"
                f" client, the kernel and an aiohttp server cost anyway; the gateway's overhead over (a): "
                f"**{fmt_ms(overhead.get('over_baseline_p50_ms'))} ms**."
            )
        if overhead.get("gateway_mean_ms") is not None:
            out[-1] += (
                f" The gateway's own time per invocation outside the environment"
                f" (`gateway_overhead_seconds`, in + out), mean: {fmt_ms(overhead.get('gateway_mean_ms'))} ms."
            )
    return [*out, "", md_image("latency_vs_load", "Latency percentiles vs offered load")]


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
    for key, what in (("right_after_create", "its CreateFunction"),
                      ("right_after_update", "UpdateFunctionCode (new code) of a warm function")):  # fmt: skip
        after = as_dict(s.get(key))
        if after:
            rows.append(_summary_row(f"Gateway: first invoke right after {what} returned (client)",
                                     after.get("client_ms"), after.get("n")))  # fmt: skip
            if after.get("init_duration_ms") is not None:
                rows.append(_summary_row("... of which Init Duration (REPORT)", after.get("init_duration_ms")))
    fp = as_dict(s.get("fresh_process"))
    if fp:
        rows.append(
            _summary_row(target_label(results, "fresh_process") + " (client)", fp.get("client_ms"), fp.get("n"))
        )
    sz = as_dict(s.get("scale_from_zero"))
    if sz:
        envs = fmt_int(sz.get("environments"))
        rows.append(_summary_row(f"Scale from zero: {envs} environments started at once", sz.get("client_ms")))
    out = ["### Cold start", "", *md_table(SUMMARY_HEADER, rows)]
    notes = []
    ratio = num(s.get("ratio_p50"))
    if ratio is not None:
        notes.append(f"p50 ratio {_ratio_direction(ratio, fn, fp)}: **{fmt_ratio(ratio)}**.")
    calls = [f"{call} p50 {fmt_ms(get_in(s, key, field, 'p50'))} ms"
             for key, field, call in (("right_after_create", "create_ms", "CreateFunction"),
                                      ("right_after_update", "update_ms", "UpdateFunctionCode"))
             if num(get_in(s, key, field, "p50")) is not None]  # fmt: skip
    if calls:
        notes.append(f"The calls themselves, before those invokes: {', '.join(calls)}.")
    settle = num(get_in(s, "right_after_create", "settle_between_samples_ms"))
    if settle is not None:
        notes.append(f"Each of those deploys is a sample of its own: {fmt_int(settle)} ms after the previous invoke, "
                     "no pause between the call and its invoke.")  # fmt: skip
    if sz and num(sz.get("errors")) is not None:
        notes.append(f"Scale-from-zero errors: {fmt_int(sz.get('errors'))}.")
    if notes:
        out += ["", " ".join(notes)]
    return [*out, "", md_image("cold_start", "Cold-start latency distributions")]


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
        *md_table(header, [row]),
    ]


def _throttling(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    load = s.get("result")
    row = [
        fmt_int(s.get("connections")),
        fmt_seconds(s.get("duration_s")),
        fmt_rps(s.get("throttles_per_s")),
        fmt_rps(s.get("baseline_rps")),
        fmt_ratio(s.get("ratio")),
        lat_ms(load, "p50"),
        lat_ms(load, "p99"),
        fmt_statuses(get_in(load, "statuses")),
        fmt_errors(get_in(load, "errors"), include_non_2xx=False),
    ]
    header = "connections|duration|throttles/s|baseline req/s|ratio|p50 ms|p99 ms|statuses|socket/timeout errors"
    return [
        "### Throttling",
        "",
        "Closed loop against a throttled function (answers are 429s), vs the baseline's requests/s in the same run.",
        "",
        *md_table(header, [row]),
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
                lat_ms(load, "p50"),
                lat_ms(load, "p99"),
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
    return ["### Many functions", "", intro, "", *md_table(header, rows)]


def _payloads(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    rows = []
    for size in as_list(s.get("sizes")):
        loads = as_dict(get_in(size, "results"))
        base = num(get_in(loads, "inprocess", "throughput_rps"))
        label = as_str(get_in(size, "label")) or f"{fmt_int(get_in(size, 'bytes'))} B"
        for target in ordered(loads):
            load = loads[target]
            rps = num(get_in(load, "throughput_rps"))
            rows.append(
                [
                    label,
                    target_label(results, target),
                    fmt_rps(rps),
                    fmt_ratio(rps / base) if rps is not None and base else NA,
                    lat_ms(load, "p50"),
                    lat_ms(load, "p99"),
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
    image = md_image("payloads", "Latency and throughput vs payload size")
    return ["### Payload size", "", intro, "", *md_table(header, rows), "", image]


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
    return ["### Memory", "", intro, "", *md_table(header, rows)]


SECTIONS: dict[str, Callable[[Mapping[str, Any], dict[str, Any]], list[str]]] = {
    "throughput": _throughput,
    "latency_vs_load": _latency_vs_load,
    "cold_start": _cold_start,
    "burst": _burst,
    "throttling": _throttling,
    "functions": _functions,
    "payloads": _payloads,
    "memory": _memory,
    "runtimes": report_paths.runtimes,
    "async": report_paths.async_events,
    "urls": report_paths.urls,
}
