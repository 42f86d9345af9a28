"""Event source mappings: Create/Get/Update/Delete/ListEventSourceMappings (2015-03-31).

A mapping reads batches from a broker (self-managed Kafka, Amazon MQ for RabbitMQ, SQS; `mapping_params` says what
each takes) and invokes its function synchronously (`gateway.events.pollers.runner`). Create answers 202 with
State `Creating`; the runner, told by the store's `on_change`, moves it to `Enabled` (or `Disabled`) once its poller
runs (or is stopped). Update answers 202 with `Updating`, `Enabling` or `Disabling`; Delete 202 with `Deleting`, and
the poller stops. Get and List show the state and `StateTransitionReason` / `LastProcessingResult` as the runner
last wrote them (e.g. why a broker cannot be reached).

Concurrency model: handlers run on the event loop; reads use the store's cache, writes run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuids
from typing import Any

from aiohttp import web

from gateway.api.events import mapping_params
from gateway.api.home import check_request
from gateway.api.http import json_response, read_json_object
from gateway.api.paging import paginate
from gateway.app_keys import MAPPINGS, REGISTRY, SETTINGS
from gateway.errors import (
    InvalidParameterValueException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from gateway.settings import Settings
from gateway.store.mappings import KAFKA, Mapping, Mappings
from gateway.store.names import parse_function_name
from gateway.store.registry import Registry

log = logging.getLogger("gateway.api.events.event_source_mappings")

PATH = "/2015-03-31/event-source-mappings"
#: one page of List holds at most this many (MaxItems 1..10000 per the model)
PAGE_CAP = 100
_UUID_LENGTH = 36


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, create_event_source_mapping)
    app.router.add_post(PATH + "/", create_event_source_mapping)
    app.router.add_get(PATH, list_event_source_mappings)
    app.router.add_get(PATH + "/", list_event_source_mappings)
    app.router.add_get(PATH + "/{UUID}", get_event_source_mapping)
    app.router.add_put(PATH + "/{UUID}", update_event_source_mapping)
    app.router.add_delete(PATH + "/{UUID}", delete_event_source_mapping)


def mapping_arn(settings: Settings, uuid: str) -> str:
    return f"arn:{settings.partition}:lambda:{settings.region}:{settings.account_id}:event-source-mapping:{uuid}"


def to_wire(settings: Settings, m: Mapping) -> dict[str, Any]:
    """An EventSourceMappingConfiguration: the members this source takes (stream settings only for Kafka)."""
    out: dict[str, Any] = {
        "UUID": m.uuid,
        "BatchSize": m.batch_size,
        "MaximumBatchingWindowInSeconds": m.batching_window if m.batching_window is not None else int(m.window),
        "FunctionArn": settings.function_arn(m.function, m.qualifier),
        "LastModified": round(m.last_modified, 3),
        "LastProcessingResult": m.last_processing_result,
        "State": m.state,
        "StateTransitionReason": m.state_transition_reason,
        "FunctionResponseTypes": list(m.function_response_types),
        "EventSourceMappingArn": mapping_arn(settings, m.uuid),
    }
    if m.event_source_arn:
        out["EventSourceArn"] = m.event_source_arn
    if m.filters:
        out["FilterCriteria"] = {"Filters": [{"Pattern": p} for p in m.filters]}
    if m.topics:
        out["Topics"] = list(m.topics)
    if m.queues:
        out["Queues"] = list(m.queues)
    if m.source_access:
        out["SourceAccessConfigurations"] = [dict(s) for s in m.source_access]
    if m.maximum_concurrency:
        out["ScalingConfig"] = {"MaximumConcurrency": m.maximum_concurrency}
    if m.kind == KAFKA:
        out["StartingPosition"] = m.starting_position
        if m.starting_position_timestamp is not None:
            out["StartingPositionTimestamp"] = m.starting_position_timestamp
        out["SelfManagedEventSource"] = {"Endpoints": {k: list(v) for k, v in m.self_managed.items()}}
        out["SelfManagedKafkaEventSourceConfig"] = {"ConsumerGroupId": m.group_id}
        out["MaximumRetryAttempts"] = m.maximum_retry_attempts
        out["MaximumRecordAgeInSeconds"] = m.maximum_record_age
        out["BisectBatchOnFunctionError"] = m.bisect
        out["DestinationConfig"] = {"OnFailure": {"Destination": m.on_failure} if m.on_failure else {}}
    return out


def _function(registry: Registry, settings: Settings, raw: str) -> tuple[str, str | None]:
    """(name, qualifier) of a FunctionName in any of its forms; the function (version, alias) must exist."""
    ref = parse_function_name(raw)
    try:
        registry.resolve(ref.name, ref.qualifier)
    except ResourceNotFoundException:
        raise ResourceNotFoundException(
            f"Function not found: {settings.function_arn(ref.name, ref.qualifier)}"
        ) from None
    return ref.name, ref.qualifier


def _uuid(request: web.Request) -> str:
    raw = request.match_info["UUID"]
    if len(raw) != _UUID_LENGTH:
        raise InvalidParameterValueException(f"Invalid UUID: {raw[:100]}")
    return raw


def _not_found(uuid: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"The resource you requested does not exist. (Service: Lambda; UUID: {uuid})")


def _mapping(store: Mappings, uuid: str) -> Mapping:
    found = store.get(uuid)
    if found is None:
        raise _not_found(uuid)
    return found


def _source_key(m: Mapping) -> tuple[Any, ...]:
    """What makes two mappings read the same source for the same function (Lambda refuses a second one)."""
    servers = tuple(sorted(m.self_managed.get(mapping_params.KAFKA_SERVERS, ())))
    return (m.kind, m.event_source_arn, m.topics, m.queues, servers, m.function, m.qualifier)


def _check_unique(store: Mappings, mapping: Mapping) -> None:
    for other in store.all():
        if other.uuid != mapping.uuid and _source_key(other) == _source_key(mapping):
            source = mapping.event_source_arn or ",".join(mapping.topics)
            raise ResourceConflictException(
                f'An event source mapping with event source ("{source}") and function ("{mapping.function}") '
                f"already exists. Please update or delete the existing mapping with UUID {other.uuid}"
            )


#: serializes Creates (one event loop per gateway: an asyncio lock is enough)
_CREATING = asyncio.Lock()


async def create_event_source_mapping(request: web.Request) -> web.Response:
    """CreateEventSourceMapping: 202 with the mapping in state Creating."""
    settings, registry, store = request.app[SETTINGS], request.app[REGISTRY], request.app[MAPPINGS]
    body = await read_json_object(request)
    requested = mapping_params.parse(body, mapping_params.CREATE_MEMBERS, "CreateEventSourceMappingRequest")
    if requested.function is None:
        raise InvalidParameterValueException("FunctionName is required.")
    check_request(request, settings, requested.function)
    source = mapping_params.source(body, settings)
    function, qualifier = _function(registry, settings, requested.function)
    mapping = mapping_params.new_mapping(
        str(uuids.uuid4()), function, qualifier, source, requested, settings, time.time()
    )
    async with _CREATING:  # the check and the write together: two Creates for one source and function cannot both pass
        _check_unique(store, mapping)
        await asyncio.to_thread(store.put, mapping)
    log.info("event source mapping %s created: %s -> %s", mapping.uuid, mapping.kind, function)
    if function not in registry:  # deleted while it was written: follow() may have run before the write
        await asyncio.to_thread(store.forget, function)
        raise ResourceNotFoundException(f"Function not found: {settings.function_arn(function, qualifier)}")
    return json_response(to_wire(settings, mapping), 202)


async def update_event_source_mapping(request: web.Request) -> web.Response:
    """UpdateEventSourceMapping: 202 with the mapping in state Updating, Enabling or Disabling."""
    settings, registry, store = request.app[SETTINGS], request.app[REGISTRY], request.app[MAPPINGS]
    uuid = _uuid(request)
    body = await read_json_object(request)
    requested = mapping_params.parse(body, mapping_params.UPDATE_MEMBERS, "UpdateEventSourceMappingRequest")
    _mapping(store, uuid)
    if requested.function is not None:
        check_request(request, settings, requested.function)
    function = None if requested.function is None else _function(registry, settings, requested.function)
    now = time.time()

    def change(current: Mapping) -> Mapping:
        new = mapping_params.apply(current, requested, function, settings, now)
        _check_unique(store, new)
        return new

    updated = await asyncio.to_thread(store.update, uuid, change)
    if updated is None:
        raise _not_found(uuid)
    log.info("event source mapping %s updated (%s)", uuid, updated.state)
    return json_response(to_wire(settings, updated), 202)


async def get_event_source_mapping(request: web.Request) -> web.Response:
    settings, store = request.app[SETTINGS], request.app[MAPPINGS]
    return json_response(to_wire(settings, _mapping(store, _uuid(request))))


async def delete_event_source_mapping(request: web.Request) -> web.Response:
    """DeleteEventSourceMapping: 202 with the mapping in state Deleting; its poller stops."""
    settings, store = request.app[SETTINGS], request.app[MAPPINGS]
    uuid = _uuid(request)
    gone = await asyncio.to_thread(store.delete, uuid)
    if gone is None:
        raise _not_found(uuid)
    log.info("event source mapping %s deleted", uuid)
    return json_response(to_wire(settings, gone), 202)


async def list_event_source_mappings(request: web.Request) -> web.Response:
    """ListEventSourceMappings: by EventSourceArn and/or FunctionName (a name matches every qualifier of the
    function, a qualified name or ARN only that one), pages by UUID."""
    settings, store = request.app[SETTINGS], request.app[MAPPINGS]
    mappings = store.all()
    if (arn := request.query.get("EventSourceArn")) is not None:
        mappings = [m for m in mappings if m.event_source_arn == arn]
    if (raw := request.query.get("FunctionName")) is not None:
        check_request(request, settings, raw)
        ref = parse_function_name(raw)
        mappings = [
            m for m in mappings if m.function == ref.name and (ref.qualifier is None or m.qualifier == ref.qualifier)
        ]
    page, more = paginate(mappings, request.query, lambda m: m.uuid, cap=PAGE_CAP)
    return json_response({"EventSourceMappings": [to_wire(settings, m) for m in page], **more})
