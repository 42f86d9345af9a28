"""How an invocation fails for want of its environment: the environment died, or the invocation ran out of time.
Raised by gateway/execution/environment.py (which re-exports them), caught by the invoker and the pool; and how the
invoker words a death that is the platform's, not the function's (`mount_failure`)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any

from gateway.contracts.zygote import MOUNT_FAILED_LINE, ExitCode
from gateway.errors import EFSMountFailureException


def mount_failure(extra: Mapping[str, Any], wait_status: int | None, output: bytes) -> EFSMountFailureException | None:
    """Invoke's error when an environment of a function (`extra`: its FunctionConfig.extra) ended, before any of its
    code ran, because it could not mount its file system, as Lambda answers it (EFSMountFailureException, 403); else
    None. That is: the function has FileSystemConfigs, the environment exited with ExitCode.MOUNT_FAILED, and its
    `output` holds MOUNT_FAILED_LINE (runtimes/python/sandbox.py) — a function's own exit status 5 is its own. The
    message names no host path: why is in the gateway's log."""
    arns = [fs["Arn"] for fs in extra.get("FileSystemConfigs") or ()]
    if not arns or wait_status is None or not os.WIFEXITED(wait_status):
        return None
    if os.WEXITSTATUS(wait_status) != ExitCode.MOUNT_FAILED or MOUNT_FAILED_LINE not in output:
        return None
    which = f" of access point {arns[0]}"
    return EFSMountFailureException(
        f"The function couldn't mount the file system{which}: its directory could not be mounted here."
    )


class EnvironmentDied(Exception):
    """The environment's process ended (or was killed) before it replied."""

    def __init__(
        self, reason: str, exit_status: asyncio.Future[int | None] | None, oom_peak: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status
        #: time.perf_counter() when the gateway learnt of the death: an invocation's Duration ends here
        self.at = time.perf_counter()
        #: the memory group's peak usage (bytes) when the kernel's OOM killer ended the environment, else None
        self.oom_peak = oom_peak
        #: what it printed since it was last asked (set when it died in Init: that invocation's log shows it)
        self.output = b""


class InvocationTimeout(Exception):
    """The invocation ran past its deadline; the environment has been killed."""
