"""Every benchmark command starts as the Makefile and the docs run it (`python bench/<script>.py`, so bench/ is
sys.path[0] and each script makes `bench` importable itself): `--help` exits 0 and names the script."""

from __future__ import annotations

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
