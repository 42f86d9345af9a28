"""Event invoke configs: Put/Get/Update/Delete FunctionEventInvokeConfig, ListFunctionEventInvokeConfigs (2019-09-25).

A config belongs to a function's `$LATEST` (unqualified), a version or an alias, and says how Event invocations of it
are retried (MaximumRetryAttempts 0..2, MaximumEventAgeInSeconds 60..21600) and where their outcomes go
(DestinationConfig.OnSuccess / OnFailure). Put replaces the whole config (what it leaves out is removed); Update
changes only the members it is given (a DestinationConfig replaces both destinations) and needs an existing config.

Checks and wording are Lambda's, in Lambda's order: the JSON shape (InvalidRequestContentException), the model's
constraints together (ValidationException), at least one setting, the function and qualifier exist ("The function
doesn't exist."), then each destination: a service Lambda delivers to, not the function itself, a function that
exists, and what this gateway can deliver to (`gateway.events.targets.check_destination`). Get and Delete of a config
that is not there (also of a function that is not there) answer "The function <ARN> doesn't have an
EventInvokeConfig". Answers carry the qualified FunctionArn and LastModified in epoch seconds (the model's timestamp
in rest-json).

Concurrency model: handlers run on the event loop; reads use the store's cache, writes run in a worker thread.
A function deleted while a Put or Update is in flight is noticed after the write and the config dropped again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.api.http import json_response, read_json_object
from gateway.api.paging import paginate
from gateway.api.params import Violations, bounded, check_members, opt
from gateway.app_keys import EVENT_CONFIGS, REGISTRY, SETTINGS
from gateway.errors import InvalidParameterValueException, ResourceNotFoundException
from gateway.events.targets import Service, check_destination
from gateway.settings import Settings
from gateway.store.event_configs import (
    DEFAULT_EVENT_AGE,
    DEFAULT_RETRY_ATTEMPTS,
    EVENT_AGE,
    RETRIES,
    EventInvokeConfig,
    designates,
    qualifier_order,
)
from gateway.store.names import parse_function_name
from gateway.store.records import LATEST

log = logging.getLogger("gateway.api.events.event_invoke_config")

PATH = "/2019-09-25/functions/{FunctionName}/event-invoke-config"
#: the model's bound on ListFunctionEventInvokeConfigs' MaxItems
MAX_ITEMS = 50
#: the model's DestinationArn (Lambda's messages show it anchored)
DESTINATION_PATTERN = (
    r"$|kafka://([^.]([a-zA-Z0-9\-_.]{0,248}))|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:"
    r"((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1})?:(\d{12})?:(.*)"
)
DESTINATION_MAX = 350
_DESTINATION_RE = re.compile(DESTINATION_PATTERN, re.DOTALL)
#: the services whose ARNs Lambda takes as a destination of asynchronous invocations (S3: OnFailure only)
_DESTINATION_SERVICES = frozenset({"lambda", "sqs", "sns", "events", "s3"})

_MEMBERS = frozenset({RETRIES, EVENT_AGE, "DestinationConfig"})
_DESTINATIONS = (("OnSuccess", "onSuccess"), ("OnFailure", "onFailure"))

NOTHING_SET = "You must specify at least one of error handling or destination setting."
NO_FUNCTION = "The function doesn't exist."
SELF_DESTINATION = "You can't specify the function as a destination for itself."


def add_routes(app: web.Application) -> None:
    app.router.add_put(PATH, put_function_event_invoke_config)
    app.router.add_get(PATH, get_function_event_invoke_config)
    app.router.add_post(PATH, update_function_event_invoke_config)
    app.router.add_delete(PATH, delete_function_event_invoke_config)
    app.router.add_get(PATH + "/list", list_function_event_invoke_configs)


def _target(request: web.Request) -> tuple[str, str]:
    """(function, qualifier) of the request: `Qualifier` or the one in the name; `$LATEST` when neither."""
    ref = parse_function_name(request.match_info["FunctionName"], request.query.get("Qualifier"))
    return ref.name, ref.qualifier or LATEST


def _missing(settings: Settings, function: str, qualifier: str) -> ResourceNotFoundException:
    arn = settings.function_arn(function, qualifier)
    return ResourceNotFoundException(f"The function {arn} doesn't have an EventInvokeConfig")


def to_wire(settings: Settings, config: EventInvokeConfig) -> dict[str, Any]:
    """A FunctionEventInvokeConfig: only the members that were set, both destinations (empty when unset)."""
    out: dict[str, Any] = {
        "LastModified": round(config.last_modified, 3),
        "FunctionArn": settings.function_arn(config.function, config.qualifier),
    }
    if RETRIES in config.given:
        out[RETRIES] = config.maximum_retry_attempts
    if EVENT_AGE in config.given:
        out[EVENT_AGE] = config.maximum_event_age
    out["DestinationConfig"] = {
        "OnSuccess": {"Destination": config.on_success} if config.on_success else {},
        "OnFailure": {"Destination": config.on_failure} if config.on_failure else {},
    }
    return out


# -- request bodies ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requested:
    """What a Put or Update body sets; None: not in the body. `destinations` is (on_success, on_failure) when the
    body has a DestinationConfig (an absent or empty Destination is None)."""

    retries: int | None = None
    age: int | None = None
    destinations: tuple[str | None, str | None] | None = None


def _parse(body: dict[str, Any], where: str) -> Requested:
    """A Put or Update body: its shape, then the model's constraints (reported together), then at least one
    setting."""
    check_members(body, _MEMBERS, where)
    v = Violations()
    retries = opt(body, RETRIES, int)
    bounded(v, retries, "maximumRetryAttempts", 0, 2)
    age = opt(body, EVENT_AGE, int)
    bounded(v, age, "maximumEventAgeInSeconds", 60, 21600)
    destinations = None
    if (config := opt(body, "DestinationConfig", dict)) is not None:
        check_members(config, frozenset(member for member, _ in _DESTINATIONS), "DestinationConfig")
        on_success, on_failure = (
            _destination(config, member, f"destinationConfig.{path}.destination", v) for member, path in _DESTINATIONS
        )
        destinations = (on_success, on_failure)
    v.raise_if_any()
    if retries is None and age is None and destinations is None:
        raise InvalidParameterValueException(NOTHING_SET)
    return Requested(retries, age, destinations)


def _destination(config: dict[str, Any], member: str, path: str, v: Violations) -> str | None:
    """One `{"Destination": ARN}` member: the ARN (checked against the model), None when absent or empty."""
    inner = opt(config, member, dict)
    if inner is None:
        return None
    check_members(inner, frozenset({"Destination"}), member)
    arn: str | None = opt(inner, "Destination", str)
    if not arn:
        return None
    if len(arn) > DESTINATION_MAX:  # before the pattern: a huge string is refused without scanning it
        v.add(arn, path, f"Member must have length less than or equal to {DESTINATION_MAX}")
    elif not _DESTINATION_RE.fullmatch(arn):
        v.add(arn, path, f"Member must satisfy regular expression pattern: ^{DESTINATION_PATTERN}")
    return arn


def _check_destinations(request: web.Request, function: str, destinations: tuple[str | None, str | None]) -> None:
    """Lambda's rules for each destination, then whether this gateway can deliver to it."""
    settings, registry = request.app[SETTINGS], request.app[REGISTRY]
    for arn in destinations:
        if arn is None:
            continue
        parts = arn.split(":", 5)
        if len(parts) < 6 or parts[0] != "arn" or parts[2] not in _DESTINATION_SERVICES:
            raise _invalid_config(destinations)
        target = check_destination(settings, arn)
        if target.service is Service.LAMBDA:
            if target.name == function:
                raise InvalidParameterValueException(SELF_DESTINATION)
            if not designates(registry, target.name, target.qualifier or LATEST):
                raise InvalidParameterValueException(f"The destination ARN {arn} is invalid.")


def _invalid_config(destinations: tuple[str | None, str | None]) -> InvalidParameterValueException:
    """Lambda's answer to a destination of a service it does not deliver to: the whole config, as Java prints it."""
    on_success, on_failure = (
        f"{member}(destination={arn})" if arn else "null"
        for arn, (member, _) in zip(destinations, _DESTINATIONS, strict=True)
    )
    return InvalidParameterValueException(
        f"The provided destination config DestinationConfig(onSuccess={on_success}, onFailure={on_failure}) is invalid."
    )


def _check_function(request: web.Request, function: str, qualifier: str) -> None:
    if not designates(request.app[REGISTRY], function, qualifier):
        raise ResourceNotFoundException(NO_FUNCTION)


def _merged(current: EventInvokeConfig, requested: Requested, now: float) -> EventInvokeConfig:
    """`current` with what was requested changed (Update); a Put merges into an empty config."""
    retries, age = current.maximum_retry_attempts, current.maximum_event_age
    given = set(current.given)
    if requested.retries is not None:
        retries = requested.retries
        given.add(RETRIES)
    if requested.age is not None:
        age = requested.age
        given.add(EVENT_AGE)
    on_success, on_failure = requested.destinations or (current.on_success, current.on_failure)
    return EventInvokeConfig(
        current.function, current.qualifier, retries, age, on_success, on_failure, now, frozenset(given)
    )


async def _after_write(request: web.Request, config: EventInvokeConfig) -> web.Response:
    """The answer to a Put or Update, unless the function (version, alias) went while it was written."""
    if not designates(request.app[REGISTRY], config.function, config.qualifier):
        await asyncio.to_thread(request.app[EVENT_CONFIGS].forget, config.function, config.qualifier)
        raise ResourceNotFoundException(NO_FUNCTION)
    return json_response(to_wire(request.app[SETTINGS], config))


# -- the operations ---------------------------------------------------------------------------------------


async def put_function_event_invoke_config(request: web.Request) -> web.Response:
    """PutFunctionEventInvokeConfig: create or replace the whole config; what the body leaves out is removed."""
    function, qualifier = _target(request)
    requested = _parse(await read_json_object(request), "PutFunctionEventInvokeConfigRequest")
    _check_function(request, function, qualifier)
    if requested.destinations is not None:
        _check_destinations(request, function, requested.destinations)
    empty = EventInvokeConfig(function, qualifier, DEFAULT_RETRY_ATTEMPTS, DEFAULT_EVENT_AGE)
    config = _merged(empty, requested, time.time())
    await asyncio.to_thread(request.app[EVENT_CONFIGS].put, config)
    log.info("function %s:%s: event invoke config put", function, qualifier)
    return await _after_write(request, config)


async def update_function_event_invoke_config(request: web.Request) -> web.Response:
    """UpdateFunctionEventInvokeConfig: change the members given, keep the others; the config must exist."""
    function, qualifier = _target(request)
    requested = _parse(await read_json_object(request), "UpdateFunctionEventInvokeConfigRequest")
    _check_function(request, function, qualifier)
    store = request.app[EVENT_CONFIGS]
    if store.get(function, qualifier) is None:
        raise _missing(request.app[SETTINGS], function, qualifier)
    if requested.destinations is not None:
        _check_destinations(request, function, requested.destinations)
    now = time.time()
    config = await asyncio.to_thread(
        store.update, function, qualifier, lambda current: _merged(current, requested, now)
    )
    if config is None:  # deleted meanwhile
        raise _missing(request.app[SETTINGS], function, qualifier)
    log.info("function %s:%s: event invoke config updated", function, qualifier)
    return await _after_write(request, config)


async def get_function_event_invoke_config(request: web.Request) -> web.Response:
    """GetFunctionEventInvokeConfig: the config, or ResourceNotFoundException (also for a missing function)."""
    function, qualifier = _target(request)
    config = request.app[EVENT_CONFIGS].get(function, qualifier)
    if config is None:
        raise _missing(request.app[SETTINGS], function, qualifier)
    return json_response(to_wire(request.app[SETTINGS], config))


async def delete_function_event_invoke_config(request: web.Request) -> web.Response:
    """DeleteFunctionEventInvokeConfig: 204, or ResourceNotFoundException when there is no config."""
    function, qualifier = _target(request)
    if not await asyncio.to_thread(request.app[EVENT_CONFIGS].delete, function, qualifier):
        raise _missing(request.app[SETTINGS], function, qualifier)
    log.info("function %s:%s: event invoke config deleted", function, qualifier)
    return web.Response(status=204)


async def list_function_event_invoke_configs(request: web.Request) -> web.Response:
    """ListFunctionEventInvokeConfigs: the function's configs ($LATEST, versions, aliases), pages of 1..50."""
    function = parse_function_name(request.match_info["FunctionName"]).name
    if function not in request.app[REGISTRY]:
        raise ResourceNotFoundException(NO_FUNCTION)
    configs = request.app[EVENT_CONFIGS].configs(function)
    page, more = paginate(
        configs, request.query, lambda c: c.qualifier, qualifier_order, cap=MAX_ITEMS, maximum=MAX_ITEMS
    )
    settings = request.app[SETTINGS]
    return json_response({"FunctionEventInvokeConfigs": [to_wire(settings, c) for c in page], **more})
