"""Functions for runtimes other than the Python fast path, built from what registries give: a Go `bootstrap` built
with AWS's aws-lambda-go (the Go module proxy), and awslambdaric (PyPI) for the system's Python. Shared by the bench
suite's `runtimes` scenario (bench/scenarios/runtimes.py) and the end-to-end tests of custom runtimes
(tests/test_e2e_runtime_clients.py). Blocking; each raises `Unavailable` with the reason it cannot build here.
"""

from __future__ import annotations

import io
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
AWSLAMBDARIC = "awslambdaric==4.2.2"
AWS_LAMBDA_GO = ("github.com/aws/aws-lambda-go", "v1.47.0")
#: a no-op Go function: returns its event
GO_ECHO = """package main

import (
	"context"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(ctx context.Context, event map[string]any) (map[string]any, error) { return event, nil })
}
"""
#: awslambdaric runs the function's Handler (`_HANDLER`, e.g. app.handler) from its code, with the system's Python
RIC_BOOTSTRAP = f'#!/bin/sh\nexec {SYSTEM_PYTHON} -m awslambdaric "$_HANDLER"\n'
RIC_ECHO = "def handler(event, context):\n    return event\n"


class Unavailable(Exception):
    """What a build needs is not here (a toolchain, the system Python, a registry)."""


def go_toolchain() -> str | None:
    candidates = (shutil.which("go"), "/usr/local/go/bin/go", "/usr/lib/go/bin/go")
    return next((p for p in candidates if p and os.access(p, os.X_OK)), None)


def go_bootstrap(directory: Path, source: str = GO_ECHO, goarch: str | None = None) -> Path:
    """Build `source` (package main, using aws-lambda-go) as a static `bootstrap` in `directory` (tag lambda.norpc:
    the Runtime API only, as provided.* runtimes want), for `goarch` (Go's name: amd64, arm64) or the host's."""
    go = go_toolchain()
    if go is None:
        raise Unavailable("no Go toolchain")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.go").write_text(source)
    module, version = AWS_LAMBDA_GO
    (directory / "go.mod").write_text(f"module example.com/fn\n\ngo 1.18\n\nrequire {module} {version}\n")
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", "GOOS": "linux"}
    if goarch is not None:
        env["GOARCH"] = goarch
    cmd = [go, "build", "-trimpath", "-tags", "lambda.norpc", "-o", "bootstrap", "."]
    done = subprocess.run(cmd, cwd=directory, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise Unavailable(f"go build failed: {done.stderr[-2000:]}")
    return directory / "bootstrap"


def system_python_version() -> str:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise Unavailable(f"no {SYSTEM_PYTHON}")
    cmd = [SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def awslambdaric_tree(directory: Path) -> Path:
    """awslambdaric and its dependencies, as wheels for the system Python, installed into `directory`."""
    version = system_python_version()
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(directory), "--only-binary=:all:",
           "--python-version", version, "--implementation", "cp", "--platform", f"manylinux2014_{platform.machine()}",
           AWSLAMBDARIC]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise Unavailable(f"pip could not install {AWSLAMBDARIC} for Python {version}: {done.stderr[-2000:]}")
    return directory


def tree_files(root: Path) -> dict[str, str | bytes]:
    """Every file under `root` (compiled caches left out), by relative path: a zip's contents."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def function_zip(files: dict[str, str | bytes]) -> bytes:
    """A function's zip; `bootstrap` (and any file under bin/) executable, as Lambda keeps a zip's modes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            if name == "bootstrap" or name.startswith("bin/"):
                info.external_attr = 0o100755 << 16
            zf.writestr(info, content)
    return buf.getvalue()
