"""What Lambda sends to SQS, SNS and EventBridge for an asynchronous invocation's outcome: the requests, pure.

Destinations (`DestinationConfig.OnSuccess/OnFailure`): the invocation record (JSON) is
- SQS: the SendMessage `MessageBody`;
- SNS: the Publish `Message`;
- EventBridge: one PutEvents entry, `Source` "lambda", `DetailType` "Lambda Function Invocation Result - Success" or
  "... - Failure", `Detail` the record, `Resources` the event bus's ARN and the record's `requestContext.functionArn`
  (in that order, as the events Lambda puts on a bus carry them), `EventBusName` the bus's ARN.
Dead letters (`DeadLetterConfig.TargetArn`, SQS or SNS): the original event, unchanged, as the body, with the message
attributes RequestID (String), ErrorCode (Number: the 3-digit HTTP status) and ErrorMessage (String, truncated to
1 KB), as Lambda's dead-letter queues receive them.

Sizes are the services' limits, checked here so that nothing larger is ever sent: SQS 1 MiB (raised from 256 KiB in
2025) and SNS 256 KiB, body and message attributes together; an EventBridge entry 1 MiB, counted as EventBridge counts
it. An OnFailure record too large for its target loses its `requestPayload` and `responsePayload` (Lambda drops the
payload of an OnFailure record too large for SNS, and this gateway does the same for every service); an OnSuccess
record or a dead letter too large for its target is refused (`TooLarge`), as Lambda's delivery fails then.

Text: a body must be UTF-8. SQS refuses characters outside XML's (U+FFFE, U+FFFF, most C0 controls); JSON carries
the first two raw only inside strings, where the escape `\\uFFFE` means the same, so records and JSON events are
sent with those escaped (not refused: a payload must not be able to make its own delivery fail). An ErrorMessage
(the function's words) has the characters SQS refuses replaced by U+FFFD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.events.targets import Service, Target

SQS_LIMIT = 1_048_576
SNS_LIMIT = 262_144
EVENTS_LIMIT = 1_048_576
#: what an EventBridge entry's size counts for its Time member, whether set or not
_EVENTS_TIME_SIZE = 14
ERROR_MESSAGE_LIMIT = 1024
SOURCE = "lambda"
DETAIL_TYPES = {
    True: "Lambda Function Invocation Result - Success",
    False: "Lambda Function Invocation Result - Failure",
}
_LIMITS = {Service.SQS: SQS_LIMIT, Service.SNS: SNS_LIMIT, Service.EVENTS: EVENTS_LIMIT}

#: raw in JSON only inside strings, where an escape means the same; refused by SQS
_NONCHARACTERS = re.compile("[\ufffe\uffff]")
#: outside the characters SQS accepts (XML 1.0's): C0 controls but tab, LF and CR; U+FFFE and U+FFFF; surrogates
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


class TooLarge(ValueError):
    """A message over its service's limit (the message says which and by how much, never the payload)."""


class NotText(ValueError):
    """A body that is not UTF-8."""


@dataclass(frozen=True, slots=True)
class Message:
    """One request's content: for SQS and SNS `body` and `attributes` (name -> (DataType, value)); for EventBridge
    the PutEvents entry in `entry`."""

    service: Service
    body: str = ""
    attributes: tuple[tuple[str, str, str], ...] = ()
    entry: dict[str, Any] | None = None

    def size(self) -> int:
        """Bytes as the service counts them against its limit."""
        if self.entry is not None:
            e = self.entry
            return (
                _EVENTS_TIME_SIZE
                + sum(len(e[k].encode()) for k in ("Source", "DetailType", "Detail"))
                + sum(len(r.encode()) for r in e.get("Resources", ()))
            )
        return len(self.body.encode()) + sum(len((n + t + v).encode()) for n, t, v in self.attributes)

    def sqs_attributes(self) -> dict[str, dict[str, str]]:
        """MessageAttributes as SendMessage and Publish take them."""
        return {name: {"DataType": kind, "StringValue": value} for name, kind, value in self.attributes}


def limit(service: Service) -> int:
    return _LIMITS[service]


def _text(data: bytes, what: str) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise NotText(f"the {what} is not UTF-8 text") from None
    # only JSON's strings can hold these raw, and "\uffff" there is the same string
    return _NONCHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _checked(message: Message, what: str) -> Message:
    size, most = message.size(), limit(message.service)
    if size > most:
        raise TooLarge(f"the {what} is {size} bytes, over {message.service.value.upper()}'s limit of {most} bytes")
    return message


def _record_message(target: Target, record: bytes, success: bool) -> Message:
    text = _text(record, "record")
    if target.service is not Service.EVENTS:
        return Message(target.service, body=text)
    resources = [target.arn]
    try:
        function_arn = orjson.loads(record)["requestContext"]["functionArn"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        function_arn = None
    if isinstance(function_arn, str) and function_arn:
        resources.append(function_arn)
    entry = {
        "Source": SOURCE,
        "DetailType": DETAIL_TYPES[success],
        "Detail": text,
        "Resources": resources,
        "EventBusName": target.arn,
    }
    return Message(Service.EVENTS, entry=entry)


def _without_payloads(record: bytes) -> bytes | None:
    """The record less its request and response payloads, or None if it is not a JSON object."""
    try:
        parsed = orjson.loads(record)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    parsed.pop("requestPayload", None)
    parsed.pop("responsePayload", None)
    return orjson.dumps(parsed)


def destination(target: Target, record: bytes, success: bool) -> Message:
    """The message carrying an invocation record to an SQS, SNS or EventBridge target.

    Raises TooLarge (an OnSuccess record over the target's limit; an OnFailure one still over it once its payloads
    are dropped), NotText, or ValueError for a target of another service.
    """
    if target.service not in _LIMITS:
        raise ValueError(f"{target.service.value} is not a service records are sent to from here")
    message = _record_message(target, record, success)
    if message.size() <= limit(target.service) or success:
        return _checked(message, "record")
    slim = _without_payloads(record)
    if slim is None:
        return _checked(message, "record")
    return _checked(_record_message(target, slim, success), "record without its payloads")


def truncated(text: str, most: int = ERROR_MESSAGE_LIMIT) -> str:
    """`text` cut to at most `most` UTF-8 bytes, on a character boundary."""
    data = text.encode(errors="replace")
    return data[:most].decode(errors="ignore") if len(data) > most else text


def dead_letter(target: Target, payload: bytes, request_id: str, error_code: str, error_message: str) -> Message:
    """The message carrying a discarded event to an SQS or SNS dead-letter queue.

    `error_code` must be a 3-digit HTTP status (ValueError otherwise). Empty attribute values are left out (the
    services refuse them). Raises TooLarge, NotText, or ValueError for a target that is not SQS or SNS.
    """
    if target.service not in (Service.SQS, Service.SNS):
        raise ValueError(f"a dead-letter queue is an SQS queue or an SNS topic, not {target.service.value}")
    if not (len(error_code) == 3 and error_code.isascii() and error_code.isdigit()):
        raise ValueError(f"ErrorCode must be a 3-digit HTTP status, not {error_code[:20]!r}")
    message_text = truncated(_NOT_XML.sub("\ufffd", error_message))
    attributes = (
        ("RequestID", "String", _NOT_XML.sub("\ufffd", request_id)),
        ("ErrorCode", "Number", error_code),
        ("ErrorMessage", "String", message_text),
    )
    kept = tuple(a for a in attributes if a[2])
    return _checked(Message(target.service, body=_text(payload, "event"), attributes=kept), "dead letter")
