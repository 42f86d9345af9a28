"""The benchmark suite runs end to end (a smoke run: --quick, a few scenarios) and writes what the report reads.

Not a timed test: it checks that the suite's machinery works against the real gateway and baselines, that the
results have the documented shape, and that every server it started is gone afterwards, not how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_quick_suite_measures_every_target_and_leaves_nothing_running(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    cmd = [sys.executable, "bench/suite.py", "--quick", "--only", "throughput,cold_start,memory", "--no-report"]
    proc = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())

    throughput = results["scenarios"]["throughput"]["results"]
    for name in ("gateway", "inprocess", "gunicorn", "fresh_process"):
        run = throughput[name]
        if name == "fresh_process" and run["requests"] == 0:  # an interpreter per request: seconds on a busy machine
            assert run["unfinished"] > 0 and run["errors"]["socket"] == 0, run  # it ran, nothing finished in time
            continue
        assert run["requests"] > 0, name
        assert set(run["statuses"]) == {"200"}, (name, run["statuses"])
        assert run["errors"] == {"socket": 0, "timeout": 0, "non_2xx": 0}, name
    assert results["scenarios"]["throughput"]["ratios"]["gateway/inprocess"] > 0

    cold = results["scenarios"]["cold_start"]
    assert cold["fresh_function"]["errors"] == 0
    assert cold["fresh_function"]["n"] == len(cold["fresh_function"]["samples_ms"]) == results["params"]["cold_n"]
    assert cold["fresh_process"]["n"] == results["params"]["cold_n"]
    for key in ("right_after_create", "right_after_update"):  # each answer checked: new code, with Init Duration
        assert cold[key]["errors"] == 0, key
        assert cold[key]["n"] == cold[key]["init_duration_ms"]["n"] == results["params"]["cold_n"], key
    assert cold["scale_from_zero"]["environments"] == 10  # ten concurrent first invokes, ten environments
    assert cold["scale_from_zero"]["errors"] == 0

    memory = results["scenarios"]["memory"]
    assert memory["idle_environments"] == 8
    assert 0 < memory["uss_kb"]["p50"] < memory["rss_kb"]["p50"]

    assert results["survivors"] == {name: 0 for name in results["survivors"]}
    measured = {row["name"] for row in results["targets"] if row["value"] is not None}
    assert measured == {
        "gateway CPU per warm invocation / (a) in-process CPU per request",
        "warm throughput, gateway / (a) in-process",
        "first invoke right after CreateFunction, p50",
        "first invoke right after UpdateFunctionCode, p50",
        "cold start, (b) fresh process p50 / gateway p50",
        "idle no-op environment, private memory p50",
    }
    assert all(row["met"] is None or isinstance(row["met"], bool) for row in results["targets"])


def test_the_urls_scenario_measures_a_function_url_next_to_invoke(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    cmd = [sys.executable, "bench/suite.py", "--quick", "--only", "urls", "--no-report", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    urls = results["scenarios"]["urls"]
    if "skipped" in urls:
        pytest.skip(urls["skipped"])
    for load in ("loaded", "single"):
        for way in ("invoke", "url_host", "url_path"):
            run = urls[load][way]
            assert run["requests"] > 0 and set(run["statuses"]) == {"200"}, (load, way, run["statuses"])
            assert run["errors"] == {"socket": 0, "timeout": 0, "non_2xx": 0}, (load, way)
    assert urls["ratios"]["url_host/invoke_rps"] > 0
    assert urls["function_url"].startswith("http://") and ".lambda-url.us-east-1.localhost:" in urls["function_url"]
    assert results["survivors"] == {name: 0 for name in results["survivors"]}


# -- the verdicts (pure: a results dict in, the targets table's rows out) ----------------------------------------


def test_the_verdicts_are_issue_19s_targets_with_this_runs_values() -> None:
    from bench.report import render_markdown
    from bench.suite import verdicts

    sample = json.loads((ROOT / "tests" / "data" / "suite-sample.json").read_text())
    rows = {row["name"]: row for row in verdicts(sample["scenarios"])}
    expected = {  # name: (value from the sample, goal, met)
        "gateway CPU per warm invocation / (a) in-process CPU per request": (2.344, "<= 1.6", False),  # 128.9 / 55.0
        "warm throughput, gateway / (a) in-process": (0.41, ">= 0.6", False),
        "first invoke right after CreateFunction, p50": (8.61, "<= 5", False),
        "first invoke right after UpdateFunctionCode, p50": (7.42, "<= 5", False),
        "gateway overhead p50 at 50 % of max load": (0.398, "<= 0.3", False),
        "  the same, over (a)'s p50 at that rate (the client's and the kernel's share taken out)": (0.088, "<= 0.3",
                                                                                                   True),
        "throughput, 1000 functions (Zipf) / 1 function": (0.93, ">= 0.8", True),
        "cold start, (b) fresh process p50 / gateway p50": (sample["scenarios"]["cold_start"]["ratio_p50"], ">= 15",
                                                            sample["scenarios"]["cold_start"]["ratio_p50"] >= 15),
        "idle no-op environment, private memory p50": (2996, "<= 4096", True),
    }  # fmt: skip
    assert {name: (r["value"], r["target"], r["met"]) for name, r in rows.items()} == expected
    # the report's targets table shows every one of them
    md = render_markdown({**sample, "targets": list(rows.values())}, "x.json")
    table = [line for line in md.split("### Targets", 1)[1].split("###", 1)[0].splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(expected)
    for name in expected:
        assert any(line.startswith(f"| {name} |") for line in table), name
    assert "| first invoke right after UpdateFunctionCode, p50 | 7.42 ms | <= 5 | **not met** |" in table


def test_a_target_not_measured_has_no_verdict() -> None:
    from bench.suite import verdicts

    rows = verdicts({"throughput": {"cpu": {"gateway": {"server_us_per_request": 80.0}}}})
    assert len(rows) == 9 and all(row["value"] is None and row["met"] is None for row in rows)
    met = verdicts({"throughput": {"cpu": {"gateway": {"server_us_per_request": 80.0},
                                           "inprocess": {"server_us_per_request": 55.0}}}})  # fmt: skip
    assert met[0]["value"] == 1.455 and met[0]["met"] is True
    zero = verdicts({"throughput": {"cpu": {"gateway": {"server_us_per_request": 80.0},
                                            "inprocess": {"server_us_per_request": 0}}}})  # fmt: skip
    assert zero[0]["value"] is None
