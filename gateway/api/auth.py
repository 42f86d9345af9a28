"""The authentication middleware: SigV4 signatures (see gateway.api.sigv4) and what a function's credentials may do.

Where it applies:

- On the main listener when `Settings.auth_required` (operator credentials configured, or bound beyond loopback):
  every request but `GET /healthz` and `GET /metrics` (probes and Prometheus do not sign).
- On the environments' listener (`Settings.environment_listen`) always, for every path: a request from an
  environment is refused without a valid signature even when the main listener is open.
- Elsewhere not at all: without operator credentials and without an environments' listener the middleware is not
  installed, and with only the listener it costs the main listener's requests one attribute test.

Signature before body: the request head is checked first (`Verifier.check_headers`); a missing or malformed
signature, an unknown access key or a bad session token is answered 403 before any byte of the body is read, and
the connection is closed if a body of more than `SMALL_BODY` bytes is still to come. Only then is the body read
(within the body timeout and the operation's size limit) and the signature over its SHA-256 checked.

What a function's session credentials may do (`authorize`, checked from the head too, so before the body):
`Invoke` (Event too), `InvokeWithResponseStream` and `InvokeAsync` any function of the account (with
`GATEWAY_FUNCTION_INVOKE=policy`, only a function whose resource policy for the qualifier invoked allows
`lambda:InvokeFunction` to the session's role, its account or `*`: gateway.store.policies), `GetFunction` /
`GetFunctionConfiguration` of its own function (any version or alias), and `GetLayerVersion` /
`GetLayerVersionByArn` of a layer version whose policy grants its account or `*`. Everything else, reading or
changing any other function, permissions and policies, layers, settings, logs, metrics, needs an operator's
credential and is answered AWS's 403 `AccessDeniedException`. A function's request body is at most Invoke's 6 MB.
Operators are never checked against resource policies (an operator is the account's administrator).

The Scheduler API's paths (gateway.api.scheduler.scheduler) are checked the same way, with the credential scoped to
the service `scheduler`, as boto3's scheduler client signs; a function's credentials may not call it.

It runs inside the error middleware, so every refusal is Lambda-shaped, and before routing is acted upon, as AWS
checks the signature before it looks at the operation.
"""

from __future__ import annotations

import re

from aiohttp import web

from gateway.api.catalog import load_operations, route_shape
from gateway.api.http import Handler, error_response, read_body, refuse_unread
from gateway.api.scheduler.scheduler import is_scheduler_path
from gateway.api.sigv4 import SERVICE, Verifier
from gateway.app_keys import LAYERS, POLICIES, SETTINGS
from gateway.errors import AccessDeniedException, LambdaError, RequestTooLargeException
from gateway.execution.invoker import MAX_SYNC_PAYLOAD
from gateway.isolation.credentials import Session
from gateway.store.names import parse_function_name
from gateway.store.policies import INVOKE
from gateway.store.records import LATEST
from gateway.store.statements import account_of

OPEN_PATHS = frozenset({"/healthz", "/metrics"})
#: what a function's credentials may do to any function / to its own function
ANY_FUNCTION = frozenset({"Invoke", "InvokeAsync", "InvokeWithResponseStream"})
OWN_FUNCTION = frozenset({"GetFunction", "GetFunctionConfiguration"})
#: what a function's credentials may do to a layer version whose policy grants its account
LAYER_READS = frozenset({"GetLayerVersion", "GetLayerVersionByArn"})
#: IAM action names that differ from the operation's
_ACTIONS = {
    "Invoke": "InvokeFunction",
    "InvokeWithResponseStream": "InvokeFunction",
    "GetLayerVersionByArn": "GetLayerVersion",
}


def _operations() -> dict[tuple[str, str], str]:
    """(method, route shape) -> the model's operation name (the first, where a static query tells several apart)."""
    table: dict[tuple[str, str], str] = {}
    for op in load_operations():
        table.setdefault((op.method, route_shape(op.path)), op.name)
    return table


_OPERATIONS = _operations()
_WORD = re.compile(r"(?:^|_)([a-z0-9])")


#: the request's key for a function's `Session` (absent for an operator), set once its signature is checked
SESSION = web.RequestKey("session", Session)


def iam_action(operation: str) -> str:
    """`lambda:<Action>`, the IAM action of a Lambda operation, as AWS's AccessDenied messages name it."""
    return "lambda:" + _ACTIONS.get(operation, operation)


def operation_of(request: web.Request) -> str:
    """The Lambda operation a routed request means; for the gateway's own routes, its handler's name in CamelCase."""
    route = request.match_info.route
    resource = route.resource
    if resource is not None:
        name = _OPERATIONS.get((request.method, route_shape(resource.canonical)))
        if name is not None:
            return name
    handler = getattr(route.handler, "__name__", "") or "Unknown"
    return _WORD.sub(lambda m: m[1].upper(), handler)


def authorize(request: web.Request, session: Session) -> None:
    """Allow what a function's credentials may do; AccessDeniedException (AWS's wording) for anything else."""
    operation = operation_of(request)
    if operation in ANY_FUNCTION:
        if request.app[SETTINGS].function_invoke != "any":
            _authorize_invoke(request, session, operation)
        return
    if request.path.startswith("/2018-10-31/layers"):
        if operation == "GetLayerVersionByArn" and request.query.get("find") != "LayerVersion":
            operation = "ListLayers"  # one route serves both: the static query tells them apart
        if operation in LAYER_READS:
            _authorize_layer(request, session, operation)
            return
    target = request.match_info.get("FunctionName")
    resource = "*"
    if target is not None:
        try:
            ref = parse_function_name(target, request.query.get("Qualifier"))
        except LambdaError:
            ref = None
        if ref is not None:
            if operation in OWN_FUNCTION and ref.name == session.function_name:
                return
            resource = request.app[SETTINGS].function_arn(ref.name, ref.qualifier)
    action = ("scheduler:" if is_scheduler_path(request.path) else "lambda:") + _ACTIONS.get(operation, operation)
    raise _denied(session, action, resource, "identity-based")


def _authorize_invoke(request: web.Request, session: Session, operation: str) -> None:
    """GATEWAY_FUNCTION_INVOKE=policy: the target's policy, for the qualifier the route will run, must allow the
    session's role `lambda:InvokeFunction`. The name is parsed exactly as the route parses it (InvokeAsync takes no
    Qualifier), so that the document checked is the one of what runs."""
    try:
        qualifier = None if operation == "InvokeAsync" else request.query.get("Qualifier")
        ref = parse_function_name(request.match_info["FunctionName"], qualifier)
    except LambdaError:
        return  # a malformed name: the route answers its error and runs nothing
    if request.app[POLICIES].allows(ref.name, ref.qualifier or LATEST, session.role_arn, INVOKE):
        return
    resource = request.app[SETTINGS].function_arn(ref.name, ref.qualifier)
    raise _denied(session, INVOKE, resource, "resource-based")


def _authorize_layer(request: web.Request, session: Session, operation: str) -> None:
    """GetLayerVersion(ByArn): allowed when the layer version's policy grants the session's role, its account, or
    `*` (the role's account: the function's, for a role ARN that names none)."""
    layers = request.app[LAYERS]
    if operation == "GetLayerVersionByArn":
        resource = request.query.get("Arn", "")
        name_or_arn, _, number = resource.rpartition(":")
    else:
        name_or_arn, number = request.match_info.get("LayerName", ""), request.match_info.get("VersionNumber", "")
        resource = "*"
    name = layers.local_name(name_or_arn) if name_or_arn else None
    if name is not None:
        resource = f"{layers.layer_arn(name)}:{number}"
    principal = session.role_arn if account_of(session.role_arn) else session.function_arn.split(":")[4]
    if name is not None and number.isdigit() and request.app[POLICIES].allows_layer(name, int(number), principal):
        return
    raise _denied(session, "lambda:GetLayerVersion", resource, "resource-based")


def _denied(session: Session, action: str, resource: str, kind: str) -> AccessDeniedException:
    return AccessDeniedException(
        f"User: {session.assumed_role_arn} is not authorized to perform: {action} on resource: {resource} "
        f"because no {kind} policy allows the {action} action"
    )


def _refuse(request: web.Request, err: LambdaError) -> web.StreamResponse:
    """The answer to a request refused before its body was read (see `refuse_unread`)."""
    return refuse_unread(request, error_response(err))


def auth_middleware(verifier: Verifier, required: bool) -> web.middleware:  # type: ignore[valid-type]
    """The middleware; `required`: on every listener (else only on the environments' listener)."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        environment_facing = getattr(request.protocol, "environment_facing", False)
        if not environment_facing and (not required or (request.method == "GET" and request.path in OPEN_PATHS)):
            return await handler(request)
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            service = "scheduler" if is_scheduler_path(request.path) else SERVICE  # EventBridge Scheduler's API
            pending = verifier.check_headers(request.method, request.raw_path, headers, service=service)
            session = pending.identity.session
            if session is not None:
                authorize(request, session)
                if request.content_length is not None and request.content_length > MAX_SYNC_PAYLOAD:
                    raise RequestTooLargeException(
                        f"Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the InvokeFunction operation"
                    )
        except LambdaError as err:
            return _refuse(request, err)
        if session is not None:  # a chunked body is cut at the same size
            request = request.clone(client_max_size=MAX_SYNC_PAYLOAD)
            request[SESSION] = session
        body = await read_body(request)
        verifier.finish(pending, request.method, request.raw_path, headers, body)
        return await handler(request)

    return authenticate
