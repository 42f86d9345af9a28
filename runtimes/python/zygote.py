"""The zygote: imports the runtime and the heavy stdlib once, then forks environments on request.

Started by the gateway with exec (`python3.X -I -S -B -c BOOT ROOT PACKAGES --control-fd N --envs-root DIR --sandbox
JSON`, gateway/execution/zygote.py: no site-packages, sys.path = the runtime's source and packages, then the standard
library; functions see what Lambda's Python runtime has, not the gateway's packages), never runs user code itself.
It probes once what isolation the host allows (runtimes/python/isolation.py), then serves the control socket
(runtimes/python/forkserver.py; the messages are gateway/contracts/zygote.py's). It dies with the gateway
(PR_SET_PDEATHSIG: SIGTERM, upon which it first kills every process of its environments' uids and cgroups, so no
daemon a function detached outlives a gateway's SIGKILL).
"""

from __future__ import annotations

# The heavy stdlib, imported once here so that every forked environment starts with it (copy-on-write).
import asyncio  # noqa: F401
import base64  # noqa: F401
import collections  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import hashlib  # noqa: F401
import http.client  # noqa: F401
import json  # noqa: F401
import logging  # noqa: F401
import os
import signal
import socket
import ssl  # noqa: F401
import sys
import urllib.parse
import urllib.request  # noqa: F401
import uuid  # noqa: F401

import msgpack  # noqa: F401

from gateway.contracts.zygote import SandboxPlan
from runtimes.python import concurrent as _concurrent  # noqa: F401  # imported once here, shared by every fork
from runtimes.python import isolation, jail
from runtimes.python.forkserver import ForkServer, close_fds_except


def main() -> None:
    args = sys.argv[1:]
    if len(args) != 6 or args[0] != "--control-fd" or args[2] != "--envs-root" or args[4] != "--sandbox":
        sys.exit("usage: zygote --control-fd N --envs-root DIR --sandbox JSON")
    # SIGTERM, not SIGKILL: a gateway that dies without stopping us leaves us to kill what its environments left
    jail._libc.prctl(jail.PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    expected_parent = int(os.environ.get("GATEWAY_PID", "0"))
    if expected_parent and os.getppid() != expected_parent:
        sys.exit(1)  # the gateway died before we set PDEATHSIG
    control_fd = int(args[1])
    close_fds_except(control_fd)
    control = socket.socket(fileno=control_fd)
    envs_root = args[3]
    ForkServer(control, envs_root, isolation.decide(SandboxPlan.from_json(args[5]), envs_root)).serve()


if __name__ == "__main__":
    main()
