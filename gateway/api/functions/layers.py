"""Layer routes of the Lambda API (2018-10-31): publish, get, get by ARN, list, list versions, delete.

Handlers validate in Lambda's order (JSON shape → InvalidRequestContentException, the model's
constraints together → ValidationException, then the service's rules), and run the blocking part of a
publish (base64 or the S3 fetch, SHA-256, unzip, SQLite) in a worker thread. Reads come from the layer store's cache.
`Content.Location` points at a route of this gateway that serves the zip (not a Lambda operation).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway.api.functions.code_params import ARCHITECTURES, check_s3_members, code_source
from gateway.api.functions.packages import with_package
from gateway.api.http import json_response, read_json_object
from gateway.api.params import Violations, check_members, opt, shape_error
from gateway.app_keys import CODESTORE, LAYERS, POLICIES, SETTINGS, SIGNING_PROFILES
from gateway.errors import InvalidParameterValueException, ResourceNotFoundException
from gateway.store import signatures
from gateway.store.layers import LAYER_NAME_PATTERN, LAYER_VERSION_ARN_PATTERN, NOT_FOUND, LayerVersion

PREFIX = "/2018-10-31/layers"
#: ListLayers / ListLayerVersions return at most this many items a page (the model's MaxItems bound)
LIST_PAGE_LIMIT = 50
#: the botocore model's Runtime enum: what CompatibleRuntimes may name (not only what this gateway runs)
RUNTIMES = (
    "nodejs", "nodejs4.3", "nodejs6.10", "nodejs8.10", "nodejs10.x", "nodejs12.x", "nodejs14.x", "nodejs16.x",
    "java8", "java8.al2", "java11", "python2.7", "python3.6", "python3.7", "python3.8", "python3.9",
    "dotnetcore1.0", "dotnetcore2.0", "dotnetcore2.1", "dotnetcore3.1", "dotnet6", "dotnet8", "nodejs4.3-edge",
    "go1.x", "ruby2.5", "ruby2.7", "provided", "provided.al2", "nodejs18.x", "python3.10", "java17", "ruby3.2",
    "ruby3.3", "ruby3.4", "python3.11", "nodejs20.x", "provided.al2023", "python3.12", "java21", "python3.13",
    "nodejs22.x", "nodejs24.x", "python3.14", "java25", "dotnet10", "ruby4.0",
)  # fmt: skip

_PUBLISH_MEMBERS = frozenset({"Description", "Content", "CompatibleRuntimes", "LicenseInfo", "CompatibleArchitectures"})
_CONTENT_MEMBERS = frozenset({"S3Bucket", "S3Key", "S3ObjectVersion", "S3ObjectStorageMode", "ZipFile"})
_LAYER_NAME_RE = re.compile(LAYER_NAME_PATTERN)
_VERSION_ARN_RE = re.compile(LAYER_VERSION_ARN_PATTERN)
_RUNTIME_ENUM = "[" + ", ".join(RUNTIMES) + "]"
_ARCH_ENUM = "[" + ", ".join(ARCHITECTURES) + "]"


def add_routes(app: web.Application) -> None:
    """Register the layer operations; `app` must hold LAYERS and CODESTORE."""
    app.router.add_get(PREFIX, list_layers_or_get_by_arn)
    app.router.add_get(PREFIX + "/", list_layers_or_get_by_arn)
    versions = PREFIX + "/{LayerName}/versions"
    app.router.add_post(versions, publish_layer_version)
    app.router.add_get(versions, list_layer_versions)
    app.router.add_get(versions + "/{VersionNumber}", get_layer_version)
    app.router.add_delete(versions + "/{VersionNumber}", delete_layer_version)
    app.router.add_get(versions + "/{VersionNumber}/content-zip", get_layer_version_zip)


# -- parameters ------------------------------------------------------------------------------------


def _layer_name(request: web.Request, v: Violations | None = None) -> str:
    """The LayerName path parameter, checked against the model (a name or a layer ARN)."""
    raw = request.match_info["LayerName"]
    own = v or Violations()
    if len(raw) > 140:
        own.add(raw, "layerName", "Member must have length less than or equal to 140")
    elif not _LAYER_NAME_RE.fullmatch(raw):
        own.add(raw, "layerName", f"Member must satisfy regular expression pattern: {LAYER_NAME_PATTERN}")
    if v is None:
        own.raise_if_any()
    return raw


def _version_number(request: web.Request) -> int:
    raw = request.match_info["VersionNumber"]
    try:
        return int(raw)
    except ValueError:
        raise InvalidParameterValueException(f"Invalid value for VersionNumber: {raw}") from None


def _positive_version(request: web.Request) -> int:
    """GetLayerVersion's and DeleteLayerVersion's number: below 1 is AWS's 400, before the layer is looked up."""
    version = _version_number(request)
    if version < 1:
        raise InvalidParameterValueException("Layer Version Cannot be less than 1")
    return version


def _filters(request: web.Request, v: Violations) -> tuple[str | None, str | None, int]:
    """CompatibleRuntime, CompatibleArchitecture and the page size of a list call."""
    query = request.query
    runtime = query.get("CompatibleRuntime")
    if runtime is not None and runtime not in RUNTIMES:
        v.add(runtime, "compatibleRuntime", f"Member must satisfy enum value set: {_RUNTIME_ENUM}")
    arch = query.get("CompatibleArchitecture")
    if arch is not None and arch not in ARCHITECTURES:
        v.add(arch, "compatibleArchitecture", f"Member must satisfy enum value set: {_ARCH_ENUM}")
    page = LIST_PAGE_LIMIT
    raw_max = query.get("MaxItems")
    if raw_max is not None:
        try:
            page = int(raw_max)
        except ValueError:
            raise InvalidParameterValueException(f"Invalid value for MaxItems: {raw_max}") from None
        if page < 1:
            v.add(page, "maxItems", "Member must have value greater than or equal to 1")
        elif page > LIST_PAGE_LIMIT:
            v.add(page, "maxItems", f"Member must have value less than or equal to {LIST_PAGE_LIMIT}")
    return runtime, arch, page


def _str_list(body: dict[str, Any], key: str) -> list[str] | None:
    items: list[Any] | None = opt(body, key, list)
    if items is not None:
        for item in items:
            if not isinstance(item, str):
                raise shape_error(key, item, str)
    return items


def _enum_list(
    v: Violations, items: list[str] | None, member: str, allowed: Iterable[str], enum: str, most: int
) -> None:
    if items is None:
        return
    shown = "[" + ", ".join(items) + "]"
    if len(items) > most:
        v.add(shown, member, f"Member must have length less than or equal to {most}")
    if any(item not in allowed for item in items):
        v.add(shown, member, f"Member must satisfy constraint: [Member must satisfy enum value set: {enum}]")


# -- handlers --------------------------------------------------------------------------------------


def _location(request: web.Request, lv: LayerVersion) -> str:
    return f"{request.scheme}://{request.host}{PREFIX}/{quote(lv.name, safe='')}/versions/{lv.version}/content-zip"


async def publish_layer_version(request: web.Request) -> web.Response:
    """PublishLayerVersion: 201 with the new version; code as `Content.ZipFile` (base64) or an S3 object
    (`Content.S3Bucket`, `S3Key`, `S3ObjectVersion`: `gateway.api.functions.packages`)."""
    store = request.app[LAYERS]
    body = await read_json_object(request)
    check_members(body, _PUBLISH_MEMBERS, "PublishLayerVersionRequest")
    v = Violations()
    raw_name = _layer_name(request, v)
    content = opt(body, "Content", dict)
    if content is None:
        v.add(None, "content", "Member must not be null")
    else:
        check_members(content, _CONTENT_MEMBERS, "LayerVersionContentInput")
    if content is not None:
        opt(content, "ZipFile", str)
        check_s3_members(content, v, "content.")
    description = opt(body, "Description", str) or ""
    if len(description) > 256:
        v.add(description, "description", "Member must have length less than or equal to 256")
    license_info = opt(body, "LicenseInfo", str)
    if license_info is not None and len(license_info) > 512:
        v.add(license_info, "licenseInfo", "Member must have length less than or equal to 512")
    runtimes = _str_list(body, "CompatibleRuntimes")
    _enum_list(v, runtimes, "compatibleRuntimes", RUNTIMES, _RUNTIME_ENUM, 15)
    archs = _str_list(body, "CompatibleArchitectures")
    _enum_list(v, archs, "compatibleArchitectures", ARCHITECTURES, _ARCH_ENUM, 2)
    v.raise_if_any()
    assert content is not None

    name = store.local_name(raw_name)
    if name is None:
        raise InvalidParameterValueException(
            f"Layer {raw_name} is not in this gateway's region ({store.settings.region}) and account "
            f"({store.settings.account_id})."
        )
    source = code_source(content, "Content.ZipFile", layer=True)

    profiles = request.app[SIGNING_PROFILES]

    def publish(data: bytes) -> LayerVersion:
        sig = signatures.attested(data, profiles)
        return store.publish(
            name,
            data,
            description=description,
            compatible_runtimes=tuple(runtimes or ()),
            compatible_architectures=tuple(archs or ()),
            license_info=license_info,
            direct=not source.in_s3,
            signed_by=None if sig is None else (sig.profile, sig.job_arn()),
        )

    lv = await with_package(request.app[SETTINGS], source, publish)
    return json_response(lv.to_wire(_location(request, lv)), status=201)


def _get(request: web.Request) -> LayerVersion:
    store = request.app[LAYERS]
    name = store.local_name(_layer_name(request))
    version = _positive_version(request)
    if name is None:
        raise ResourceNotFoundException(NOT_FOUND)
    return store.get(name, version)


async def get_layer_version(request: web.Request) -> web.Response:
    """GetLayerVersion: a live version; 404 ResourceNotFoundException once deleted."""
    lv = _get(request)
    return json_response(lv.to_wire(_location(request, lv)))


async def get_layer_version_zip(request: web.Request) -> web.StreamResponse:
    """The layer's zip as published: the URL in `Content.Location` (not a Lambda operation)."""
    lv = _get(request)
    path = request.app[CODESTORE].zip_path(lv.code_sha256)
    if not path.is_file():
        raise ResourceNotFoundException(f"Code of layer version {lv.arn} is missing from the store")
    return web.FileResponse(path, headers={"Content-Type": "application/zip"})


async def list_layers_or_get_by_arn(request: web.Request) -> web.Response:
    """GET /2018-10-31/layers: GetLayerVersionByArn with `?find=LayerVersion&Arn=`, else ListLayers."""
    if request.query.get("find") == "LayerVersion":
        return _get_by_arn(request)
    return _list_layers(request)


def _get_by_arn(request: web.Request) -> web.Response:
    arn = request.query.get("Arn")
    v = Violations()
    if arn is None:
        v.add(None, "arn", "Member must not be null")
    elif len(arn) > 140:
        v.add(arn, "arn", "Member must have length less than or equal to 140")
    elif not _VERSION_ARN_RE.fullmatch(arn):
        v.add(arn, "arn", f"Member must satisfy regular expression pattern: {LAYER_VERSION_ARN_PATTERN}")
    v.raise_if_any()
    assert arn is not None
    lv = request.app[LAYERS].get_by_arn(arn)
    return json_response(lv.to_wire(_location(request, lv)))


def _list_layers(request: web.Request) -> web.Response:
    """ListLayers: per layer (sorted by name) its newest version passing the filters; paged by name."""
    store = request.app[LAYERS]
    v = Violations()
    runtime, arch, page = _filters(request, v)
    v.raise_if_any()
    items: list[dict[str, Any]] = []
    more = False
    for lv in store.list_latest(runtime, arch, after=request.query.get("Marker") or None):
        if len(items) == page:
            more = True
            break
        items.append({"LayerName": lv.name, "LayerArn": lv.layer_arn, "LatestMatchingVersion": lv.to_list_item()})
    out: dict[str, Any] = {"Layers": items}
    if more:
        out["NextMarker"] = items[-1]["LayerName"]
    return json_response(out)


async def list_layer_versions(request: web.Request) -> web.Response:
    """ListLayerVersions: live versions passing the filters, newest first; empty for an unknown layer.

    `NextMarker` is the last version number returned; the next page holds the older ones.
    """
    store = request.app[LAYERS]
    v = Violations()
    raw_name = _layer_name(request, v)
    runtime, arch, page = _filters(request, v)
    v.raise_if_any()
    marker = request.query.get("Marker") or None
    below: int | None = None
    if marker is not None:
        try:
            below = int(marker)
        except ValueError:
            raise InvalidParameterValueException(f"Invalid value for Marker: {marker}") from None
    name = store.local_name(raw_name)
    versions = store.list_versions(name, runtime, arch) if name is not None else []
    if below is not None:
        versions = [lv for lv in versions if lv.version < below]
    out: dict[str, Any] = {"LayerVersions": [lv.to_list_item() for lv in versions[:page]]}
    if len(versions) > page:
        out["NextMarker"] = str(versions[page - 1].version)
    return json_response(out)


async def delete_layer_version(request: web.Request) -> web.Response:
    """DeleteLayerVersion: 204, also when there is no such version (as on AWS)."""
    store = request.app[LAYERS]
    name = store.local_name(_layer_name(request))
    version = _positive_version(request)
    if name is not None:
        await asyncio.to_thread(store.delete, name, version)
        await asyncio.to_thread(request.app[POLICIES].forget_layer, name, version)  # its policy goes with it
    return web.Response(status=204)
