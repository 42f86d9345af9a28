"""The report sections (bench/report.py) of the paths that earlier issues added, each next to the synchronous Python
invoke measured in the same scenario: other runtimes (`runtimes`: the Python fast path is one of the kinds),
asynchronous invocation (`async`: synchronous invokes of the same function, then Event invokes) and function URLs
(`urls`: the same function through Invoke). Each table ends with two ratio columns, requests/s and p50 over the
synchronous Python invoke's (that row shows 1.00x); a ratio is n/a when either figure is missing. Pure functions of
the results dict, like bench/report_sections.py (whose `SECTIONS` maps the scenario names to these).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.report_format import (
    MICRO,
    as_dict,
    as_str,
    fmt_int,
    fmt_ms,
    fmt_num,
    fmt_ratio,
    fmt_rps,
    fmt_sig,
    get_in,
    lat_ms,
    md_table,
    num,
)

RUNTIME_LABELS = {
    "python": "Python, fast path",
    "python_awslambdaric": "Python, awslambdaric 4.2.2 (provided.al2023, Runtime API)",
    "go": "Go, aws-lambda-go bootstrap (provided.al2023, Runtime API)",
    "nodejs": "Node.js (Runtime API)",
}
#: the two columns every table here ends with
VS_SYNC = "req/s vs sync Python|p50 vs sync Python"


def ratio(a: Any, b: Any) -> str:
    """a / b as a ratio cell (n/a unless both are numbers and b is not 0)."""
    x, y = num(a), num(b)
    return fmt_ratio(x / y) if x is not None and y else "n/a"


def vs_sync(load: Any, sync: Any, rps_key: str = "throughput_rps") -> list[str]:
    """The two ratio cells of a load run (`load`) against the synchronous Python invoke's (`sync`)."""
    return [
        ratio(get_in(load, rps_key), get_in(sync, rps_key)),
        ratio(get_in(load, "latency_ms", "p50"), get_in(sync, "latency_ms", "p50")),
    ]


def runtimes(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    rows, skipped = [], []
    kinds = as_dict(s.get("kinds"))
    sync = as_dict(get_in(kinds, "python", "warm"))  # the Python fast path: the synchronous Python invoke
    for kind, figures in kinds.items():
        label = RUNTIME_LABELS.get(kind, kind)
        figures = as_dict(figures)
        if "skipped" in figures:
            skipped.append(f"{label}: not measured ({as_str(figures['skipped'])[:120]}).")
            continue
        cold, warm = as_dict(figures.get("cold_start")), as_dict(figures.get("warm"))
        rows.append(
            [
                label,
                fmt_ms(get_in(cold, "client_ms", "p50")),
                fmt_ms(get_in(cold, "init_duration_ms", "p50")),
                fmt_rps(warm.get("throughput_rps")),
                lat_ms(warm, "p50"),
                lat_ms(warm, "p99"),
                *vs_sync(warm, sync),
            ]
        )
    header = "runtime|cold start p50 ms|Init Duration p50 ms|warm invokes/s|warm p50 ms|warm p99 ms|" + VS_SYNC
    conns = fmt_int(get_in(kinds, "python", "warm", "connections"))
    intro = (
        f"The no-op function on each kind of runtime: the first invoke of {fmt_int(s.get('cold_n'))} fresh functions "
        f"each, then a closed loop of {conns} connections on warm environments. The ratios are to the Python fast "
        "path's warm loop in this scenario (the synchronous Python invoke, same connections)."
    )
    return ["### Runtimes side by side", "", intro, "", *md_table(header, rows), *(["", *skipped] if skipped else [])]


def async_events(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    acc, lat = as_dict(s.get("acceptance")), as_dict(s.get("latency"))
    sync, event = as_dict(acc.get("sync")), as_dict(acc.get("event"))
    sync_rps, event_rps = acc.get("sync_200_per_s"), acc.get("event_202_per_s")
    p50_ratio = ratio(get_in(event, "latency_ms", "p50"), get_in(sync, "latency_ms", "p50"))
    rows = [  # per second: only the answers with the expected status count
        ["synchronous Python invokes (200)", fmt_rps(sync_rps), lat_ms(sync, "p50"), lat_ms(sync, "p99"),
         ratio(sync_rps, sync_rps), ratio(get_in(sync, "latency_ms", "p50"), get_in(sync, "latency_ms", "p50"))],
        ["Event invokes (202, durably queued)", fmt_rps(event_rps), lat_ms(event, "p50"), lat_ms(event, "p99"),
         ratio(event_rps, sync_rps), p50_ratio],
    ]  # fmt: skip
    drained = (
        f"the queue drained {fmt_num(acc.get('drain_after_loop_s'))} s after the loop "
        f"({fmt_rps(acc.get('processed_per_s'))} events processed per second from the first 202)"
        if acc.get("drained")
        else "the queue had not drained when the scenario gave up"
    )
    out = [
        "### Asynchronous invocation",
        "",
        f"One function, {fmt_int(acc.get('connections'))} connections, closed loop: Event invokes vs synchronous "
        f"invokes, ratio **{fmt_ratio(num(acc.get('ratio_event_to_sync')))}**; {drained}.",
        "",
        *md_table("What|req/s|p50 ms|p99 ms|" + VS_SYNC, rows),
    ]
    summary = lat.get("from_202_ms")
    if summary is not None:
        out += [
            "",
            f"From the 202's arrival at the client to the handler's start, {fmt_int(lat.get('n'))} Event invokes one "
            f"at a time ({fmt_int(lat.get('handler_starts_seen'))} starts seen in the function's log): p50 "
            f"**{fmt_ms(get_in(summary, 'p50'))} ms**, p95 {fmt_ms(get_in(summary, 'p95'))} ms, p99 "
            f"{fmt_ms(get_in(summary, 'p99'))} ms (from the request's send: p50 "
            f"{fmt_ms(get_in(lat, 'from_send_ms', 'p50'))} ms).",
        ]
    return out


_URL_COLUMNS = (
    f"Way in|req/s|p50 ms|p99 ms|p50 ms, 1 connection|gateway CPU {MICRO}s/req|environments {MICRO}s/req|{VS_SYNC}"
)
_URL_WAYS = {
    "invoke": "Invoke API (POST .../invocations): the synchronous Python invoke",
    "url_host": "function URL, Host form",
    "url_path": "function URL, path form (/lambda-url/<id>/)",
}


def urls(results: Mapping[str, Any], s: dict[str, Any]) -> list[str]:
    if s.get("skipped"):
        return ["### Function URLs", "", f"Not measured: {s['skipped']}."]
    loaded, single = as_dict(s.get("loaded")), as_dict(s.get("single"))
    rows = [
        [what, fmt_rps(get_in(loaded, way, "throughput_rps")), lat_ms(loaded.get(way), "p50"),
         lat_ms(loaded.get(way), "p99"), lat_ms(single.get(way), "p50"),
         fmt_sig(get_in(loaded, way, "gateway_us_per_request")),
         fmt_sig(get_in(loaded, way, "environments_us_per_request")),
         *vs_sync(loaded.get(way), loaded.get("invoke"))]
        for way, what in _URL_WAYS.items()
    ]  # fmt: skip
    ratios = as_dict(s.get("ratios"))
    return [
        "### Function URLs",
        "",
        f"One no-op function through its URL and through Invoke, {fmt_int(s.get('connections'))} connections, closed "
        f"loop, then one connection: URL (Host form) / Invoke requests/s "
        f"**{fmt_ratio(num(ratios.get('url_host/invoke_rps')))}**, p50 on one connection "
        f"**{fmt_ratio(num(ratios.get('url_host/invoke_p50_single')))}**. The ratio columns are to Invoke under the "
        "same closed loop.",
        "",
        *md_table(_URL_COLUMNS, rows),
    ]
