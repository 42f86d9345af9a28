"""Deploy directories of functions at start-up (`serve --deploy DIR`), idempotently.

Each sub-directory of DIR holding a `function.json` (a CreateFunction request body without `Code`;
FunctionName defaults to the directory name, Runtime to the gateway's own Python, which every host running it has)
becomes a function whose package is the directory's content, or, when the directory holds a `package.zip`, that file
byte for byte (the rest of the directory is then not deployed): the way to deploy a package signed by `gateway sign`
(a zip of the directory can carry no signature), so that a function.json naming a `CodeSigningConfigArn` under
Enforce deploys. An existing function is updated only when its code or settings differ, so restarts are cheap.

A `function.json` may also carry `"FunctionUrlConfig": {"AuthType": "NONE" | "AWS_IAM", "Cors": {...},
"InvokeMode": ...}` (a CreateFunctionUrlConfig body, checked the same way): the function's URL is created, or updated
when it differs (its id, so its address, never changes), and for `NONE` the two statements AWS's console adds are put
in the function's policy (`lambda:InvokeFunctionUrl` with `lambda:FunctionUrlAuthType` NONE, and
`lambda:InvokeFunction` with `lambda:InvokedViaFunctionUrl` true), each once. Without the member, an existing URL is
left alone (it may have been made through the API).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from gateway.api.functions import functions
from gateway.api.urls.configs import parse_body
from gateway.errors import LambdaError, ResourceConflictException
from gateway.settings import Settings
from gateway.store.code import from_directory
from gateway.store.function_urls import FunctionUrls
from gateway.store.records import LATEST
from gateway.store.registry import Registry

log = logging.getLogger("gateway.deploy")

#: the execution role of a function.json that names none, in the gateway's account (a role of another is refused)
DEFAULT_ROLE = "arn:{partition}:iam::{account}:role/gateway-example"
#: the runtime of a function.json that names none: the gateway's own Python (so `make run` deploys the examples on
#: any host that runs the gateway)
OWN_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"


URL_MEMBER = "FunctionUrlConfig"
#: a directory's package as built (and signed) elsewhere: deployed as it is instead of a zip of the directory
PACKAGE_FILE = "package.zip"


class PolicyStatements(Protocol):
    """What deploy needs of `gateway.store.policies.Policies`: adding a statement to a function's policy
    (ResourceConflictException when its Sid is there already)."""

    def add_function_statement(self, function: str, qualifier: str, statement: Mapping[str, Any]) -> object: ...


@dataclasses.dataclass(frozen=True, slots=True)
class UrlDeployment:
    """Where deployed URLs go: the URL store, the settings (ARNs, URLs), and the policy store when there is one."""

    urls: FunctionUrls
    settings: Settings
    policies: PolicyStatements | None = None


def public_url_statements(arn: str) -> list[dict[str, Any]]:
    """The two statements AWS's console adds to a function whose URL has AuthType NONE."""
    return [
        {"Sid": "FunctionURLAllowPublicAccess", "Effect": "Allow", "Principal": "*",
         "Action": "lambda:InvokeFunctionUrl", "Resource": arn,
         "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}}},
        {"Sid": "FunctionURLAllowInvokeAction", "Effect": "Allow", "Principal": "*",
         "Action": "lambda:InvokeFunction", "Resource": arn,
         "Condition": {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}},
    ]  # fmt: skip


def deploy_url(name: str, config: Any, target: UrlDeployment) -> str:
    """Create or update `name`'s URL from a function.json's FunctionUrlConfig; what was done. Blocking (SQLite)."""
    if not isinstance(config, dict):
        raise ValueError(f"{URL_MEMBER} must be an object")
    wanted = parse_body(config, URL_MEMBER, create=True)
    auth_type, invoke_mode = str(wanted.auth_type), wanted.invoke_mode or "BUFFERED"
    url, created = target.urls.create(name, LATEST, auth_type, invoke_mode, wanted.cors, time.time())
    action = "created"
    was_public = not created and url.auth_type == "NONE"  # an operator may have removed the statements since
    if not created:
        action = "unchanged"
        if (url.auth_type, url.invoke_mode, url.cors) != (auth_type, invoke_mode, wanted.cors):
            now = time.time()
            changed = target.urls.update(
                name, LATEST,
                lambda u: dataclasses.replace(u, auth_type=auth_type, invoke_mode=invoke_mode, cors=wanted.cors,
                                              modified=now),
            )  # fmt: skip
            url, action = changed or url, "updated"
    if auth_type == "NONE" and not was_public and target.policies is not None:
        for statement in public_url_statements(target.settings.function_arn(name)):
            try:
                target.policies.add_function_statement(name, LATEST, statement)
            except ResourceConflictException:
                pass  # put by an earlier start
    return f"URL {action}: {target.settings.function_url(url.url_id)} ({auth_type})"


def _request_body(directory: Path, role: str) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads((directory / "function.json").read_bytes())
    body.setdefault("FunctionName", directory.name)
    body.setdefault("Runtime", OWN_RUNTIME)
    body.setdefault("Role", role)
    if body.get("Code"):  # e.g. S3Bucket/S3Key: the directory is the code, whatever function.json says
        log.warning("deploy: %s: function.json's Code is ignored; the directory's files are the code", directory)
    package = directory / PACKAGE_FILE
    zip_bytes = package.read_bytes() if package.is_file() else from_directory(directory)
    body["Code"] = {"ZipFile": base64.b64encode(zip_bytes).decode()}
    return body


async def deploy_directories(
    registry: Registry, deployer: functions.Deployer, dirs: tuple[Path, ...], urls: UrlDeployment | None = None
) -> None:
    """Create or update one function per sub-directory (and its URL, given `urls`); a broken one is logged and
    skipped."""
    settings = deployer.settings
    role = DEFAULT_ROLE.format(partition=settings.partition, account=settings.account_id)
    for top in dirs:
        if not top.is_dir():
            log.warning("deploy: %s is not a directory; skipped", top)
            continue
        for directory in sorted(p for p in top.iterdir() if (p / "function.json").is_file()):
            try:
                body = await asyncio.to_thread(_request_body, directory, role)
                url_config = body.pop(URL_MEMBER, None)
                action = await deployer.create_or_update(body)
                if url_config is not None and urls is not None:
                    action += "; " + await asyncio.to_thread(deploy_url, body["FunctionName"], url_config, urls)
            except (LambdaError, OSError, ValueError) as exc:
                log.error("deploy: %s failed: %s", directory, exc)
                continue
            log.info("deploy: %s %s", body["FunctionName"], action)
