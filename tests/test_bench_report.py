"""bench/report.py and bench/plots.py against a synthetic suite results file (tests/data/suite-sample.json).

The sample has the shape `bench/suite.py` writes, with made-up but plausible figures; nothing here runs a
benchmark. The plot tests are skipped when matplotlib (the `bench` extra) is not installed.
"""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench import report_format as fmt
from bench.report import BEGIN_MARKER, END_MARKER, MarkerError, render_markdown, replace_marked_section

SAMPLE = Path(__file__).parent / "data" / "suite-sample.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOT_NAMES = ("throughput.png", "latency_vs_load.png", "cold_start.png", "payloads.png")
HEADINGS = "Targets|Warm throughput|Latency vs load|Cold start|Burst|Throttling|Many functions|Payload size|Memory"


def _matplotlib_importable() -> bool:
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True


HAVE_MATPLOTLIB = _matplotlib_importable()
needs_matplotlib = pytest.mark.skipif(
    not HAVE_MATPLOTLIB, reason="matplotlib is not importable (install the `bench` extra: pip install -e '.[bench]')"
)


@pytest.fixture
def sample() -> dict[str, Any]:
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _nulled(value: Any) -> Any:
    """A copy of `value` with every number (not bool) replaced by None."""
    if isinstance(value, dict):
        return {k: _nulled(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nulled(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return None
    return value


# --------------------------------------------------------------------------------------------------------------
# Markdown


def test_sample_has_every_scenario(sample: dict[str, Any]) -> None:
    assert set(sample["scenarios"]) == set(report.SCENARIO_ORDER)


def test_markdown_key_figures(sample: dict[str, Any]) -> None:
    md = render_markdown(sample, "bench/results/suite-20261123T180000Z.json")
    tp = sample["scenarios"]["throughput"]["results"]
    gateway_rps = tp["gateway"]["throughput_rps"]
    # Formatted from the JSON: integer req/s with separators, ratios to 2 decimals, ms to 3 significant digits.
    assert f"| {round(gateway_rps):,} |" in md
    assert "3,014" in md
    assert "0.41\u00d7" in md  # gateway / inprocess
    assert "1.30\u00d7" in md  # gateway / gunicorn, 1.3 in the JSON
    assert "0.398" in md  # overhead p50
    assert "the gateway's overhead over (a): **0.0880 ms**" in md and "in + out), mean: 0.0520 ms" in md
    assert "24,105 MB" in md and "abc1234" in md and "3.14.5" in md
    assert "`make bench  (.venv/bin/python bench/suite.py)`" in md
    assert "(bench/results/suite-20261123T180000Z.json)" in md
    # The targets table: one row per target with its marker.
    rows = [line for line in md.splitlines() if line.startswith("| warm throughput vs (a) |")]
    assert rows == ["| warm throughput vs (a) | 0.41\u00d7 | >= 0.6 | **not met** |"]
    assert "| warm throughput vs (c) | 1.30\u00d7 | >= 1.0 | met |" in md
    assert "| throttle rate vs (a) | 1.03\u00d7 | >= 1.0 | n/a |" in md  # met: null
    # One table per scenario, charts linked under theirs.
    for heading in HEADINGS.split("|"):
        assert f"\n### {heading}\n" in md
    for name in PLOT_NAMES:
        assert f"(bench/results/plots/{name})" in md
    assert BEGIN_MARKER not in md and END_MARKER not in md
    assert md.endswith("\n") and "n/a" in md


def test_markdown_numbers_come_from_the_json(sample: dict[str, Any]) -> None:
    changed = copy.deepcopy(sample)
    changed["scenarios"]["throughput"]["results"]["gateway"]["throughput_rps"] = 1234567.8
    changed["scenarios"]["cold_start"]["fresh_function"]["client_ms"]["p50"] = 0.0123456
    changed["targets"][0]["value"] = 0.777
    md = render_markdown(changed, "x.json")
    assert "| gateway (Lambda invoke API) | 1,234,568 | 167.93\u00d7 |" in md
    assert "| gateway (Lambda invoke API) | 3,014 |" not in md
    assert "0.0123" in md
    assert "0.78\u00d7" in md


def test_formatting() -> None:
    assert fmt.fmt_rps(3014.2) == "3,014"
    assert fmt.fmt_ms(0.39812) == "0.398"
    assert fmt.fmt_ms(13.02) == "13.0"
    assert fmt.fmt_ms(999.7) == "1,000"
    assert fmt.fmt_ms(1234.0) == "1,230"
    assert fmt.fmt_ratio(1.3) == "1.30\u00d7"
    for missing in (None, "x", float("nan"), True):
        assert fmt.fmt_ms(missing) == fmt.fmt_rps(missing) == fmt.fmt_ratio(missing) == "n/a"
    assert fmt.fmt_statuses({"429": 3, "200": 70124}) == "70,124 \u00d7 200, 3 \u00d7 429"
    assert fmt.fmt_errors({"socket": 1, "timeout": 0, "non_2xx": 2}) == "3 (socket 1, non-2xx 2)"


def test_only_one_scenario(sample: dict[str, Any]) -> None:
    for name in report.SCENARIO_ORDER:
        partial = {k: v for k, v in sample.items() if k not in ("scenarios", "targets")}
        partial["scenarios"] = {name: sample["scenarios"][name]}
        md = render_markdown(partial, "x.json")
        assert md.count("\n### ") == 1


def test_missing_and_null_values(sample: dict[str, Any]) -> None:
    assert "No scenario results" in render_markdown({}, "x.json")
    md = render_markdown(_nulled(sample), "x.json")
    assert "n/a" in md and "3,014" not in md
    odd = {"scenarios": {"throughput": {"results": {"gateway": None}}, "payloads": {"sizes": [None, {}]}, "new": {}}}
    md = render_markdown(odd, "x.json")
    assert "`new`" in md


# --------------------------------------------------------------------------------------------------------------
# Marker replacement

BEFORE = "# Benchmarks\r\n\r\nIntro with trailing spaces   \n\n## Suite\n\n"
AFTER = "\nMore text, unchanged.\n\u00e9\u00e8 \u00d7\n"


def test_replace_between_markers(tmp_path: Path, sample: dict[str, Any]) -> None:
    path = tmp_path / "BENCHMARKS.md"
    original = f"{BEFORE}{BEGIN_MARKER}\nold text\n| old | table |\n{END_MARKER}{AFTER}".encode()
    path.write_bytes(original)
    section = render_markdown(sample, "bench/results/suite-latest.json")

    report.update_markdown_file(path, section)
    new = path.read_bytes()
    head = f"{BEFORE}{BEGIN_MARKER}\n".encode()
    tail = f"{END_MARKER}{AFTER}".encode()
    assert new.startswith(head) and new.endswith(tail)
    assert new[len(head) : -len(tail)].decode() == section + "\n"  # a blank line before the end marker
    assert b"old text" not in new

    # Idempotent: a second run with the same results changes nothing.
    report.update_markdown_file(path, section)
    assert path.read_bytes() == new

    # Through the CLI as well.
    results = tmp_path / "suite-x.json"
    results.write_text(json.dumps(sample), encoding="utf-8")
    path.write_bytes(original)
    assert report.main([str(results), "--markdown", str(path)]) == 0
    cli = path.read_bytes()
    assert cli.startswith(head) and cli.endswith(tail) and b"3,014" in cli


def test_replace_keeps_crlf() -> None:
    text = f"a\r\n{BEGIN_MARKER}\r\nold\r\n{END_MARKER}\r\nz\r\n"
    assert (
        replace_marked_section(text, "one\ntwo\n") == f"a\r\n{BEGIN_MARKER}\r\none\r\ntwo\r\n\r\n{END_MARKER}\r\nz\r\n"
    )


@pytest.mark.parametrize(
    "text",
    [
        "no markers at all\n",
        f"only the begin\n{BEGIN_MARKER}\n",
        f"only the end\n{END_MARKER}\n",
        f"{END_MARKER}\nreversed\n{BEGIN_MARKER}\n",
        f"{BEGIN_MARKER}\n{END_MARKER}\n{BEGIN_MARKER}\n{END_MARKER}\n",
        f"inline {BEGIN_MARKER} x\n{END_MARKER}\n",
    ],
)
def test_markers_missing_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(MarkerError):
        replace_marked_section(text, "new\n")
    path = tmp_path / "doc.md"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MarkerError):
        report.update_markdown_file(path, "new\n")
    results = tmp_path / "suite.json"
    results.write_text("{}", encoding="utf-8")
    assert report.main([str(results), "--markdown", str(path)]) == 1
    assert path.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.md", "suite.json"]


def test_cli_prints_and_links_the_stamped_twin(
    tmp_path: Path, sample: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    data = json.dumps(sample)
    (results / "suite-20261123T170000Z.json").write_text("{}", encoding="utf-8")
    (results / "suite-20261123T180000Z.json").write_text(data, encoding="utf-8")
    (results / "suite-latest.json").write_text(data, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert report.main([]) == 0
    out = capsys.readouterr().out
    assert "[`bench/results/suite-20261123T180000Z.json`](bench/results/suite-20261123T180000Z.json)" in out
    assert "3,014" in out


# --------------------------------------------------------------------------------------------------------------
# Plots


@needs_matplotlib
def test_plots(tmp_path: Path, sample: dict[str, Any]) -> None:
    from bench import plots

    out = tmp_path / "plots"
    written = plots.render(sample, out)
    assert [p.name for p in written] == list(PLOT_NAMES)
    for name in PLOT_NAMES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert len(data) > 20_000, (name, len(data))
    # Deterministic: the same results give the same files.
    again = plots.render(sample, tmp_path / "again")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in written]


@needs_matplotlib
def test_plots_partial_and_null(tmp_path: Path, sample: dict[str, Any]) -> None:
    from bench import plots

    only = {k: v for k, v in sample.items() if k != "scenarios"}
    only["scenarios"] = {"cold_start": sample["scenarios"]["cold_start"]}
    assert [p.name for p in plots.render(only, tmp_path / "one")] == ["cold_start.png"]
    only["scenarios"] = {"burst": sample["scenarios"]["burst"]}  # nothing to plot
    assert plots.render(only, tmp_path / "none") == []
    assert not (tmp_path / "none").exists()
    assert plots.render({}, tmp_path / "empty") == []
    assert plots.render(_nulled(sample), tmp_path / "nulled") == []
    no_baseline = copy.deepcopy(sample)
    del no_baseline["scenarios"]["throughput"]["results"]["inprocess"]
    del no_baseline["targets_meta"]
    assert [p.name for p in plots.render(no_baseline, tmp_path / "nb")] == list(PLOT_NAMES)


@needs_matplotlib
def test_plots_cli(tmp_path: Path) -> None:
    from bench import plots

    assert plots.main([str(SAMPLE), "--out-dir", str(tmp_path / "cli")]) == 0
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(PLOT_NAMES)
    assert plots.main([str(tmp_path / "missing.json"), "--out-dir", str(tmp_path / "cli2")]) == 2


def test_the_runtimes_scenario_is_tabulated_side_by_side() -> None:
    from bench.report_sections import SECTIONS

    warm = {"connections": 8, "throughput_rps": 1500.4, "latency_ms": {"p50": 4.2, "p99": 12.0}}
    cold = {"client_ms": {"p50": 9.1}, "init_duration_ms": {"p50": 5.0}}
    scenario = {
        "cold_n": 10,
        "kinds": {"python": {"cold_start": cold, "warm": warm}, "go": {"cold_start": cold, "warm": warm},
                  "nodejs": {"skipped": "no Node.js"}},
    }  # fmt: skip
    lines = SECTIONS["runtimes"]({}, scenario)
    assert lines[0] == "### Runtimes side by side"
    rows = [line for line in lines if line.startswith("| Python") or line.startswith("| Go")]
    assert rows[0] == "| Python, fast path | 9.10 | 5.00 | 1,500 | 4.20 | 12.0 | 1.00\u00d7 | 1.00\u00d7 |"
    assert rows[1].startswith("| Go, aws-lambda-go bootstrap")
    assert lines[-1] == "Node.js (Runtime API): not measured (no Node.js)."


def test_the_async_scenario_compares_202s_with_sync_invokes(sample: dict[str, Any]) -> None:
    from bench.report_sections import SECTIONS

    lines = SECTIONS["async"]({}, sample["scenarios"]["async"])
    text = "\n".join(lines)
    assert lines[0] == "### Asynchronous invocation"
    assert "ratio **1.50\u00d7**" in text and "the queue drained 8.4 s after the loop" in text
    assert "| Event invokes (202, durably queued) | 4,350 | 7.10 | 22.0 | 1.50\u00d7 | 0.68\u00d7 |" in text
    assert "| synchronous Python invokes (200) | 2,900 | 10.5 | 30.1 | 1.00\u00d7 | 1.00\u00d7 |" in text
    assert "| What | req/s | p50 ms | p99 ms | req/s vs sync Python | p50 vs sync Python |" in text
    assert "p50 **1.21 ms**, p95 2.05 ms" in text
    undrained = {**sample["scenarios"]["async"]}
    undrained["acceptance"] = {**undrained["acceptance"], "drained": False}
    assert "had not drained" in "\n".join(SECTIONS["async"]({}, undrained))


def test_the_urls_scenario_puts_a_function_url_next_to_invoke() -> None:
    from bench.report_sections import SECTIONS

    def run(rps: float, p50: float, p99: float) -> dict[str, Any]:
        cpu = {"gateway_us_per_request": 123.4, "environments_us_per_request": 87.0}
        return {"throughput_rps": rps, "latency_ms": {"p50": p50, "p99": p99}, **cpu}

    scenario = {
        "connections": 32,
        "loaded": {"invoke": run(3000, 9.5, 20), "url_host": run(2400, 12.0, 25), "url_path": run(2350, 12.2, 26)},
        "single": {"invoke": run(900, 1.05, 2), "url_host": run(800, 1.2, 2.2), "url_path": run(790, 1.21, 2.3)},
        "ratios": {"url_host/invoke_rps": 0.8, "url_path/invoke_rps": 0.783, "url_host/invoke_p50_single": 1.143},
    }
    lines = SECTIONS["urls"]({}, scenario)
    text = "\n".join(lines)
    assert lines[0] == "### Function URLs"
    assert "requests/s **0.80\u00d7**, p50 on one connection **1.14\u00d7**" in text
    invoke = (
        "| Invoke API (POST .../invocations): the synchronous Python invoke | 3,000 | 9.50 | 20.0 | 1.05 | 123 | 87 |"
    )
    assert invoke + " 1.00\u00d7 | 1.00\u00d7 |" in text
    assert "| function URL, Host form | 2,400 | 12.0 | 25.0 | 1.20 | 123 | 87 | 0.80\u00d7 | 1.26\u00d7 |" in text
    assert "gateway CPU \u00b5s/req" in text
    assert SECTIONS["urls"]({}, {"skipped": "no function URLs"})[-1] == "Not measured: no function URLs."


def test_the_throughput_table_shows_cpu_per_request_of_each_server_and_its_workers(sample: dict[str, Any]) -> None:
    from bench.report_sections import SECTIONS

    lines = SECTIONS["throughput"](sample, sample["scenarios"]["throughput"])
    text = "\n".join(lines)
    assert "| server CPU \u00b5s/req | workers CPU \u00b5s/req | server CPU/req vs (a) |" in text
    gateway = next(line for line in lines if line.startswith("| gateway (Lambda invoke API) |"))
    assert "| 129 | 76.4 | 2.34\u00d7 |" in gateway  # 128.9 us over (a)'s 55.0 us
    inprocess = next(line for line in lines if line.startswith("| (a)"))
    assert "| 55 | 0 | 1.00\u00d7 |" in inprocess
    assert "Gateway CPU per warm invocation / (a)'s CPU per request: **2.34\u00d7**." in text
    del sample["scenarios"]["throughput"]["cpu"]["inprocess"]
    text = "\n".join(SECTIONS["throughput"](sample, sample["scenarios"]["throughput"]))
    assert "Gateway CPU per warm invocation" not in text and "| 129 | 76.4 | n/a |" in text


def test_the_cold_start_table_has_the_first_invokes_right_after_create_and_update(sample: dict[str, Any]) -> None:
    from bench.report_sections import SECTIONS

    lines = SECTIONS["cold_start"](sample, sample["scenarios"]["cold_start"])
    text = "\n".join(lines)
    create = lines.index("| Gateway: first invoke right after its CreateFunction returned (client) | 30 | 8.61 | 9.80 "
                         "| 12.4 | 12.4 | 9.04 |")  # fmt: skip
    assert lines[create + 1].startswith("| ... of which Init Duration (REPORT) | 30 | 3.95 |")
    update = [line for line in lines if "right after UpdateFunctionCode (new code) of a warm function" in line]
    assert update == ["| Gateway: first invoke right after UpdateFunctionCode (new code) of a warm function returned "
                      "(client) | 30 | 7.42 | 8.90 | 11.3 | 11.3 | 7.79 |"]  # fmt: skip
    assert lines[lines.index(update[0]) + 1].startswith("| ... of which Init Duration (REPORT) | 30 | 3.71 |")
    assert "| Gateway: first invoke of a fresh function (client) |" in text  # the 50 ms-paused row stays
    assert (
        "The calls themselves, before those invokes: CreateFunction p50 14.2 ms, UpdateFunctionCode p50 12.8 ms."
        in text
    )
    del sample["scenarios"]["cold_start"]["right_after_update"]
    text = "\n".join(SECTIONS["cold_start"](sample, sample["scenarios"]["cold_start"]))
    assert "UpdateFunctionCode" not in text and "right after its CreateFunction" in text


def test_other_runtimes_are_shown_next_to_the_python_fast_path(sample: dict[str, Any]) -> None:
    from bench.report_sections import SECTIONS

    scenario = sample["scenarios"]["runtimes"]
    lines = SECTIONS["runtimes"]({}, scenario)
    assert lines[4].endswith("| req/s vs sync Python | p50 vs sync Python |")
    python = scenario["kinds"]["python"]["warm"]
    for kind, label in (("go", "| Go, aws-lambda-go"), ("python_awslambdaric", "| Python, awslambdaric")):
        warm = scenario["kinds"][kind]["warm"]
        row = next(line for line in lines if line.startswith(label))
        rps = warm["throughput_rps"] / python["throughput_rps"]
        p50 = warm["latency_ms"]["p50"] / python["latency_ms"]["p50"]
        assert row.endswith(f"| {rps:.2f}\u00d7 | {p50:.2f}\u00d7 |"), row
    del scenario["kinds"]["python"]
    assert all(line.endswith("| n/a | n/a |") for line in SECTIONS["runtimes"]({}, scenario) if line.startswith("| Go"))
