"""Lambda's function states (gateway/store/states.py): the answers' shapes and what a busy function refuses.

Sources, for every string pinned here:
- CreateFunction's answer `"State": "Pending", "StateReason": "The function is being created.", "StateReasonCode":
  "Creating"` and no LastUpdateStatus: AWS CLI outputs of `aws lambda create-function` recorded in 2022-2025, and
  LocalStack's provider (CreateFunction renders `return_update_status=False`), whose snapshots are AWS's answers.
- UpdateFunctionCode / UpdateFunctionConfiguration's answer `"State": "Active", "LastUpdateStatus": "InProgress",
  "LastUpdateStatusReason": "The function is being created.", "LastUpdateStatusReasonCode": "Creating"`: recorded
  `aws lambda update-function-code` outputs (2022, 2025) and LocalStack's update_function_configuration.
- The ResourceConflictException messages: AWS's troubleshooting page ("ResourceConflictException: The operation
  cannot be performed at this time. The function is currently in the following state: Pending") and botocore
  tracebacks of UpdateFunctionCode / UpdateFunctionConfiguration / PublishVersion against AWS ("The operation
  cannot be performed at this time. An update is in progress for resource: arn:aws:lambda:us-east-1:…:function:f",
  the unqualified ARN); which operations each state refuses: AWS's "Lambda function states" page.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ResourceConflictException
from gateway.store import states
from gateway.store.code import CodeStore
from gateway.store.records import FunctionConfig
from tests.conftest import FUNCTION_ARN, function_config, open_registry

NOT_NOW = "The operation cannot be performed at this time. "


@pytest.fixture
def config(tmp_path: Path) -> FunctionConfig:
    return function_config(CodeStore(tmp_path / "code"), "f")


def test_created_answers_pending_without_last_update_status(config: FunctionConfig) -> None:
    wire = states.created(config).to_wire()
    assert (wire["State"], wire["StateReason"], wire["StateReasonCode"]) == (
        "Pending", "The function is being created.", "Creating"
    )  # fmt: skip
    assert not {"LastUpdateStatus", "LastUpdateStatusReason", "LastUpdateStatusReasonCode"} & wire.keys()
    # the catalogue's note on a stand-in runtime does not replace AWS's reason while the function is being created
    assert states.created(config).to_wire("runs on python3.12 here")["StateReason"] == "The function is being created."


def test_updating_answers_in_progress(config: FunctionConfig) -> None:
    wire = states.updating(config).to_wire()
    assert wire["State"] == "Active" and "StateReason" not in wire and "StateReasonCode" not in wire
    assert (wire["LastUpdateStatus"], wire["LastUpdateStatusReason"], wire["LastUpdateStatusReasonCode"]) == (
        "InProgress", "The function is being created.", "Creating"
    )  # fmt: skip


def test_settled_is_active_and_successful_with_a_new_revision(config: FunctionConfig) -> None:
    settled = states.settled(states.updating(config))
    wire = settled.to_wire()
    assert (wire["State"], wire["LastUpdateStatus"]) == ("Active", "Successful")
    assert not {"StateReason", "StateReasonCode", "LastUpdateStatusReason", "LastUpdateStatusReasonCode"} & wire.keys()
    assert settled.revision_id != config.revision_id
    assert settled.to_wire("a note")["StateReason"] == "a note"  # the runtime note stays where it was


def test_a_pending_function_refuses_invoke_and_changes(config: FunctionConfig) -> None:
    pending = states.created(config)
    for check in (states.check_invocable, states.check_changeable):
        with pytest.raises(ResourceConflictException) as info:
            check(pending)
        assert (info.value.status, str(info.value)) == (
            409, NOT_NOW + "The function is currently in the following state: Pending"
        )  # fmt: skip


def test_an_update_in_progress_refuses_changes_but_not_invocations(config: FunctionConfig) -> None:
    updating = states.updating(config)
    states.check_invocable(updating)  # AWS invokes the previous code meanwhile: never refused
    with pytest.raises(ResourceConflictException) as info:
        states.check_changeable(updating)
    assert str(info.value) == NOT_NOW + f"An update is in progress for resource: {FUNCTION_ARN}f"


def test_active_and_successful_refuses_nothing(config: FunctionConfig) -> None:
    states.check_invocable(config)
    states.check_changeable(config)


def test_registry_stores_settled_and_guards_its_writes(tmp_path: Path) -> None:
    """The registry's side: what it stores is settled; a stored configuration that is not (a part whose work goes
    on after the answer) makes UpdateFunction* and PublishVersion answer AWS's conflict."""
    registry = open_registry(tmp_path)
    try:
        answer = registry.create(function_config(registry.codestore, "f"))
        assert answer.state == "Pending" and registry.get("f").state == "Active"
        registry._write_latest(states.updating(registry.get("f")))  # as if an update were still being applied
        with pytest.raises(ResourceConflictException, match="An update is in progress for resource"):
            registry.update("f", lambda c: c)
        with pytest.raises(ResourceConflictException, match="An update is in progress for resource"):
            registry.publish("f")
        registry._write_latest(states.settled(registry.get("f")))
        assert registry.update("f", lambda c: c).last_update == "InProgress"
        assert registry.publish("f").version == "1"
    finally:
        registry.close()
