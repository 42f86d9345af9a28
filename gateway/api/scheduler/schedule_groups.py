"""EventBridge Scheduler's schedule groups: CreateScheduleGroup, GetScheduleGroup, DeleteScheduleGroup and
ListScheduleGroups (botocore's scheduler model, 2021-06-30), next to the schedules (gateway.api.scheduler.scheduler).

The group `default` always exists and cannot be created or deleted. Deleting a group deletes its schedules with it
(Scheduler does so asynchronously, showing the group DELETING meanwhile; here it is one transaction, so the answer
comes when they are gone and a group is always ACTIVE). Tags given at creation are kept and answered nowhere yet
(the tagging operations answer 501).

Concurrency model: as gateway.api.scheduler.scheduler's: reads from the store's cache, writes in a worker thread,
then the firing loop is woken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from gateway.api.http import json_response, read_json_object
from gateway.api.scheduler.scheduler import MAX_RESULTS, _token, next_token
from gateway.api.scheduler.scheduler_params import (
    NAME_PATTERN,
    TOKEN_PATTERN,
    SchedulerConflictException,
    SchedulerValidationException,
    _Violations,
    check_name,
    group_not_found,
)
from gateway.app_keys import SCHEDULE_RUNNER, SCHEDULES, SETTINGS
from gateway.settings import Settings
from gateway.store.schedules import DEFAULT_GROUP, ScheduleGroup

log = logging.getLogger("gateway.api.scheduler.scheduler")

MAX_TAGS = 200


def add_routes(app: web.Application) -> None:
    app.router.add_post("/schedule-groups/{Name}", create_schedule_group)
    app.router.add_get("/schedule-groups/{Name}", get_schedule_group)
    app.router.add_delete("/schedule-groups/{Name}", delete_schedule_group)
    app.router.add_get("/schedule-groups", list_schedule_groups)


def group_arn(settings: Settings, name: str) -> str:
    return f"arn:{settings.partition}:scheduler:{settings.region}:{settings.account_id}:schedule-group/{name}"


def _to_wire(settings: Settings, name: str, group: ScheduleGroup | None) -> dict[str, Any]:
    """GetScheduleGroup's answer and a ListScheduleGroups item; `default` has no dates."""
    out: dict[str, Any] = {"Arn": group_arn(settings, name), "Name": name, "State": "ACTIVE"}
    if group is not None:
        out["CreationDate"] = round(group.created, 3)
        out["LastModificationDate"] = round(group.modified, 3)
    return out


def _tags(value: object, v: _Violations) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise SchedulerValidationException("Invalid type for 'Tags': expected a list of {Key, Value}")
    if len(value) > MAX_TAGS:
        v.add(len(value), "tags", f"Member must have length less than or equal to {MAX_TAGS}")
    tags = []
    for i, tag in enumerate(value):
        key = v.string(tag.get("Key"), f"tags.{i + 1}.member.key", 1, 128)
        val = v.string(tag.get("Value"), f"tags.{i + 1}.member.value", 1, 256)
        if key is None or val is None:
            v.add(None, f"tags.{i + 1}.member", "Member must have a Key and a Value")
        else:
            tags.append((key, val))
    return tuple(tags)


async def create_schedule_group(request: web.Request) -> web.Response:
    """CreateScheduleGroup: `POST /schedule-groups/{Name}` -> `{"ScheduleGroupArn"}`."""
    app = request.app
    name = check_name(request.match_info["Name"])
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"Tags", "ClientToken"})
    if unknown:
        raise SchedulerValidationException(f"Unknown parameter in input: {unknown[0]!r}")
    v = _Violations()
    tags = _tags(body.get("Tags"), v)
    token = v.string(body.get("ClientToken"), "clientToken", 1, 64, TOKEN_PATTERN)
    v.raise_if_any()
    now = time.time()
    group = ScheduleGroup(name, now, now, tags, token)
    if not await asyncio.to_thread(app[SCHEDULES].create_group, group):
        existing = app[SCHEDULES].group(name)
        if existing is None or token is None or existing.client_token != token:
            raise SchedulerConflictException(f"Schedule group {name} already exists.")
    else:
        log.info("schedule group %s created", name)
    return json_response({"ScheduleGroupArn": group_arn(app[SETTINGS], name)})


async def get_schedule_group(request: web.Request) -> web.Response:
    """GetScheduleGroup: `GET /schedule-groups/{Name}`."""
    name = check_name(request.match_info["Name"])
    store = request.app[SCHEDULES]
    if not store.has_group(name):
        raise group_not_found(name)
    return json_response(_to_wire(request.app[SETTINGS], name, store.group(name)))


async def delete_schedule_group(request: web.Request) -> web.Response:
    """DeleteScheduleGroup: `DELETE /schedule-groups/{Name}` -> `{}`, its schedules deleted with it."""
    name = check_name(request.match_info["Name"])
    if name == DEFAULT_GROUP:
        raise SchedulerValidationException("The default schedule group cannot be deleted.")
    deleted = await asyncio.to_thread(request.app[SCHEDULES].delete_group, name)
    if deleted is None:
        raise group_not_found(name)
    request.app[SCHEDULE_RUNNER].changed()
    log.info("schedule group %s deleted with its %d schedules", name, deleted)
    return json_response({})


async def list_schedule_groups(request: web.Request) -> web.Response:
    """ListScheduleGroups: `GET /schedule-groups?NamePrefix=&NextToken=&MaxResults=`, by name."""
    query = request.query
    v = _Violations()
    prefix = v.string(query.get("NamePrefix"), "namePrefix", 1, 64, NAME_PATTERN)
    raw_max = query.get("MaxResults")
    limit = MAX_RESULTS
    if raw_max is not None:
        if not raw_max.isdigit():
            raise SchedulerValidationException(f"Invalid value for MaxResults: {raw_max}")
        limit = v.integer(int(raw_max), "maxResults", 1, MAX_RESULTS) or MAX_RESULTS
    v.raise_if_any()
    after = _token(query.get("NextToken"))
    store = request.app[SCHEDULES]
    names = sorted([DEFAULT_GROUP, *(g.name for g in store.groups())])
    matching = [n for n in names if (prefix is None or n.startswith(prefix)) and (after is None or ("", n) > after)]
    page = matching[:limit]
    settings = request.app[SETTINGS]
    out: dict[str, Any] = {"ScheduleGroups": [_to_wire(settings, n, store.group(n)) for n in page]}
    if len(matching) > limit:
        out["NextToken"] = next_token(("", page[-1]))
    return json_response(out)
