"""Request bodies of Create/UpdateEventSourceMapping: shape, the model's constraints, Lambda's rules. Pure.

Checks run in Lambda's order: the JSON shape (InvalidRequestContentException), the model's constraints reported
together (ValidationException), then the service's rules (InvalidParameterValueException): which source (self-managed
Kafka, an Amazon MQ broker ARN, an SQS queue ARN; others are refused), the settings that source takes, BatchSize
bounds per source, the filter patterns (`gateway.events.filters`), the OnFailure destination
(`gateway.events.targets`).

`Requested` holds what a body sets (None: absent); `new_mapping` makes a Create's `Mapping`, `apply` an Update's.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping as MappingType
from dataclasses import dataclass
from typing import Any

from gateway.api.params import Violations, bounded, check_members, opt
from gateway.errors import InvalidParameterValueException
from gateway.events.filters import Filters
from gateway.events.targets import Service, check_destination
from gateway.settings import Settings
from gateway.store.mappings import (
    CREATING,
    DISABLING,
    ENABLING,
    KAFKA,
    RABBITMQ,
    REPORT_BATCH_ITEM_FAILURES,
    SQS,
    UPDATING,
    Mapping,
)

_COMMON = frozenset(
    {
        "FunctionName", "Enabled", "BatchSize", "FilterCriteria", "MaximumBatchingWindowInSeconds",
        "DestinationConfig", "MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError", "MaximumRetryAttempts",
        "SourceAccessConfigurations", "FunctionResponseTypes", "ScalingConfig", "SelfManagedKafkaEventSourceConfig",
        "KMSKeyArn", "MetricsConfig", "LoggingConfig", "ParallelizationFactor", "TumblingWindowInSeconds",
        "AmazonManagedKafkaEventSourceConfig", "DocumentDBEventSourceConfig", "ProvisionedPollerConfig",
    }
)  # fmt: skip
CREATE_MEMBERS = _COMMON | {
    "EventSourceArn", "StartingPosition", "StartingPositionTimestamp", "Topics", "Queues", "SelfManagedEventSource",
    "Tags",
}  # fmt: skip
UPDATE_MEMBERS = _COMMON
#: members of the model this gateway does not honour: refused when set, rather than accepted and ignored
_UNSUPPORTED = (
    "KMSKeyArn", "MetricsConfig", "LoggingConfig", "ParallelizationFactor", "TumblingWindowInSeconds",
    "AmazonManagedKafkaEventSourceConfig", "DocumentDBEventSourceConfig", "ProvisionedPollerConfig", "Tags",
)  # fmt: skip
#: members only a stream (Kafka here) takes, as on Lambda: SQS and MQ give failures back to the broker
_STREAM_ONLY = ("MaximumRecordAgeInSeconds", "BisectBatchOnFunctionError", "MaximumRetryAttempts", "DestinationConfig")
POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
#: Lambda's defaults and maxima of BatchSize per source
DEFAULT_BATCH = {KAFKA: 100, RABBITMQ: 100, SQS: 10}
MAX_BATCH = {KAFKA: 10000, RABBITMQ: 10000, SQS: 10000}
MAX_FIFO_BATCH = 10
KAFKA_SERVERS = "KAFKA_BOOTSTRAP_SERVERS"
_URI_RE = re.compile(r"[ a-zA-Z0-9-/*:_+=.@-]*")
_SQS_ARN = re.compile(r"arn:aws[a-zA-Z-]*:sqs:[a-z0-9-]+:\d{12}:[a-zA-Z0-9_-]{1,80}(\.fifo)?")
_MQ_ARN = re.compile(r"arn:aws[a-zA-Z-]*:mq:[a-z0-9-]+:\d{12}:broker:[a-zA-Z0-9_-]+:b-[a-f0-9-]+")
_SOURCE_ARN = re.compile(
    r"arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1})?:(\d{12})?:(.*)"
)
SOURCES = "This gateway reads self-managed Apache Kafka (SelfManagedEventSource), Amazon MQ for RabbitMQ and SQS"


@dataclass(frozen=True, slots=True)
class Requested:
    """What a Create or Update body sets; None: absent. Filters/scaling/on_failure: () / 0 / "" clear them."""

    function: str | None = None
    enabled: bool | None = None
    batch_size: int | None = None
    window: int | None = None
    filters: tuple[str, ...] | None = None
    response_types: tuple[str, ...] | None = None
    retries: int | None = None
    record_age: int | None = None
    bisect: bool | None = None
    on_failure: str | None = None
    maximum_concurrency: int | None = None
    source_access: tuple[dict[str, str], ...] | None = None
    consumer_group_id: str | None = None
    given: frozenset[str] = frozenset()


def _invalid(message: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(message)


def parse(body: dict[str, Any], members: frozenset[str], where: str) -> Requested:
    """The members common to Create and Update: shape, then the model's bounds (together), then unsupported ones."""
    check_members(body, members, where)
    v = Violations()
    batch = opt(body, "BatchSize", int)
    bounded(v, batch, "batchSize", 1, 10000)
    window = opt(body, "MaximumBatchingWindowInSeconds", int)
    bounded(v, window, "maximumBatchingWindowInSeconds", 0, 300)
    retries = opt(body, "MaximumRetryAttempts", int)
    bounded(v, retries, "maximumRetryAttempts", -1, 10000)
    age = opt(body, "MaximumRecordAgeInSeconds", int)
    bounded(v, age, "maximumRecordAgeInSeconds", -1, 604800)
    concurrency = None
    if (scaling := opt(body, "ScalingConfig", dict)) is not None:
        check_members(scaling, frozenset({"MaximumConcurrency"}), "ScalingConfig")
        concurrency = opt(scaling, "MaximumConcurrency", int)
        bounded(v, concurrency, "scalingConfig.maximumConcurrency", 2, 1000)
        concurrency = concurrency or 0
    types = opt(body, "FunctionResponseTypes", list)
    if types is not None:
        if len(types) > 1:
            v.add(types, "functionResponseTypes", "Member must have length less than or equal to 1")
        for t in types:
            if t != REPORT_BATCH_ITEM_FAILURES:
                v.add(t, "functionResponseTypes", f"Member must satisfy enum value set: [{REPORT_BATCH_ITEM_FAILURES}]")
    v.raise_if_any()
    for name in _UNSUPPORTED:
        if body.get(name) is not None:
            raise _invalid(f"{name} is not supported by this gateway.")
    return Requested(
        function=opt(body, "FunctionName", str),
        enabled=opt(body, "Enabled", bool),
        batch_size=batch,
        window=window,
        filters=_filters(body),
        response_types=None if types is None else tuple(types),
        retries=retries,
        record_age=age,
        bisect=opt(body, "BisectBatchOnFunctionError", bool),
        on_failure=_on_failure(body),
        maximum_concurrency=concurrency,
        source_access=_source_access(body),
        consumer_group_id=_consumer_group(body),
        given=frozenset(k for k, value in body.items() if value is not None),
    )


def _filters(body: dict[str, Any]) -> tuple[str, ...] | None:
    """FilterCriteria's patterns, each compiled once to refuse a malformed one (InvalidParameterValueException)."""
    criteria = opt(body, "FilterCriteria", dict)
    if criteria is None:
        return None
    check_members(criteria, frozenset({"Filters"}), "FilterCriteria")
    patterns: list[str] = []
    for item in opt(criteria, "Filters", list) or []:
        if not isinstance(item, dict):
            raise _invalid('Each filter of FilterCriteria is {"Pattern": "<JSON>"}.')
        check_members(item, frozenset({"Pattern"}), "Filter")
        patterns.append(opt(item, "Pattern", str) or "")
    Filters.compile(patterns)
    return tuple(patterns)


def _on_failure(body: dict[str, Any]) -> str | None:
    """DestinationConfig.OnFailure.Destination ("" when the config clears it); OnSuccess is refused."""
    config = opt(body, "DestinationConfig", dict)
    if config is None:
        return None
    check_members(config, frozenset({"OnSuccess", "OnFailure"}), "DestinationConfig")
    if (opt(config, "OnSuccess", dict) or {}).get("Destination"):
        raise _invalid("Unsupported DestinationConfig parameter for this event source mapping: OnSuccess.")
    inner = opt(config, "OnFailure", dict) or {}
    check_members(inner, frozenset({"Destination"}), "OnFailure")
    return opt(inner, "Destination", str) or ""


def _source_access(body: dict[str, Any]) -> tuple[dict[str, str], ...] | None:
    items = opt(body, "SourceAccessConfigurations", list)
    if items is None:
        return None
    if len(items) > 23:
        raise _invalid("SourceAccessConfigurations holds at most 23 items.")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise _invalid('Each SourceAccessConfiguration is {"Type": ..., "URI": ...}.')
        check_members(item, frozenset({"Type", "URI"}), "SourceAccessConfiguration")
        kind, uri = opt(item, "Type", str), opt(item, "URI", str)
        if not kind or not uri or len(uri) > 200 or not _URI_RE.fullmatch(uri):
            raise _invalid(f"Invalid SourceAccessConfiguration: {item}")
        out.append({"Type": kind, "URI": uri})
    return tuple(out)


def _consumer_group(body: dict[str, Any]) -> str | None:
    config = opt(body, "SelfManagedKafkaEventSourceConfig", dict)
    if config is None:
        return None
    check_members(config, frozenset({"ConsumerGroupId", "SchemaRegistryConfig", "ConsumptionMode"}), "Config")
    if config.get("SchemaRegistryConfig") is not None:
        raise _invalid("SchemaRegistryConfig is not supported by this gateway.")
    group: str | None = opt(config, "ConsumerGroupId", str)
    if group is not None and (not 1 <= len(group) <= 200 or not _URI_RE.fullmatch(group)):
        raise _invalid(f"Invalid ConsumerGroupId: {group}")
    return group


# -- Create ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where a Create reads from."""

    kind: str
    arn: str | None = None
    topics: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    endpoints: MappingType[str, list[str]] = dataclasses.field(default_factory=dict)
    position: str | None = None
    timestamp: float | None = None


def source(body: dict[str, Any], settings: Settings) -> Source:
    """The source a Create names: self-managed Kafka, an MQ broker or an SQS queue; others refused."""
    arn = opt(body, "EventSourceArn", str)
    self_managed = opt(body, "SelfManagedEventSource", dict)
    topics = tuple(opt(body, "Topics", list) or ())
    queues = tuple(opt(body, "Queues", list) or ())
    position = opt(body, "StartingPosition", str)
    timestamp = opt(body, "StartingPositionTimestamp", float)
    if position is not None and position not in POSITIONS:
        raise _invalid(f"StartingPosition must be one of {', '.join(POSITIONS)}.")
    if (position == "AT_TIMESTAMP") != (timestamp is not None):
        raise _invalid("StartingPositionTimestamp is required with StartingPosition AT_TIMESTAMP, and only then.")
    if self_managed is not None:
        if arn is not None:
            raise _invalid("Specify either EventSourceArn or SelfManagedEventSource, not both.")
        return _kafka(self_managed, topics, queues, position, timestamp)
    if arn is None:
        raise _invalid("EventSourceArn or SelfManagedEventSource is required.")
    if not _SOURCE_ARN.fullmatch(arn):
        raise _invalid(f"Invalid EventSourceArn: {arn}")
    if topics or position is not None:
        raise _invalid("Topics and StartingPosition are not supported for this event source.")
    service = arn.split(":")[2]
    if service == "sqs" and _SQS_ARN.fullmatch(arn):
        if queues:
            raise _invalid("Queues is not supported for an SQS event source.")
        if settings.sqs_endpoint is None:
            raise _invalid(f"{arn}: this gateway reads SQS queues only when GATEWAY_SQS_ENDPOINT names an endpoint.")
        return Source(SQS, arn)
    if service == "mq" and _MQ_ARN.fullmatch(arn):
        if len(queues) != 1 or not isinstance(queues[0], str) or not 1 <= len(queues[0]) <= 1000:
            raise _invalid("Queues must name exactly one queue for an Amazon MQ event source.")
        return Source(RABBITMQ, arn, queues=queues)
    raise _invalid(f"Unsupported event source {arn}. {SOURCES}.")


def _kafka(
    self_managed: dict[str, Any],
    topics: tuple[str, ...],
    queues: tuple[str, ...],
    position: str | None,
    timestamp: float | None,
) -> Source:
    check_members(self_managed, frozenset({"Endpoints"}), "SelfManagedEventSource")
    endpoints = opt(self_managed, "Endpoints", dict) or {}
    servers = endpoints.get(KAFKA_SERVERS)
    if set(endpoints) != {KAFKA_SERVERS} or not isinstance(servers, list) or not 1 <= len(servers) <= 10:
        raise _invalid(f"SelfManagedEventSource.Endpoints must hold {KAFKA_SERVERS}: one to ten host:port strings.")
    if not all(isinstance(s, str) and re.fullmatch(r"[^\s:,]+:\d{1,5}", s) for s in servers):
        raise _invalid(f"Invalid {KAFKA_SERVERS}: {servers}")
    if len(topics) != 1 or not isinstance(topics[0], str) or not re.fullmatch(r"[a-zA-Z0-9._-]{1,249}", topics[0]):
        raise _invalid("Topics must name exactly one Kafka topic.")
    if queues:
        raise _invalid("Queues is not supported for a Kafka event source.")
    if position is None:
        raise _invalid("StartingPosition is required for a Kafka event source.")
    return Source(KAFKA, None, topics=topics, endpoints={KAFKA_SERVERS: list(servers)}, position=position,
                  timestamp=timestamp)  # fmt: skip


def check_for_source(kind: str, requested: Requested, settings: Settings, window: int | None, fifo: bool) -> None:
    """The rules that depend on the source: stream-only members, BatchSize maxima, the OnFailure destination."""
    if kind != KAFKA:
        for name in _STREAM_ONLY:
            if name in requested.given:
                raise _invalid(f"Unsupported {name} parameter for this event source ({kind}).")
    if kind != KAFKA and requested.consumer_group_id is not None:
        raise _invalid("SelfManagedKafkaEventSourceConfig is only for a Kafka event source.")
    if kind == RABBITMQ and requested.response_types:  # the model lists streams, Kafka and SQS only
        raise _invalid(f"Unsupported FunctionResponseTypes parameter for this event source ({kind}).")
    age = requested.record_age
    if age is not None and age != -1 and age < 60:  # Lambda: -1 (no limit) or 60 .. 604800
        raise _invalid("MaximumRecordAgeInSeconds must be -1 or between 60 and 604800.")
    batch = requested.batch_size
    if batch is not None:
        high = MAX_FIFO_BATCH if fifo else MAX_BATCH[kind]
        if batch > high:
            raise _invalid(f"BatchSize must be at most {high} for this event source.")
        if kind == SQS and batch > 10 and not window:
            raise _invalid(
                "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10"
            )
    if requested.on_failure:
        target = check_destination(settings, requested.on_failure)
        if target.service not in (Service.SQS, Service.SNS):
            raise _invalid(f"The destination ARN {requested.on_failure} is invalid: an event source mapping's "
                           "OnFailure destination is an SQS queue or an SNS topic.")  # fmt: skip


def new_mapping(
    uuid: str, function: str, qualifier: str | None, src: Source, r: Requested, settings: Settings, now: float
) -> Mapping:
    """A Create's mapping (state Creating), every rule checked."""
    fifo = bool(src.arn and src.arn.endswith(".fifo"))
    check_for_source(src.kind, r, settings, r.window, fifo)
    return Mapping(
        uuid=uuid, function=function, qualifier=qualifier, kind=src.kind, event_source_arn=src.arn,
        topics=src.topics, queues=src.queues, starting_position=src.position,
        starting_position_timestamp=src.timestamp, batch_size=r.batch_size or DEFAULT_BATCH[src.kind],
        batching_window=r.window, self_managed=dict(src.endpoints), consumer_group_id=r.consumer_group_id,
        source_access=r.source_access or (), filters=r.filters or (), function_response_types=r.response_types or (),
        maximum_retry_attempts=-1 if r.retries is None else r.retries,
        maximum_record_age=-1 if r.record_age is None else r.record_age, bisect=bool(r.bisect),
        on_failure=r.on_failure or None, maximum_concurrency=r.maximum_concurrency or None,
        enabled=r.enabled is not False, state=CREATING, last_modified=now,
    )  # fmt: skip


def apply(
    current: Mapping, r: Requested, function: tuple[str, str | None] | None, settings: Settings, now: float
) -> Mapping:
    """An Update's mapping: what the body sets changed, the state following Enabled (Enabling/Disabling) or
    Updating."""
    fifo = bool(current.event_source_arn and current.event_source_arn.endswith(".fifo"))
    window = r.window if r.window is not None else current.batching_window
    check_for_source(current.kind, r, settings, window, fifo)
    if r.batch_size is None and r.window is not None and current.kind == SQS and current.batch_size > 10 and not window:
        raise _invalid(
            "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10"
        )
    if r.consumer_group_id is not None and r.consumer_group_id != current.consumer_group_id:
        raise _invalid("The ConsumerGroupId of a mapping cannot be changed.")
    enabled = current.enabled if r.enabled is None else r.enabled
    state = UPDATING
    if enabled != current.enabled:
        state = ENABLING if enabled else DISABLING
    changes: dict[str, Any] = {"enabled": enabled, "state": state, "last_modified": now,
                               "state_transition_reason": "USER_INITIATED"}  # fmt: skip
    if function is not None:
        changes["function"], changes["qualifier"] = function
    pairs = (
        ("batch_size", r.batch_size), ("batching_window", r.window), ("filters", r.filters),
        ("function_response_types", r.response_types), ("maximum_retry_attempts", r.retries),
        ("maximum_record_age", r.record_age), ("bisect", r.bisect), ("source_access", r.source_access),
    )  # fmt: skip
    changes.update({name: value for name, value in pairs if value is not None})
    if r.on_failure is not None:
        changes["on_failure"] = r.on_failure or None
    if r.maximum_concurrency is not None:
        changes["maximum_concurrency"] = r.maximum_concurrency or None
    return dataclasses.replace(current, **changes)
