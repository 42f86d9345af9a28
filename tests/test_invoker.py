"""Pure parts of the invoker: request ids, the Init timeout's wording (Lambda's log text: test_lambda_logs.py)."""

from __future__ import annotations

import uuid

import orjson
import pytest

from gateway.errors import RUNTIME_EXIT_ERROR, RUNTIME_OUT_OF_MEMORY, SANDBOX_TIMEDOUT
from gateway.execution.invoker import (
    INIT_TIMED_OUT,
    UNHANDLED,
    Invocation,
    _failed,
    _init_failed,
    _outcome,
    new_request_id,
)
from tests.conftest import UNSTORED_CONFIG as CONFIG


def test_request_ids_are_unique_v4_uuids() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:500]:
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_the_init_timeout_message_says_lambda_s_limit() -> None:
    assert INIT_TIMED_OUT == "Init timed out after 10.00 seconds"


def test_a_result_carries_the_invocation_s_facts_and_no_error() -> None:
    inv = Invocation(CONFIG, "rid", want_log=False, init_ms=5.0, duration_ms=2.0, rss_kb=2048)
    outcome = _outcome(inv, b'{"ok":1}')
    assert (outcome.request_id, outcome.executed_version, outcome.payload) == ("rid", "$LATEST", b'{"ok":1}')
    assert (outcome.duration_ms, outcome.init_ms, outcome.max_rss_kb) == (2.0, 5.0, 2048)
    assert outcome.function_error is outcome.error_type is outcome.error_kind is None
    assert outcome.log == b""  # not wanted: not built


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("ValueError", "function"),
        (SANDBOX_TIMEDOUT, "timeout"),
        (RUNTIME_EXIT_ERROR, "crash"),
        (RUNTIME_OUT_OF_MEMORY, "out_of_memory"),
        ("Runtime.ImportModuleError", "init"),
    ],
)
def test_a_function_error_is_unhandled_and_has_a_kind(error_type: str, kind: str) -> None:
    outcome = _outcome(Invocation(CONFIG, "rid", want_log=False, error_type=error_type), b"{}")
    assert (outcome.function_error, outcome.error_type, outcome.error_kind) == (UNHANDLED, error_type, kind)


def test_an_invocation_without_a_reply_is_answered_in_lambda_s_words() -> None:
    inv = Invocation(CONFIG, "rid", want_log=True, output=b"partial\n", duration_ms=3000.0)
    outcome = _failed(inv, SANDBOX_TIMEDOUT, "Task timed out after 3.00 seconds")
    body = orjson.loads(outcome.payload)
    assert body == {
        "errorMessage": "RequestId: rid Error: Task timed out after 3.00 seconds",
        "errorType": SANDBOX_TIMEDOUT,
    }
    lines = outcome.log.decode().splitlines()
    assert lines[1] == "partial"
    assert lines[2].endswith("Z rid Task timed out after 3.00 seconds")
    assert lines[-1].endswith("Status: timeout\t")


def test_a_failed_init_passes_the_stack_on_unparsed() -> None:
    """The Python fast path's Init error: Lambda's Python runtime's document, "requestId" empty (no invocation)."""
    err = {"errorType": "Runtime.ImportModuleError", "errorMessage": "no module", "stackTrace": b'["a"]'}
    outcome = _init_failed(Invocation(CONFIG, "rid", want_log=True, init_log=b"init\n", init_ms=1.0), err)
    assert orjson.loads(outcome.payload) == {
        "errorMessage": "no module",
        "errorType": "Runtime.ImportModuleError",
        "requestId": "",
        "stackTrace": ["a"],
    }
    assert outcome.error_kind == "init"
    assert outcome.log.startswith(b"init\n[ERROR] Runtime.ImportModuleError: no module\nSTART RequestId: rid")


@pytest.mark.parametrize(
    "document",
    [b'{"errorType": "Runtime.HandlerNotFound", "errorMessage": "x", "trace": ["a"]}', b"not JSON", b' ["a"]'],
)
def test_a_failed_init_returns_the_runtimes_document_as_it_is(document: bytes) -> None:
    err = {"errorType": "Runtime.HandlerNotFound", "errorMessage": "x", "stackTrace": document}
    outcome = _init_failed(Invocation(CONFIG, "rid", want_log=True, init_log=b"its own line\n", init_ms=1.0), err)
    assert outcome.payload == document and outcome.function_error == UNHANDLED
    assert (outcome.error_type, outcome.error_kind) == ("Runtime.HandlerNotFound", "init")
    assert outcome.log.startswith(b"its own line\nSTART RequestId: rid")  # no line of the gateway's


def test_a_platform_init_error_is_worded_as_lambda_words_it() -> None:
    what = "Runtime exited with error: exit status 4"
    err = {"errorType": RUNTIME_EXIT_ERROR, "errorMessage": what, "stackTrace": b""}
    outcome = _init_failed(Invocation(CONFIG, "rid", want_log=True, init_log=b"init\n", init_ms=1.0), err)
    assert orjson.loads(outcome.payload) == {
        "errorMessage": "RequestId: rid Error: Runtime exited with error: exit status 4",
        "errorType": RUNTIME_EXIT_ERROR,
    }
    lines = outcome.log.decode().splitlines()
    assert lines[0] == "init" and lines[1].endswith("Z rid Runtime exited with error: exit status 4")
