"""Every benchmark command starts as the Makefile and the docs run it (`python bench/<script>.py`, so bench/ is
sys.path[0] and each script makes `bench` importable itself): `--help` exits 0 and names the script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = (
    "suite.py",
    "concurrency.py",
    "profile.py",
    "soak.py",
    "compare.py",
    "loadgen.py",
    "report.py",
    "plots.py",
    "rabbitmq_latency.py",
    "kafka_source.py",
)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_starts(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {script}")


def test_compare_runs_two_checkouts_interleaved_and_writes_medians(tmp_path: Path) -> None:
    """bench/compare.py against this checkout twice (one round, short): every run recorded, medians per checkout."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--rounds", "1", "--seconds", "0.5", str(ROOT), str(ROOT)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    path = Path(proc.stdout.strip().splitlines()[-1].removeprefix("results: "))
    try:
        out = json.loads(path.read_text())
        runs = out["runs"][str(ROOT)]
        assert len(runs) == 2 and all(r["requests_per_s"] > 0 and r["gateway_us_per_request"] > 0 for r in runs)
        assert set(out["medians"][str(ROOT)]) == {"requests_per_s", "p50_ms", "gateway_us_per_request",
                                                  "environments_us_per_request"}  # fmt: skip
    finally:
        path.unlink()
