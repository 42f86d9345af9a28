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
    assert cold["scale_from_zero"]["environments"] == 10  # ten concurrent first invokes, ten environments
    assert cold["scale_from_zero"]["errors"] == 0

    memory = results["scenarios"]["memory"]
    assert memory["idle_environments"] == 8
    assert 0 < memory["uss_kb"]["p50"] < memory["rss_kb"]["p50"]

    assert results["survivors"] == {name: 0 for name in results["survivors"]}
    assert {row["name"] for row in results["targets"]} >= {"warm throughput, gateway / (a) in-process"}
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
