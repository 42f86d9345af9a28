"""Every operation of the Lambda API model, its state here, and a Lambda-shaped answer for those not served.

The operations (name, HTTP method, request URI) come from `operations.json` next to this module, a compact
copy of botocore's Lambda model, so the running gateway does not depend on botocore. `add_routes` must run
after every real route is registered: for each (method, path) of the model that no route serves yet it
registers a fallback answering 501 `NotImplementedException` with a message naming the operation and its
state ("planned: concurrency" or "not applicable: ..."). Operations that differ only in a static query part
(`/2018-10-31/layers?find=LayerVersion`) share one route and are told apart by that query.

`python -m gateway.api.catalog` regenerates `operations.json` from the installed botocore (when it is
importable) and `OPERATIONS.md` from both; `--check` only reports drift. `tests/test_api_catalog.py` keeps
the table, the states and the routes honest.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import importlib.util
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from aiohttp import hdrs, web

from gateway.errors import NotImplementedException

log = logging.getLogger("gateway.api.catalog")

OPERATIONS_JSON = Path(__file__).with_name("operations.json")
OPERATIONS_MD = Path(__file__).resolve().parent.parent.parent / "OPERATIONS.md"

IMPLEMENTED = "implemented"
PLANNED = "planned"
NOT_APPLICABLE = "not applicable"
UNCLASSIFIED = "unclassified"

_VARIABLE = re.compile(r"\{([^{}]*)\}")


class Operation(NamedTuple):
    """One operation of the model: `uri` is the model's requestUri, possibly with a static query part."""

    name: str
    method: str
    uri: str

    @property
    def path(self) -> str:
        """The URI template without its query part, as aiohttp routes it (`{Key+}` becomes greedy)."""
        path = self.uri.partition("?")[0]
        return _VARIABLE.sub(lambda m: f"{{{m[1][:-1]}:.+}}" if m[1].endswith("+") else m[0], path)

    @property
    def query(self) -> dict[str, str]:
        """The static query part that tells this operation apart from others on the same path."""
        return dict(parse_qsl(self.uri.partition("?")[2], keep_blank_values=True))

    @property
    def params(self) -> list[str]:
        """Names of the URI template's variables, in order."""
        return [m.rstrip("+") for m in _VARIABLE.findall(self.uri)]


@dataclass(frozen=True)
class Status:
    """An operation's state here; `note` is the issue (implemented / planned) or the reason (not applicable)."""

    state: str
    note: str


def _area(title: str, state: str, note: str, names: str, **exceptions: Status) -> tuple[str, dict[str, Status]]:
    """An area of the API: its operations (space-separated) share a state and note, but for `exceptions`."""
    return title, {n: exceptions.get(n, Status(state, note)) for n in names.split()}


_PERMISSIONS = (
    "issue 17: stored and answered as Lambda does; enforced for function URLs and, with "
    "GATEWAY_FUNCTION_INVOKE=policy, for invocations made with a function's credentials"
)
_LAYER_PERMISSIONS = (
    "issue 17: stored and answered as Lambda does; a function's credentials may GetLayerVersion what grants its "
    "account or *"
)
_RESOURCE_POLICIES = (
    "whole-document policies (API version 2026-07-09) over the documents AddPermission writes, a later change"
)
_DURABLE = "durable functions need Lambda's durable execution SDK and checkpoint store"
_MANAGED_INSTANCES = "Lambda Managed Instances run functions on EC2 capacity; the gateway runs them on its own host"
_RECURSION = "recursive loop detection watches events through SQS, SNS and S3, which the gateway does not have"

#: every operation's state, by area; the order is the order of OPERATIONS.md
AREAS: tuple[tuple[str, dict[str, Status]], ...] = (
    _area(
        "Functions",
        IMPLEMENTED,
        "core",
        "CreateFunction GetFunction GetFunctionConfiguration ListFunctions UpdateFunctionCode "
        "UpdateFunctionConfiguration DeleteFunction",
    ),
    _area(
        "Invocation",
        IMPLEMENTED,
        "core; `Event` invocations since issue 15 (queued durably, answered 202, retried, destinations)",
        "Invoke InvokeAsync InvokeWithResponseStream",
        InvokeAsync=Status(IMPLEMENTED, "issue 15: a deprecated operation (256 KB payloads, answers 202)"),
        InvokeWithResponseStream=Status(
            IMPLEMENTED,
            "issue 14: pieces stream from Runtime API runtimes in streaming response mode; a Python function's whole "
            "response is one PayloadChunk, as on Lambda",
        ),
    ),
    _area(
        "Versions and aliases",
        IMPLEMENTED,
        "API fidelity",
        "PublishVersion ListVersionsByFunction CreateAlias GetAlias UpdateAlias DeleteAlias ListAliases",
    ),
    _area(
        "Layers",
        IMPLEMENTED,
        "API fidelity",
        "PublishLayerVersion GetLayerVersion GetLayerVersionByArn ListLayers ListLayerVersions DeleteLayerVersion",
    ),
    _area("Tags", IMPLEMENTED, "API fidelity", "TagResource UntagResource ListTags"),
    _area("Account", IMPLEMENTED, "API fidelity", "GetAccountSettings"),
    _area(
        "Concurrency",
        IMPLEMENTED,
        "concurrency",
        "PutFunctionConcurrency GetFunctionConcurrency DeleteFunctionConcurrency PutProvisionedConcurrencyConfig "
        "GetProvisionedConcurrencyConfig DeleteProvisionedConcurrencyConfig ListProvisionedConcurrencyConfigs",
    ),
    _area(
        "Asynchronous invocation",
        IMPLEMENTED,
        "issue 15: per function, version or alias; destinations checked against what this gateway delivers to",
        "PutFunctionEventInvokeConfig GetFunctionEventInvokeConfig UpdateFunctionEventInvokeConfig "
        "DeleteFunctionEventInvokeConfig ListFunctionEventInvokeConfigs",
    ),
    _area(
        "Event source mappings",
        IMPLEMENTED,
        "issue 16: self-managed Apache Kafka, Amazon MQ for RabbitMQ (GATEWAY_MQ_BROKERS) and SQS-compatible queues "
        "(GATEWAY_SQS_ENDPOINT); other sources refused with a clear error",
        "CreateEventSourceMapping GetEventSourceMapping UpdateEventSourceMapping DeleteEventSourceMapping "
        "ListEventSourceMappings",
    ),
    _area(
        "Function URLs",
        IMPLEMENTED,
        "issue 17: `http://<url-id>.lambda-url.<region>.localhost:<port>/` (routed by Host, or by the path "
        "`/lambda-url/<url-id>/`), AuthType NONE and AWS_IAM, on `$LATEST` or an alias",
        "CreateFunctionUrlConfig GetFunctionUrlConfig UpdateFunctionUrlConfig DeleteFunctionUrlConfig "
        "ListFunctionUrlConfigs",
    ),
    _area(
        "Permissions",
        IMPLEMENTED,
        _PERMISSIONS,
        "AddPermission GetPolicy RemovePermission AddLayerVersionPermission GetLayerVersionPolicy "
        "RemoveLayerVersionPermission PutResourcePolicy GetResourcePolicy DeleteResourcePolicy",
        AddLayerVersionPermission=Status(IMPLEMENTED, _LAYER_PERMISSIONS),
        GetLayerVersionPolicy=Status(IMPLEMENTED, _LAYER_PERMISSIONS),
        RemoveLayerVersionPermission=Status(IMPLEMENTED, _LAYER_PERMISSIONS),
        PutResourcePolicy=Status(PLANNED, _RESOURCE_POLICIES),
        GetResourcePolicy=Status(PLANNED, _RESOURCE_POLICIES),
        DeleteResourcePolicy=Status(PLANNED, _RESOURCE_POLICIES),
    ),
    _area(
        "Code signing",
        IMPLEMENTED,
        "issue 18: packages signed by `gateway sign` with the operator's signing profiles (GATEWAY_SIGNING_PROFILES)",
        "CreateCodeSigningConfig GetCodeSigningConfig UpdateCodeSigningConfig DeleteCodeSigningConfig "
        "ListCodeSigningConfigs ListFunctionsByCodeSigningConfig PutFunctionCodeSigningConfig "
        "GetFunctionCodeSigningConfig DeleteFunctionCodeSigningConfig",
    ),
    _area(
        "Runtime management and recursion",
        NOT_APPLICABLE,
        "runtimes are interpreters on the host (GATEWAY_RUNTIME_*); there are no managed runtime versions to pin",
        "PutRuntimeManagementConfig GetRuntimeManagementConfig PutFunctionRecursionConfig GetFunctionRecursionConfig",
        PutFunctionRecursionConfig=Status(NOT_APPLICABLE, _RECURSION),
        GetFunctionRecursionConfig=Status(NOT_APPLICABLE, _RECURSION),
    ),
    _area(
        "Capacity providers",
        NOT_APPLICABLE,
        _MANAGED_INSTANCES,
        "CreateCapacityProvider GetCapacityProvider UpdateCapacityProvider DeleteCapacityProvider "
        "ListCapacityProviders ListFunctionVersionsByCapacityProvider PutFunctionScalingConfig "
        "GetFunctionScalingConfig",
    ),
    _area(
        "Durable executions",
        NOT_APPLICABLE,
        _DURABLE,
        "GetDurableExecution GetDurableExecutionHistory GetDurableExecutionState ListDurableExecutionsByFunction "
        "CheckpointDurableExecution StopDurableExecution PauseDurableExecution ResumeDurableExecution "
        "DeleteDurableExecution SendDurableExecutionCallbackSuccess SendDurableExecutionCallbackFailure "
        "SendDurableExecutionCallbackHeartbeat",
    ),
)

STATUS: dict[str, Status] = {name: status for _, statuses in AREAS for name, status in statuses.items()}


def status_of(name: str) -> Status:
    """The operation's state; UNCLASSIFIED for one the table does not know (a newer model)."""
    return STATUS.get(name, Status(UNCLASSIFIED, "not classified yet"))


def not_implemented_message(name: str) -> str:
    """What the fallback answers for an operation, e.g. `X is not implemented by this gateway yet (planned: ...)`."""
    status = status_of(name)
    if status.state == PLANNED:
        return f"{name} is not implemented by this gateway yet (planned: {status.note})"
    if status.state == NOT_APPLICABLE:
        return f"{name} is not implemented by this gateway (not applicable: {status.note})"
    return f"{name} is not implemented by this gateway yet"


# -- the operations ---------------------------------------------------------------------------------


def load_operations(path: Path = OPERATIONS_JSON) -> tuple[Operation, ...]:
    """The checked-in operations: a JSON list of `[name, method, requestUri]`."""
    return tuple(Operation(*row) for row in json.loads(path.read_text()))


def model_operations() -> tuple[Operation, ...] | None:
    """The operations of the installed botocore's Lambda model, sorted by name; None without botocore."""
    spec = importlib.util.find_spec("botocore")
    if spec is None or spec.origin is None:
        return None
    model = Path(spec.origin).parent / "data" / "lambda" / "2015-03-31" / "service-2.json.gz"
    with gzip.open(model, "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return tuple(
        sorted(
            Operation(name, op["http"]["method"], op["http"]["requestUri"]) for name, op in data["operations"].items()
        )
    )


# -- routes -------------------------------------------------------------------------------------------


def route_shape(path: str) -> str:
    """A path template with its variables' names and patterns erased: `/a/{x:.+}/b` -> `/a/{}/b`."""
    return _VARIABLE.sub("{}", path)


def served(app: web.Application) -> set[tuple[str, str]]:
    """(method, route shape) of every route registered so far; method `*` serves any method."""
    out: set[tuple[str, str]] = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is not None:
            out.add((route.method, route_shape(resource.canonical)))
    return out


def _pick(ops: tuple[Operation, ...], query: Mapping[str, str]) -> Operation:
    """The operation a request means among those sharing a (method, path): the most specific static query wins."""
    matching = [op for op in ops if all(query.get(k) == v for k, v in op.query.items())]
    return max(matching or ops, key=lambda op: len(op.query))


async def _not_implemented(ops: tuple[Operation, ...], request: web.Request) -> web.StreamResponse:
    raise NotImplementedException(not_implemented_message(_pick(ops, request.query).name))


def is_fallback(handler: object) -> bool:
    """Whether a route handler is the catalog's "not implemented" answer rather than a real implementation."""
    return isinstance(handler, functools.partial) and handler.func is _not_implemented


def add_routes(app: web.Application, operations: Iterable[Operation] | None = None) -> None:
    """Answer every operation whose (method, path) no route serves yet. Call after all real routes."""
    groups: dict[tuple[str, str], list[Operation]] = {}
    for op in load_operations() if operations is None else operations:
        groups.setdefault((op.method, op.path), []).append(op)
    taken = served(app)
    added = 0
    for (method, path), ops in groups.items():
        shape = route_shape(path)
        if (method, shape) in taken or (hdrs.METH_ANY, shape) in taken:
            continue
        for op in ops:
            if status_of(op.name).state == IMPLEMENTED:
                log.warning("%s is listed as implemented but no route serves %s %s", op.name, method, path)
        app.router.add_route(method, path, functools.partial(_not_implemented, tuple(ops)))
        added += 1
    log.debug("catalog: %d routes answer operations that are not implemented", added)


# -- OPERATIONS.md ------------------------------------------------------------------------------------


def render_markdown(operations: Iterable[Operation]) -> str:
    """OPERATIONS.md: every operation in a table by area, with its method, path and state."""
    by_name = {op.name: op for op in operations}
    counts = {IMPLEMENTED: 0, PLANNED: 0, NOT_APPLICABLE: 0, UNCLASSIFIED: 0}
    for name in by_name:
        counts[status_of(name).state] += 1
    lines = [
        "# Lambda API operations",
        "",
        "<!-- Generated by `python -m gateway.api.catalog`; edit the states in gateway/api/catalog.py. -->",
        "",
        f"All {len(by_name)} operations of the Lambda API model (botocore's `lambda/2015-03-31`, copied to "
        "`gateway/api/operations.json`) and their state in this gateway: "
        f"{counts[IMPLEMENTED]} implemented, {counts[PLANNED]} planned, {counts[NOT_APPLICABLE]} not applicable"
        + (f", {counts[UNCLASSIFIED]} not classified yet" if counts[UNCLASSIFIED] else "")
        + ".",
        "",
        "An operation that is not implemented answers `501 NotImplementedException` (header "
        '`x-amzn-ErrorType: NotImplementedException`, body `{"Type": "Service", "message": ...}`); the '
        "message names the operation and says whether it is planned or why it does not apply, e.g. "
        f"`{not_implemented_message('PutFunctionConcurrency')}`. boto3 raises it as a `ClientError` with that code "
        "and does not retry it. A path that is no operation of the model answers the same error naming the path.",
        "",
        "`tests/test_api_catalog.py` checks that this table lists every operation of the installed botocore model, "
        "that every operation marked implemented is served by a real route, and that every other one answers "
        "`NotImplementedException` naming it.",
    ]
    sections = [(title, [n for n in statuses if n in by_name]) for title, statuses in AREAS]
    sections.append(("Not classified yet", sorted(n for n in by_name if n not in STATUS)))
    for title, names in sections:
        if not names:
            continue
        lines += [
            "",
            f"## {title}",
            "",
            "| Operation | Method and path | State | Issue or reason |",
            "|---|---|---|---|",
        ]
        for name in names:
            op, status = by_name[name], status_of(name)
            lines.append(f"| {name} | `{op.method} {op.uri}` | {status.state} | {status.note} |")
    return "\n".join(lines) + "\n"


def _dump_operations(operations: Iterable[Operation]) -> str:
    rows = sorted(operations)
    return "[\n" + ",\n".join(json.dumps(list(op)) for op in rows) + "\n]\n"


def main(argv: list[str] | None = None) -> int:
    """Regenerate operations.json (from botocore, if importable) and OPERATIONS.md; `--check` reports drift."""
    parser = argparse.ArgumentParser(prog="python -m gateway.api.catalog", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a file would change; write nothing")
    args = parser.parse_args(argv)
    current = load_operations() if OPERATIONS_JSON.exists() else ()
    model = model_operations()
    # a newer checked-in list is kept: an older botocore must not drop operations
    merged = {op.name: op for op in current} | {op.name: op for op in model or ()}
    wanted = {
        OPERATIONS_JSON: _dump_operations(merged.values()),
        OPERATIONS_MD: render_markdown(sorted(merged.values())),
    }
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    for path in stale:
        if args.check:
            print(f"{path} is out of date: run python -m gateway.api.catalog", file=sys.stderr)
        else:
            path.write_text(wanted[path])
            print(f"wrote {path}")
    unclassified = sorted(name for name in merged if name not in STATUS)
    if unclassified:
        print("operations without a state in gateway/api/catalog.py: " + ", ".join(unclassified), file=sys.stderr)
    return 1 if (args.check and stale) or unclassified else 0


if __name__ == "__main__":
    sys.exit(main())
