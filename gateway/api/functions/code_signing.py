"""Code signing configurations: Create/Get/Update/Delete/ListCodeSigningConfigs and ListFunctionsByCodeSigningConfig
(2020-04-22), Put/Get/DeleteFunctionCodeSigningConfig (2020-06-30). Paths, members and errors follow botocore's model.

Wording (LocalStack's provider, whose tests are recorded against AWS): a configuration that does not exist is
`ResourceNotFoundException` "The Lambda code signing configuration ARN can not be found." for the configuration's own
operations, `CodeSigningConfigNotFoundException` "The code signing configuration cannot be found. Check that the
provided configuration is not deleted: ARN." when a function is pointed at it (PutFunctionCodeSigningConfig,
CreateFunction). A configuration a function still uses cannot be deleted (AWS's DeleteCodeSigningConfig: "only if no
function is using it"): ResourceConflictException, 409. GetFunctionCodeSigningConfig of a function without one
answers `{}` as LocalStack does.

What a configuration does to deployments (CreateFunction, UpdateFunctionCode, layers) is `signing_checks`.

Concurrency model: handlers run on the event loop; reads use the store's cache, writes run in a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from gateway.api.functions.tags import validate_tags
from gateway.api.http import json_response, read_json_object
from gateway.api.paging import paginate
from gateway.api.params import Violations, check_members, opt, str_map
from gateway.app_keys import CODE_SIGNING, REGISTRY, SETTINGS, SIGNING_PROFILES
from gateway.errors import (
    CodeSigningConfigNotFoundException,
    InvalidParameterValueException,
    ResourceConflictException,
    ResourceNotFoundException,
    ValidationException,
)
from gateway.settings import Settings, partition_of
from gateway.store.code_signing import POLICIES, CodeSigningConfig
from gateway.store.names import parse_function_name
from gateway.store.records import LATEST, now_last_modified

log = logging.getLogger("gateway.api.functions.code_signing")

CONFIGS = "/2020-04-22/code-signing-configs"
FUNCTION = "/2020-06-30/functions/{FunctionName}/code-signing-config"
#: botocore's CodeSigningConfigArn shape
CSC_ARN_PATTERN = (
    r"arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:code-signing-config:"
    r"csc-[a-z0-9]{17}"
)
#: botocore's Arn shape (each SigningProfileVersionArns member)
ARN_PATTERN = (
    r"arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1})?:(\d{12})?:(.*)"
)
_CSC_ARN_RE = re.compile(CSC_ARN_PATTERN)
_ARN_RE = re.compile(ARN_PATTERN)
MAX_PUBLISHERS = 20
CREATE_MEMBERS = frozenset({"Description", "AllowedPublishers", "CodeSigningPolicies", "Tags"})
UPDATE_MEMBERS = frozenset({"CodeSigningConfigArn", "Description", "AllowedPublishers", "CodeSigningPolicies"})


def add_routes(app: web.Application) -> None:
    """Register the nine operations; `app` must hold SETTINGS, REGISTRY, CODE_SIGNING and SIGNING_PROFILES."""
    app.router.add_post(CONFIGS, create_config)
    app.router.add_post(CONFIGS + "/", create_config)
    app.router.add_get(CONFIGS, list_configs)
    app.router.add_get(CONFIGS + "/", list_configs)
    app.router.add_get(CONFIGS + "/{CodeSigningConfigArn}", get_config)
    app.router.add_put(CONFIGS + "/{CodeSigningConfigArn}", update_config)
    app.router.add_delete(CONFIGS + "/{CodeSigningConfigArn}", delete_config)
    app.router.add_get(CONFIGS + "/{CodeSigningConfigArn}/functions", list_functions)
    app.router.add_put(FUNCTION, put_function_config)
    app.router.add_get(FUNCTION, get_function_config)
    app.router.add_delete(FUNCTION, delete_function_config)


def not_found(arn: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"The Lambda code signing configuration {arn} can not be found.")


def config_not_found(arn: str) -> CodeSigningConfigNotFoundException:
    return CodeSigningConfigNotFoundException(
        f"The code signing configuration cannot be found. Check that the provided configuration is not deleted: {arn}."
    )


def check_config_arn(arn: str, member: str = "codeSigningConfigArn") -> None:
    """The model's constraints on a CodeSigningConfigArn (at most 200 characters, its pattern): ValidationException."""
    v = Violations()
    if len(arn) > 200:
        v.add(arn, member, "Member must have length less than or equal to 200")
    elif not _CSC_ARN_RE.fullmatch(arn):
        v.add(arn, member, f"Member must satisfy regular expression pattern: {CSC_ARN_PATTERN}")
    v.raise_if_any()


def _path_arn(request: web.Request) -> str:
    arn = unquote(request.match_info["CodeSigningConfigArn"])
    check_config_arn(arn)
    return arn


def _body(body: Mapping[str, Any], v: Violations, *, create: bool) -> dict[str, Any]:
    """The members Create and Update share, validated (the shape first, then the model's constraints into `v`)."""
    out: dict[str, Any] = {}
    if (description := opt(body, "Description", str)) is not None:
        if len(description) > 256:
            v.add(description, "description", "Member must have length less than or equal to 256")
        out["description"] = description
    publishers = opt(body, "AllowedPublishers", dict)
    if publishers is None and create:
        v.add(None, "allowedPublishers", "Member must not be null")
    if publishers is not None:
        check_members(publishers, frozenset({"SigningProfileVersionArns"}), "AllowedPublishers")
        arns = opt(publishers, "SigningProfileVersionArns", list)
        if arns is None:
            v.add(None, "allowedPublishers.signingProfileVersionArns", "Member must not be null")
        else:
            out["allowed"] = _publishers(arns, v)
    policies = opt(body, "CodeSigningPolicies", dict)
    if policies is not None:
        check_members(policies, frozenset({"UntrustedArtifactOnDeployment"}), "CodeSigningPolicies")
        policy = opt(policies, "UntrustedArtifactOnDeployment", str)
        if policy is None:
            policy = "Warn"  # the model's default
        elif policy not in POLICIES:  # "" too: an empty value is not the default
            v.add(policy, "codeSigningPolicies.untrustedArtifactOnDeployment",
                  "Member must satisfy enum value set: [Enforce, Warn]")  # fmt: skip
        out["untrusted_artifact_on_deployment"] = policy
    return out


def _publishers(arns: list[Any], v: Violations) -> tuple[str, ...]:
    member = "allowedPublishers.signingProfileVersionArns"
    for arn in arns:
        if not isinstance(arn, str):
            raise InvalidParameterValueException(f"Invalid value for SigningProfileVersionArns: {arn!r}")
    shown = "[" + ", ".join(arns) + "]"
    if not 1 <= len(arns) <= MAX_PUBLISHERS:
        bound = "greater than or equal to 1" if not arns else f"less than or equal to {MAX_PUBLISHERS}"
        v.add(shown, member, f"Member must have length {bound}")
    elif not all(len(arn) <= 10000 and _ARN_RE.fullmatch(arn) for arn in arns):
        v.add(shown, member, "Member must satisfy constraint: [Member must have length less than or equal to 10000, "
              f"Member must satisfy regular expression pattern: {ARN_PATTERN}, Member must not be null]")  # fmt: skip
    return tuple(dict.fromkeys(arns))  # a profile named twice is one profile


def _warn_unregistered(request: web.Request, allowed: tuple[str, ...]) -> None:
    """An allowed profile the gateway has no public key of can never pass: say so in the log (AWS cannot know either
    whether a profile will sign anything; the configuration is accepted)."""
    profiles = request.app[SIGNING_PROFILES]
    missing = [arn for arn in allowed if arn not in profiles]
    if missing:
        log.warning("code signing: no public key is registered for %s (GATEWAY_SIGNING_PROFILES): packages they "
                    "sign are untrusted here", ", ".join(missing))  # fmt: skip


def config_arn(settings: Settings, csc_id: str) -> str:
    region = settings.region
    return f"arn:{partition_of(region)}:lambda:{region}:{settings.account_id}:code-signing-config:{csc_id}"


async def create_config(request: web.Request) -> web.Response:
    """CreateCodeSigningConfig: 201 with the CodeSigningConfig (UntrustedArtifactOnDeployment defaults to Warn)."""
    body = await read_json_object(request, operation="CreateCodeSigningConfig")
    check_members(body, CREATE_MEMBERS, "CreateCodeSigningConfigRequest")
    v = Violations()
    fields = _body(body, v, create=True)
    tags = str_map(body, "Tags") or {}
    v.raise_if_any()
    validate_tags(tags)
    settings = request.app[SETTINGS]

    def make(csc_id: str) -> CodeSigningConfig:
        return CodeSigningConfig(
            csc_id=csc_id,
            arn=config_arn(settings, csc_id),
            description=fields.get("description", ""),
            allowed=fields["allowed"],
            untrusted_artifact_on_deployment=fields.get("untrusted_artifact_on_deployment", "Warn"),
            last_modified=now_last_modified(),
            tags=tags,
        )

    config = await asyncio.to_thread(request.app[CODE_SIGNING].create, make)
    _warn_unregistered(request, config.allowed)
    log.info("created code signing configuration %s", config.arn)
    return json_response({"CodeSigningConfig": config.to_wire()}, status=201)


async def get_config(request: web.Request) -> web.Response:
    arn = _path_arn(request)
    config = request.app[CODE_SIGNING].get(arn)
    if config is None:
        raise not_found(arn)
    return json_response({"CodeSigningConfig": config.to_wire()})


async def update_config(request: web.Request) -> web.Response:
    """UpdateCodeSigningConfig: the members given replace the configuration's; LastModified is renewed. Takes effect
    at the next deployment of the functions that use it."""
    arn = _path_arn(request)
    body = await read_json_object(request, operation="UpdateCodeSigningConfig")
    check_members(body, UPDATE_MEMBERS, "UpdateCodeSigningConfigRequest")
    v = Violations()
    fields = _body(body, v, create=False)
    v.raise_if_any()

    def change(current: CodeSigningConfig) -> CodeSigningConfig:
        return dataclasses.replace(current, **fields, last_modified=now_last_modified())

    config = await asyncio.to_thread(request.app[CODE_SIGNING].update, arn, change)
    if config is None:
        raise not_found(arn)
    if "allowed" in fields:
        _warn_unregistered(request, config.allowed)
    return json_response({"CodeSigningConfig": config.to_wire()})


async def delete_config(request: web.Request) -> web.Response:
    """DeleteCodeSigningConfig: 204; 409 while a function uses it."""
    arn = _path_arn(request)
    outcome = await asyncio.to_thread(request.app[CODE_SIGNING].delete, arn)
    if outcome == "missing":
        raise not_found(arn)
    if outcome == "in use":
        raise ResourceConflictException(
            f"The code signing configuration {arn} cannot be deleted because it is used by one or more functions."
        )
    log.info("deleted code signing configuration %s", arn)
    return web.Response(status=204)


async def list_configs(request: web.Request) -> web.Response:
    """ListCodeSigningConfigs: by id, pages of at most 50 (MaxItems 1..10000), `NextMarker` when more follow."""
    configs = request.app[CODE_SIGNING].all()
    page, more = paginate(configs, request.query, lambda c: c.csc_id)
    return json_response({"CodeSigningConfigs": [c.to_wire() for c in page], **more})


async def list_functions(request: web.Request) -> web.Response:
    """ListFunctionsByCodeSigningConfig: the unqualified ARNs of the functions using it, by name."""
    arn = _path_arn(request)
    store = request.app[CODE_SIGNING]
    if store.get(arn) is None:
        raise not_found(arn)
    settings = request.app[SETTINGS]
    names = store.functions_of(arn)
    page, more = paginate(names, request.query, lambda n: n)
    return json_response({"FunctionArns": [settings.function_arn(n) for n in page], **more})


def _function(request: web.Request) -> str:
    """The function of the path (a name or ARN, unqualified or `$LATEST`); ResourceNotFoundException if missing."""
    ref = parse_function_name(request.match_info["FunctionName"], request.query.get("Qualifier"))
    if ref.qualifier not in (None, LATEST):
        raise InvalidParameterValueException("Code signing configurations apply to a function, not to a version or "
                                             f"alias: {request.match_info['FunctionName']}")  # fmt: skip
    request.app[REGISTRY].get(ref.name)  # Function not found: ARN
    return ref.name


async def put_function_config(request: web.Request) -> web.Response:
    """PutFunctionCodeSigningConfig: the function's next deployments are checked against the configuration (code it
    runs already keeps running, as on AWS)."""
    body = await read_json_object(request, operation="PutFunctionCodeSigningConfig")
    check_members(body, frozenset({"CodeSigningConfigArn", "FunctionName"}), "PutFunctionCodeSigningConfigRequest")
    arn = opt(body, "CodeSigningConfigArn", str)
    if arn is None:
        raise ValidationException(
            "1 validation error detected: Value null at 'codeSigningConfigArn' failed to satisfy constraint: "
            "Member must not be null"
        )
    check_config_arn(arn)
    if request.app[CODE_SIGNING].get(arn) is None:  # the configuration first, then the function (LocalStack's order)
        raise config_not_found(arn)
    name = _function(request)
    if not await asyncio.to_thread(request.app[CODE_SIGNING].attach, name, arn):  # deleted meanwhile
        raise config_not_found(arn)
    if not request.app[REGISTRY].exists(name, LATEST):  # deleted meanwhile: its mapping must not outlive it
        await asyncio.to_thread(request.app[CODE_SIGNING].detach, name)
        raise ResourceNotFoundException(f"Function not found: {request.app[SETTINGS].function_arn(name)}")
    log.info("function %s uses code signing configuration %s", name, arn)
    return json_response({"CodeSigningConfigArn": arn, "FunctionName": name})


async def get_function_config(request: web.Request) -> web.Response:
    name = _function(request)
    config = request.app[CODE_SIGNING].of_function(name)
    if config is None:
        return json_response({})
    return json_response({"CodeSigningConfigArn": config.arn, "FunctionName": name})


async def delete_function_config(request: web.Request) -> web.Response:
    """DeleteFunctionCodeSigningConfig: 204; the function's deployments are no longer checked."""
    name = _function(request)
    await asyncio.to_thread(request.app[CODE_SIGNING].detach, name)
    return web.Response(status=204)
