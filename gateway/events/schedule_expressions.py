"""EventBridge Scheduler's schedule expressions: parsed once, then asked for their occurrences. Pure, no I/O.

Three forms, as Scheduler takes them (`ScheduleExpression`, evaluated in `ScheduleExpressionTimezone`):

- `at(yyyy-mm-ddThh:mm:ss)`: one occurrence, that wall-clock time in the time zone. StartDate and EndDate do not
  apply (Scheduler ignores them for one-time schedules).
- `rate(value unit)`: `unit` minute(s), hour(s) or day(s) (singular and plural both taken), `value` a positive
  integer. Occurrences are `anchor + k * period` for k >= 0: the anchor is the schedule's StartDate, or the time it
  was created when it has none (so a new rate schedule fires at once, as Scheduler's does). A day is 24 hours of
  elapsed time, whatever the time zone's daylight saving time does (Scheduler's rule).
- `cron(minutes hours day-of-month month day-of-week year)`: Scheduler's six fields: day-of-week 1-7 or SUN-SAT
  (1 is Sunday), one of day-of-month and day-of-week is `?`, year 1970-2199; wildcards `, - * /` everywhere, `L W`
  in day-of-month (not `LW`), `L #` in day-of-week (`6L`: the month's last Friday; `L`: Saturday). The fields are
  translated to croniter's (`gateway.events.schedule_expressions.Cron`), which walks wall-clock time; each wall
  time is then placed in the time zone with Scheduler's daylight-saving rules: a time the spring change skips does
  not occur, a time the autumn change repeats occurs once (its first instant).

Recurring occurrences fall within [StartDate, EndDate]. All times here are epoch seconds (floats, UTC instants).
`BadExpression` carries the reason an expression is refused (the API answers it as a ValidationException).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

UTC = dt.UTC
_AT = re.compile(r"at\((\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\)")
_RATE = re.compile(r"rate\((\d+) (minutes?|hours?|days?)\)")
_CRON = re.compile(r"cron\(([^()]*)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
#: per field: (lowest, highest, the characters it may hold besides digits and names)
_FIELDS = (
    ("minutes", 0, 59, ",-*/"),
    ("hours", 0, 23, ",-*/"),
    ("day-of-month", 1, 31, ",-*/?LW"),
    ("month", 1, 12, ",-*/"),
    ("day-of-week", 1, 7, ",-*?L#"),
    ("year", 1970, 2199, ",-*/"),
)
_DOW_ITEM = re.compile(r"([1-7]|[A-Z]{3})(?:-([1-7]|[A-Z]{3}))?(?:#([1-5])|(L))?|L")
#: how far croniter is asked to look before giving up (a year no occurrence falls in, e.g. `cron(0 0 30 2 ? *)`)
_MAX_YEARS = 240
#: the most wall-clock candidates skipped in a row (times that do not exist in the time zone) before giving up
_MAX_SKIPS = 1000


class BadExpression(ValueError):
    """A schedule expression or time zone Scheduler would refuse; str() is the reason."""


def zone(name: str | None) -> ZoneInfo:
    """The time zone named `name` (None: UTC); BadExpression if there is no such IANA zone."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise BadExpression(f"Invalid ScheduleExpressionTimezone: {name}") from None


def placed(wall: dt.datetime, tz: ZoneInfo) -> float | None:
    """The instant a naive wall-clock time names in `tz`; None if the time does not exist there (skipped by a
    daylight-saving change). A repeated time is its first instant (fold=0)."""
    aware = wall.replace(tzinfo=tz, fold=0)
    instant = aware.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) != wall:
        return None
    return instant.timestamp()


def wall_clock(instant: float, tz: ZoneInfo) -> dt.datetime:
    """The naive wall-clock time of `instant` in `tz`."""
    return dt.datetime.fromtimestamp(instant, tz).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class At:
    """`at(...)`: one occurrence."""

    instant: float

    def next_after(self, after: float) -> float | None:
        return self.instant if self.instant > after else None

    def latest_by(self, by: float) -> float | None:
        return self.instant if self.instant <= by else None


@dataclass(frozen=True, slots=True)
class Rate:
    """`rate(...)`: `anchor + k * period`, k >= 0."""

    period: int  # seconds
    anchor: float

    def next_after(self, after: float) -> float | None:
        if after < self.anchor:
            return self.anchor
        return self.anchor + (math.floor((after - self.anchor) / self.period) + 1) * self.period

    def latest_by(self, by: float) -> float | None:
        if by < self.anchor:
            return None
        return self.anchor + math.floor((by - self.anchor) / self.period) * self.period


@dataclass(frozen=True, slots=True)
class Cron:
    """`cron(...)`: `spec` is croniter's 7-field form (minute hour dom month dow second year), walked in wall-clock
    time of `tz`."""

    spec: str
    tz: ZoneInfo

    def _walk(self, instant: float, forward: bool) -> float | None:
        # croniter's next and prev are strictly after and before their start: from the minute's start forward (an
        # occurrence on it is not after `instant`), from just after `instant` backward (one on it is by `instant`)
        start = wall_clock(instant if forward else instant + 1, self.tz)
        if forward:
            start = start.replace(second=0, microsecond=0)
        walker = croniter(self.spec, start, max_years_between_matches=_MAX_YEARS)
        for _ in range(_MAX_SKIPS):
            try:
                wall = walker.get_next(dt.datetime) if forward else walker.get_prev(dt.datetime)
            except CroniterError:  # no more occurrences (the year field is exhausted)
                return None
            at = placed(wall, self.tz)
            if at is None:
                continue
            if (forward and at > instant) or (not forward and at <= instant):
                return at
        return None

    def next_after(self, after: float) -> float | None:
        return self._walk(after, True)

    def latest_by(self, by: float) -> float | None:
        return self._walk(by, False)


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed expression with its bounds: `kind` "at", "rate" or "cron"; `start`/`end` (epoch seconds) bound the
    occurrences of a recurring one."""

    kind: str
    rule: At | Rate | Cron
    start: float | None = None
    end: float | None = None

    @property
    def recurring(self) -> bool:
        return self.kind != "at"

    def next_after(self, after: float) -> float | None:
        """The first occurrence strictly after `after`; None when there is none."""
        if self.start is not None and self.recurring and after < self.start:
            after = math.nextafter(self.start, -math.inf)
        found = self.rule.next_after(after)
        if found is None or (self.recurring and self.end is not None and found > self.end):
            return None
        return found

    def latest_by(self, by: float) -> float | None:
        """The last occurrence at or before `by`; None when there is none."""
        if self.recurring and self.end is not None:
            by = min(by, self.end)
        found = self.rule.latest_by(by)
        if found is None or (self.recurring and self.start is not None and found < self.start):
            return None
        return found


def parse(expression: str, timezone: str | None, start: float | None, end: float | None, created: float) -> Expression:
    """Parse a ScheduleExpression in its time zone; `created` anchors a rate without a StartDate. BadExpression
    with the reason if Scheduler would refuse it."""
    tz = zone(timezone)
    if match := _AT.fullmatch(expression):
        try:
            year, month, day, hour, minute, second = (int(part) for part in match.groups())
            wall = dt.datetime(year, month, day, hour, minute, second)
        except ValueError:
            raise BadExpression(f"Invalid Schedule Expression {expression}.") from None
        instant = placed(wall, tz)
        if instant is None:
            raise BadExpression(f"The time of {expression} does not exist in {tz.key} (a daylight saving change).")
        return Expression("at", At(instant))
    if match := _RATE.fullmatch(expression):
        value, unit = int(match[1]), match[2].rstrip("s")
        if value < 1:
            raise BadExpression(f"Invalid Schedule Expression {expression}: the value must be a positive integer.")
        return Expression("rate", Rate(value * _UNIT_SECONDS[unit], created if start is None else start), start, end)
    if match := _CRON.fullmatch(expression):
        return Expression("cron", Cron(cron_spec(match[1], expression), tz), start, end)
    raise BadExpression(
        f"Invalid Schedule Expression {expression}. It must be at(yyyy-mm-ddThh:mm:ss), rate(value unit) or "
        "cron(minutes hours day-of-month month day-of-week year)."
    )


def cron_spec(fields_text: str, expression: str) -> str:
    """Scheduler's six cron fields as croniter's seven; BadExpression if they are not valid."""
    fields = fields_text.upper().split()
    if len(fields) != len(_FIELDS):
        raise BadExpression(f"Invalid Schedule Expression {expression}: a cron expression has six fields.")
    for text, (name, low, high, allowed) in zip(fields, _FIELDS, strict=True):
        _check_field(text, name, low, high, allowed, expression)
    minutes, hours, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise BadExpression(
            f"Invalid Schedule Expression {expression}: one of day-of-month and day-of-week must be '?', not both."
        )
    if "LW" in dom:
        raise BadExpression(f"Invalid Schedule Expression {expression}: 'LW' is not supported by this gateway.")
    spec = " ".join([minutes, hours, "*" if dom == "?" else dom, month, "*" if dow == "?" else _dow(dow), "0", year])
    try:
        croniter(spec, dt.datetime(2000, 1, 1))
    except (CroniterError, ValueError, KeyError) as exc:
        raise BadExpression(f"Invalid Schedule Expression {expression}: {exc}") from None
    return spec


def _check_field(text: str, name: str, low: int, high: int, allowed: str, expression: str) -> None:
    """A field's characters and numbers within its range (croniter is more lenient than Scheduler)."""
    names = _DAY_NAMES if name == "day-of-week" else _MONTH_NAMES if name == "month" else ()
    words = re.findall(r"[A-Z]+", text)
    if any(w not in names and w not in ("L", "W", "LW") for w in words) or any(
        c not in allowed and not c.isalnum() for c in text
    ):
        raise BadExpression(f"Invalid Schedule Expression {expression}: invalid {name} field '{text}'.")
    if any(w in ("L", "W", "LW") and not set(w) <= set(allowed) for w in words):
        raise BadExpression(f"Invalid Schedule Expression {expression}: invalid {name} field '{text}'.")
    for part in re.split(r"[,-]", text):
        value, _, step = part.partition("/")
        value = value.split("#")[0].rstrip("LW")
        if value.isdigit() and not low <= int(value) <= high:
            raise BadExpression(f"Invalid Schedule Expression {expression}: {name} {value} is out of {low}-{high}.")
        if step and (not step.isdigit() or int(step) < 1):
            raise BadExpression(f"Invalid Schedule Expression {expression}: invalid increment in {name} '{text}'.")


def _dow(field: str) -> str:
    """Scheduler's day-of-week (1-7, Sunday first; `6L`, `L`, `3#2`) in croniter's (0-6; `L5`, `6`, `2#2`)."""
    if field == "*":
        return "*"
    out = []
    for item in field.split(","):
        match = _DOW_ITEM.fullmatch(item)
        if match is None:
            raise BadExpression(f"Invalid day-of-week field '{field}'.")
        if item == "L":
            out.append("6")
            continue
        first, last, nth, final = match.groups()
        day = _zero_based(first)
        if final:
            out.append(f"L{day}")
        elif nth:
            out.append(f"{day}#{nth}")
        elif last:
            out.append(f"{day}-{_zero_based(last)}")
        else:
            out.append(day)
    return ",".join(out)


def _zero_based(day: str) -> str:
    return str(int(day) - 1) if day.isdigit() else day
