"""Function URL configs: Create/Get/Update/Delete FunctionUrlConfig, ListFunctionUrlConfigs (2021-10-31).

A URL belongs to a function's `$LATEST` (unqualified) or to an alias: `?Qualifier=` (or `name:alias`) names the alias;
a version number and `$LATEST` are refused as Lambda refuses them (the model's pattern `((?!^\\d+$)^[0-9a-zA-Z-_]+$)`;
the unqualified function is `$LATEST`'s URL). Create answers 201 and refuses a
second URL for the same function or alias (ResourceConflictException with Lambda's wording); Update changes what it
is given (a Cors replaces the whole Cors); Delete answers 204.

Checks and wording are Lambda's, in Lambda's order: the JSON shape (InvalidRequestContentException), the model's
constraints reported together (ValidationException: the qualifier, AuthType, InvokeMode, each Cors member's list size
and item lengths, MaxAge 0..86400), then whether the function or alias exists. Create and Update of a missing function
or alias: "Function does not exist"; Get and Delete of a missing function or URL, and Update of a missing URL: "The
resource you requested does not exist." Answers carry FunctionUrl (`Settings.function_url`), the FunctionArn
(qualified for an alias), and CreationTime / LastModifiedTime as ISO-8601 strings with microseconds.

Concurrency model: handlers run on the event loop; reads use the store's cache, writes run in a worker thread.
A function or alias deleted while a Create or Update is in flight is noticed after the write and the URL dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.api.http import json_response, read_json_object
from gateway.api.paging import paginate
from gateway.api.params import Violations, bounded, check_members, opt
from gateway.app_keys import FUNCTION_URLS, REGISTRY, SETTINGS
from gateway.errors import ResourceConflictException, ResourceNotFoundException, ValidationException
from gateway.settings import Settings
from gateway.store.event_configs import designates, qualifier_order
from gateway.store.function_urls import AUTH_TYPES, INVOKE_MODES, FunctionUrl
from gateway.store.names import parse_function_name
from gateway.store.records import LATEST

log = logging.getLogger("gateway.api.urls.configs")

PATH = "/2021-10-31/functions/{FunctionName}/url"
LIST_PATH = "/2021-10-31/functions/{FunctionName}/urls"
#: the model's bound on ListFunctionUrlConfigs' MaxItems
MAX_ITEMS = 50
QUALIFIER_PATTERN = r"((?!^\d+$)^[0-9a-zA-Z-_]+$)"
_QUALIFIER_RE = re.compile(r"(?!\d+$)[0-9a-zA-Z_-]{1,128}")
#: Lambda's wording of its enums (the order is the service's, not the model's)
AUTH_TYPE_ENUM = "[AWS_IAM, NONE]"
INVOKE_MODE_ENUM = "[RESPONSE_STREAM, BUFFERED]"
#: Cors list members: (JSON member, message path, most items, shortest item, longest item)
_CORS_LISTS = (
    ("AllowHeaders", "cors.allowHeaders", 100, 0, 1024),
    ("AllowMethods", "cors.allowMethods", 6, 0, 6),
    ("AllowOrigins", "cors.allowOrigins", 100, 1, 253),
    ("ExposeHeaders", "cors.exposeHeaders", 100, 0, 1024),
)
_CORS_MEMBERS = frozenset({"AllowCredentials", "MaxAge", *(member for member, *_ in _CORS_LISTS)})
_MEMBERS = frozenset({"AuthType", "Cors", "InvokeMode"})

NO_FUNCTION = "Function does not exist"
NO_RESOURCE = "The resource you requested does not exist."


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, create_function_url_config)
    app.router.add_get(PATH, get_function_url_config)
    app.router.add_put(PATH, update_function_url_config)
    app.router.add_delete(PATH, delete_function_url_config)
    app.router.add_get(LIST_PATH, list_function_url_configs)


def _target(request: web.Request) -> tuple[str, str]:
    """(function, qualifier) of the request: an alias, or `$LATEST` when none; a version is refused."""
    ref = parse_function_name(request.match_info["FunctionName"], request.query.get("Qualifier"))
    qualifier = ref.qualifier
    if qualifier is None:
        return ref.name, LATEST
    if not _QUALIFIER_RE.fullmatch(qualifier):
        raise ValidationException(
            f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to satisfy constraint: "
            f"Member must satisfy regular expression pattern: {QUALIFIER_PATTERN}"
        )
    return ref.name, qualifier


def format_time(epoch: float) -> str:
    """A URL config's CreationTime / LastModifiedTime: ISO-8601 with microseconds, UTC (`...T21:29:33.469599Z`)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_wire(settings: Settings, url: FunctionUrl, *, modified: bool = True) -> dict[str, Any]:
    """A FunctionUrlConfig as Lambda answers it (Create's answer has no LastModifiedTime: `modified` False)."""
    out: dict[str, Any] = {
        "FunctionUrl": settings.function_url(url.url_id),
        "FunctionArn": settings.function_arn(url.function, None if url.qualifier == LATEST else url.qualifier),
        "AuthType": url.auth_type,
    }
    if url.cors is not None:
        out["Cors"] = dict(url.cors)
    out["CreationTime"] = format_time(url.created)
    if modified:
        out["LastModifiedTime"] = format_time(url.modified)
    out["InvokeMode"] = url.invoke_mode
    return out


# -- request bodies ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Requested:
    """What a Create or Update body sets; None: not in the body."""

    auth_type: str | None = None
    invoke_mode: str | None = None
    cors: dict[str, Any] | None = None
    #: the body had a Cors member; an empty one (`--cors '{}'`) clears the configuration (`cors` None)
    cors_given: bool = False


def parse_body(body: dict[str, Any], where: str, *, create: bool) -> Requested:
    """A Create or Update body: its shape, then the model's constraints, reported together as Lambda does."""
    check_members(body, _MEMBERS, where)
    v = Violations()
    auth_type = opt(body, "AuthType", str)
    if auth_type is None and create:
        v.add(None, "authType", "Member must not be null")
    elif auth_type is not None and auth_type not in AUTH_TYPES:
        v.add(auth_type, "authType", f"Member must satisfy enum value set: {AUTH_TYPE_ENUM}")
    cors = opt(body, "Cors", dict)
    if cors is not None:
        _check_cors(cors, v)
    invoke_mode = opt(body, "InvokeMode", str)
    if invoke_mode is not None and invoke_mode not in INVOKE_MODES:
        v.add(invoke_mode, "invokeMode", f"Member must satisfy enum value set: {INVOKE_MODE_ENUM}")
    v.raise_if_any()
    return Requested(auth_type, invoke_mode, cors or None, cors is not None)


def _check_cors(cors: dict[str, Any], v: Violations) -> None:
    check_members(cors, _CORS_MEMBERS, "Cors")
    opt(cors, "AllowCredentials", bool)
    bounded(v, opt(cors, "MaxAge", int), "cors.maxAge", 0, 86400)
    for member, path, most, shortest, longest in _CORS_LISTS:
        items = opt(cors, member, list)
        if items is None:
            continue
        for item in items:
            if item is not None and not isinstance(item, str):
                opt({member: item}, member, str)  # Lambda's shape error for a non-string item
        shown = "[" + ", ".join("null" if item is None else item for item in items) + "]"
        if len(items) > most:
            v.add(shown, path, f"Member must have length less than or equal to {most}")
        elif any(item is None or not shortest <= len(item) <= longest for item in items):
            v.add(
                shown,
                path,
                f"Member must satisfy constraint: [Member must have length less than or equal to {longest}, Member "
                f"must have length greater than or equal to {shortest}, Member must satisfy regular expression "
                "pattern: .*, Member must not be null]",
            )


def _exists(request: web.Request, function: str, qualifier: str) -> bool:
    return designates(request.app[REGISTRY], function, qualifier)


async def _after_write(request: web.Request, url: FunctionUrl, status: int, *, modified: bool) -> web.Response:
    """The answer to a Create or Update, unless the function or alias went while it was written."""
    if not _exists(request, url.function, url.qualifier):
        await asyncio.to_thread(request.app[FUNCTION_URLS].forget, url.function, url.qualifier)
        raise ResourceNotFoundException(NO_FUNCTION)
    return json_response(to_wire(request.app[SETTINGS], url, modified=modified), status)


# -- the operations ---------------------------------------------------------------------------------------


async def create_function_url_config(request: web.Request) -> web.Response:
    """CreateFunctionUrlConfig: a new URL (201); ResourceConflictException when the function or alias has one."""
    function, qualifier = _target(request)
    requested = parse_body(await read_json_object(request), "CreateFunctionUrlConfigRequest", create=True)
    if not _exists(request, function, qualifier):
        raise ResourceNotFoundException(NO_FUNCTION)
    assert requested.auth_type is not None  # parse_body refuses a Create without one
    url, created = await asyncio.to_thread(
        request.app[FUNCTION_URLS].create, function, qualifier, requested.auth_type,
        requested.invoke_mode or "BUFFERED", requested.cors, time.time(),
    )  # fmt: skip
    if not created:
        arn = to_wire(request.app[SETTINGS], url)["FunctionArn"]
        raise ResourceConflictException(
            f"Failed to create function url config for [functionArn = {arn}]. Error message:  "
            "FunctionUrlConfig exists for this Lambda function"
        )
    log.info("function %s:%s: URL %s created (%s)", function, qualifier, url.url_id, url.auth_type)
    return await _after_write(request, url, 201, modified=False)


async def update_function_url_config(request: web.Request) -> web.Response:
    """UpdateFunctionUrlConfig: change the members given (a Cors replaces the whole Cors); the URL must exist."""
    function, qualifier = _target(request)
    requested = parse_body(await read_json_object(request), "UpdateFunctionUrlConfigRequest", create=False)
    if not _exists(request, function, qualifier):
        raise ResourceNotFoundException(NO_FUNCTION)
    now = time.time()

    def change(current: FunctionUrl) -> FunctionUrl:
        return dataclasses.replace(
            current,
            auth_type=requested.auth_type or current.auth_type,
            invoke_mode=requested.invoke_mode or current.invoke_mode,
            cors=requested.cors if requested.cors_given else current.cors,
            modified=now,
        )

    url = await asyncio.to_thread(request.app[FUNCTION_URLS].update, function, qualifier, change)
    if url is None:
        raise ResourceNotFoundException(NO_RESOURCE)
    log.info("function %s:%s: URL %s updated (%s)", function, qualifier, url.url_id, url.auth_type)
    return await _after_write(request, url, 200, modified=True)


async def get_function_url_config(request: web.Request) -> web.Response:
    """GetFunctionUrlConfig: the URL, or ResourceNotFoundException (also for a missing function)."""
    function, qualifier = _target(request)
    url = request.app[FUNCTION_URLS].get(function, qualifier)
    if url is None:
        raise ResourceNotFoundException(NO_RESOURCE)
    return json_response(to_wire(request.app[SETTINGS], url))


async def delete_function_url_config(request: web.Request) -> web.Response:
    """DeleteFunctionUrlConfig: 204, or ResourceNotFoundException when there is no URL. Its id is never served
    again."""
    function, qualifier = _target(request)
    if not await asyncio.to_thread(request.app[FUNCTION_URLS].delete, function, qualifier):
        raise ResourceNotFoundException(NO_RESOURCE)
    log.info("function %s:%s: URL deleted", function, qualifier)
    return web.Response(status=204)


async def list_function_url_configs(request: web.Request) -> web.Response:
    """ListFunctionUrlConfigs: the function's URLs ($LATEST, then aliases), pages of 1..50."""
    function = parse_function_name(request.match_info["FunctionName"]).name
    if function not in request.app[REGISTRY]:
        raise ResourceNotFoundException(NO_FUNCTION)
    urls = request.app[FUNCTION_URLS].configs(function)
    page, more = paginate(urls, request.query, lambda u: u.qualifier, qualifier_order, cap=MAX_ITEMS, maximum=MAX_ITEMS)
    settings = request.app[SETTINGS]
    return json_response({"FunctionUrlConfigs": [to_wire(settings, u) for u in page], **more})
