"""Function resource policies: AddPermission, RemovePermission, GetPolicy (2015-03-31/functions/{F}/policy).

A policy belongs to the unqualified function (`$LATEST`), a version or an alias (`?Qualifier=` or the qualifier in
the name), each a document of its own (gateway.store.policies). AddPermission answers 201 `{"Statement": <the
statement as a JSON string>}`; GetPolicy `{"Policy": <the document as a JSON string>, "RevisionId"}`;
RemovePermission 204. Statements are rendered as Lambda renders them (gateway.store.statements).

Checks and wording are Lambda's, in Lambda's order: the JSON shape (InvalidRequestContentException), the model's
constraints together (ValidationException), no policies on `$LATEST` by qualifier, the function and qualifier
exist, the principal is one Lambda knows, then the store's RevisionId (PreconditionFailedException), statement id
(ResourceConflictException) and 20 KB (PolicyLengthExceededException) checks. RevisionId is the document's (a new
uuid4 on every change); before a document exists, the function version's or alias's RevisionId is accepted too,
as Lambda's policies share it. Lambda also gives the function a new RevisionId on every permission change; this
gateway does not (a new RevisionId here retires the function's warm environments).

Who may call these: operators only. A function's session credentials are refused by gateway.api.auth before the
body is read, so no function can widen or read another's (or its own) policy.

Concurrency model: handlers run on the event loop; reads use the store's cache, writes run in a worker thread. A
function (version, alias) deleted while AddPermission writes is noticed after the write and its document dropped.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.api.http import json_response, read_json_object
from gateway.api.params import Violations, check_members, opt
from gateway.app_keys import POLICIES, REGISTRY, SETTINGS
from gateway.errors import InvalidParameterValueException, ResourceNotFoundException
from gateway.store.event_configs import designates
from gateway.store.names import parse_function_name
from gateway.store.policies import statement_json
from gateway.store.records import LATEST
from gateway.store.registry import Registry
from gateway.store.statements import function_statement, render_principal

log = logging.getLogger("gateway.api.functions.permissions")

PATH = "/2015-03-31/functions/{FunctionName}/policy"

#: the model's constraints (botocore's service-2.json), as Lambda quotes them in a ValidationException
STATEMENT_ID = r"([a-zA-Z0-9-_]+)"
NAMESPACED_STATEMENT_ID = r"([a-zA-Z0-9-_.]+)"
ACTION = r"(lambda:[*]|lambda:[a-zA-Z]+|[*])"
PRINCIPAL = r"[^\s]+"
SOURCE_ARN = (
    r"arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1})?:(\d{12})?:(.*)"
)
SOURCE_ACCOUNT = r"\d{12}"
EVENT_SOURCE_TOKEN = r"[a-zA-Z0-9._\-]+"
PRINCIPAL_ORG_ID = r"o-[a-z0-9]{10,32}"
AUTH_TYPES = ("NONE", "AWS_IAM")

_MEMBERS = frozenset(
    {
        "StatementId", "Action", "Principal", "SourceArn", "FunctionUrlAuthType", "InvokedViaFunctionUrl",
        "SourceAccount", "EventSourceToken", "RevisionId", "PrincipalOrgID",
    }
)  # fmt: skip

NO_LATEST = "We currently do not support adding policies for $LATEST."
BAD_PRINCIPAL = "The provided principal was invalid. Please check the principal and try again."
NO_RESOURCE = "The resource you requested does not exist."
NO_POLICY = "No policy is associated with the given resource."


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, add_permission)
    app.router.add_get(PATH, get_policy)
    app.router.add_delete(PATH + "/{StatementId}", remove_permission)


# -- shared checks (layer_permissions uses them too) ---------------------------------------------------------


def check_string(
    v: Violations,
    value: str | None,
    member: str,
    pattern: str | None,
    *,
    required: bool = False,
    max_len: int | None = None,
    min_len: int | None = None,
) -> None:
    """One string member against the model: null, length bounds, then the pattern (one violation at most)."""
    if value is None:
        if required:
            v.add(None, member, "Member must not be null")
        return
    if max_len is not None and len(value) > max_len:
        v.add(value, member, f"Member must have length less than or equal to {max_len}")
    elif min_len is not None and len(value) < min_len:
        v.add(value, member, f"Member must have length greater than or equal to {min_len}")
    elif pattern is not None and not re.fullmatch(pattern, value, re.DOTALL):
        v.add(value, member, f"Member must satisfy regular expression pattern: {pattern}")


def revision_query(request: web.Request) -> str | None:
    """`?RevisionId=` (empty counts as absent, as botocore never sends one)."""
    return request.query.get("RevisionId") or None


# -- function and qualifier ----------------------------------------------------------------------------------


def _target(request: web.Request) -> tuple[str, str | None]:
    ref = parse_function_name(request.match_info["FunctionName"], request.query.get("Qualifier"))
    return ref.name, ref.qualifier


def _check_target(request: web.Request, function: str, qualifier: str | None, missing_function: str) -> None:
    """The function exists (`missing_function` is the message otherwise) and so does the version or alias."""
    registry, settings = request.app[REGISTRY], request.app[SETTINGS]
    if function not in registry:
        raise ResourceNotFoundException(missing_function)
    if qualifier is None or qualifier == LATEST or designates(registry, function, qualifier):
        return
    arn = settings.function_arn(function, qualifier)
    if qualifier.isascii() and qualifier.isdigit():
        raise ResourceNotFoundException(f"Function not found: {arn}")
    raise ResourceNotFoundException(f"Cannot find alias arn: {arn}")


def _revision_of(registry: Registry, function: str, qualifier: str) -> str:
    """The RevisionId of the function's `$LATEST`, version or alias (what a policy without a document shares)."""
    if qualifier == LATEST:
        return registry.get(function).revision_id
    if qualifier.isascii() and qualifier.isdigit():
        return registry.get_version(function, qualifier).revision_id
    return registry.get_alias(function, qualifier).revision_id


def _parse_add(body: dict[str, Any]) -> dict[str, Any]:
    """AddPermission's body: shape, then the model's constraints together."""
    check_members(body, _MEMBERS, "AddPermissionRequest")
    got: dict[str, Any] = {key: opt(body, key, str) for key in _MEMBERS - {"InvokedViaFunctionUrl"}}
    got["InvokedViaFunctionUrl"] = opt(body, "InvokedViaFunctionUrl", bool)
    v = Violations()
    check_string(v, got["StatementId"], "statementId", STATEMENT_ID, required=True, max_len=100, min_len=1)
    check_string(v, got["Action"], "action", ACTION, required=True, max_len=10000)
    check_string(v, got["Principal"], "principal", PRINCIPAL, required=True, max_len=2048)
    check_string(v, got["SourceArn"], "sourceArn", SOURCE_ARN, max_len=10000)
    check_string(v, got["SourceAccount"], "sourceAccount", SOURCE_ACCOUNT, max_len=12)
    check_string(v, got["EventSourceToken"], "eventSourceToken", EVENT_SOURCE_TOKEN, max_len=256)
    check_string(v, got["PrincipalOrgID"], "principalOrgID", PRINCIPAL_ORG_ID, max_len=34, min_len=12)
    auth = got["FunctionUrlAuthType"]
    if auth is not None and auth not in AUTH_TYPES:
        v.add(auth, "functionUrlAuthType", "Member must satisfy enum value set: [NONE, AWS_IAM]")
    v.raise_if_any()
    return got


def _statement(request: web.Request, function: str, qualifier: str | None, got: Mapping[str, Any]) -> dict[str, Any]:
    principal = render_principal(got["Principal"])
    if principal is None:
        raise InvalidParameterValueException(BAD_PRINCIPAL)
    return function_statement(
        got["StatementId"],
        got["Action"],
        principal,
        request.app[SETTINGS].function_arn(function, qualifier),
        source_account=got["SourceAccount"],
        principal_org_id=got["PrincipalOrgID"],
        event_source_token=got["EventSourceToken"],
        function_url_auth_type=got["FunctionUrlAuthType"],
        invoked_via_function_url=got["InvokedViaFunctionUrl"],
        source_arn=got["SourceArn"],
    )


# -- the operations ---------------------------------------------------------------------------------------


async def add_permission(request: web.Request) -> web.Response:
    """AddPermission: 201 with the new statement; the document is created with its first statement."""
    function, qualifier = _target(request)
    got = _parse_add(await read_json_object(request))
    if qualifier == LATEST:
        raise InvalidParameterValueException(NO_LATEST)
    settings, registry, store = request.app[SETTINGS], request.app[REGISTRY], request.app[POLICIES]
    _check_target(request, function, qualifier, f"Function not found: {settings.function_arn(function)}")
    statement = _statement(request, function, qualifier, got)
    key = qualifier or LATEST
    await asyncio.to_thread(
        store.add_function_statement, function, key, statement, got["RevisionId"],
        lambda: _revision_of(registry, function, key),
    )  # fmt: skip
    if not designates(registry, function, key):  # deleted while it was written
        await asyncio.to_thread(store.forget, function, key)
        raise ResourceNotFoundException(f"Function not found: {settings.function_arn(function, qualifier)}")
    log.info("function %s:%s: permission %s added", function, key, got["StatementId"])
    return json_response({"Statement": statement_json(statement)}, status=201)


async def get_policy(request: web.Request) -> web.Response:
    """GetPolicy: the document and its RevisionId; ResourceNotFoundException when there is none."""
    function, qualifier = _target(request)
    settings = request.app[SETTINGS]
    if function not in request.app[REGISTRY]:
        raise ResourceNotFoundException(f"Function not found: {settings.function_arn(function)}")
    document = request.app[POLICIES].function_policy(function, qualifier or LATEST)
    if document is None:
        raise ResourceNotFoundException(NO_RESOURCE)
    return json_response({"Policy": document.to_json(), "RevisionId": document.revision_id})


async def remove_permission(request: web.Request) -> web.Response:
    """RemovePermission: 204; the document goes with its last statement. `?RevisionId=` must be the document's."""
    function, qualifier = _target(request)
    sid = request.match_info["StatementId"]
    v = Violations()
    check_string(v, sid, "statementId", NAMESPACED_STATEMENT_ID, max_len=100)
    v.raise_if_any()
    settings = request.app[SETTINGS]
    _check_target(request, function, qualifier, f"No policy found for: {settings.function_arn(function)}")
    key = qualifier or LATEST
    store = request.app[POLICIES]
    try:
        await asyncio.to_thread(store.remove_function_statement, function, key, sid, revision_query(request))
    except KeyError:
        raise ResourceNotFoundException(NO_POLICY) from None
    except IndexError:
        raise ResourceNotFoundException(f"Statement {sid} is not found in resource policy.") from None
    log.info("function %s:%s: permission %s removed", function, key, sid)
    return web.Response(status=204)
