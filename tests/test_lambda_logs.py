"""Lambda's log lines (gateway.execution.lambda_logs): the text format, the JSON format's platform records, the tail."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from typing import Any

import pytest

from gateway.errors import RUNTIME_EXIT_ERROR, RUNTIME_OUT_OF_MEMORY, SANDBOX_TIMEDOUT
from gateway.execution.invoker import Invocation
from gateway.execution.lambda_logs import LOG_TAIL_BYTES, failure_line, init_error_line, log_tail, log_text
from gateway.store.records import FunctionConfig
from tests.conftest import UNSTORED_CONFIG as CONFIG


def json_config(level: str = "INFO") -> FunctionConfig:
    return replace(CONFIG, extra={"LoggingConfig": {"LogFormat": "JSON", "SystemLogLevel": level}})


def test_text_of_a_cold_invocation() -> None:
    inv = Invocation(CONFIG, "rid", True, b"init out\n", 120.3449, b"hello\n", 3.271, 21 * 1024 + 1)
    lines = log_text(inv).decode().splitlines()
    assert lines[:4] == ["init out", "START RequestId: rid Version: $LATEST", "hello", "END RequestId: rid"]
    assert lines[4] == (
        "REPORT RequestId: rid\tDuration: 3.27 ms\tBilled Duration: 124 ms\tMemory Size: 256 MB\t"
        "Max Memory Used: 22 MB\tInit Duration: 120.34 ms\t"
    )
    assert len(lines) == 5


def test_an_unended_last_line_does_not_run_into_the_platform_lines() -> None:
    """A function killed mid-write (or printing without a newline) leaves a partial line: START and END still begin
    lines of their own, as Lambda's are log events of their own."""
    inv = Invocation(CONFIG, "rid", True, b"init", 1.0, b"wrote 6", 3.0)
    lines = log_text(inv).decode().splitlines()
    assert lines[:4] == ["init", "START RequestId: rid Version: $LATEST", "wrote 6", "END RequestId: rid"]
    json_lines = log_text(replace(inv, config=json_config())).decode().splitlines()
    assert [line for line in json_lines if not line.startswith("{")] == ["init", "wrote 6"]
    assert len(records(log_text(replace(inv, config=json_config())))) == 3


def test_text_of_a_warm_timeout() -> None:
    inv = Invocation(CONFIG, "rid", True, duration_ms=3000.0, error_type=SANDBOX_TIMEDOUT)
    report = log_text(inv).decode().splitlines()[-1]
    assert "Init Duration" not in report
    assert report == (
        "REPORT RequestId: rid\tDuration: 3000.00 ms\tBilled Duration: 3000 ms\tMemory Size: 256 MB\t"
        "Max Memory Used: 0 MB\tStatus: timeout\t"
    )


@pytest.mark.parametrize("error_type", [RUNTIME_EXIT_ERROR, RUNTIME_OUT_OF_MEMORY])
def test_text_of_a_crash_names_its_error_type(error_type: str) -> None:
    report = log_text(Invocation(CONFIG, "rid", True, error_type=error_type)).decode().splitlines()[-1]
    assert report.endswith(f"Status: error\tError Type: {error_type}\t")


def test_a_function_error_has_no_status_in_its_report() -> None:
    report = log_text(Invocation(CONFIG, "rid", True, error_type="ValueError")).decode().splitlines()[-1]
    assert report.endswith("Max Memory Used: 0 MB\t")


def records(log: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.decode().splitlines() if line.startswith("{")]


def test_json_of_a_cold_invocation_has_the_platform_records() -> None:
    inv = Invocation(json_config(), "rid", True, b"init\n", 12.345, b"out\n", 1.005, 3 * 1024, None)
    log = log_text(inv)
    assert [line for line in log.decode().splitlines() if not line.startswith("{")] == ["init", "out"]
    initial, start, report = records(log)
    assert initial["type"] == "platform.initStart"
    assert initial["record"] == {
        "initializationType": "on-demand",
        "phase": "init",
        "functionName": "f",
        "functionVersion": "$LATEST",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", initial["time"])
    assert start["type"] == "platform.start" and start["record"] == {"requestId": "rid", "version": "$LATEST"}
    assert report["type"] == "platform.report"
    assert report["record"] == {
        "requestId": "rid",
        "metrics": {
            "durationMs": 1.0,
            "billedDurationMs": 14,
            "memorySizeMB": 256,
            "maxMemoryUsedMB": 3,
            "initDurationMs": 12.35,
        },
        "status": "success",
    }


@pytest.mark.parametrize(
    ("error_type", "status"), [(SANDBOX_TIMEDOUT, "timeout"), (RUNTIME_EXIT_ERROR, "error"), ("E", "error")]
)
def test_json_at_debug_adds_runtime_done_and_the_error(error_type: str, status: str) -> None:
    inv = Invocation(json_config("DEBUG"), "rid", True, error_type=error_type)
    done, report = records(log_text(inv))[1:]
    assert done["type"] == "platform.runtimeDone" and done["record"] == {"requestId": "rid", "status": status}
    assert report["record"]["status"] == status and report["record"]["errorType"] == error_type
    assert "initDurationMs" not in report["record"]["metrics"]


def test_json_at_warn_is_the_output_alone() -> None:
    assert log_text(Invocation(json_config("WARN"), "rid", True, b"i\n", 1.0, b"o\n")) == b"i\no\n"


def test_the_tail_is_the_last_4_kb_in_base64() -> None:
    log = b"a" * 10 + b"b" * LOG_TAIL_BYTES
    assert base64.b64decode(log_tail(log)) == b"b" * LOG_TAIL_BYTES
    assert log_tail(b"") == ""


def test_the_lines_the_gateway_adds() -> None:
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ rid Oops\n", failure_line("rid", "Oops"))
    assert init_error_line("Runtime.HandlerNotFound", "no handler") == b"[ERROR] Runtime.HandlerNotFound: no handler\n"
