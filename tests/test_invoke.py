"""The header errors Invoke and InvokeWithResponseStream share (gateway/api/invoke/invoke.py): Lambda's messages, each
route listing its own invocation types in Lambda's order."""

from __future__ import annotations

from gateway.api.invoke import invoke, invoke_stream


def test_an_unknown_invocation_type_lists_the_routes_types_in_lambdas_order() -> None:
    error = invoke.invalid_types("Async", invoke.INVOCATION_TYPES, "Tail")
    assert error.message == (
        "1 validation error detected: Value 'Async' at 'invocationType' failed to satisfy constraint: "
        "Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
    )
    error = invoke.invalid_types("Event", invoke_stream.INVOCATION_TYPES, "Bad")  # the invocation type first
    assert error.message.endswith(
        "Value 'Event' at 'invocationType' failed to satisfy constraint: "
        "Member must satisfy enum value set: [RequestResponse, DryRun]"
    )


def test_an_unknown_log_type() -> None:
    error = invoke.invalid_types("RequestResponse", invoke.INVOCATION_TYPES, "Full")
    assert error.name == "ValidationException" and error.message == (
        "1 validation error detected: Value 'Full' at 'logType' failed to satisfy constraint: "
        "Member must satisfy enum value set: [None, Tail]"
    )
