"""A few calls with the AWS CLI (v1 or v2) against the shared gateway; skipped where `aws` is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.conftest import RunningGateway, create_function

pytestmark = pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI (`aws`) is not on PATH")

SOURCE = "def lambda_handler(event, context):\n    return event\n"


def aws(gateway: RunningGateway, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_PAGER": "",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    cmd = ["aws", "--endpoint-url", gateway.url, "--output", "json", "lambda", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_list_functions(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    out = json.loads(aws(gateway, "list-functions").stdout)
    assert fname in [f["FunctionName"] for f in out["Functions"]]


def test_get_account_settings(gateway: RunningGateway) -> None:
    out = json.loads(aws(gateway, "get-account-settings").stdout)
    assert out["AccountLimit"]["ConcurrentExecutions"] == 1000
    assert out["AccountUsage"]["FunctionCount"] >= 0


def test_tag_resource_and_list_tags(gateway: RunningGateway, lam: Any, fname: str) -> None:
    arn = create_function(lam, fname, SOURCE)["FunctionArn"]
    aws(gateway, "tag-resource", "--resource", arn, "--tags", "team=core,env=dev")
    assert json.loads(aws(gateway, "list-tags", "--resource", arn).stdout) == {"Tags": {"team": "core", "env": "dev"}}
    aws(gateway, "untag-resource", "--resource", arn, "--tag-keys", "env")
    assert json.loads(aws(gateway, "list-tags", "--resource", arn).stdout) == {"Tags": {"team": "core"}}


def test_event_invoke_config(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    put = aws(gateway, "put-function-event-invoke-config", "--function-name", fname, "--maximum-retry-attempts", "0")
    assert json.loads(put.stdout)["FunctionArn"].endswith(f":function:{fname}:$LATEST")
    update = aws(
        gateway, "update-function-event-invoke-config", "--function-name", fname, "--maximum-event-age-in-seconds", "60"
    )
    got = json.loads(aws(gateway, "get-function-event-invoke-config", "--function-name", fname).stdout)
    assert got == json.loads(update.stdout)
    assert (got["MaximumRetryAttempts"], got["MaximumEventAgeInSeconds"]) == (0, 60)
    listed = json.loads(aws(gateway, "list-function-event-invoke-configs", "--function-name", fname).stdout)
    assert listed["FunctionEventInvokeConfigs"] == [got]
    aws(gateway, "delete-function-event-invoke-config", "--function-name", fname)
    done = aws(gateway, "get-function-event-invoke-config", "--function-name", fname, check=False)
    assert done.returncode != 0 and "doesn't have an EventInvokeConfig" in done.stderr


def test_an_operation_not_implemented_names_itself(gateway: RunningGateway, lam: Any, fname: str) -> None:
    create_function(lam, fname, SOURCE)
    done = aws(gateway, "get-runtime-management-config", "--function-name", fname, check=False)
    assert done.returncode != 0
    assert "NotImplementedException" in done.stderr
    assert "GetRuntimeManagementConfig is not implemented by this gateway (not applicable" in done.stderr
