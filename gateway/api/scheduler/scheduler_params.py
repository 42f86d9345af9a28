"""The EventBridge Scheduler API's request bodies and errors: CreateSchedule and UpdateSchedule parsed and checked
against botocore's model (scheduler 2021-06-30: members, lengths, patterns, enums, bounds) and this gateway's rules
(a target is one of its functions). Pure but for the registry look-up of the target.

Scheduler's errors are rest-json with the code in `x-amzn-ErrorType` and a body `{"Message": ...}` (its model's
error shapes have a `Message` member; botocore reads either case). `ValidationException` (400) collects every
constraint violation of a body as AWS's validators report them ("N validation errors detected: Value ... at
'target.retryPolicy.maximumRetryAttempts' failed to satisfy constraint: ...").
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import LambdaError, ResourceNotFoundException
from gateway.events.schedule_expressions import BadExpression, parse
from gateway.events.schedules import DEFAULT_EVENT_AGE, DEFAULT_RETRY_ATTEMPTS
from gateway.events.targets import Service, parse_target
from gateway.settings import Settings
from gateway.store.registry import Registry
from gateway.store.schedules import DEFAULT_GROUP, Schedule, Schedules

NAME_PATTERN = r"[0-9a-zA-Z-_.]+"
_NAME_RE = re.compile(NAME_PATTERN)
ROLE_PATTERN = r"arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@\/-]+"
DLQ_PATTERN = r"arn:aws[a-z-]*:sqs:[a-z0-9\-]+:\d{12}:[a-zA-Z0-9\-_]+"
KMS_PATTERN = r"arn:aws[a-z-]*:kms:[a-z0-9\-]+:\d{12}:(key|alias)\/[0-9a-zA-Z-_]*"
TOKEN_PATTERN = r"[a-zA-Z0-9-_]+"
#: how far in the past a StartDate (at Create) or an at() time may be (Scheduler: "cannot be earlier than 5 minutes
#: ago")
PAST_ALLOWANCE = 300
#: the largest Input: Lambda's limit on an asynchronous invocation's payload
MAX_INPUT = 1024 * 1024
_TARGET_MEMBERS = frozenset({"Arn", "RoleArn", "Input", "RetryPolicy", "DeadLetterConfig"})
_OTHER_TARGET_MEMBERS = frozenset(
    {
        "EcsParameters",
        "EventBridgeParameters",
        "EventBridgePutEventsV2Parameters",
        "EventBridgePutRawEventsParameters",
        "KinesisParameters",
        "SageMakerPipelineParameters",
        "SqsParameters",
    }
)
_BODY_MEMBERS = frozenset(
    {
        "GroupName",
        "ScheduleExpression",
        "StartDate",
        "EndDate",
        "Description",
        "ScheduleExpressionTimezone",
        "State",
        "KmsKeyArn",
        "Target",
        "FlexibleTimeWindow",
        "ClientToken",
        "ActionAfterCompletion",
    }
)


class SchedulerError(LambdaError):
    """An error of the Scheduler API: Scheduler's body shape, `{"Message": ...}`."""

    kind = "User"

    def to_dict(self) -> dict[str, Any]:
        return {"Message": self.message}


class SchedulerValidationException(SchedulerError):
    name = "ValidationException"
    status = 400


class SchedulerNotFoundException(SchedulerError):
    name = "ResourceNotFoundException"
    status = 404


class SchedulerConflictException(SchedulerError):
    name = "ConflictException"
    status = 409


class SchedulerInternalServerException(SchedulerError):
    name = "InternalServerException"
    status = 500
    kind = "Service"


class _Violations:
    """Constraint violations, reported together as AWS's validators do."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, value: object, member: str, constraint: str) -> None:
        shown = "null" if value is None else f"'{value}'"
        self.items.append(f"Value {shown} at '{member}' failed to satisfy constraint: {constraint}")

    def raise_if_any(self) -> None:
        if self.items:
            n = len(self.items)
            raise SchedulerValidationException(
                f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(self.items)
            )

    def string(
        self, value: object, member: str, low: int, high: int | None = None, pattern: str | None = None
    ) -> str | None:
        """A string member's length and pattern; its value (None when absent)."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise SchedulerValidationException(f"Invalid type for '{member}': expected a string")
        if len(value) < low:
            self.add(value, member, f"Member must have length greater than or equal to {low}")
        elif high is not None and len(value) > high:
            self.add(value[:100], member, f"Member must have length less than or equal to {high}")
        elif pattern is not None and not re.fullmatch(pattern, value):
            self.add(value, member, f"Member must satisfy regular expression pattern: {pattern}")
        return value

    def integer(self, value: object, member: str, low: int, high: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchedulerValidationException(f"Invalid type for '{member}': expected an integer")
        if value < low:
            self.add(value, member, f"Member must have value greater than or equal to {low}")
        elif value > high:
            self.add(value, member, f"Member must have value less than or equal to {high}")
        return value

    def enum(self, value: object, member: str, values: tuple[str, ...]) -> str | None:
        if value is not None and value not in values:
            self.add(value, member, f"Member must satisfy enum value set: [{', '.join(values)}]")
        return value if isinstance(value, str) else None


def check_name(name: str, member: str = "name") -> str:
    v = _Violations()
    v.string(name, member, 1, 64, NAME_PATTERN)
    v.raise_if_any()
    return name


def check_group(group: str | None, store: Schedules) -> str:
    """The schedule group named (`default` when none is): ResourceNotFoundException if it does not exist."""
    if group is None or group == "":
        return DEFAULT_GROUP
    check_name(group, "groupName")
    if not store.has_group(group):
        raise group_not_found(group)
    return group


def group_not_found(group: str) -> SchedulerNotFoundException:
    return SchedulerNotFoundException(f"Schedule group {group} does not exist.")


def _timestamp(value: object, member: str) -> float | None:
    """A timestamp member: epoch seconds (botocore's rest-json form) or an ISO 8601 string."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
    raise SchedulerValidationException(f"Invalid timestamp for '{member}': {str(value)[:64]}")


@dataclass(frozen=True, slots=True)
class Requested:
    """A Create or Update body, checked; `schedule` lacks its firing state and its dates of creation."""

    schedule: Schedule
    client_token: str | None


def parse_body(
    body: dict[str, Any], name: str, settings: Settings, registry: Registry, store: Schedules, created: float
) -> Requested:
    """A CreateSchedule / UpdateSchedule body (Update replaces the whole schedule, as Scheduler's does)."""
    unknown = sorted(set(body) - _BODY_MEMBERS)
    if unknown:
        raise SchedulerValidationException(f"Unknown parameter in input: {unknown[0]!r}")
    v = _Violations()
    check_name(name)
    group = check_group(body.get("GroupName"), store)
    expression = v.string(body.get("ScheduleExpression"), "scheduleExpression", 1, 256)
    if expression is None:
        v.add(None, "scheduleExpression", "Member must not be null")
    timezone = v.string(body.get("ScheduleExpressionTimezone"), "scheduleExpressionTimezone", 1, 50)
    description = v.string(body.get("Description"), "description", 0, 512)
    state = v.enum(body.get("State", "ENABLED"), "state", ("ENABLED", "DISABLED"))
    kms = v.string(body.get("KmsKeyArn"), "kmsKeyArn", 1, 2048, KMS_PATTERN)
    token = v.string(body.get("ClientToken"), "clientToken", 1, 64, TOKEN_PATTERN)
    after = v.enum(body.get("ActionAfterCompletion", "NONE"), "actionAfterCompletion", ("NONE", "DELETE"))
    mode, window = _flexible(body.get("FlexibleTimeWindow"), v)
    target = _target(body.get("Target"), v)
    start = _timestamp(body.get("StartDate"), "StartDate")
    end = _timestamp(body.get("EndDate"), "EndDate")
    v.raise_if_any()
    assert expression is not None and state is not None and after is not None
    schedule = Schedule(
        name=name,
        group=group,
        expression=expression,
        timezone=timezone or "UTC",
        state=state,
        target=target,
        flexible_mode=mode,
        flexible_window=window,
        action_after_completion=after,
        created=created,
        modified=time.time(),
        start=start,
        end=end,
        description=description,
        kms_key_arn=kms,
        client_token=token,
    )
    _check_semantics(schedule, settings, registry)
    return Requested(schedule, token)


def _flexible(value: object, v: _Violations) -> tuple[str, int | None]:
    if value is None:
        v.add(None, "flexibleTimeWindow", "Member must not be null")
        return "OFF", None
    if not isinstance(value, dict):
        raise SchedulerValidationException("Invalid type for 'FlexibleTimeWindow': expected an object")
    mode = v.enum(value.get("Mode"), "flexibleTimeWindow.mode", ("OFF", "FLEXIBLE"))
    if mode is None:
        v.add(None, "flexibleTimeWindow.mode", "Member must not be null")
    window = v.integer(value.get("MaximumWindowInMinutes"), "flexibleTimeWindow.maximumWindowInMinutes", 1, 1440)
    if mode == "FLEXIBLE" and window is None:
        raise SchedulerValidationException(
            "MaximumWindowInMinutes is required when the FlexibleTimeWindow is FLEXIBLE."
        )
    return mode or "OFF", window


def _target(value: object, v: _Violations) -> dict[str, Any]:
    """The Target as stored and answered: Arn, RoleArn, Input, RetryPolicy (Scheduler's defaults filled in),
    DeadLetterConfig."""
    if value is None:
        v.add(None, "target", "Member must not be null")
        return {}
    if not isinstance(value, dict):
        raise SchedulerValidationException("Invalid type for 'Target': expected an object")
    other = sorted(set(value) & _OTHER_TARGET_MEMBERS)
    if other:
        raise SchedulerValidationException(
            f"{other[0]} is not supported: this gateway's schedules invoke its Lambda functions only."
        )
    unknown = sorted(set(value) - _TARGET_MEMBERS)
    if unknown:
        raise SchedulerValidationException(f"Unknown parameter in Target: {unknown[0]!r}")
    target: dict[str, Any] = {}
    arn = v.string(value.get("Arn"), "target.arn", 1, 1600)
    if arn is None:
        v.add(None, "target.arn", "Member must not be null")
    role = v.string(value.get("RoleArn"), "target.roleArn", 1, 1600, ROLE_PATTERN)
    if role is None:
        v.add(None, "target.roleArn", "Member must not be null")
    target["Arn"], target["RoleArn"] = arn, role
    given = v.string(value.get("Input"), "target.input", 1)
    if given is not None:
        target["Input"] = given
    policy = value.get("RetryPolicy") or {}
    if not isinstance(policy, dict):
        raise SchedulerValidationException("Invalid type for 'RetryPolicy': expected an object")
    age = v.integer(policy.get("MaximumEventAgeInSeconds"), "target.retryPolicy.maximumEventAgeInSeconds", 60, 86400)
    tries = v.integer(policy.get("MaximumRetryAttempts"), "target.retryPolicy.maximumRetryAttempts", 0, 185)
    target["RetryPolicy"] = {
        "MaximumEventAgeInSeconds": DEFAULT_EVENT_AGE if age is None else age,
        "MaximumRetryAttempts": DEFAULT_RETRY_ATTEMPTS if tries is None else tries,
    }
    dead = value.get("DeadLetterConfig")
    if dead is not None:
        if not isinstance(dead, dict):
            raise SchedulerValidationException("Invalid type for 'DeadLetterConfig': expected an object")
        dlq = v.string(dead.get("Arn"), "target.deadLetterConfig.arn", 1, 1600, DLQ_PATTERN)
        target["DeadLetterConfig"] = {"Arn": dlq} if dlq else {}
    return target


def _check_semantics(schedule: Schedule, settings: Settings, registry: Registry) -> None:
    """What the model cannot say: the expression, its time zone and dates; the target is a function here; the
    Input is JSON (a templated Lambda target's must be); the dead-letter queue can be delivered to."""
    try:
        expression = parse(schedule.expression, schedule.timezone, schedule.start, schedule.end, schedule.created)
    except BadExpression as exc:
        raise SchedulerValidationException(str(exc)) from None
    now = time.time()
    if expression.kind == "at" and expression.next_after(now - PAST_ALLOWANCE) is None:
        raise SchedulerValidationException(
            f"The time of {schedule.expression} in {schedule.timezone} is in the past: a one-time schedule must be "
            "in the future."
        )
    if schedule.start is not None and schedule.end is not None and schedule.end <= schedule.start:
        raise SchedulerValidationException("The EndDate you specify must be after the StartDate.")
    _check_target(schedule, settings, registry)


def check_start_date(schedule: Schedule, now: float) -> None:
    """At Create: a recurring schedule's StartDate may not be more than five minutes past (Scheduler's rule)."""
    if (
        schedule.start is not None
        and not schedule.expression.startswith("at(")
        and schedule.start < now - PAST_ALLOWANCE
    ):
        raise SchedulerValidationException("The StartDate you specify cannot be earlier than 5 minutes ago.")


def _check_target(schedule: Schedule, settings: Settings, registry: Registry) -> None:
    arn = str(schedule.target["Arn"])
    target = parse_target(arn)
    if target is None or target.service is not Service.LAMBDA:
        raise SchedulerValidationException(
            f"The target {arn} is not supported: this gateway's schedules invoke its Lambda functions only "
            f"(arn:{settings.partition}:lambda:{settings.region}:{settings.account_id}:function:NAME[:QUALIFIER])."
        )
    if (target.region, target.account) != (settings.region, settings.account_id):
        raise SchedulerValidationException(
            f"The target {arn} is not a function of this gateway (region {settings.region}, account "
            f"{settings.account_id})."
        )
    try:
        registry.resolve(target.name, target.qualifier)
    except ResourceNotFoundException:
        raise SchedulerValidationException(f"The target function {arn} does not exist.") from None
    given = schedule.target.get("Input")
    if given is not None:
        _check_input(str(given))
    dlq = (schedule.target.get("DeadLetterConfig") or {}).get("Arn")
    if dlq and settings.sqs_endpoint is None:
        raise SchedulerValidationException(
            f"The dead-letter queue {dlq} cannot be delivered to: this gateway reaches SQS only when "
            "GATEWAY_SQS_ENDPOINT names an endpoint for it."
        )


def _check_input(given: str) -> None:
    """A Lambda target's Input must be JSON once its context attributes are replaced, within Lambda's limit on an
    asynchronous payload."""
    if len(given.encode()) > MAX_INPUT:
        raise SchedulerValidationException(f"The target's Input is larger than {MAX_INPUT} bytes.")
    sample = given
    for attribute, value in (
        ("schedule-arn", "arn"),
        ("scheduled-time", "2000-01-01T00:00:00Z"),
        ("execution-id", "0"),
        ("attempt-number", "1"),
    ):
        sample = sample.replace(f"<aws.scheduler.{attribute}>", value)
    try:
        orjson.loads(sample)
    except orjson.JSONDecodeError:
        raise SchedulerValidationException("The target's Input must be well-formed JSON for a Lambda target.") from None
