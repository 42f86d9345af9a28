"""Function management routes of the Lambda API (2015-03-31): create, get, list, update, delete.

Handlers parse and validate (`gateway.api.functions.function_params`), do the CPU-heavy part of a code upload
(base64, SHA-256, unzip) in a worker thread, and change the registry synchronously on the event loop,
so each registry write is atomic with respect to other requests. Errors are `LambdaError`s rendered by
`gateway.api.http.error_middleware`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from gateway import architectures
from gateway.api.functions.code_params import CodeSource, parse_code_update
from gateway.api.functions.file_system_params import check_file_systems
from gateway.api.functions.function_params import ConfigChanges, check_dead_letter, parse_config_update, parse_create
from gateway.api.functions.packages import with_package
from gateway.api.functions.signing_checks import (
    attach_outcome,
    check_added_layers,
    check_layers,
    deployment_check,
    function_check,
    guard,
    requested_config,
    signed,
    still_current,
)
from gateway.api.home import check_request
from gateway.api.http import json_response, read_json_object
from gateway.api.paging import page_size, paginate
from gateway.app_keys import CATALOG, CODE_SIGNING, CODESTORE, LAYERS, REGISTRY, SETTINGS, SIGNING_PROFILES
from gateway.catalog import Catalog
from gateway.errors import (
    AccessDeniedException,
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
    ValidationException,
)
from gateway.settings import Settings
from gateway.store.code import CodeInfo, CodeStore
from gateway.store.code_signing import CodeSigningConfig, CodeSigningConfigs
from gateway.store.layers import LayerStore
from gateway.store.names import FunctionRef, parse_function_name
from gateway.store.records import LATEST, FunctionConfig, new_revision_id, now_last_modified
from gateway.store.registry import REVISION_MISMATCH, Registry
from gateway.store.signatures import SigningProfiles

log = logging.getLogger("gateway.api.functions.functions")

PREFIX = "/2015-03-31/functions"
#: ListFunctions returns at most this many functions a page, whatever MaxItems asks for
LIST_PAGE_LIMIT = 50


def add_routes(app: web.Application) -> None:
    """Register the function-management operations; `app` must hold SETTINGS, REGISTRY and CODESTORE."""
    app.router.add_post(PREFIX, create_function)
    app.router.add_post(PREFIX + "/", create_function)
    app.router.add_get(PREFIX, list_functions)
    app.router.add_get(PREFIX + "/", list_functions)
    app.router.add_get(PREFIX + "/{FunctionName}", get_function)
    app.router.add_delete(PREFIX + "/{FunctionName}", delete_function)
    app.router.add_get(PREFIX + "/{FunctionName}/configuration", get_function_configuration)
    app.router.add_put(PREFIX + "/{FunctionName}/configuration", update_function_configuration)
    app.router.add_put(PREFIX + "/{FunctionName}/code", update_function_code)
    app.router.add_get(PREFIX + "/{FunctionName}/code-zip", get_function_code_zip)


def _ref(request: web.Request) -> FunctionRef:
    return parse_function_name(request.match_info["FunctionName"], request.query.get("Qualifier"))


def _latest_only(ref: FunctionRef, operation: str) -> str:
    """The function name of an update, which may only address `$LATEST`."""
    if ref.qualifier not in (None, LATEST):
        raise InvalidParameterValueException(
            f"{operation} changes the $LATEST version only; a qualifier of {ref.qualifier} is not allowed."
        )
    return ref.name


async def _store_code(
    codestore: CodeStore,
    source: CodeSource,
    settings: Settings,
    *,
    dry_run: bool = False,
    check: Callable[[bytes], None] | None = None,
) -> CodeInfo:
    """Get (decode, or fetch from S3: `packages.with_package`), hash, validate and (unless `dry_run`) store a
    package, off the event loop. `check` (code signing's, gateway.api.functions.signing_checks) sees the package's
    bytes first, in the worker thread, and may refuse them."""
    direct = not source.in_s3

    def work(data: bytes) -> CodeInfo:
        if check is not None:
            check(data)
        return codestore.check(data, direct=direct) if dry_run else codestore.put(data, direct=direct)

    return await with_package(settings, source, work)


def check_role(changes: ConfigChanges, settings: Settings) -> None:
    """A role of another account than the gateway's: AWS refuses to pass it (AccessDeniedException, 403, "Cross-account
    pass role is not allowed."; LocalStack's recorded AWS answer). The role's partition and path are not checked."""
    role: str | None = changes.fields.get("role")
    if role is not None and role.split(":")[4:5] != [settings.account_id]:
        raise AccessDeniedException("Cross-account pass role is not allowed.")


def _resolved(changes: ConfigChanges, layer_store: LayerStore) -> dict[str, Any]:
    """The request's field changes, with layer version ARNs resolved to layers and their code."""
    fields = dict(changes.fields)
    arns = fields.pop("layer_arns", None)
    if arns is not None:
        fields["layers"], fields["layer_dirs"] = layer_store.resolve(tuple(arns))
    return fields


def _apply(config: FunctionConfig, fields: dict[str, Any], changes: ConfigChanges) -> FunctionConfig:
    """`config` with the changes; an extra set to None (an emptied DeadLetterConfig) is removed."""
    extra = {k: v for k, v in {**config.extra, **changes.extra}.items() if v is not None}
    return dataclasses.replace(config, **fields, extra=extra)


async def _check_unzipped_size(config: FunctionConfig, codestore: CodeStore, layer_store: LayerStore) -> None:
    """Lambda's 250 MB limit counts the function's code and its layers together (blocking: in a thread)."""

    def check() -> None:
        layer_store.check_unzipped_size(codestore.unzipped_size(config.code_sha256), config.layers)

    await asyncio.to_thread(check)


#: fields that make two configurations of one function equivalent (identity and bookkeeping excluded)
_COMPARED = ("runtime", "handler", "role", "code_sha256", "description", "timeout", "memory_size",
             "environment", "environment_given", "ephemeral_storage", "architectures", "extra", "tags",
             "layers")  # fmt: skip


class Deployer:
    """Creates functions from CreateFunction request bodies: for the API and for start-up deployment."""

    def __init__(
        self, settings: Settings, catalog: Catalog, registry: Registry, codestore: CodeStore, layer_store: LayerStore,
        signing: CodeSigningConfigs | None = None, profiles: SigningProfiles | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.catalog = catalog
        self.registry = registry
        self.codestore = codestore
        self.layer_store = layer_store
        self.signing = signing
        self.profiles = profiles or SigningProfiles()

    @classmethod
    def from_app(cls, app: web.Application) -> Deployer:
        return cls(app[SETTINGS], app[CATALOG], app[REGISTRY], app[CODESTORE], app[LAYERS], app[CODE_SIGNING],
                   app[SIGNING_PROFILES])  # fmt: skip

    async def _build(
        self, body: dict[str, Any], *, replacing: bool = False
    ) -> tuple[FunctionConfig, CodeSigningConfig | None]:
        """Validate a body, store its code and return the configuration it describes (not registered), with the code
        signing configuration its code and layers were checked against (None: unchecked)."""
        spec = parse_create(body, self.catalog)
        check_role(spec.config, self.settings)
        check_dead_letter(spec.config, self.settings)
        check_file_systems(spec.config.extra, self.settings)
        if spec.name in self.registry and not replacing:  # fail fast, before the upload is unzipped
            raise ResourceConflictException(f"Function already exist: {spec.name}")
        fields = _resolved(spec.config, self.layer_store)
        csc = self._signing_config(body, spec.name, replacing)
        await check_layers(fields.get("layers", ()), csc, self.profiles, self.codestore)
        check = deployment_check(csc, self.profiles, self.settings.function_arn(spec.name))
        code = await _store_code(self.codestore, spec.code, self.settings, check=check)
        base = FunctionConfig(
            name=spec.name,
            arn=self.settings.function_arn(spec.name),
            runtime="",
            handler="",
            role="",
            code_sha256=code.sha256_hex,
            code_size=code.size,
            code_dir=code.path,
            last_modified=now_last_modified(),
            revision_id=new_revision_id(),
            tags=spec.tags,
        )
        config = signed(_apply(base, fields, spec.config), check)
        await _check_unzipped_size(config, self.codestore, self.layer_store)
        return config, csc

    def _signing_config(self, body: dict[str, Any], name: str, replacing: bool) -> CodeSigningConfig | None:
        """The code signing configuration the body names; when it names none and replaces a function (start-up
        deployment), the one that function uses."""
        if self.signing is None:
            return None
        named = requested_config(body, self.signing)
        return named if named is not None or not replacing else self.signing.of_function(name)

    def _guard(self, name: str, csc: CodeSigningConfig | None) -> Callable[[], None] | None:
        """The registry guard of a deployment checked against `csc` (signing_checks.still_current)."""
        signing = self.signing
        return None if signing is None else lambda: still_current(signing, name, csc)

    async def _attach_signing(self, body: dict[str, Any], name: str) -> None:
        """Start-up deployment: the function uses the configuration its (validated) body names from now on (before
        its update, which is checked against it). A configuration deleted since its package was checked is only
        logged."""
        arn = body.get("CodeSigningConfigArn")
        if self.signing is None or not isinstance(arn, str) or not arn:
            return
        if not await asyncio.to_thread(self.signing.attach, name, arn):
            log.warning("function %s: its code signing configuration %s was deleted meanwhile", name, arn)

    async def create(self, body: dict[str, Any]) -> FunctionConfig:
        """CreateFunction (and with Publish, PublishVersion): the new `$LATEST`, or version 1 if published.

        Raises ResourceConflictException if the name is taken, or a validation error.
        """
        built, csc = await self._build(body)
        if csc is not None and self.signing is not None:  # first: the function never exists without it
            outcome = await asyncio.to_thread(self.signing.attach_new, built.name, csc, self.registry.__contains__)
            attach_outcome(outcome, built.name, csc)
        try:
            config = await asyncio.to_thread(
                self.registry.create, built, publish=body.get("Publish") is True, guard=self._guard(built.name, csc)
            )
        except Exception:
            if csc is not None and self.signing is not None:  # attach_new made the mapping: it is ours to undo
                await asyncio.to_thread(self.signing.detach, built.name)
            raise
        log.info("created function %s (code %s)", config.name, config.code_sha256)
        return config

    async def create_or_update(self, body: dict[str, Any]) -> str:
        """Make the function match a complete CreateFunction body: "created", "updated" or "unchanged".

        Members missing from `body` take their defaults, as on creation.
        """
        name = parse_create(body, self.catalog).name
        if name not in self.registry:
            await self.create(body)
            return "created"
        desired, csc = await self._build(body, replacing=True)
        await self._attach_signing(body, name)
        current = self.registry.get(name)
        if all(getattr(current, f) == getattr(desired, f) for f in _COMPARED):
            self.codestore.adopt(desired.code_sha256)  # the stored package is the one registered: no lease to keep
            return "unchanged"
        changes = {f: getattr(desired, f) for f in _COMPARED} | {"code_size": desired.code_size,
                                                                 "code_dir": desired.code_dir,
                                                                 "layer_dirs": desired.layer_dirs}  # fmt: skip
        guard = self._guard(name, csc)

        def change(c: FunctionConfig) -> FunctionConfig:
            if guard is not None:
                guard()
            return dataclasses.replace(c, **changes)

        await asyncio.to_thread(self.registry.update, name, change)
        return "updated"


# -- handlers ----------------------------------------------------------------------------------------


def configuration(app: web.Application, config: FunctionConfig) -> dict[str, Any]:
    """A FunctionConfiguration as the API returns it, with what the catalogue says of its runtime today."""
    return config.to_wire(app[CATALOG].note(config.runtime))


async def create_function(request: web.Request) -> web.Response:
    """CreateFunction: 201 with the new FunctionConfiguration. With Publish, that of version 1 under the function's
    unqualified ARN (AWS answers `FunctionArn` unqualified and `Version: "1"`: the ARN a caller keeps, and hands to
    DeleteFunction, names the function, not its version 1)."""
    body = await read_json_object(request, operation="CreateFunction")
    if isinstance(raw := body.get("FunctionName"), str):
        check_request(request, request.app[SETTINGS], raw, "CreateFunction")
    config = await Deployer.from_app(request.app).create(body)
    wire = configuration(request.app, config)
    wire["FunctionArn"] = config.arn
    return json_response(wire, status=201)


async def list_functions(request: web.Request) -> web.Response:
    """ListFunctions: pages of at most 50, sorted by name; `NextMarker` when more follow."""
    registry = request.app[REGISTRY]
    query = request.query
    page = page_size(query, LIST_PAGE_LIMIT)
    version = query.get("FunctionVersion")
    if version is not None and version != "ALL":
        raise ValidationException(
            f"1 validation error detected: Value '{version}' at 'functionVersion' failed to satisfy "
            "constraint: Member must satisfy enum value set: [ALL]"
        )
    if version == "ALL":
        return json_response(_list_all_versions(request))
    configs, more = registry.list_page(query.get("Marker") or None, page)
    out: dict[str, Any] = {"Functions": [list_item(request.app, c) for c in configs]}
    if more and configs:
        out["NextMarker"] = configs[-1].name
    return json_response(out)


def _list_all_versions(request: web.Request) -> dict[str, Any]:
    """ListFunctions with FunctionVersion=ALL: every function's `$LATEST` and published versions, each with its
    qualified ARN (`$LATEST` too), by name then version; the marker is the last item's `name:version`."""
    registry = request.app[REGISTRY]
    items: list[FunctionConfig] = []
    for config in registry.list():
        try:
            items += registry.versions(config.name)
        except ResourceNotFoundException:  # deleted (by a worker thread) since `list()`: it is not listed
            continue

    def order(key: str) -> tuple[str, int]:
        name, _, version = key.rpartition(":")
        return name, -1 if version == LATEST else int(version)

    page, more = paginate(items, request.query, lambda c: f"{c.name}:{c.version}", order, LIST_PAGE_LIMIT)
    wires = [list_item(request.app, c) for c in page]
    for wire in wires:
        if wire["Version"] == LATEST:
            wire["FunctionArn"] += ":" + LATEST
    return {"Functions": wires, **more}


#: what AWS leaves out of a FunctionConfiguration in ListFunctions and ListVersionsByFunction (LocalStack's
#: recorded AWS responses: its `map_to_list_response`)
_NOT_LISTED = ("State", "StateReason", "StateReasonCode", "LastUpdateStatus", "LastUpdateStatusReason",
               "LastUpdateStatusReasonCode", "RuntimeVersionConfig")  # fmt: skip


def list_item(app: web.Application, config: FunctionConfig) -> dict[str, Any]:
    """A FunctionConfiguration as the List operations show it: without state and runtime version."""
    wire = configuration(app, config)
    for key in _NOT_LISTED:
        wire.pop(key, None)
    return wire


async def get_function(request: web.Request) -> web.Response:
    """GetFunction: {Configuration, Code{RepositoryType, Location}, Tags (when any), Concurrency (when reserved)}."""
    ref = _ref(request)
    config = request.app[REGISTRY].resolve(ref.name, ref.qualifier)
    location = f"{request.scheme}://{request.host}{PREFIX}/{quote(config.name, safe='')}/code-zip"
    if config.version != LATEST:
        location += f"?Qualifier={quote(config.version, safe='')}"
    registry = request.app[REGISTRY]
    out: dict[str, Any] = {
        "Configuration": _wire(request, ref, config),
        "Code": {"RepositoryType": "S3", "Location": location},
    }
    if tags := registry.get(ref.name).tags:  # AWS leaves Tags out for an untagged function
        out["Tags"] = dict(tags)
    reserved = registry.reserved_concurrency(ref.name)
    if reserved is not None:
        out["Concurrency"] = {"ReservedConcurrentExecutions": reserved}
    return json_response(out)


async def get_function_configuration(request: web.Request) -> web.Response:
    """GetFunctionConfiguration: the FunctionConfiguration of `$LATEST` or the given qualifier."""
    ref = _ref(request)
    return json_response(_wire(request, ref, request.app[REGISTRY].resolve(ref.name, ref.qualifier)))


def _wire(request: web.Request, ref: FunctionRef, config: FunctionConfig) -> dict[str, Any]:
    """FunctionConfiguration as asked for: qualified by the qualifier of the request (an alias's ARN for an alias)."""
    wire = configuration(request.app, config)
    if ref.qualifier is not None:
        wire["FunctionArn"] = request.app[SETTINGS].function_arn(ref.name, ref.qualifier)
    return wire


async def get_function_code_zip(request: web.Request) -> web.StreamResponse:
    """The package as uploaded: the URL GetFunction returns as `Code.Location` (not a Lambda operation)."""
    ref = _ref(request)
    config = request.app[REGISTRY].resolve(ref.name, ref.qualifier)
    path = request.app[CODESTORE].zip_path(config.code_sha256)
    if not path.is_file():
        raise ResourceNotFoundException(f"Code of function {config.qualified_arn} is missing from the store")
    return web.FileResponse(path, headers={"Content-Type": "application/zip"})


async def update_function_code(request: web.Request) -> web.Response:
    """UpdateFunctionCode: new package for `$LATEST`; RevisionId checked; DryRun validates only."""
    registry = request.app[REGISTRY]
    name = _latest_only(_ref(request), "UpdateFunctionCode")
    spec = parse_code_update(await read_json_object(request, operation="UpdateFunctionCode"))
    current = registry.get(name)
    # fail fast, before the upload is unzipped; checked again atomically by registry.update
    if spec.revision_id is not None and spec.revision_id != current.revision_id:
        raise PreconditionFailedException(REVISION_MISMATCH)
    if spec.architectures is not None:
        architectures.check(current.runtime, spec.architectures)
    check = function_check(request.app, name)
    code = await _store_code(
        request.app[CODESTORE], spec.code, request.app[SETTINGS], dry_run=spec.dry_run, check=check
    )
    fields: dict[str, Any] = {"code_sha256": code.sha256_hex, "code_size": code.size, "code_dir": code.path}
    if spec.architectures is not None:
        fields["architectures"] = spec.architectures
    if spec.dry_run:
        dry = signed(dataclasses.replace(registry.get(name), **fields), check)
        return json_response(configuration(request.app, dry))
    await _check_unzipped_size(dataclasses.replace(current, **fields), request.app[CODESTORE], request.app[LAYERS])
    still_checked = guard(request.app, name, check)

    def change(c: FunctionConfig) -> FunctionConfig:
        still_checked()  # the configuration the package was checked against is still the function's
        return signed(dataclasses.replace(c, **fields), check)

    config = await asyncio.to_thread(
        registry.update,
        name,
        change,
        if_revision=spec.revision_id,
        publish=spec.publish,  # the version returned holds exactly this code, whatever runs concurrently
    )
    if current.code_sha256 == code.sha256_hex:  # the same code again: registry.update adopted nothing
        request.app[CODESTORE].adopt(code.sha256_hex)
    log.info("updated code of function %s (code %s)", name, config.code_sha256)
    return json_response(configuration(request.app, config))


async def update_function_configuration(request: web.Request) -> web.Response:
    """UpdateFunctionConfiguration: the members present replace those of `$LATEST`; RevisionId checked."""
    registry = request.app[REGISTRY]
    name = _latest_only(_ref(request), "UpdateFunctionConfiguration")
    body = await read_json_object(request)
    changes = parse_config_update(body, request.app[CATALOG], name)
    check_role(changes, request.app[SETTINGS])
    check_dead_letter(changes, request.app[SETTINGS])
    check_file_systems(changes.extra, request.app[SETTINGS])
    if "runtime" in changes.fields:
        architectures.check(changes.fields["runtime"], registry.get(name).architectures)
    fields = _resolved(changes, request.app[LAYERS])
    still_checked: Callable[[], None] = lambda: None  # noqa: E731 - replaced when layers are checked
    if "layers" in fields:
        new = _apply(registry.get(name), fields, changes)
        still_checked = await check_added_layers(request.app, name, registry.get(name), new)
        await _check_unzipped_size(new, request.app[CODESTORE], request.app[LAYERS])

    def change(c: FunctionConfig) -> FunctionConfig:
        still_checked()  # the layers were checked against the function's configuration of now
        return _apply(c, fields, changes)

    config = await asyncio.to_thread(registry.update, name, change, if_revision=changes.revision_id)
    log.info("updated configuration of function %s", name)
    return json_response(configuration(request.app, config))


async def delete_function(request: web.Request) -> web.Response:
    """DeleteFunction: 204. Without a qualifier the function goes with all its versions."""
    registry = request.app[REGISTRY]
    ref = _ref(request)
    if ref.qualifier == LATEST:
        raise InvalidParameterValueException("$LATEST version cannot be deleted without deleting the function.")
    if ref.qualifier is not None:
        if not ref.qualifier.isdigit():
            raise InvalidParameterValueException("Deletion of aliases is not currently supported.")
        registry.get(ref.name)  # ResourceNotFoundException; a version that does not exist is deleted already
        await asyncio.to_thread(registry.delete_version, ref.name, ref.qualifier)  # gateway.changes follows
        log.info("deleted version %s of function %s", ref.qualifier, ref.name)
        return web.Response(status=204)
    await asyncio.to_thread(registry.delete, ref.name)
    log.info("deleted function %s", ref.name)
    return web.Response(status=204)
