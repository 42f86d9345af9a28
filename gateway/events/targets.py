"""Where the outcome of an asynchronous invocation may go: destination and dead-letter ARNs, parsed and checked.

Pure, no I/O. A destination (`DestinationConfig.OnSuccess/OnFailure.Destination`) may name a Lambda function, an SQS
queue, an SNS topic or an EventBridge event bus, as on Lambda; a dead-letter queue (`DeadLetterConfig.TargetArn`) an
SQS queue or an SNS topic. A function must be one of this gateway's region and account (it is invoked here,
asynchronously). The other services are reached at the endpoint the operator names for them (`GATEWAY_SQS_ENDPOINT`,
`GATEWAY_SNS_ENDPOINT`, `GATEWAY_EVENTS_ENDPOINT`: AWS itself or a compatible server); without one, their ARNs are
refused with a clear error rather than accepted and never delivered. S3 buckets (an OnFailure destination on
Lambda since 2024) are refused likewise: this gateway has no S3 to write to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import InvalidParameterValueException
from gateway.settings import Settings

_ARN = re.compile(r"arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9-]+):([a-z0-9-]*):(\d{12})?:(.+)")
_FUNCTION = re.compile(r"function:([a-zA-Z0-9_-]{1,64})(?::(\$LATEST|[a-zA-Z0-9_-]{1,128}))?")
_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,256}")


class Service(StrEnum):
    LAMBDA = "lambda"
    SQS = "sqs"
    SNS = "sns"
    EVENTS = "events"


#: the setting that names where each service other than Lambda is reached, and its environment variable
ENDPOINT_SETTING = {
    Service.SQS: ("sqs_endpoint", "GATEWAY_SQS_ENDPOINT"),
    Service.SNS: ("sns_endpoint", "GATEWAY_SNS_ENDPOINT"),
    Service.EVENTS: ("events_endpoint", "GATEWAY_EVENTS_ENDPOINT"),
}


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed destination: `name` is the function, queue, topic or event bus; `qualifier` a function's version or
    alias (None: unqualified)."""

    arn: str
    service: Service
    region: str
    account: str
    name: str
    qualifier: str | None = None


def parse_target(arn: str) -> Target | None:
    """The target an ARN names, or None if it is not one of a function, queue, topic or event bus."""
    match = _ARN.fullmatch(arn)
    if match is None:
        return None
    _, service, region, account, resource = match.groups()
    if service == "lambda" and (fn := _FUNCTION.fullmatch(resource)):
        return Target(arn, Service.LAMBDA, region, account or "", fn.group(1), fn.group(2))
    if service in ("sqs", "sns") and _NAME.fullmatch(resource):
        return Target(arn, Service(service), region, account or "", resource)
    if service == "events" and resource.startswith("event-bus/") and _NAME.fullmatch(resource[10:]):
        return Target(arn, Service.EVENTS, region, account or "", resource[10:])
    return None


def endpoint(settings: Settings, service: Service) -> str | None:
    """Where `service` is reached (None for Lambda, which is this gateway, and for a service with no endpoint)."""
    if service is Service.LAMBDA:
        return None
    attribute, _ = ENDPOINT_SETTING[service]
    value: str | None = getattr(settings, attribute)
    return value


def _checked(settings: Settings, arn: str, allowed: tuple[Service, ...], invalid: str) -> Target:
    target = parse_target(arn)
    if target is None or target.service not in allowed or not target.region or not target.account:
        raise InvalidParameterValueException(invalid)
    if target.service is Service.LAMBDA:
        if (target.region, target.account) != (settings.region, settings.account_id):
            raise InvalidParameterValueException(
                f"{invalid} A function destination must be a function of this gateway "
                f"(region {settings.region}, account {settings.account_id})."
            )
        return target
    if endpoint(settings, target.service) is None:
        _, variable = ENDPOINT_SETTING[target.service]
        raise InvalidParameterValueException(
            f"{invalid} This gateway delivers to {target.service.value.upper()} only when {variable} names an "
            "endpoint for it (AWS itself or a compatible server)."
        )
    return target


def check_destination(settings: Settings, arn: str) -> Target:
    """The target of an OnSuccess or OnFailure destination; InvalidParameterValueException (Lambda's wording,
    with the reason this gateway refuses it) if it cannot be delivered to."""
    allowed = (Service.LAMBDA, Service.SQS, Service.SNS, Service.EVENTS)
    return _checked(settings, arn, allowed, f"The destination ARN {arn} is invalid.")


def check_dead_letter(settings: Settings, arn: str) -> Target:
    """The target of a `DeadLetterConfig.TargetArn`: an SQS queue or SNS topic that can be delivered to."""
    return _checked(
        settings,
        arn,
        (Service.SQS, Service.SNS),
        f"The provided target ARN {arn} is invalid. A dead-letter queue must be an SQS queue or an SNS topic.",
    )
