"""EventBridge Scheduler schedules through a live gateway, driven by boto3's own `scheduler` client (signed for the
service `scheduler`: the gateway runs with operator credentials, so every request is verified).

No clock is faked: one-time `at()` schedules a few seconds ahead fire for real; a new `rate()` schedule fires at once
(as Scheduler's does); cron and rate next times are read from the schedule store's file. A downtime of ten minutes
is what a gateway stopped ten minutes ago leaves in that file: the test writes that state while the gateway is
stopped, then starts it and counts the runs.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import GatewayFactory, RunningGateway, create_function, invoke_json, wait_for
from tests.servers import MotoServer

OPERATOR = {"GATEWAY_ACCESS_KEY_ID": "test", "GATEWAY_SECRET_ACCESS_KEY": "test"}
ROLE = "arn:aws:iam::123456789012:role/scheduler-role"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"
SCHEDULE_ARN = "arn:aws:scheduler:us-east-1:123456789012:schedule/default/{}"
OFF = {"Mode": "OFF"}
MARKS = """
import json, os
def lambda_handler(event, context):
    if event.get("env"):
        keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        return {k: os.environ[k] for k in keys}
    print("ran", json.dumps(event, sort_keys=True))
    return {"ok": True}
"""


@pytest.fixture
def gw(gateway_factory: GatewayFactory) -> Iterator[RunningGateway]:
    gw = gateway_factory(env=OPERATOR)
    create_function(gw.client(), "marks", MARKS)
    yield gw


def scheduler(gw: RunningGateway, **creds: str) -> Any:
    client = boto3.client(
        "scheduler",
        endpoint_url=gw.url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
        aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY", "test"),
        aws_session_token=creds.get("AWS_SESSION_TOKEN"),
    )
    gw.clients.append(client)
    return client


def runs(gw: RunningGateway, name: str = "marks") -> list[Any]:
    """The events the function ran with, in order, from its log (the gateway's log API)."""
    status, _, body = signed(gw, "GET", f"/gateway/v1/functions/{name}/logs")
    assert status == 200
    return [json.loads(line[line.index("ran {") + 4 :]) for line in body.decode().splitlines() if "ran {" in line]


def signed(gw: RunningGateway, method: str, path: str, service: str = "lambda") -> tuple[int, dict[str, str], bytes]:
    """A raw request signed with the operator's credentials for `service`."""
    request = AWSRequest(method=method, url=gw.url + path)
    SigV4Auth(Credentials("test", "test"), service, "us-east-1").add_auth(request)
    return gw.request(method, path, headers=dict(request.headers))


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    resp = exc.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"], resp["Error"]["Message"]


def target(name: str = "marks", **extra: Any) -> dict[str, Any]:
    return {"Arn": FUNCTION_ARN.format(name), "RoleArn": ROLE, **extra}


def at_in(seconds: float, tz: str = "UTC") -> str:
    when = dt.datetime.now(ZoneInfo(tz)) + dt.timedelta(seconds=seconds)
    return f"at({when:%Y-%m-%dT%H:%M:%S})"


def stored(gw: RunningGateway, name: str) -> dict[str, Any] | None:
    """The schedule's record in the store's file (what a restart resumes from)."""
    with sqlite3.connect(gw.data_dir / "schedules.sqlite3") as db:
        row = db.execute("SELECT record FROM schedules WHERE grp = 'default' AND name = ?", (name,)).fetchone()
    return None if row is None else dict(json.loads(row[0]))


def test_crud_defaults_paging_and_errors_as_scheduler_answers_them(gw: RunningGateway) -> None:
    sch = scheduler(gw)
    arn = sch.create_schedule(
        Name="hourly", ScheduleExpression="rate(1 hour)", Target=target(), FlexibleTimeWindow=OFF,
        Description="every hour",
    )["ScheduleArn"]  # fmt: skip
    assert arn == SCHEDULE_ARN.format("hourly")
    got = sch.get_schedule(Name="hourly")
    assert got["Arn"] == arn and got["GroupName"] == "default" and got["State"] == "ENABLED"
    assert got["ScheduleExpressionTimezone"] == "UTC" and got["ActionAfterCompletion"] == "NONE"
    assert got["Target"] == target(RetryPolicy={"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185})
    assert got["FlexibleTimeWindow"] == OFF and got["Description"] == "every hour"
    assert isinstance(got["CreationDate"], dt.datetime)
    # a new rate schedule fires at once, with Scheduler's default notification
    event = wait_for(lambda: runs(gw), what="the first run")[0]
    assert event["source"] == "aws.scheduler" and event["detail-type"] == "Scheduled Event"
    assert event["resources"] == [arn] and event["detail"] == "{}" and event["account"] == "123456789012"
    # UpdateSchedule replaces: what it leaves out takes its default again
    sch.update_schedule(
        Name="hourly", ScheduleExpression="rate(2 hours)", Target=target(), FlexibleTimeWindow=OFF, State="DISABLED"
    )
    got = sch.get_schedule(Name="hourly")
    assert "Description" not in got and got["State"] == "DISABLED" and got["ScheduleExpression"] == "rate(2 hours)"
    for n in range(3):
        sch.create_schedule(Name=f"page-{n}", ScheduleExpression="cron(0 3 * * ? *)", Target=target(),
                            FlexibleTimeWindow=OFF)  # fmt: skip
    names = [s["Name"] for p in sch.get_paginator("list_schedules").paginate(PaginationConfig={"PageSize": 2})
             for s in p["Schedules"]]  # fmt: skip
    assert names == ["hourly", "page-0", "page-1", "page-2"]
    assert [s["Name"] for s in sch.list_schedules(NamePrefix="page-", MaxResults=1)["Schedules"]] == ["page-0"]
    assert [s["Name"] for s in sch.list_schedules(State="DISABLED")["Schedules"]] == ["hourly"]
    assert sch.list_schedules(NamePrefix="page-0")["Schedules"][0]["Target"] == {"Arn": FUNCTION_ARN.format("marks")}
    with pytest.raises(ClientError) as exc:
        sch.create_schedule(Name="hourly", ScheduleExpression="rate(1 hour)", Target=target(), FlexibleTimeWindow=OFF)
    assert error_of(exc) == (409, "ConflictException", "Schedule hourly already exists.")
    # a Create retried with its ClientToken is answered as the first was
    retried = {"Name": "retried", "ScheduleExpression": "rate(3 hours)", "Target": target(), "FlexibleTimeWindow": OFF}
    first = sch.create_schedule(ClientToken="token-1", **retried)["ScheduleArn"]
    assert sch.create_schedule(ClientToken="token-1", **retried)["ScheduleArn"] == first
    with pytest.raises(ClientError) as exc:
        sch.create_schedule(ClientToken="token-2", **retried)
    assert error_of(exc)[1] == "ConflictException"
    sch.delete_schedule(Name="retried")
    with pytest.raises(ClientError) as exc:
        sch.get_schedule(Name="nope")
    assert error_of(exc) == (404, "ResourceNotFoundException", "Schedule nope does not exist.")
    with pytest.raises(ClientError) as exc:
        sch.get_schedule(Name="hourly", GroupName="other")
    assert error_of(exc) == (404, "ResourceNotFoundException", "Schedule group other does not exist.")
    sch.delete_schedule(Name="hourly")
    with pytest.raises(ClientError) as exc:
        sch.delete_schedule(Name="hourly")
    assert error_of(exc)[:2] == (404, "ResourceNotFoundException")
    # schedule groups: schedules of the same name in two groups; deleting a group deletes its schedules
    team = sch.create_schedule_group(Name="team", Tags=[{"Key": "k", "Value": "v"}])["ScheduleGroupArn"]
    assert team == "arn:aws:scheduler:us-east-1:123456789012:schedule-group/team"
    nightly = {
        "Name": "page-0",
        "ScheduleExpression": "cron(0 3 * * ? *)",
        "Target": target(),
        "FlexibleTimeWindow": OFF,
    }
    assert sch.create_schedule(GroupName="team", **nightly)["ScheduleArn"].endswith("schedule/team/page-0")
    assert sch.get_schedule(Name="page-0", GroupName="team")["GroupName"] == "team"
    assert [s["GroupName"] for s in sch.list_schedules(NamePrefix="page-0")["Schedules"]] == ["default", "team"]
    assert [s["Name"] for s in sch.list_schedules(GroupName="team")["Schedules"]] == ["page-0"]
    groups = sch.list_schedule_groups()["ScheduleGroups"]
    assert [(g["Name"], g["State"]) for g in groups] == [("default", "ACTIVE"), ("team", "ACTIVE")]
    assert isinstance(sch.get_schedule_group(Name="team")["CreationDate"], dt.datetime)
    with pytest.raises(ClientError) as exc:
        sch.create_schedule_group(Name="team")
    assert error_of(exc) == (409, "ConflictException", "Schedule group team already exists.")
    sch.delete_schedule_group(Name="team")
    assert stored(gw, "page-0") is not None  # the default group's is still there
    with pytest.raises(ClientError) as exc:
        sch.get_schedule(Name="page-0", GroupName="team")
    assert error_of(exc) == (404, "ResourceNotFoundException", "Schedule group team does not exist.")
    with pytest.raises(ClientError) as exc:
        sch.delete_schedule_group(Name="default")
    assert error_of(exc)[:2] == (400, "ValidationException")


#: (what a bad CreateSchedule changes of a good one, a part of the ValidationException's message)
BAD = [
    ({"ScheduleExpression": "rate(5 weeks)"}, "Invalid Schedule Expression rate(5 weeks)"),
    ({"ScheduleExpression": "cron(0 12 * * * *)"}, "one of day-of-month and day-of-week must be '?'"),
    ({"ScheduleExpression": "cron(0 12 * * ?)"}, "a cron expression has six fields"),
    ({"ScheduleExpression": "at(2020-01-01T00:00:00)"}, "a one-time schedule must be in the future"),
    ({"ScheduleExpressionTimezone": "Mars/Olympus"}, "Invalid ScheduleExpressionTimezone: Mars/Olympus"),
    ({"StartDate": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}, "cannot be earlier than 5 minutes ago"),
    ({"Target": target("missing")}, "does not exist"),
    ({"Target": {"Arn": "arn:aws:sqs:us-east-1:123456789012:q", "RoleArn": ROLE}}, "Lambda functions only"),
    (
        {"Target": {"Arn": "arn:aws:lambda:eu-west-1:123456789012:function:marks", "RoleArn": ROLE}},
        "not a function of this gateway",
    ),
    ({"Target": target(Input="not json")}, "well-formed JSON"),
    ({"Target": target(RetryPolicy={"MaximumRetryAttempts": 186})}, "less than or equal to 185"),
    ({"Target": {"Arn": FUNCTION_ARN.format("marks"), "RoleArn": "role"}}, "regular expression pattern"),
    (
        {"Target": target(DeadLetterConfig={"Arn": "arn:aws:sqs:us-east-1:123456789012:dlq"})},
        "GATEWAY_SQS_ENDPOINT",
    ),
    ({"FlexibleTimeWindow": {"Mode": "FLEXIBLE"}}, "MaximumWindowInMinutes is required"),
    ({"FlexibleTimeWindow": {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 1441}}, "less than or equal to 1440"),
]


def test_bad_schedules_are_refused_with_a_validation_exception(gw: RunningGateway) -> None:
    sch = scheduler(gw)
    for change, message in BAD:
        params: dict[str, Any] = {
            "Name": "bad", "ScheduleExpression": "rate(1 hour)", "Target": target(), "FlexibleTimeWindow": OFF,
            **change,
        }  # fmt: skip
        with pytest.raises(ClientError) as exc:
            sch.create_schedule(**params)
        status, code, text = error_of(exc)
        assert (status, code) == (400, "ValidationException") and message in text, (change, text)
    assert stored(gw, "bad") is None


def test_at_fires_once_with_its_input_in_its_time_zone_then_deletes_itself(gw: RunningGateway) -> None:
    sch = scheduler(gw)
    payload = '{"when": "<aws.scheduler.scheduled-time>", "arn": "<aws.scheduler.schedule-arn>", "n": ' \
              '<aws.scheduler.attempt-number>}'  # fmt: skip
    expression = at_in(3, "Asia/Tokyo")
    sch.create_schedule(
        Name="once", ScheduleExpression=expression, ScheduleExpressionTimezone="Asia/Tokyo", FlexibleTimeWindow=OFF,
        Target=target(Input=payload), ActionAfterCompletion="DELETE",
    )  # fmt: skip
    created = time.time()
    assert not runs(gw)
    event = wait_for(lambda: runs(gw), timeout=15, what="the at() run")[0]
    assert time.time() - created >= 1.5  # not before its time
    wall = dt.datetime.strptime(expression[3:-1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=ZoneInfo("Asia/Tokyo"))
    assert event == {
        "when": f"{wall.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}",
        "arn": SCHEDULE_ARN.format("once"),
        "n": 1,
    }
    wait_for(lambda: stored(gw, "once") is None, what="ActionAfterCompletion DELETE")
    with pytest.raises(ClientError):
        sch.get_schedule(Name="once")
    time.sleep(1)
    assert len(runs(gw)) == 1


def test_cron_and_flexible_next_times_are_stored_and_a_deleted_schedule_never_fires(gw: RunningGateway) -> None:
    sch = scheduler(gw)
    sch.create_schedule(
        Name="weekdays", ScheduleExpression="cron(30 9 ? * MON-FRI *)", ScheduleExpressionTimezone="America/New_York",
        Target=target(), FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15},
    )  # fmt: skip
    record = stored(gw, "weekdays")
    assert record is not None
    ny = ZoneInfo("America/New_York")
    expected = dt.datetime.now(ny).replace(hour=9, minute=30, second=0, microsecond=0)
    while expected <= dt.datetime.now(ny) or expected.weekday() >= 5:
        expected = (expected + dt.timedelta(days=1)).replace(hour=9, minute=30)
    assert record["next_due"] == expected.timestamp()
    assert record["next_due"] <= record["fire_at"] <= record["next_due"] + 15 * 60
    # a one-time schedule deleted before its time does not fire
    sch.create_schedule(Name="cancelled", ScheduleExpression=at_in(2), Target=target(), FlexibleTimeWindow=OFF)
    sch.delete_schedule(Name="cancelled")
    time.sleep(3.5)
    assert runs(gw) == []


def test_a_restart_fires_what_its_downtime_missed_once_not_in_a_burst(gw: RunningGateway) -> None:
    sch = scheduler(gw)
    sch.create_schedule(Name="minutely", ScheduleExpression="rate(1 minute)", Target=target(Input='{"s": "rate"}'),
                        FlexibleTimeWindow=OFF)  # fmt: skip
    wait_for(lambda: runs(gw) == [{"s": "rate"}], what="the rate's first run")
    sch.create_schedule(Name="soon", ScheduleExpression=at_in(2), Target=target(Input='{"s": "at"}'),
                        FlexibleTimeWindow=OFF)  # fmt: skip
    gw.stop()
    # what a gateway stopped ten minutes ago leaves: the rate's next run due ten minutes back, nine more missed since
    now = time.time()
    with sqlite3.connect(gw.data_dir / "schedules.sqlite3") as db:
        (raw,) = db.execute("SELECT record FROM schedules WHERE name = 'minutely'").fetchone()
        record = json.loads(raw)
        record.update(created=now - 660, next_due=now - 600, fire_at=now - 600)
        db.execute("UPDATE schedules SET record = ? WHERE name = 'minutely'", (json.dumps(record),))
    time.sleep(max(0.0, now + 3 - time.time()))  # and the at() fell due while it was down
    gw.start()
    wait_for(lambda: len(runs(gw)) >= 3, what="the catch-up runs")
    time.sleep(2)
    assert sorted(e["s"] for e in runs(gw)) == ["at", "rate", "rate"]  # one catch-up each, no burst
    record = stored(gw, "minutely")
    assert record is not None and time.time() < record["next_due"] <= time.time() + 60
    assert (record["next_due"] - (now - 660)) % 60 == pytest.approx(0, abs=1e-3)  # still on its grid
    assert stored(gw, "soon") is not None and stored(gw, "soon")["next_due"] is None  # type: ignore[index]


def test_requests_must_be_signed_for_scheduler_and_functions_may_not_schedule(gw: RunningGateway) -> None:
    status, headers, body = gw.request("GET", "/schedules")
    assert status == 403 and headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    status, headers, body = signed(gw, "GET", "/schedules", "lambda")  # a Lambda-scoped signature
    assert status == 403 and headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert b"scoped to correct service: 'scheduler'" in body
    assert signed(gw, "GET", "/schedules", "scheduler")[0] == 200
    assert signed(gw, "GET", "/2015-03-31/functions/", "scheduler")[0] == 403  # and the reverse
    creds = invoke_json(gw.client(), "marks", {"env": True})[1]
    with pytest.raises(ClientError) as exc:
        scheduler(gw, **creds).create_schedule(
            Name="evil", ScheduleExpression="rate(1 minute)", Target=target(), FlexibleTimeWindow=OFF
        )
    status, code, message = error_of(exc)
    assert (status, code) == (403, "AccessDeniedException") and "scheduler:CreateSchedule" in message
    assert stored(gw, "evil") is None


def test_a_firing_that_cannot_be_delivered_goes_to_its_dead_letter_queue(
    gateway_factory: GatewayFactory, moto_server: MotoServer
) -> None:
    gw = gateway_factory(
        env={
            **OPERATOR,
            "GATEWAY_SQS_ENDPOINT": moto_server.url,
            "AWS_ACCESS_KEY_ID": "gateway-delivery",
            "AWS_SECRET_ACCESS_KEY": "gateway-delivery-secret",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    lam = gw.client()
    create_function(lam, "gone", MARKS)
    url, dlq = moto_server.queue("schedule-dlq")
    scheduler(gw).create_schedule(
        Name="orphan", ScheduleExpression=at_in(2), FlexibleTimeWindow=OFF,
        Target=target("gone", Input='{"x": 1}', DeadLetterConfig={"Arn": dlq}),
    )  # fmt: skip
    lam.delete_function(FunctionName="gone")  # Scheduler does not retry a target that is not there
    messages = wait_for(lambda: moto_server.receive(url, wait=1), timeout=20, what="the dead letter")
    assert len(messages) == 1 and json.loads(messages[0]["Body"]) == {"x": 1}
    attributes = {k: v["StringValue"] for k, v in messages[0]["MessageAttributes"].items()}
    assert attributes["ErrorCode"] == "404" and "does not exist" in attributes["ErrorMessage"]
