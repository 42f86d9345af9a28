"""Layer version resource policies: AddLayerVersionPermission, RemoveLayerVersionPermission, GetLayerVersionPolicy
(2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy).

Each layer version has a document of its own (gateway.store.policies). The only action is `lambda:GetLayerVersion`;
the principal an account id, `*`, or an account's root ARN, optionally narrowed to an organization
(`OrganizationId`: a `aws:PrincipalOrgID` condition). AddLayerVersionPermission answers 201 `{"Statement",
"RevisionId"}`, GetLayerVersionPolicy `{"Policy", "RevisionId"}`, RemoveLayerVersionPermission 204; `?RevisionId=`
guards Add and Remove (PreconditionFailedException). A deleted layer version takes its document with it.

What a grant means here: a function's session credentials may GetLayerVersion / GetLayerVersionByArn a layer
version whose policy grants the function's account or `*` (gateway.api.auth). Operators only may call these three.

Concurrency model: as gateway.api.functions.permissions.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.api.functions.layers import _layer_name, _version_number
from gateway.api.functions.permissions import (
    NO_POLICY,
    PRINCIPAL_ORG_ID,
    STATEMENT_ID,
    check_string,
    revision_query,
)
from gateway.api.http import json_response, read_json_object
from gateway.api.params import Violations, check_members, opt
from gateway.app_keys import LAYERS, POLICIES
from gateway.errors import ResourceConflictException, ResourceNotFoundException
from gateway.store.policies import statement_json
from gateway.store.statements import layer_statement

log = logging.getLogger("gateway.api.functions.layer_permissions")

PATH = "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy"
LAYER_ACTION = "lambda:GetLayerVersion"
LAYER_PRINCIPAL = r"\d{12}|\*|arn:(aws[a-zA-Z-]*):iam::\d{12}:root"
_MEMBERS = frozenset({"StatementId", "Action", "Principal", "OrganizationId"})


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, add_layer_version_permission)
    app.router.add_get(PATH, get_layer_version_policy)
    app.router.add_delete(PATH + "/{StatementId}", remove_layer_version_permission)


def _layer_version(request: web.Request) -> tuple[str, int]:
    """(layer name, version) of a live layer version; "Layer version <ARN> does not exist." otherwise."""
    store = request.app[LAYERS]
    raw = _layer_name(request)
    version = _version_number(request)
    name = store.local_name(raw)
    if name is None:
        raise ResourceNotFoundException(f"Layer version {raw}:{version} does not exist.")
    try:
        store.get(name, version)
    except ResourceNotFoundException:
        raise ResourceNotFoundException(f"Layer version {store.layer_arn(name)}:{version} does not exist.") from None
    return name, version


async def add_layer_version_permission(request: web.Request) -> web.Response:
    """AddLayerVersionPermission: 201 with the statement and the document's new RevisionId."""
    body = await read_json_object(request)
    check_members(body, _MEMBERS, "AddLayerVersionPermissionRequest")
    keys = ("StatementId", "Action", "Principal", "OrganizationId")
    sid, action, principal, org = (opt(body, key, str) for key in keys)
    v = Violations()
    check_string(v, sid, "statementId", STATEMENT_ID, required=True, max_len=100, min_len=1)
    check_string(v, action, "action", LAYER_ACTION, required=True, max_len=22)
    check_string(v, principal, "principal", LAYER_PRINCIPAL, required=True, max_len=10000)
    check_string(v, org, "organizationId", PRINCIPAL_ORG_ID, max_len=34)
    v.raise_if_any()
    assert sid is not None and action is not None and principal is not None
    name, version = _layer_version(request)
    layers, store = request.app[LAYERS], request.app[POLICIES]
    statement = layer_statement(sid, action, principal, f"{layers.layer_arn(name)}:{version}", org)
    document = await asyncio.to_thread(store.add_layer_statement, name, version, statement, revision_query(request))
    try:
        layers.get(name, version)
    except ResourceNotFoundException:  # deleted while it was written
        await asyncio.to_thread(store.forget_layer, name, version)
        raise ResourceConflictException(f"Layer version {layers.layer_arn(name)}:{version} was deleted.") from None
    log.info("layer %s:%d: permission %s added", name, version, sid)
    return json_response({"Statement": statement_json(statement), "RevisionId": document.revision_id}, status=201)


async def get_layer_version_policy(request: web.Request) -> web.Response:
    """GetLayerVersionPolicy: the document and its RevisionId."""
    name, version = _layer_version(request)
    document = request.app[POLICIES].layer_policy(name, version)
    if document is None:
        raise ResourceNotFoundException(NO_POLICY)
    return json_response({"Policy": document.to_json(), "RevisionId": document.revision_id})


async def remove_layer_version_permission(request: web.Request) -> web.Response:
    """RemoveLayerVersionPermission: 204; `?RevisionId=` must be the document's."""
    sid = request.match_info["StatementId"]
    v = Violations()
    check_string(v, sid, "statementId", STATEMENT_ID, max_len=100)
    v.raise_if_any()
    name, version = _layer_version(request)
    store = request.app[POLICIES]
    try:
        await asyncio.to_thread(store.remove_layer_statement, name, version, sid, revision_query(request))
    except KeyError:
        raise ResourceNotFoundException(NO_POLICY) from None
    except IndexError:
        raise ResourceNotFoundException(f"Statement {sid} is not found in resource policy.") from None
    log.info("layer %s:%d: permission %s removed", name, version, sid)
    return web.Response(status=204)
