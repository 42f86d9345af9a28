"""Scheduler's schedule expressions (gateway/events/schedule_expressions.py) and the firing loop's pure parts
(gateway/events/schedules.py: plan, fire_time, payload): parsing, next and latest occurrences, time zones and
daylight saving time, StartDate/EndDate, checked against brute force where that is cheap."""

from __future__ import annotations

import datetime as dt
import json
import random
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.events.schedule_expressions import BadExpression, cron_spec, parse
from gateway.events.schedules import fire_time, payload, plan
from gateway.settings import Settings
from gateway.store.schedules import Schedule

UTC = dt.UTC
NY = ZoneInfo("America/New_York")


def ts(*args: int, tz: dt.tzinfo = UTC) -> float:
    return dt.datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc]


def iso(instant: float | None, tz: dt.tzinfo = UTC) -> str | None:
    return None if instant is None else dt.datetime.fromtimestamp(instant, tz).isoformat()


def occurrences(expression: str, after: float, n: int, tz: str | None = None, **bounds: float) -> list[str | None]:
    parsed = parse(expression, tz, bounds.get("start"), bounds.get("end"), bounds.get("created", after))
    out: list[str | None] = []
    at: float | None = after
    for _ in range(n):
        at = parsed.next_after(at) if at is not None else None
        out.append(iso(at, ZoneInfo(tz or "UTC")))
    return out


# -- parsing -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aws", "croniter"),
    [
        ("0 12 * * ? *", "0 12 * * * 0 *"),
        ("0/15 * ? * MON-FRI *", "0/15 * * * MON-FRI 0 *"),
        ("0 8 ? * 2-6 2027", "0 8 * * 1-5 0 2027"),  # Scheduler's 1 is Sunday, croniter's 0
        ("0 12 ? * 6L *", "0 12 * * L5 0 *"),  # the month's last Friday
        ("0 12 ? * 3#2 *", "0 12 * * 2#2 0 *"),  # its second Tuesday
        ("0 12 ? * L *", "0 12 * * 6 0 *"),  # Saturday
        ("0 12 15W * ? *", "0 12 15W * * 0 *"),
        ("0 12 L * ? *", "0 12 L * * 0 *"),
        ("0 0 1 JAN,JUL ? *", "0 0 1 JAN,JUL * 0 *"),
    ],
)
def test_cron_fields_become_croniters(aws: str, croniter: str) -> None:
    assert cron_spec(aws, f"cron({aws})") == croniter


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("cron(0 12 * * * *)", "must be '?'"),
        ("cron(0 12 ? * ? *)", "must be '?'"),
        ("cron(0 12 * * ?)", "six fields"),
        ("cron(60 12 * * ? *)", "minutes 60 is out of 0-59"),
        ("cron(0 24 * * ? *)", "hours 24 is out of 0-23"),
        ("cron(0 12 32 * ? *)", "day-of-month 32"),
        ("cron(0 12 ? * 8 *)", "day-of-week 8"),
        ("cron(0 12 ? * 0 *)", "day-of-week 0"),
        ("cron(0 12 * 13 ? *)", "month 13"),
        ("cron(0 12 * * ? 1969)", "year 1969"),
        ("cron(*/0 * * * ? *)", "increment"),
        ("cron(0 12 ? * 2W *)", "day-of-week"),
        ("cron(0 12 LW * ? *)", "'LW' is not supported"),
        ("cron(0 12 * FOO ? *)", "month"),
        ("rate(0 minutes)", "positive"),
        ("rate(5 weeks)", "It must be"),
        ("rate(1.5 hours)", "It must be"),
        ("at(2026-02-30T00:00:00)", "Invalid Schedule Expression"),
        ("at(2026-12-07 12:00:00)", "It must be"),
        ("every hour", "It must be"),
    ],
)
def test_bad_expressions_are_refused_with_the_reason(expression: str, reason: str) -> None:
    with pytest.raises(BadExpression, match=reason.replace("(", r"\(").replace("*", r"\*")):
        parse(expression, None, None, None, 0.0)


def test_unknown_time_zone_and_a_skipped_at_time_are_refused() -> None:
    with pytest.raises(BadExpression, match="Invalid ScheduleExpressionTimezone: Mars/Olympus"):
        parse("rate(1 hour)", "Mars/Olympus", None, None, 0.0)
    with pytest.raises(BadExpression, match="does not exist in America/New_York"):
        parse("at(2027-03-14T02:30:00)", "America/New_York", None, None, 0.0)


# -- occurrences -------------------------------------------------------------------------------------------


def test_at_is_its_wall_time_in_its_zone_once() -> None:
    parsed = parse("at(2026-12-24T18:00:00)", "Europe/Paris", None, None, 0.0)
    assert parsed.next_after(0.0) == ts(2026, 12, 24, 17)
    assert parsed.next_after(ts(2026, 12, 24, 17)) is None
    assert parsed.latest_by(ts(2026, 12, 25)) == ts(2026, 12, 24, 17)
    # StartDate and EndDate do not apply to a one-time schedule
    bounded = parse("at(2026-12-24T18:00:00)", "Europe/Paris", ts(2027, 1, 1), ts(2027, 1, 2), 0.0)
    assert bounded.next_after(0.0) == ts(2026, 12, 24, 17)


def test_rate_runs_from_its_creation_or_start_date_in_elapsed_time() -> None:
    created = ts(2026, 12, 7, 11, 0, 30)
    assert occurrences("rate(5 minutes)", created - 1, 3, created=created) == [
        "2026-12-07T11:00:30+00:00",
        "2026-12-07T11:05:30+00:00",
        "2026-12-07T11:10:30+00:00",
    ]
    assert occurrences("rate(1 minute)", created, 1, created=created) == ["2026-12-07T11:01:30+00:00"]
    start = ts(2027, 1, 1)
    assert occurrences("rate(2 hours)", created, 2, start=start, created=created) == [
        "2027-01-01T00:00:00+00:00",
        "2027-01-01T02:00:00+00:00",
    ]
    # days are 24 hours whatever daylight saving time does to the wall clock
    assert occurrences("rate(1 day)", ts(2027, 3, 13, 11), 2, "America/New_York", created=ts(2027, 3, 13, 12)) == [
        "2027-03-13T07:00:00-05:00",
        "2027-03-14T08:00:00-04:00",
    ]


def test_cron_in_a_zone_skips_the_spring_gap_and_runs_once_in_the_autumn_repeat() -> None:
    assert occurrences("cron(30 2 * * ? *)", ts(2027, 3, 13, 12), 2, "America/New_York") == [
        "2027-03-15T02:30:00-04:00",  # 2027-03-14 02:30 does not exist there
        "2027-03-16T02:30:00-04:00",
    ]
    assert occurrences("cron(30 1 * * ? *)", ts(2027, 11, 6, 12), 2, "America/New_York") == [
        "2027-11-07T01:30:00-04:00",  # once, not again at 01:30 EST
        "2027-11-08T01:30:00-05:00",
    ]
    every_half_hour = occurrences("cron(0/30 * * * ? *)", ts(2027, 11, 7, 4, 15), 4, "America/New_York")
    assert every_half_hour == [
        "2027-11-07T00:30:00-04:00",
        "2027-11-07T01:00:00-04:00",
        "2027-11-07T01:30:00-04:00",
        "2027-11-07T02:00:00-05:00",  # the repeated hour is not run twice
    ]


def test_cron_special_days_and_years() -> None:
    after = ts(2026, 12, 7)
    assert occurrences("cron(0 12 ? * 6L *)", after, 2) == ["2026-12-25T12:00:00+00:00", "2027-01-29T12:00:00+00:00"]
    assert occurrences("cron(0 12 L * ? *)", after, 2) == ["2026-12-31T12:00:00+00:00", "2027-01-31T12:00:00+00:00"]
    assert occurrences("cron(0 12 ? * 3#2 2027)", after, 1) == ["2027-01-12T12:00:00+00:00"]
    assert occurrences("cron(0 12 1 1 ? 2027)", after, 2) == ["2027-01-01T12:00:00+00:00", None]
    assert occurrences("cron(0 9 ? * 2 *)", after, 1) == ["2026-12-07T09:00:00+00:00"]  # 2 is Monday


def test_start_and_end_dates_bound_recurring_occurrences() -> None:
    start, end = ts(2027, 1, 1, 0, 30), ts(2027, 1, 1, 3)
    assert occurrences("cron(0 * * * ? *)", ts(2026, 1, 1), 4, start=start, end=end) == [
        "2027-01-01T01:00:00+00:00",
        "2027-01-01T02:00:00+00:00",
        "2027-01-01T03:00:00+00:00",
        None,
    ]
    parsed = parse("cron(0 * * * ? *)", None, start, end, 0.0)
    assert parsed.latest_by(ts(2027, 6, 1)) == end
    assert parsed.latest_by(ts(2026, 6, 1)) is None


@settings(max_examples=200, deadline=None)
@given(
    period=st.integers(1, 2000),
    unit=st.sampled_from(["minutes", "hours", "days"]),
    anchor=st.floats(0, 4e9),
    probe=st.floats(0, 4e9),
)
def test_rate_next_and_latest_bracket_any_instant(period: int, unit: str, anchor: float, probe: float) -> None:
    parsed = parse(f"rate({period} {unit})", None, None, None, anchor)
    following = parsed.next_after(probe)
    assert following is not None and following > probe
    latest = parsed.latest_by(probe)
    if probe < anchor:
        assert latest is None and following == anchor
    else:
        assert latest is not None and latest <= probe
        assert following - latest == pytest.approx(period * {"minutes": 60, "hours": 3600, "days": 86400}[unit])


def _matches(minute: set[int], hour: set[int], weekdays: set[int], at: dt.datetime) -> bool:
    return at.minute in minute and at.hour in hour and (at.isoweekday() % 7) + 1 in weekdays


@settings(max_examples=60, deadline=None)
@given(
    minutes=st.sets(st.integers(0, 59), min_size=1, max_size=4),
    hours=st.sets(st.integers(0, 23), min_size=1, max_size=3),
    weekdays=st.sets(st.integers(1, 7), min_size=1, max_size=3),
    start=st.integers(0, 3 * 10**8),
)
def test_cron_next_is_the_first_matching_minute(
    minutes: set[int], hours: set[int], weekdays: set[int], start: int
) -> None:
    """Against brute force: the first minute after `start` whose minute, hour and Scheduler day-of-week match."""
    fields = (
        ",".join(map(str, sorted(minutes))),
        ",".join(map(str, sorted(hours))),
        ",".join(map(str, sorted(weekdays))),
    )
    parsed = parse(f"cron({fields[0]} {fields[1]} ? * {fields[2]} *)", None, None, None, 0.0)
    instant = 1.6e9 + start
    found = parsed.next_after(instant)
    assert found is not None
    probe = dt.datetime.fromtimestamp(instant, UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    while not _matches(minutes, hours, weekdays, probe):
        probe += dt.timedelta(minutes=1)
    assert found == probe.timestamp()
    assert parsed.latest_by(found) == found


# -- the firing loop's pure parts ----------------------------------------------------------------------------


def schedule(expression: str, **fields: object) -> Schedule:
    base: dict[str, object] = {
        "name": "s", "group": "default", "expression": expression, "timezone": "UTC", "state": "ENABLED",
        "target": {"Arn": "arn:aws:lambda:us-east-1:123456789012:function:f", "RoleArn": "r"},
        "flexible_mode": "OFF", "flexible_window": None, "action_after_completion": "NONE",
        "created": ts(2026, 12, 7, 11), "modified": ts(2026, 12, 7, 11),
    }  # fmt: skip
    return Schedule(**{**base, **fields})  # type: ignore[arg-type]


def test_plan_fires_a_new_rate_at_once_and_an_update_on_its_grid() -> None:
    created = ts(2026, 12, 7, 11)
    assert plan(schedule("rate(10 minutes)"), created).next_due == created
    updated = plan(schedule("rate(10 minutes)"), created + 25 * 60)
    assert updated.next_due == created + 30 * 60 and updated.fire_at == updated.next_due
    assert plan(schedule("at(2026-12-07T11:03:00)"), created + 600).next_due == created + 180
    assert plan(schedule("cron(0 12 * * ? *)"), created).next_due == ts(2026, 12, 7, 12)


def test_a_flexible_window_delays_within_it_and_never_before_the_previous_firing() -> None:
    flexible = schedule("rate(1 minute)", flexible_mode="FLEXIBLE", flexible_window=5)
    rng = random.Random(7)
    for _ in range(200):
        at = fire_time(flexible, 1000.0, None, rng)
        assert at is not None and 1000.0 <= at <= 1300.0
        later = fire_time(flexible, 1000.0, 1200.0, rng)
        assert later is not None and 1200.0 <= later <= 1300.0
    assert fire_time(schedule("rate(1 minute)"), 1000.0, 2000.0, rng) == 1000.0
    assert fire_time(flexible, None, None, rng) is None


def test_payload_is_the_input_with_context_attributes_or_the_default_notification() -> None:
    settings_ = Settings()
    occurrence = ts(2026, 12, 7, 12)
    default = json.loads(payload(settings_, schedule("rate(1 hour)"), occurrence, "abc", 1))
    assert default == {
        "version": "0", "id": default["id"], "detail-type": "Scheduled Event", "source": "aws.scheduler",
        "account": "123456789012", "time": "2026-12-07T12:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:scheduler:us-east-1:123456789012:schedule/default/s"], "detail": "{}",
    }  # fmt: skip
    text = (
        '{"t": "<aws.scheduler.scheduled-time>", "id": "<aws.scheduler.execution-id>", '
        '"n": <aws.scheduler.attempt-number>}'
    )
    given_ = schedule("rate(1 hour)", target={"Arn": "a", "RoleArn": "r", "Input": text})
    assert json.loads(payload(settings_, given_, occurrence, "abc", 3)) == {
        "t": "2026-12-07T12:00:00Z",
        "id": "abc",
        "n": 3,
    }
