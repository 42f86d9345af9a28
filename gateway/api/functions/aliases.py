"""Aliases: CreateAlias, GetAlias, UpdateAlias, DeleteAlias, ListAliases.

An alias names one version (or `$LATEST`) and may send a share of invocations to one other published
version (`RoutingConfig.AdditionalVersionWeights`); the invoke path picks per request (Registry.resolve).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from typing import Any

from aiohttp import web

from gateway.api.functions.provisioned import check_alias_target
from gateway.api.http import json_response, read_json_object
from gateway.api.paging import paginate
from gateway.api.params import check_members
from gateway.app_keys import REGISTRY, SETTINGS
from gateway.errors import InvalidParameterValueException, InvalidRequestContentException, ValidationException
from gateway.store.names import parse_function_name
from gateway.store.records import LATEST, AliasConfig, new_revision_id

log = logging.getLogger("gateway.api.functions.aliases")

PREFIX = "/2015-03-31/functions/{FunctionName}/aliases"
ALIAS_PATTERN = r"(?!^[0-9]+$)([a-zA-Z0-9-_]+)"
_ALIAS_RE = re.compile(ALIAS_PATTERN)
_VERSION_RE = re.compile(r"\$LATEST|[0-9]+")
_PUBLISHED_RE = re.compile(r"[0-9]+")


def add_routes(app: web.Application) -> None:
    app.router.add_post(PREFIX, create_alias)
    app.router.add_get(PREFIX, list_aliases)
    app.router.add_get(PREFIX + "/{Name}", get_alias)
    app.router.add_put(PREFIX + "/{Name}", update_alias)
    app.router.add_delete(PREFIX + "/{Name}", delete_alias)


def _invalid(value: object, member: str, constraint: str) -> ValidationException:
    return ValidationException(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
    )


def _function_name(request: web.Request) -> str:
    ref = parse_function_name(request.match_info["FunctionName"])
    if ref.qualifier is not None:
        raise InvalidParameterValueException("Alias operations take an unqualified function name.")
    return ref.name


def _alias_name(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRequestContentException("Could not parse request body into json: Name must be a string")
    if not 1 <= len(value) <= 128:
        raise _invalid(value, "name", "Member must have length between 1 and 128")
    if not _ALIAS_RE.fullmatch(value):
        raise _invalid(value, "name", f"Member must satisfy regular expression pattern: {ALIAS_PATTERN}")
    return value


def _str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidRequestContentException(f"Could not parse request body into json: {key} must be a string")
    return value


def _fields(body: dict[str, Any], current: AliasConfig | None) -> dict[str, Any]:
    """Validated FunctionVersion, Description and RoutingConfig, merged over `current` (an update)."""
    out: dict[str, Any] = {}
    version = _str(body, "FunctionVersion")
    if version is not None:
        if not _VERSION_RE.fullmatch(version):
            raise _invalid(
                version, "functionVersion", r"Member must satisfy regular expression pattern: (\$LATEST|[0-9]+)"
            )
        out["function_version"] = version
    description = _str(body, "Description")
    if description is not None:
        if len(description) > 256:
            raise _invalid(description, "description", "Member must have length less than or equal to 256")
        out["description"] = description
    routing = body.get("RoutingConfig")
    if routing is not None:
        if not isinstance(routing, dict):
            raise InvalidRequestContentException("Could not parse request body into json: RoutingConfig")
        check_members(routing, frozenset({"AdditionalVersionWeights"}), "AliasRoutingConfiguration")
        weights = routing.get("AdditionalVersionWeights") or {}
        if not isinstance(weights, dict):
            raise InvalidRequestContentException("Could not parse request body into json: AdditionalVersionWeights")
        for key, weight in weights.items():
            if not _PUBLISHED_RE.fullmatch(key):
                raise _invalid(key, "routingConfig.additionalVersionWeights", "Map keys must satisfy constraint: "
                               "[Member must satisfy regular expression pattern: [0-9]+]")  # fmt: skip
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0.0 <= weight <= 1.0:
                raise _invalid(weight, "routingConfig.additionalVersionWeights", "Map value must satisfy "
                               "constraint: [Member must have value between 0.0 and 1.0]")  # fmt: skip
        if len(weights) > 1:
            raise InvalidParameterValueException("Number of items in AdditionalVersionWeights cannot be greater than 1")
        out["additional_weights"] = {k: float(v) for k, v in weights.items()}
    primary = out.get("function_version", current.function_version if current else None)
    extra = out.get("additional_weights", current.additional_weights if current else {})
    if extra and primary == LATEST:
        raise InvalidParameterValueException("$LATEST is not supported for an alias pointing to more than 1 version")
    if primary in extra:
        raise InvalidParameterValueException(
            f"Invalid function version {primary}. Function version {primary} is already included in routing "
            "configuration."
        )
    return out


async def create_alias(request: web.Request) -> web.Response:
    """CreateAlias: 201 with the AliasConfiguration."""
    name = _function_name(request)
    body = await read_json_object(request)
    check_members(body, frozenset({"Name", "FunctionVersion", "Description", "RoutingConfig"}), "CreateAliasRequest")
    alias_name = _alias_name(body.get("Name"))
    if body.get("FunctionVersion") is None:
        raise _invalid(None, "functionVersion", "Member must not be null")
    registry = request.app[REGISTRY]
    registry.get(name)
    alias = AliasConfig(
        function=name,
        name=alias_name,
        arn=request.app[SETTINGS].function_arn(name, alias_name),
        function_version="",
        revision_id=new_revision_id(),
    )
    alias = dataclasses.replace(alias, **_fields(body, None))
    await asyncio.to_thread(registry.create_alias, alias)
    log.info("function %s: alias %s -> %s", name, alias.name, alias.function_version)
    return json_response(alias.to_wire(), status=201)


async def get_alias(request: web.Request) -> web.Response:
    name = _function_name(request)
    return json_response(request.app[REGISTRY].get_alias(name, request.match_info["Name"]).to_wire())


async def update_alias(request: web.Request) -> web.Response:
    """UpdateAlias: the members present replace the alias's; RevisionId checked; a new RevisionId."""
    name = _function_name(request)
    body = await read_json_object(request)
    check_members(body, frozenset({"FunctionVersion", "Description", "RoutingConfig", "RevisionId"}),
                  "UpdateAliasRequest")  # fmt: skip
    revision = _str(body, "RevisionId")
    new = await asyncio.to_thread(
        request.app[REGISTRY].update_alias,
        name,
        request.match_info["Name"],
        lambda current: _checked(request, dataclasses.replace(current, **_fields(body, current))),
        revision,
    )
    return json_response(new.to_wire())  # provisioned concurrency followed the alias (gateway.changes)


def _checked(request: web.Request, alias: AliasConfig) -> AliasConfig:
    """Validated against the alias as it is now; with provisioned concurrency, against its rules too."""
    check_alias_target(request.app[REGISTRY], alias)
    return alias


async def delete_alias(request: web.Request) -> web.Response:
    name = _function_name(request)
    await asyncio.to_thread(request.app[REGISTRY].delete_alias, name, request.match_info["Name"])
    return web.Response(status=204)


async def list_aliases(request: web.Request) -> web.Response:
    """ListAliases: sorted by name, optionally only those that can run `FunctionVersion`; paged."""
    name = _function_name(request)
    aliases = request.app[REGISTRY].aliases(name)
    version = request.query.get("FunctionVersion")
    if version is not None:
        aliases = [a for a in aliases if version in a.versions]
    page, more = paginate(aliases, request.query, lambda a: a.name)
    return json_response({"Aliases": [a.to_wire() for a in page], **more})
