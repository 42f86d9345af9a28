"""Lambda's invocation record: what an OnSuccess or OnFailure destination receives about an asynchronous invocation.

    {"version": "1.0", "timestamp": "2026-12-07T12:00:00.123Z",
     "requestContext": {"requestId", "functionArn", "condition", "approximateInvokeCount"},
     "requestPayload": <the event>,
     "responseContext": {"statusCode": 200, "executedVersion", "functionError"?},
     "responsePayload": <what the function returned, or its error>}

`responseContext` and `responsePayload` are left out when no attempt reached the function (an event that aged out
while throttled). The event is spliced in as accepted (it was checked to be JSON then); a response that is not JSON
(a custom runtime may post anything) is given as a JSON string.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from gateway.events.queue import QueuedEvent
from gateway.events.retries import Condition


@dataclass(slots=True)
class Response:
    """What the last attempt that reached the function answered (gateway.execution.invoker.Outcome's part of it)."""

    executed_version: str
    payload: bytes
    function_error: str | None


def timestamp(now: float) -> str:
    """ISO 8601 in UTC with milliseconds, as Lambda writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _json(payload: bytes) -> bytes:
    if not payload:
        return b"null"
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError:
        return orjson.dumps(payload.decode("utf-8", "replace"))
    return payload


def invocation_record(
    event: QueuedEvent,
    function_arn: str,
    condition: Condition,
    response: Response | None,
    now: float,
    payloads: bool = True,
) -> bytes:
    """The record as JSON bytes; `function_arn` is the function as invoked, qualified (`:$LATEST` when not).
    Without `payloads`, `requestPayload` and `responsePayload` are left out (a record too large for its target)."""
    head = {
        "version": "1.0",
        "timestamp": timestamp(now),
        "requestContext": {
            "requestId": event.request_id,
            "functionArn": function_arn,
            "condition": condition.value,
            "approximateInvokeCount": event.attempts,
        },
    }
    parts = [orjson.dumps(head)[:-1]]
    if payloads:
        parts += [b',"requestPayload":', event.payload or b"{}"]
    if response is not None:
        context: dict[str, object] = {"statusCode": 200, "executedVersion": response.executed_version}
        if response.function_error is not None:
            context["functionError"] = response.function_error
        parts += [b',"responseContext":', orjson.dumps(context)]
        if payloads:
            parts += [b',"responsePayload":', _json(response.payload)]
    parts.append(b"}")
    return b"".join(parts)


def error_message(response: Response | None, condition: Condition) -> str:
    """The error a dead letter carries (`ErrorMessage`): the function's errorMessage, or why the event aged out."""
    if response is not None and response.function_error is not None:
        try:
            document = orjson.loads(response.payload)
        except orjson.JSONDecodeError:
            return response.payload[:1024].decode("utf-8", "replace")
        if isinstance(document, dict) and isinstance(document.get("errorMessage"), str):
            message: str = document["errorMessage"]
            return message
        return response.payload[:1024].decode("utf-8", "replace")
    if condition is Condition.EVENT_AGE_EXCEEDED:
        return "The event was older than the function's MaximumEventAgeInSeconds and was not processed."
    return "The event was not processed."
