"""runtimes/node's pure parts (errors, handler strings and module loading, log lines, callbacks), tested in Node.js
itself: tests/node/*.test.mjs under Node's own test runner (`node --test`, no npm package)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_TESTS = Path(__file__).parent / "node"


def test_node_runtime_units() -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":  # .ci/run installs Node.js
            pytest.fail("no `node` on PATH")
        pytest.skip("no `node` on PATH")
    files = sorted(str(p) for p in NODE_TESTS.glob("*.test.mjs"))
    result = subprocess.run([node, "--test", *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
