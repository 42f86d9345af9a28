"""Lambda's function states: Pending → Active on creation, InProgress → Successful on an update. Pure, no I/O.

AWS answers every CreateFunction with `State: Pending` (StateReason "The function is being created.",
StateReasonCode `Creating`, no LastUpdateStatus) and every UpdateFunctionCode / UpdateFunctionConfiguration with
`LastUpdateStatus: InProgress` (LastUpdateStatusReason "The function is being created.", ...ReasonCode
`Creating`), then moves the function to Active / Successful with a new RevisionId once its resources are ready;
waiters (boto3's `function_active_v2`, `function_updated_v2`) and deploy tools poll GetFunction for that.

What the gateway does, honestly: the work a function needs before it can run — storing the package, extracting
it, byte-compiling it, resolving its layers — is done before the registry write, so nothing is left to do once
the answer goes out. The registry therefore writes the configuration `settled` (Active, Successful, a new
RevisionId) in the same atomic step as the create or update, and the route answers with the snapshot the call
made (`created` / `updating`: Pending or InProgress, with the RevisionId it had then). The next call — a
GetFunction, a waiter's first poll, an Invoke right after CreateFunction — sees Active / Successful, as on AWS
once the window is over; only the window is empty. A RevisionId taken from the create or update answer is stale
afterwards, as on AWS (its move to Active / Successful gives a new one).

Should a part ever keep working after the answer (a function held Pending while something is fetched or
mounted), it stores the configuration unsettled and settles it when done; meanwhile `check_invocable` and
`check_changeable` answer what AWS answers in that state (ResourceConflictException, AWS's wording, recorded
from its answers: "The operation cannot be performed at this time. The function is currently in the following
state: Pending" and "... An update is in progress for resource: <unqualified function ARN>"). While an update
is in progress AWS still invokes the previous code and configuration; creation pending refuses Invoke,
UpdateFunctionCode, UpdateFunctionConfiguration and PublishVersion (AWS's "Lambda function states" page).
"""

from __future__ import annotations

import dataclasses

from gateway.errors import ResourceConflictException
from gateway.store.records import ACTIVE, IN_PROGRESS, PENDING, SUCCESSFUL, FunctionConfig, new_revision_id

_NOT_NOW = "The operation cannot be performed at this time."


def created(config: FunctionConfig) -> FunctionConfig:
    """`config` as CreateFunction made it: Pending."""
    return dataclasses.replace(config, state=PENDING, last_update=SUCCESSFUL)


def updating(config: FunctionConfig) -> FunctionConfig:
    """`config` as an update made it: Active, its update InProgress."""
    return dataclasses.replace(config, state=ACTIVE, last_update=IN_PROGRESS)


def settled(config: FunctionConfig) -> FunctionConfig:
    """`config` once its resources are ready: Active and Successful, with a new RevisionId."""
    return dataclasses.replace(config, state=ACTIVE, last_update=SUCCESSFUL, revision_id=new_revision_id())


def check_invocable(config: FunctionConfig) -> None:
    """Invoke's rule: only an Active version runs; otherwise AWS's ResourceConflictException (409)."""
    if config.state != ACTIVE:
        raise ResourceConflictException(f"{_NOT_NOW} The function is currently in the following state: {config.state}")


def check_changeable(config: FunctionConfig) -> None:
    """UpdateFunctionCode's, UpdateFunctionConfiguration's and PublishVersion's rule for `$LATEST` (`config`):
    refused while the function is Pending or an update is InProgress, with AWS's ResourceConflictException."""
    if config.state != ACTIVE:
        check_invocable(config)
    if config.last_update == IN_PROGRESS:
        raise ResourceConflictException(f"{_NOT_NOW} An update is in progress for resource: {config.arn}")
