"""The Extensions API's state machine (runtimes/proxy/extensions.py), driven through its route handlers with recorded
exchanges (no processes here: tests/test_e2e_extensions.py runs real ones): who may register and when, events and
`next`, errors, crashes, and the bounds a hostile extension meets."""

from __future__ import annotations

import json

import pytest

from runtimes.proxy import extensions as ext_api
from runtimes.proxy.extensions import Extensions
from runtimes.proxy.telemetry import Telemetry
from tests.conftest import Recorded

ENV = {"AWS_LAMBDA_FUNCTION_NAME": "f", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "_HANDLER": "app.handler"}


def make(*names: str) -> tuple[Extensions, list[str]]:
    calls: list[str] = []
    api = Extensions([f"/opt/extensions/{n}" for n in names], ENV, Telemetry(), None)  # type: ignore[arg-type]
    api.on_registered = lambda: calls.append("registered")
    api.on_change = lambda: calls.append("change")
    return api, calls


def register(api: Extensions, name: str, events: list[str] | None = None) -> Recorded:
    exchange = Recorded({"Lambda-Extension-Name": name}, json.dumps({"events": events or []}).encode())
    api.register(exchange)  # type: ignore[arg-type]
    return exchange


def ext_id(exchange: Recorded) -> str:
    assert exchange.answer is not None
    return exchange.answer[2].split(": ")[1].strip()


def next_event(api: Extensions, identifier: str) -> Recorded:
    exchange = Recorded({"Lambda-Extension-Identifier": identifier})
    api.next(exchange)  # type: ignore[arg-type]
    return exchange


def test_register_answers_lambdas_document_and_the_runtime_starts_once_all_have() -> None:
    api, calls = make("a", "b")
    first = register(api, "a", ["INVOKE", "SHUTDOWN"])
    assert first.status == 200 and first.document == {
        "functionName": "f",
        "functionVersion": "$LATEST",
        "handler": "app.handler",
    }
    assert ext_id(first) and calls == []
    assert register(api, "b", ["INVOKE"]).status == 200
    assert calls == ["registered"] and not api.registration_open
    assert not api.all_ready  # registered is not ready: each must ask for its first event
    next_event(api, ext_id(first))
    assert not api.all_ready


@pytest.mark.parametrize("body", [b"{", b'{"events": ["INVOKE", "BOOT"]}', b'{"events": "INVOKE"}', b"[]"])
def test_a_malformed_registration_is_a_400(body: bytes) -> None:
    api, _ = make("a")
    exchange = Recorded({"Lambda-Extension-Name": "a"}, body)
    api.register(exchange)  # type: ignore[arg-type]
    assert exchange.status == 400 and api.registration_open


def test_names_register_once_and_internal_ones_only_in_the_runtimes_init() -> None:
    api, _ = make("a")
    assert register(api, "impostor").status == 403  # before the external ones registered: not its turn
    assert register(api, "a").status == 200
    assert register(api, "a").status == 403  # twice
    assert register(api, "lib", ["INVOKE", "SHUTDOWN"]).status == 403  # internal: no SHUTDOWN
    internal = register(api, "lib", ["INVOKE"])
    assert internal.status == 200 and [e.name for e in api.extensions] == ["a", "lib"]
    for n in range(20):  # spam: at most MAX_EXTENSIONS in all
        register(api, f"spam{n}")
    assert len(api.extensions) == ext_api.MAX_EXTENSIONS
    api.runtime_ready = True
    assert register(api, "late").status == 403


def test_events_wait_for_next_and_an_invocation_is_done_when_each_asks_again() -> None:
    api, _ = make("a", "b")
    a, b = ext_id(register(api, "a", ["INVOKE", "SHUTDOWN"])), ext_id(register(api, "b", ["SHUTDOWN"]))
    waiting = next_event(api, a)
    next_event(api, b)
    assert api.all_ready and waiting.answer is None  # a long poll
    event = ext_api.invoke_event("rid", 123, "arn", "Root=1")
    assert api.dispatch("INVOKE", event) == 1  # only "a" registered for INVOKE
    assert waiting.status == 200 and waiting.document == event
    assert not api.idle
    assert api.dispatch("INVOKE", ext_api.invoke_event("rid2", 124, "arn", "")) == 1  # queued: "a" is busy
    again = next_event(api, a)
    assert again.document["requestId"] == "rid2" and not api.idle  # handed at once, and busy with it
    assert next_event(api, a).answer is None and api.idle
    assert next_event(api, a).status == 403  # a second pending next


def test_a_forged_identifier_and_errors() -> None:
    api, _ = make("a")
    a = ext_id(register(api, "a"))
    assert next_event(api, "forged").status == 403
    error = Recorded({"Lambda-Extension-Identifier": a, "Lambda-Extension-Function-Error-Type": "Extension.Bad"})
    api.init_error(error)  # type: ignore[arg-type]
    assert error.status == 202 and api.failure == ("Extension.Bad", "extension a reported Extension.Bad")
    bad_subscription = Recorded({"Lambda-Extension-Identifier": a}, b"{}")
    api.subscribe(bad_subscription)  # type: ignore[arg-type]
    assert bad_subscription.status == 400


def test_an_extension_that_exits_during_init_is_a_crash_and_after_it_is_not_busy() -> None:
    api, _ = make("a", "b")
    api.extensions[0].pid, api.extensions[1].pid = 100, 101
    a = ext_id(register(api, "a", ["INVOKE"]))
    ext_id(register(api, "b", ["INVOKE"]))
    next_event(api, a)
    assert api.exited(101, 2 << 8) and not api.exited(999, 0)
    assert api.failure == (ext_api.CRASH, "extension b exited before Init completed: exit status 2")
    api.dispatch("INVOKE", ext_api.invoke_event("rid", 1, "arn", ""))
    assert not api.idle
    api.exited(100, 9)  # killed while busy: nothing left to wait for
    assert api.idle


def test_more_extensions_than_lambda_allows_fail_init_and_none_starts() -> None:
    api, _ = make(*(f"e{i:02d}" for i in range(ext_api.MAX_EXTENSIONS + 1)))
    api.launch("127.0.0.1:9001", "/")
    assert api.failure == (ext_api.TOO_MANY, "Extension limit (10) reached: /opt/extensions holds 11")
    assert all(ext.pid == 0 for ext in api.extensions)  # nothing was started
