"""Provisioned concurrency: Put/Get/Delete/ListProvisionedConcurrencyConfigs (2019-09-30).

A config asks for N environments of one published version, named by its number or by an alias (an
alias's config provisions the version the alias names). The registry persists the configs;
`PoolManager.reconcile()` forks and initializes the environments ahead of traffic, after every change
here (the registry's change notification, gateway.changes: it has run when the write's `await` returns), on
every reaper tick and at start-up. Status is read from the pools on each request: IN_PROGRESS
until N environments are live, then READY; FAILED (with StatusReason) when Init failed.

Rules, with Lambda's wording: not on `$LATEST`; one config per version (a version and an alias, or two
aliases, that run the same version conflict); a function's total provisioned concurrency may not exceed
its reserved concurrency, and provisioned concurrency of functions without a reservation may not push the
account's unreserved concurrency below its minimum.

Concurrency model: handlers run on the event loop; Put and Delete hold the application's lock from their
checks to the registry write, so two concurrent Puts cannot both pass the limits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from gateway.api.functions.concurrency import provisioned_outside_reservations
from gateway.api.http import json_response, read_json_object
from gateway.api.paging import paginate
from gateway.api.params import check_members
from gateway.app_keys import CONCURRENCY, CONCURRENCY_SETTINGS_LOCK, POOLS, REGISTRY, SETTINGS
from gateway.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    ProvisionedConcurrencyConfigNotFoundException,
    ResourceConflictException,
    ResourceNotFoundException,
    ValidationException,
)
from gateway.store.names import parse_function_name
from gateway.store.records import LATEST, AliasConfig, ProvisionedConfig, now_last_modified
from gateway.store.registry import Registry

log = logging.getLogger("gateway.api.functions.provisioned")

PATH = "/2019-09-30/functions/{FunctionName}/provisioned-concurrency"

IN_PROGRESS = "IN_PROGRESS"
READY = "READY"
FAILED = "FAILED"

UNPUBLISHED = "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
NOT_PUBLISHED_OR_ALIAS = "The function resource provided must be an alias or a published version."
NOT_FOUND = "No Provisioned Concurrency Config found for this function"
ALIAS_ON_PROVISIONED_VERSION = (
    "Alias can't be used for Provisioned Concurrency configuration on an already Provisioned version"
)
VERSION_OF_PROVISIONED_ALIAS = "Version is pointed by a Provisioned Concurrency alias"
ABOVE_RESERVED = (
    "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function"
)

#: serializes Put and Delete of one application: limits are checked and written as one step


def add_routes(app: web.Application) -> None:
    """Register the four operations; GET serves both Get (`?Qualifier=`) and List (`?List=ALL`)."""
    app.router.add_put(PATH, put_provisioned_concurrency_config)
    app.router.add_get(PATH, get_or_list_provisioned_concurrency_configs)
    app.router.add_delete(PATH, delete_provisioned_concurrency_config)


# -- targets -------------------------------------------------------------------------------------------


def _target(request: web.Request, latest_message: str) -> tuple[str, str]:
    """(function, qualifier) of a Put/Get/Delete; the version or alias must exist."""
    ref = parse_function_name(request.match_info["FunctionName"], request.query.get("Qualifier"))
    if ref.qualifier is None:
        raise ValidationException(
            "1 validation error detected: Value null at 'qualifier' failed to satisfy constraint: "
            "Member must not be null"
        )
    if ref.qualifier == LATEST:
        raise InvalidParameterValueException(latest_message)
    registry = request.app[REGISTRY]
    registry.get(ref.name)  # ResourceNotFoundException for the function
    if ref.qualifier.isdigit():
        registry.get_version(ref.name, ref.qualifier)
    else:
        try:
            registry.get_alias(ref.name, ref.qualifier)
        except ResourceNotFoundException:
            arn = request.app[SETTINGS].function_arn(ref.name, ref.qualifier)
            raise ResourceNotFoundException(f"Cannot find alias arn: {arn}") from None
    return ref.name, ref.qualifier


def _versions(registry: Registry, name: str, qualifier: str) -> frozenset[str]:
    """The versions a qualifier can run: itself for a version, the alias's one or two for an alias."""
    if qualifier.isdigit():
        return frozenset({qualifier})
    try:
        return frozenset(registry.get_alias(name, qualifier).versions)
    except ResourceNotFoundException:
        return frozenset()


def _conflict(registry: Registry, name: str, qualifier: str, versions: frozenset[str]) -> ProvisionedConfig | None:
    """Another config of the function that provisions one of `versions`, if any."""
    for other in registry.provisioned_configs(name):
        if other.qualifier != qualifier and versions & _versions(registry, name, other.qualifier):
            return other
    return None


def check_alias_target(registry: Registry, alias: AliasConfig) -> None:
    """UpdateAlias's rule for an alias with a provisioned concurrency config.

    It must keep naming published versions (else InvalidParameterValueException) that no other config
    provisions (else ResourceConflictException). Pure reads of the registry's cache: safe inside
    `Registry.update_alias`'s change callback.
    """
    if not any(p.qualifier == alias.name for p in registry.provisioned_configs(alias.function)):
        return
    if alias.function_version == LATEST:
        raise InvalidParameterValueException(UNPUBLISHED)
    if _conflict(registry, alias.function, alias.name, frozenset(alias.versions)) is not None:
        raise ResourceConflictException(ALIAS_ON_PROVISIONED_VERSION)


# -- status --------------------------------------------------------------------------------------------


def _status(app: web.Application, prov: ProvisionedConfig) -> dict[str, Any]:
    """Requested/Available/Allocated counts, Status (and StatusReason) and LastModified of a config."""
    available, error = 0, None
    try:
        config = app[REGISTRY].resolve(prov.function, prov.qualifier)
    except ResourceNotFoundException:
        pass
    else:
        available, error = app[POOLS].provisioned_available(config)
    available = min(available, prov.requested)
    out: dict[str, Any] = {
        "RequestedProvisionedConcurrentExecutions": prov.requested,
        "AvailableProvisionedConcurrentExecutions": available,
        "AllocatedProvisionedConcurrentExecutions": available,
    }
    if available >= prov.requested:
        out["Status"] = READY
    elif error is not None:
        out["Status"] = FAILED
        out["StatusReason"] = error
    else:
        out["Status"] = IN_PROGRESS
    out["LastModified"] = prov.last_modified
    return out


def _find(request: web.Request, name: str, qualifier: str) -> ProvisionedConfig | None:
    for prov in request.app[REGISTRY].provisioned_configs(name):
        if prov.qualifier == qualifier:
            return prov
    return None


# -- Put -------------------------------------------------------------------------------------------------


def _requested(body: dict[str, Any]) -> int:
    check_members(body, frozenset({"ProvisionedConcurrentExecutions"}), "PutProvisionedConcurrencyConfigRequest")
    value = body.get("ProvisionedConcurrentExecutions")
    if value is None:
        raise ValidationException(
            "1 validation error detected: Value null at 'provisionedConcurrentExecutions' failed to satisfy "
            "constraint: Member must not be null"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestContentException(
            "Could not parse request body into json: ProvisionedConcurrentExecutions must be an integer"
        )
    if value < 1:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at 'provisionedConcurrentExecutions' failed to "
            "satisfy constraint: Member must have value greater than or equal to 1"
        )
    return value


def _check_one_per_version(request: web.Request, name: str, qualifier: str) -> None:
    """ResourceConflictException if another config of the function already provisions one of these versions."""
    registry = request.app[REGISTRY]
    if _conflict(registry, name, qualifier, _versions(registry, name, qualifier)) is not None:
        raise ResourceConflictException(
            VERSION_OF_PROVISIONED_ALIAS if qualifier.isdigit() else ALIAS_ON_PROVISIONED_VERSION
        )


def _check_limits(request: web.Request, name: str, qualifier: str, value: int) -> None:
    """InvalidParameterValueException above the function's reservation, or below the unreserved floor."""
    registry = request.app[REGISTRY]
    reserved = registry.reserved_concurrency(name)
    if reserved is not None:
        others = sum(p.requested for p in registry.provisioned_configs(name) if p.qualifier != qualifier)
        if others + value > reserved:
            raise InvalidParameterValueException(ABOVE_RESERVED)
        return
    # provisioned environments of functions without a reservation come out of the unreserved pool
    own_others = sum(p.requested for p in registry.provisioned_configs(name) if p.qualifier != qualifier)
    unreserved = provisioned_outside_reservations(registry, skip=name) + own_others + value
    request.app[CONCURRENCY].check_floor(name, None, unreserved, "ConcurrentExecutions")


async def put_provisioned_concurrency_config(request: web.Request) -> web.Response:
    """PutProvisionedConcurrencyConfig: 202; the environments are forked in the background."""
    name, qualifier = _target(request, UNPUBLISHED)
    value = _requested(await read_json_object(request))
    app = request.app
    registry = app[REGISTRY]
    if registry.resolve(name, qualifier).version == LATEST:  # an alias of $LATEST
        raise InvalidParameterValueException(UNPUBLISHED)
    async with app[CONCURRENCY_SETTINGS_LOCK]:
        _check_one_per_version(request, name, qualifier)
        _check_limits(request, name, qualifier, value)
        prov = ProvisionedConfig(function=name, qualifier=qualifier, requested=value, last_modified=now_last_modified())
        # gateway.changes reconciles (a Put of the same value retries a FAILED config) before this await returns
        await asyncio.to_thread(registry.put_provisioned, prov)
    log.info("function %s:%s: provisioned concurrency %d", name, qualifier, value)
    return json_response(_status(app, prov), status=202)


# -- Get / List --------------------------------------------------------------------------------------------


async def get_or_list_provisioned_concurrency_configs(request: web.Request) -> web.Response:
    """GET: ListProvisionedConcurrencyConfigs with `?List=ALL`, GetProvisionedConcurrencyConfig otherwise."""
    listing = request.query.get("List")
    if listing is None:
        return await get_provisioned_concurrency_config(request)
    if listing != "ALL":
        raise ValidationException(
            f"1 validation error detected: Value '{listing}' at 'list' failed to satisfy constraint: "
            "Member must satisfy enum value set: [ALL]"
        )
    return await list_provisioned_concurrency_configs(request)


async def get_provisioned_concurrency_config(request: web.Request) -> web.Response:
    """GetProvisionedConcurrencyConfig: the config's counts and status, or 404 when there is none."""
    name, qualifier = _target(request, NOT_PUBLISHED_OR_ALIAS)
    prov = _find(request, name, qualifier)
    if prov is None:
        raise ProvisionedConcurrencyConfigNotFoundException(NOT_FOUND)
    return json_response(_status(request.app, prov))


async def list_provisioned_concurrency_configs(request: web.Request) -> web.Response:
    """ListProvisionedConcurrencyConfigs: the function's configs by qualifier, pages of at most 50."""
    name = parse_function_name(request.match_info["FunctionName"]).name
    registry = request.app[REGISTRY]
    registry.get(name)  # ResourceNotFoundException
    page, more = paginate(registry.provisioned_configs(name), request.query, lambda p: p.qualifier)
    settings = request.app[SETTINGS]
    items = [{"FunctionArn": settings.function_arn(name, p.qualifier), **_status(request.app, p)} for p in page]
    return json_response({"ProvisionedConcurrencyConfigs": items, **more})


# -- Delete ------------------------------------------------------------------------------------------------


async def delete_provisioned_concurrency_config(request: web.Request) -> web.Response:
    """DeleteProvisionedConcurrencyConfig: 204 (also when there was none); the environments are retired."""
    name, qualifier = _target(request, NOT_PUBLISHED_OR_ALIAS)
    async with request.app[CONCURRENCY_SETTINGS_LOCK]:
        deleted = await asyncio.to_thread(request.app[REGISTRY].delete_provisioned, name, qualifier)
    if deleted:
        log.info("function %s:%s: provisioned concurrency removed", name, qualifier)
    return web.Response(status=204)
