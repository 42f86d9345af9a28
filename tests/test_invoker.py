"""Pure parts of the invoker: request ids and Lambda's log text."""

from __future__ import annotations

import uuid
from pathlib import Path

from gateway.execution.invoker import _log_text, new_request_id
from gateway.store.records import FunctionConfig

CONFIG = FunctionConfig(
    name="f",
    arn="arn:aws:lambda:us-east-1:123456789012:function:f",
    runtime="python3.12",
    handler="a.b",
    role="r",
    code_sha256="0" * 64,
    code_size=1,
    code_dir=Path("/x"),
    last_modified="",
    revision_id="r1",
    memory_size=256,
)


def test_request_ids_are_unique_v4_uuids() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:500]:
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_log_text_of_a_cold_invocation() -> None:
    text = _log_text(CONFIG, "rid", b"init out\n", b"hello\n", 3.271, 21 * 1024 + 1, 120.3449, None).decode()
    lines = text.splitlines()
    assert lines[:4] == ["init out", "START RequestId: rid Version: $LATEST", "hello", "END RequestId: rid"]
    assert lines[4] == (
        "REPORT RequestId: rid\tDuration: 3.27 ms\tBilled Duration: 124 ms\tMemory Size: 256 MB\t"
        "Max Memory Used: 22 MB\tInit Duration: 120.34 ms\t"
    )


def test_log_text_of_a_warm_timeout() -> None:
    text = _log_text(CONFIG, "rid", b"", b"", 3000.0, 0, None, "Sandbox.Timedout").decode()
    report = text.splitlines()[-1]
    assert "Init Duration" not in report
    assert report.endswith("Status: timeout\t")
