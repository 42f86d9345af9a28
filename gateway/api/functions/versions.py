"""Versions: PublishVersion and ListVersionsByFunction."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.api.functions.functions import configuration, list_item
from gateway.api.http import json_response, read_json_object
from gateway.api.paging import paginate
from gateway.api.params import check_members
from gateway.app_keys import REGISTRY
from gateway.errors import InvalidParameterValueException, InvalidRequestContentException, ValidationException
from gateway.store.names import parse_function_name
from gateway.store.records import LATEST

log = logging.getLogger("gateway.api.functions.versions")

PREFIX = "/2015-03-31/functions/{FunctionName}/versions"


def add_routes(app: web.Application) -> None:
    app.router.add_post(PREFIX, publish_version)
    app.router.add_get(PREFIX, list_versions)


def _optional_str(body: dict[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidRequestContentException(f"Could not parse request body into json: {key} must be a string")
    return value


async def publish_version(request: web.Request) -> web.Response:
    """PublishVersion: 201 with the new version's configuration (or the latest one if nothing changed)."""
    ref = parse_function_name(request.match_info["FunctionName"])
    if ref.qualifier is not None:
        raise InvalidParameterValueException("PublishVersion takes an unqualified function name.")
    body = await read_json_object(request)
    check_members(body, frozenset({"CodeSha256", "Description", "RevisionId", "PublishTo"}), "PublishVersionRequest")
    description = _optional_str(body, "Description")
    if description is not None and len(description) > 256:
        raise ValidationException(
            f"1 validation error detected: Value '{description}' at 'description' failed to satisfy constraint: "
            "Member must have length less than or equal to 256"
        )
    registry = request.app[REGISTRY]
    registry.get(ref.name)
    version = await asyncio.to_thread(
        registry.publish, ref.name, description, _optional_str(body, "CodeSha256"), _optional_str(body, "RevisionId")
    )
    log.info("function %s: version %s", ref.name, version.version)
    return json_response(configuration(request.app, version), status=201)


def _version_order(version: str) -> int:
    return -1 if version == LATEST else int(version)


async def list_versions(request: web.Request) -> web.Response:
    """ListVersionsByFunction: `$LATEST`, then published versions ascending; pages of at most 50."""
    ref = parse_function_name(request.match_info["FunctionName"])
    if ref.qualifier is not None:
        raise InvalidParameterValueException("ListVersionsByFunction takes an unqualified function name.")
    versions = request.app[REGISTRY].versions(ref.name)
    page, more = paginate(versions, request.query, lambda v: v.version, _version_order)
    wires = [list_item(request.app, v) for v in page]
    for wire in wires:  # in this list, $LATEST is shown with its qualified ARN
        if wire["Version"] == LATEST:
            wire["FunctionArn"] += ":" + LATEST
    return json_response({"Versions": wires, **more})
