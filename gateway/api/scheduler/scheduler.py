"""The part of the EventBridge Scheduler API (2021-06-30) that schedules a function here: CreateSchedule,
GetSchedule, UpdateSchedule, DeleteSchedule and ListSchedules, on the gateway's own port, so that
`boto3.client("scheduler", endpoint_url=...)` works (requests signed for the service `scheduler`: gateway.api.auth).

Schedules live in schedule groups (gateway.api.scheduler.schedule_groups; `default` always exists): a request naming a
group that does not exist answers ResourceNotFoundException ("Schedule group NAME does not exist."), as Scheduler does;
the tagging operations answer 501. A schedule's target must be a function (or a version or alias of one) of this
gateway, and is invoked asynchronously at each occurrence (gateway.events.schedules). UpdateSchedule replaces the whole
schedule, as Scheduler's does: what the body leaves out takes its default again. Bodies are checked by
gateway.api.scheduler.scheduler_params; timestamps are answered as epoch seconds (rest-json's default).

Concurrency model: handlers run on the event loop; reads use the store's cache, writes run in a worker thread and
then wake the firing loop (`ScheduleRunner.changed`). A schedule's firing state is computed here (`plan`) and
written with it, so the file never holds a schedule without its next fire time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from gateway.api.http import json_response, read_json_object
from gateway.api.scheduler.scheduler_params import (
    SchedulerConflictException,
    SchedulerNotFoundException,
    SchedulerValidationException,
    _Violations,
    check_group,
    check_name,
    check_start_date,
    group_not_found,
    parse_body,
)
from gateway.app_keys import REGISTRY, SCHEDULE_RUNNER, SCHEDULES, SETTINGS
from gateway.events.schedules import plan, schedule_arn
from gateway.settings import Settings
from gateway.store.schedules import GroupNotFound, Schedule

log = logging.getLogger("gateway.api.scheduler.scheduler")

#: the paths of the Scheduler API: requests to them are signed for the service `scheduler` (gateway.api.auth)
PATH_PREFIXES = ("/schedules", "/schedule-groups", "/tags/")
MAX_RESULTS = 100


def is_scheduler_path(path: str) -> bool:
    return path.startswith(PATH_PREFIXES)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/schedules/{Name}", create_schedule)
    app.router.add_get("/schedules/{Name}", get_schedule)
    app.router.add_put("/schedules/{Name}", update_schedule)
    app.router.add_delete("/schedules/{Name}", delete_schedule)
    app.router.add_get("/schedules", list_schedules)


def _not_found(name: str) -> SchedulerNotFoundException:
    return SchedulerNotFoundException(f"Schedule {name} does not exist.")


def to_wire(settings: Settings, schedule: Schedule) -> dict[str, Any]:
    """GetSchedule's answer: what was set, with Scheduler's defaults."""
    window: dict[str, Any] = {"Mode": schedule.flexible_mode}
    if schedule.flexible_window is not None:
        window["MaximumWindowInMinutes"] = schedule.flexible_window
    out: dict[str, Any] = {
        "Arn": schedule_arn(settings, schedule.group, schedule.name),
        "GroupName": schedule.group,
        "Name": schedule.name,
        "ScheduleExpression": schedule.expression,
        "ScheduleExpressionTimezone": schedule.timezone,
        "State": schedule.state,
        "CreationDate": round(schedule.created, 3),
        "LastModificationDate": round(schedule.modified, 3),
        "Target": schedule.target,
        "FlexibleTimeWindow": window,
        "ActionAfterCompletion": schedule.action_after_completion,
    }
    for member, value in (
        ("StartDate", schedule.start),
        ("EndDate", schedule.end),
        ("Description", schedule.description),
        ("KmsKeyArn", schedule.kms_key_arn),
    ):
        if value is not None:
            out[member] = value
    return out


def _summary(settings: Settings, schedule: Schedule) -> dict[str, Any]:
    return {
        "Arn": schedule_arn(settings, schedule.group, schedule.name),
        "Name": schedule.name,
        "GroupName": schedule.group,
        "State": schedule.state,
        "CreationDate": round(schedule.created, 3),
        "LastModificationDate": round(schedule.modified, 3),
        "Target": {"Arn": schedule.target["Arn"]},
    }


async def create_schedule(request: web.Request) -> web.Response:
    """CreateSchedule: `POST /schedules/{Name}` -> `{"ScheduleArn"}`; ConflictException if it exists (unless it was
    made by a Create with the same ClientToken: that is a retry, answered alike)."""
    app = request.app
    name = request.match_info["Name"]
    body = await read_json_object(request)
    now = time.time()
    requested = parse_body(body, name, app[SETTINGS], app[REGISTRY], app[SCHEDULES], now)
    check_start_date(requested.schedule, now)
    schedule = plan(requested.schedule, now)
    try:
        created = await asyncio.to_thread(app[SCHEDULES].create, schedule)
    except GroupNotFound:  # deleted since it was checked
        raise group_not_found(schedule.group) from None
    if created:
        app[SCHEDULE_RUNNER].changed()
        log.info("schedule %s/%s created: %s -> %s", schedule.group, name, schedule.expression, schedule.target["Arn"])
    else:
        existing = app[SCHEDULES].get(schedule.group, name)
        token = requested.client_token
        if existing is None or token is None or existing.client_token != token:
            raise SchedulerConflictException(f"Schedule {name} already exists.")
        # the same ClientToken (boto3 fills one in): a retry of the Create that made it, answered as that one was
    return json_response({"ScheduleArn": schedule_arn(app[SETTINGS], schedule.group, name)})


async def update_schedule(request: web.Request) -> web.Response:
    """UpdateSchedule: `PUT /schedules/{Name}`: replaces the schedule (its creation date and rate grid stay)."""
    app = request.app
    name = request.match_info["Name"]
    body = await read_json_object(request)
    group = check_group(body.get("GroupName"), app[SCHEDULES])
    current = app[SCHEDULES].get(group, check_name(name))
    if current is None:
        raise _not_found(name)
    now = time.time()
    requested = parse_body(body, name, app[SETTINGS], app[REGISTRY], app[SCHEDULES], current.created)
    schedule = replace(plan(requested.schedule, now), last_fired=current.last_fired)
    if not await asyncio.to_thread(app[SCHEDULES].replace, schedule):
        raise _not_found(name)
    app[SCHEDULE_RUNNER].changed()
    log.info("schedule %s/%s updated: %s -> %s", group, name, schedule.expression, schedule.target["Arn"])
    return json_response({"ScheduleArn": schedule_arn(app[SETTINGS], group, name)})


async def get_schedule(request: web.Request) -> web.Response:
    """GetSchedule: `GET /schedules/{Name}?groupName=`."""
    name = check_name(request.match_info["Name"])
    group = check_group(request.query.get("groupName"), request.app[SCHEDULES])
    schedule = request.app[SCHEDULES].get(group, name)
    if schedule is None:
        raise _not_found(name)
    return json_response(to_wire(request.app[SETTINGS], schedule))


async def delete_schedule(request: web.Request) -> web.Response:
    """DeleteSchedule: `DELETE /schedules/{Name}?groupName=&clientToken=` -> `{}`; it fires no more."""
    name = check_name(request.match_info["Name"])
    group = check_group(request.query.get("groupName"), request.app[SCHEDULES])
    if not await asyncio.to_thread(request.app[SCHEDULES].delete, group, name):
        raise _not_found(name)
    request.app[SCHEDULE_RUNNER].changed()
    log.info("schedule %s/%s deleted", group, name)
    return json_response({})


def _token(text: str | None) -> tuple[str, str] | None:
    """The key after which a page starts (NextToken: the last (group, name) of the previous page, JSON in base64url)."""
    if text is None:
        return None
    try:
        group, name = orjson.loads(base64.urlsafe_b64decode(text.encode() + b"=" * (-len(text) % 4)))
        return str(group), str(name)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
        raise SchedulerValidationException("Invalid NextToken.") from None


def next_token(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


async def list_schedules(request: web.Request) -> web.Response:
    """ListSchedules: `GET /schedules?ScheduleGroup=&NamePrefix=&State=&NextToken=&MaxResults=`, by name."""
    query = request.query
    group = query.get("ScheduleGroup")
    if group is not None:
        check_group(group, request.app[SCHEDULES])
    v = _Violations()
    prefix = v.string(query.get("NamePrefix"), "namePrefix", 1, 64, r"[0-9a-zA-Z-_.]+")
    state = v.enum(query.get("State"), "state", ("ENABLED", "DISABLED"))
    raw_max = query.get("MaxResults")
    limit = MAX_RESULTS
    if raw_max is not None:
        if not raw_max.isdigit():
            raise SchedulerValidationException(f"Invalid value for MaxResults: {raw_max}")
        limit = v.integer(int(raw_max), "maxResults", 1, MAX_RESULTS) or MAX_RESULTS
    v.raise_if_any()
    after = _token(query.get("NextToken"))
    matching = [
        s
        for s in request.app[SCHEDULES].all()
        if (group is None or s.group == group)
        and (prefix is None or s.name.startswith(prefix))
        and (state is None or s.state == state)
        and (after is None or s.key > after)
    ]
    page = matching[:limit]
    settings = request.app[SETTINGS]
    out: dict[str, Any] = {"Schedules": [_summary(settings, s) for s in page]}
    if len(matching) > limit:
        out["NextToken"] = next_token(page[-1].key)
    return json_response(out)
