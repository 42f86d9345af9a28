"""Deploy directories of functions at start-up (`serve --deploy DIR`), idempotently.

Each sub-directory of DIR holding a `function.json` (a CreateFunction request body without `Code`;
FunctionName defaults to the directory name, Runtime to the gateway's own Python, which every host running it has)
becomes a function whose package is the directory's content. An existing function is updated only when its code or
settings differ, so restarts are cheap.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
from pathlib import Path
from typing import Any

import orjson

from gateway.api.functions import functions
from gateway.errors import LambdaError
from gateway.store.code import from_directory
from gateway.store.registry import Registry

log = logging.getLogger("gateway.deploy")

DEFAULT_ROLE = "arn:aws:iam::123456789012:role/gateway-example"
#: the runtime of a function.json that names none: the gateway's own Python (so `make run` deploys the examples on
#: any host that runs the gateway)
OWN_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"


def _request_body(directory: Path) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads((directory / "function.json").read_bytes())
    body.setdefault("FunctionName", directory.name)
    body.setdefault("Runtime", OWN_RUNTIME)
    body.setdefault("Role", DEFAULT_ROLE)
    zip_bytes = from_directory(directory)
    body["Code"] = {"ZipFile": base64.b64encode(zip_bytes).decode()}
    return body


async def deploy_directories(registry: Registry, deployer: functions.Deployer, dirs: tuple[Path, ...]) -> None:
    """Create or update one function per sub-directory; a broken one is logged and skipped."""
    for top in dirs:
        if not top.is_dir():
            log.warning("deploy: %s is not a directory; skipped", top)
            continue
        for directory in sorted(p for p in top.iterdir() if (p / "function.json").is_file()):
            try:
                body = await asyncio.to_thread(_request_body, directory)
                action = await deployer.create_or_update(body)
            except (LambdaError, OSError, ValueError) as exc:
                log.error("deploy: %s failed: %s", directory, exc)
                continue
            log.info("deploy: %s %s", body["FunctionName"], action)
