"""The runtime process helpers of the proxy (runtimes/proxy/process.py): its command line, how its end is worded
and mirrored, what it is told when it cannot start, and its peak memory."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runtimes.proxy import process


def test_the_exec_wrapper_goes_first() -> None:
    assert process.command(["/var/task/bootstrap"], {}) == ["/var/task/bootstrap"]
    wrapped = process.command(["/usr/bin/node", "/var/runtime/index.mjs"], {"AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrap"})
    assert wrapped == ["/opt/wrap", "/usr/bin/node", "/var/runtime/index.mjs"]


def test_lambdas_words_for_an_end() -> None:
    assert process.describe(1 << 8) == "exit status 1"
    assert process.describe(signal.SIGKILL) == "signal: killed"
    assert process.describe(signal.SIGSEGV) == "signal: segmentation fault"


def test_an_entrypoint_that_cannot_start() -> None:
    env = {"LAMBDA_TASK_ROOT": "/var/task"}
    missing = OSError(errno.ENOENT, "No such file or directory")
    assert process.entrypoint_error("/var/task/bootstrap", missing, env) == (
        "Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]"
    )
    assert process.entrypoint_error("/opt/x", missing, env) == "Couldn't find valid bootstrap(s): [/opt/x]"
    denied = OSError(errno.EACCES, "Permission denied")
    assert (
        process.entrypoint_error("/var/task/bootstrap", denied, env)
        == "fork/exec /var/task/bootstrap: permission denied"
    )


def test_spawn_runs_with_exactly_its_environment_and_reports_exec_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(
        tmp_path
    )  # spawn moves the process into the runtime's directory (the proxy's own does not matter)
    out = os.path.join(tmp_path, "out")
    pid = process.spawn(
        ["sh", "-c", f'echo "$A $(pwd)" > {out}; trap - PIPE; exit 3'],
        {"A": "a", "PATH": "/bin:/usr/bin"},
        str(tmp_path),
    )
    _, status = os.waitpid(pid, 0)
    assert process.describe(status) == "exit status 3"
    assert Path(out).read_text().strip() == f"a {os.path.realpath(tmp_path)}"
    with pytest.raises(FileNotFoundError):
        process.spawn([os.path.join(tmp_path, "nothing")], {}, str(tmp_path))
    with pytest.raises(FileNotFoundError):
        process.spawn(["no-such-program-here"], {"PATH": "/bin"}, str(tmp_path))


@pytest.mark.parametrize("how", ["exit", "signal"])
def test_the_proxy_ends_as_its_runtime_did(how: str) -> None:
    status = (7 << 8) if how == "exit" else signal.SIGSEGV
    code = f"from runtimes.proxy.process import end_like; end_like({status})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert done.returncode == (7 if how == "exit" else -signal.SIGSEGV)


def test_peak_memory_of_a_process() -> None:
    assert process.MemoryProbe(os.getpid()).peak_kb() > 1000
    assert process.MemoryProbe(10_000_000).peak_kb() == 0
