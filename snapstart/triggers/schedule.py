"""Schedule/ScheduleV2 events: ``rate(...)``, ``cron(...)`` and ``at(...)`` expressions
from triggers.json's ``schedules`` that put EventBridge's "Scheduled Event" on the
durable queue of asynchronous invocations (issue 15).

What it does: ``Scheduler(service)`` (started and stopped by triggers/runtime.py) runs
one thread that follows ``$SNAPSTART_HOME/triggers.json`` by its mtime, wakes at each
schedule's next tick and enqueues one ``InvocationType: Event`` invocation per tick
through ``service.events`` (snapstart/events), exactly as the Invoke API does for
Event calls, then wakes ``service.worker``. Retries, the failed-events table and the
function's logs and /metrics therefore follow Lambda's asynchronous rules.
What it must not do: invoke a function itself, know HTTP, or fire a tick twice.

Expressions (``parse(expression, timezone=None)``; a ``ConfigError`` names what is
wrong; ``snapstart deploy`` validates templates with it)::

    rate(VALUE UNIT)   VALUE a positive integer; UNIT minute|hour|day when VALUE is 1,
                       minutes|hours|days otherwise (AWS refuses rate(1 minutes) and
                       rate(5 minute)). Ticks are anchor + k*period, k >= 1: the anchor
                       is when serve first saw the schedule (or its expression changed,
                       or it was enabled again), as an EventBridge rule's rate starts
                       when the rule is created. Rates ignore the time zone (a day is
                       24 hours, as in EventBridge Scheduler).
    cron(Minutes Hours Day-of-month Month Day-of-week Year)
                       six fields separated by blanks, evaluated on whole minutes:
        Minutes      0-59                   , - * /
        Hours        0-23                   , - * /
        Day-of-month 1-31                   , - * / ?   L  L-n  LW  nW
        Month        1-12 or JAN-DEC        , - * /
        Day-of-week  1-7 or SUN-SAT (1=SUN) , - * ?     L  nL  n#k
        Year         1970-2199              , - * /
      - a field is a comma list of items; an item is ``*``, a value, or a range
        ``a-b``, each optionally ``/step`` (``a/step`` = a through the field's maximum);
        a range may wrap (``22-2`` hours, ``FRI-MON``, ``NOV-FEB``) except in Year;
        names are case-insensitive; ``/`` is not allowed in Day-of-week (as in AWS's
        table).
      - exactly one of Day-of-month and Day-of-week is ``?`` (AWS cannot combine them).
      - Day-of-month ``L``: the last day of the month; ``L-n``: n days before it (n
        1-30); ``LW``: the last weekday (Mon-Fri) of the month; ``nW``: the weekday
        nearest to day n within the same month (1W on a Saturday is Monday the 3rd;
        31W on a Sunday is Friday the 29th; no tick in a month shorter than n).
      - Day-of-week ``L`` alone: the last day of the week, Saturday (7), as in Quartz;
        ``nL``: the last day n of the month (``6L``: last Friday); ``n#k``: the k-th
        day n of the month, k 1-5 (``2#1``: first Monday; no tick in a month without
        a fifth one). ``L``, ``W`` and ``#`` stand alone in their field (no lists).
    at(yyyy-mm-ddThh:mm:ss)
                       ScheduleV2's one-time schedule: one tick (seconds included).

Time zones: UTC unless an entry has ``"timezone": "Area/City"`` (ScheduleV2's
ScheduleExpressionTimezone; deploy writes it), which cron and at are evaluated in,
with EventBridge Scheduler's daylight-saving rules: a wall time skipped when clocks
spring forward does not fire that day; a wall time that occurs twice when they fall
back fires once (the first).

Why not a library: PyPI's candidates were run on the cases of
tests/unit/test_schedule.py (Dec 2026). ``croniter`` is Unix cron with extensions: it
reads ``?`` as ``*``, numbers days of the week from Sunday = 0 (AWS's ``2#1``, the
first Monday, is its first Tuesday), takes a sixth field as seconds (no year) and
does not require one day field to be ``?``; a translation layer would be as large as
the grammar. ``aws-cron-expression-validator`` only validates (regular expressions, no
next time). ``pyawscron`` 1.0.7 validates nothing (accepts minute 60 and ``*`` in both
day fields). ``aws-croniter`` 2.1.1, the best of them, gives up after ten search steps
(``cron(0 0 29 2 ? *)`` after 2097-03-01 is None instead of 2104-02-29), never fires
Day-of-week ``L``, accepts ``LW`` and then fails with a ValueError, and is UTC only.
The grammar above is small enough to own (stdlib only: ``zoneinfo`` for time zones).

Each tick produces (unless the entry has ``input``, which is sent verbatim)::

    {"version": "0", "id": UUID, "detail-type": "Scheduled Event",
     "source": "aws.events", "account": ACCOUNT, "time": "2026-12-01T12:00:00Z",
     "region": REGION, "resources": ["arn:aws:events:REGION:ACCOUNT:rule/ID"],
     "detail": {}}

UUID is derived from (schedule id, tick): the same tick always gets the same id, and it
is also the queued event's id, so the function's RequestId for it.

Persistence (format 1): a table in the async-invoke queue's SQLite database
(``$SNAPSTART_HOME/events.db``, snapstart/events/store.py), beside ``pending``::

    schedule_state(id TEXT PK, expression TEXT, timezone TEXT NULL, enabled INT,
                   anchor_ms INT, last_tick_ms INT NULL, checked_ms INT,
                   last_event TEXT NULL, fired_at REAL NULL, fired INT, missed INT,
                   last_error TEXT NULL)

Times are integer milliseconds since the epoch (UTC), so that ticks compare exactly.
A later format of this table gets a new name (``schedule_state_v2``), so that no
release misreads another's rows; ``CREATE TABLE IF NOT EXISTS`` makes it on first use.
``last_tick_ms`` is the last tick fired (or consumed: a tick whose function does not
exist is consumed with ``last_error`` and nothing queued); ``checked_ms`` how far ticks
have been accounted for (fired or counted in ``missed``). Rows of schedules removed
from triggers.json are kept (a few bytes each), so that a schedule removed and added
back under the same id cannot fire a tick it already fired.

At most once per tick, across restarts and crashes: a tick T is fired in one SQLite
transaction (``BEGIN IMMEDIATE`` on this thread's connection of the EventStore) that
reads ``last_tick_ms``, gives up if it is >= T, inserts the event into ``pending``
(``EventStore.add``) and sets ``last_tick_ms = T``; then COMMIT. The event and the
record of its tick are committed together or not at all, so a crash (``kill -9``,
power loss: the store runs with ``synchronous=FULL``) at any point leaves either both
(the next serve sees T fired and runs the queued event) or neither (T was not fired).
Because the check is inside the write-locked transaction, even two serves on one home
fire each tick once, and a clock stepped back fires nothing until it passes the last
tick fired again. After the commit the event follows Lambda's async rules: run at
least once; a serve killed while the function runs the event runs it again (same event
id), as Lambda may.

Missed ticks: EventBridge does not replay ticks it missed, and neither does this. When
serve starts (or a tick is late for any reason), of the ticks since the last one
accounted for only the latest is fired, and only if it is at most ``grace`` late (60 s:
the precision EventBridge Scheduler promises, a 1:00 tick may run until 1:00:59); the
others are counted in ``missed`` and logged. A new schedule (or one whose expression
changed, or that was enabled again) does not fire ticks before it was seen.

Test-only: ``SNAPSTART_SCHEDULE_SPEEDUP=K`` (K >= 1) makes rate periods and the grace
window K times shorter (``rate(1 minute)`` ticks every 2 s at K=30), so that the
integration test sees real ticks, restarts and at-most-once without waiting minutes.
Cron and at expressions keep wall-clock time.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import tracing
from ..errors import ConfigError, SnapStartError
from . import config

__all__ = ["Rate", "Cron", "At", "Expression", "Schedule", "SchedulerOptions", "Scheduler",
           "parse", "check", "describe", "scheduled_event"]

log = logging.getLogger("snapstart.schedule")

UTC = timezone.utc

MINUTE_MS = 60_000
MAX_INPUT = 256 * 1024          # Lambda's limit on an Event invocation's payload
MISSED_COUNT_CAP = 10_000       # ticks counted one by one at most, per pass
_EVENT_NS = uuid.UUID("5b0c6f0e-2f6b-4b43-9a57-1f5d8c2f7e31")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedule_state (
    id TEXT PRIMARY KEY, expression TEXT NOT NULL, timezone TEXT,
    enabled INTEGER NOT NULL, anchor_ms INTEGER NOT NULL, last_tick_ms INTEGER,
    checked_ms INTEGER NOT NULL, last_event TEXT, fired_at REAL,
    fired INTEGER NOT NULL DEFAULT 0, missed INTEGER NOT NULL DEFAULT 0, last_error TEXT)
"""


# ---- expressions ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Rate:
    text: str
    period_ms: int

    def scaled(self, speedup: float) -> "Rate":
        """The test-only speedup (see the module docstring)."""
        if speedup == 1:
            return self
        return dataclasses.replace(self, period_ms=max(1, round(self.period_ms / speedup)))

    def next_after(self, after_ms: int, anchor_ms: int) -> int | None:
        """The first tick (anchor + k*period, k >= 1) strictly after ``after_ms``."""
        if after_ms < anchor_ms:
            return anchor_ms + self.period_ms
        return anchor_ms + ((after_ms - anchor_ms) // self.period_ms + 1) * self.period_ms


@dataclasses.dataclass(frozen=True)
class At:
    text: str
    at_ms: int

    def next_after(self, after_ms: int, anchor_ms: int = 0) -> int | None:
        return self.at_ms if self.at_ms > after_ms else None


@dataclasses.dataclass(frozen=True)
class _Days:
    """One day field: ``kind`` any-of (``values``), last (offset ``n``), lastweekday,
    nearest (weekday to day ``n``), lastdow (day ``n``), nth (``k``-th day ``n``) or
    none (``?``)."""

    kind: str
    values: frozenset[int] = frozenset()
    n: int = 0
    k: int = 0


@dataclasses.dataclass(frozen=True)
class Cron:
    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    dom: _Days
    months: tuple[int, ...]
    dow: _Days
    years: tuple[int, ...]
    timezone: str | None = None

    def days(self, year: int, month: int) -> list[int]:
        """The days of ``year-month`` this expression fires on, ascending."""
        last = calendar.monthrange(year, month)[1]

        def dow(day: int) -> int:              # AWS numbering: 1=SUN ... 7=SAT
            return (calendar.weekday(year, month, day) + 1) % 7 + 1

        def weekday(day: int) -> bool:
            return calendar.weekday(year, month, day) < 5

        d = self.dom
        if d.kind == "values":
            return sorted(x for x in d.values if x <= last)
        if d.kind == "last":
            return [last - d.n] if last - d.n >= 1 else []
        if d.kind == "lastweekday":
            day = last
            while not weekday(day):
                day -= 1
            return [day]
        if d.kind == "nearest":
            if d.n > last:
                return []
            if weekday(d.n):
                return [d.n]
            if calendar.weekday(year, month, d.n) == 5:        # Saturday: Friday before,
                return [d.n - 1] if d.n > 1 else [d.n + 2]     # or Monday the 3rd
            return [d.n + 1] if d.n < last else [d.n - 2]      # Sunday: Monday after,
        w = self.dow                                           # or Friday before
        if w.kind == "values":
            return [x for x in range(1, last + 1) if dow(x) in w.values]
        if w.kind == "lastdow":
            return [max(x for x in range(last - 6, last + 1) if dow(x) == w.n)]
        if w.kind == "nth":
            first = next(x for x in range(1, 8) if dow(x) == w.n)
            day = first + 7 * (w.k - 1)
            return [day] if day <= last else []
        raise AssertionError(f"day fields {self.dom} {self.dow}")   # parse() prevents it

    def matches(self, wall: datetime) -> bool:
        """Whether the wall-clock minute ``wall`` (naive, in the expression's zone) is
        one of the expression's times (daylight-saving gaps aside)."""
        return (wall.minute in self.minutes and wall.hour in self.hours
                and wall.month in self.months and wall.year in self.years
                and wall.day in self.days(wall.year, wall.month))

    def _walls(self, start: datetime) -> Iterator[datetime]:
        """Every matching wall-clock minute >= ``start`` (naive), ascending."""
        for y in self.years:
            if y < start.year:
                continue
            for m in self.months:
                if (y, m) < (start.year, start.month):
                    continue
                same_month = (y, m) == (start.year, start.month)
                for d in self.days(y, m):
                    if same_month and d < start.day:
                        continue
                    same_day = same_month and d == start.day
                    for h in self.hours:
                        if same_day and h < start.hour:
                            continue
                        same_hour = same_day and h == start.hour
                        for mi in self.minutes:
                            if same_hour and mi < start.minute:
                                continue
                            yield datetime(y, m, d, h, mi)

    def next_after(self, after_ms: int, anchor_ms: int = 0) -> int | None:
        """The first time strictly after ``after_ms`` (ms, UTC) or None (no more)."""
        zone = ZoneInfo(self.timezone) if self.timezone else None
        after = datetime.fromtimestamp(after_ms / 1000, zone or UTC)
        start = after.replace(tzinfo=None, second=0, microsecond=0) + timedelta(minutes=1)
        for wall in self._walls(start):
            at = _wall_ms(wall, zone)
            if at is not None and at > after_ms:
                return at
        return None


Expression = Union[Rate, Cron, At]


def _wall_ms(wall: datetime, zone: ZoneInfo | None) -> int | None:
    """A naive wall time in ``zone`` as ms since the epoch; None if it does not exist
    (clocks sprang forward over it). An ambiguous one is its first occurrence."""
    if zone is None:
        return calendar.timegm(wall.timetuple()) * 1000
    local = wall.replace(tzinfo=zone, fold=0)
    if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
        return None
    return calendar.timegm(local.astimezone(UTC).timetuple()) * 1000


_MONTHS = {n: i for i, n in enumerate(
    "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), start=1)}
_DAYS = {n: i for i, n in enumerate("SUN MON TUE WED THU FRI SAT".split(), start=1)}
# name, minimum, maximum, names, ranges may wrap, "/" allowed
_FIELDS: tuple[tuple[str, int, int, dict[str, int], bool, bool], ...] = (
    ("Minutes", 0, 59, {}, True, True),
    ("Hours", 0, 23, {}, True, True),
    ("Day-of-month", 1, 31, {}, True, True),
    ("Month", 1, 12, _MONTHS, True, True),
    ("Day-of-week", 1, 7, _DAYS, True, False),
    ("Year", 1970, 2199, {}, False, True),
)
_RATE = re.compile(r"rate\((\d+) ([a-z]+)\)")
_UNITS = {"minute": 1, "hour": 60, "day": 1440}
_AT = re.compile(r"at\((\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\)")


class _Bad(Exception):
    """A problem in one cron field (parse() adds the expression and the field)."""


def _value(text: str, field: tuple[str, int, int, dict[str, int], bool, bool]) -> int:
    name, lo, hi, names, _, _ = field
    if text.isdigit():
        value = int(text)
        if lo <= value <= hi:
            return value
    elif text.upper() in names:
        return names[text.upper()]
    spelled = f"{lo}-{hi}" + (" or " + "-".join((min(names, key=names.__getitem__),
                                                  max(names, key=names.__getitem__)))
                              if names else "")
    raise _Bad(f"{text!r} is not a value of {name} ({spelled})")


def _values(text: str, field: tuple[str, int, int, dict[str, int], bool, bool]) -> list[int]:
    name, lo, hi, _, wraps, steps = field
    out: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _Bad("empty item in a list")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not steps:
                raise _Bad(f"'/' is not allowed in {name}")
            if not step_text.isdigit() or int(step_text) < 1:
                raise _Bad(f"step {step_text!r} in {item!r} is not a positive integer")
            step = int(step_text)
        if base == "*":
            first, last = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _value(a, field), _value(b, field)
        elif base:
            first = _value(base, field)
            last = hi if slash else first
        else:
            raise _Bad(f"{item!r} has no start")
        if first <= last:
            seq = list(range(first, last + 1))
        elif wraps:
            seq = list(range(first, hi + 1)) + list(range(lo, last + 1))
        else:
            raise _Bad(f"range {base!r} runs backwards")
        out.update(seq[::step])
    return sorted(out)


def _day_of_month(text: str) -> _Days:
    field = _FIELDS[2]
    if text == "?":
        return _Days("none")
    if text == "L":
        return _Days("last")
    if text == "LW":
        return _Days("lastweekday")
    m = re.fullmatch(r"L-(\d+)", text)
    if m:
        if not 1 <= int(m.group(1)) <= 30:
            raise _Bad(f"{text!r}: the offset from the last day must be 1-30")
        return _Days("last", n=int(m.group(1)))
    m = re.fullmatch(r"(\d+)W", text)
    if m:
        return _Days("nearest", n=_value(m.group(1), field))
    if "L" in text.upper() or "W" in text.upper():
        raise _Bad(f"{text!r}: L and W stand alone (L, L-n, LW or nW), not in lists or ranges")
    return _Days("values", values=frozenset(_values(text, field)))


def _day_of_week(text: str) -> _Days:
    field = _FIELDS[4]
    if text == "?":
        return _Days("none")
    if text == "L":
        return _Days("values", values=frozenset({7}))
    m = re.fullmatch(r"([0-9A-Za-z]+)#(\d+)", text)
    if m:
        k = int(m.group(2))
        if not 1 <= k <= 5:
            raise _Bad(f"{text!r}: the week in n#k must be 1-5")
        return _Days("nth", n=_value(m.group(1), field), k=k)
    m = re.fullmatch(r"([0-9A-Za-z]+)L", text)
    if m and "," not in text and "-" not in text:
        return _Days("lastdow", n=_value(m.group(1), field))
    if "#" in text or text.upper().endswith("L") or ",L" in text.upper():
        raise _Bad(f"{text!r}: L and # stand alone (L, nL or n#k), not in lists or ranges")
    return _Days("values", values=frozenset(_values(text, field)))


def _zone(name: str | None) -> ZoneInfo | None:
    if name is None or name == "UTC":
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r} (an IANA name such as "
                          "'Europe/Paris')") from None


def parse(expression: Any, timezone: str | None = None) -> Expression:
    """A schedule expression (the grammar in the module docstring); ConfigError if it
    is not one, naming the expression, the field and what is wrong."""
    if not isinstance(expression, str):
        raise ConfigError(f"a schedule expression must be a string, not {expression!r}")
    zone = _zone(timezone)
    tz_name = None if zone is None else timezone
    m = _RATE.fullmatch(expression)
    if m:
        value, unit = int(m.group(1)), m.group(2)
        singular = unit[:-1] if unit.endswith("s") else unit
        if singular not in _UNITS:
            raise ConfigError(f"{expression!r}: unit {unit!r} is not minute(s), hour(s) or "
                              "day(s)")
        if value < 1:
            raise ConfigError(f"{expression!r}: the rate must be a positive integer")
        if (value == 1) != (unit == singular):
            want = singular if value == 1 else singular + "s"
            raise ConfigError(f"{expression!r}: with the value {value} the unit must be "
                              f"{want!r} (AWS refuses the other)")
        return Rate(expression, value * _UNITS[singular] * MINUTE_MS)
    if expression.startswith("rate("):
        raise ConfigError(f"{expression!r}: not rate(VALUE UNIT), e.g. rate(5 minutes)")
    m = _AT.fullmatch(expression)
    if m:
        try:
            y, mo, d, h, mi, sec = (int(g) for g in m.groups())
            wall = datetime(y, mo, d, h, mi, sec)
        except ValueError as exc:
            raise ConfigError(f"{expression!r}: {exc}") from None
        at_ms = _wall_ms(wall.replace(second=0), zone)
        if at_ms is None:
            raise ConfigError(f"{expression!r}: that time does not exist in {timezone} "
                              "(clocks spring forward over it)")
        return At(expression, at_ms + wall.second * 1000)
    if expression.startswith("at("):
        raise ConfigError(f"{expression!r}: not at(yyyy-mm-ddThh:mm:ss)")
    if not (expression.startswith("cron(") and expression.endswith(")")):
        raise ConfigError(f"{expression!r} is not a schedule expression: rate(VALUE UNIT), "
                          "cron(Minutes Hours Day-of-month Month Day-of-week Year) or "
                          "at(yyyy-mm-ddThh:mm:ss)")
    fields = expression[5:-1].split()
    if len(fields) != 6:
        raise ConfigError(f"{expression!r}: cron needs 6 fields (Minutes Hours Day-of-month "
                          f"Month Day-of-week Year), got {len(fields)}")
    minute, hour, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        which = "both are" if dom == "?" else "neither is"
        raise ConfigError(f"{expression!r}: exactly one of Day-of-month and Day-of-week "
                          f"must be '?' ({which})")
    parsed: list[Any] = []
    for spec, text in zip(_FIELDS, fields):
        try:
            if "?" in text and spec[0] not in ("Day-of-month", "Day-of-week"):
                raise _Bad("'?' is only allowed in Day-of-month or Day-of-week")
            if spec[0] == "Day-of-month":
                parsed.append(_day_of_month(text))
            elif spec[0] == "Day-of-week":
                parsed.append(_day_of_week(text))
            else:
                parsed.append(tuple(_values(text, spec)))
        except _Bad as exc:
            raise ConfigError(f"{expression!r}: {spec[0]} field {text!r}: {exc}") from None
    return Cron(expression, minutes=parsed[0], hours=parsed[1], dom=parsed[2],
                months=parsed[3], dow=parsed[4], years=parsed[5], timezone=tz_name)


# ---- schedule entries -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Schedule:
    """One valid entry of triggers.json's ``schedules``."""

    id: str
    function: str
    qualifier: str | None
    expression: str
    timezone: str | None
    input: bytes | None
    enabled: bool
    when: Expression


def _entry(raw: Any, index: int) -> Schedule:
    where = f"schedules[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: not an object")
    sid = raw.get("id")
    if not isinstance(sid, str) or not sid:
        raise ConfigError(f"{where}: needs an id (a non-empty string)")
    where = f"schedule {sid!r} ({where})"
    function = raw.get("function")
    if not isinstance(function, str) or not function:
        raise ConfigError(f"{where}: needs a function name")
    qualifier = raw.get("qualifier")
    if qualifier is not None and (not isinstance(qualifier, str) or not qualifier):
        raise ConfigError(f"{where}: qualifier must be a version, an alias or null")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: enabled must be true or false")
    tz = raw.get("timezone")
    if tz is not None and not isinstance(tz, str):
        raise ConfigError(f"{where}: timezone must be an IANA name or null")
    text = raw.get("input")
    body: bytes | None = None
    if text is not None:
        if not isinstance(text, str):        # tolerated: a JSON value instead of its text
            text = json.dumps(text)
        try:
            json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: input is not JSON text: {exc}") from None
        body = text.encode()
        if len(body) > MAX_INPUT:
            raise ConfigError(f"{where}: input is {len(body)} bytes, more than an Event "
                              f"invocation takes ({MAX_INPUT})")
    expression = raw.get("expression")
    if not isinstance(expression, str):
        raise ConfigError(f"{where}: needs an expression: rate(...), cron(...) or at(...)")
    try:
        when = parse(expression, tz)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    return Schedule(id=sid, function=function, qualifier=qualifier, expression=expression,
                    timezone=tz, input=body, enabled=enabled, when=when)


def _entries(raw: list[Any]) -> tuple[list[Schedule], list[tuple[str, str]]]:
    """(valid schedules, [(id or index, error)]): one bad entry never hides the rest."""
    good: list[Schedule] = []
    bad: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        try:
            schedule = _entry(entry, i)
            if schedule.id in seen:
                raise ConfigError(f"schedule {schedule.id!r} (schedules[{i}]): the id is "
                                  "used by an earlier schedule")
        except ConfigError as exc:
            key = entry.get("id") if isinstance(entry, dict) else None
            bad.append((key if isinstance(key, str) else f"schedules[{i}]", exc.message))
            continue
        seen.add(schedule.id)
        good.append(schedule)
    return good, bad


def check(entries: list[Any]) -> list[Schedule]:
    """Every entry valid (deploy, before it writes triggers.json): else the first
    entry's ConfigError."""
    good, bad = _entries(entries)
    if bad:
        raise ConfigError(bad[0][1])
    return good


def scheduled_event(schedule_id: str, tick_ms: int, *, region: str, account: str) -> bytes:
    """EventBridge's "Scheduled Event" for one tick (the shape in the module docstring)."""
    return json.dumps({
        "version": "0", "id": str(_event_id(schedule_id, tick_ms)),
        "detail-type": "Scheduled Event", "source": "aws.events", "account": account,
        "time": _iso(tick_ms), "region": region,
        "resources": [f"arn:aws:events:{region}:{account}:rule/{schedule_id}"],
        "detail": {}}).encode()


def _event_id(schedule_id: str, tick_ms: int) -> uuid.UUID:
    return uuid.uuid5(_EVENT_NS, f"{schedule_id}\n{tick_ms}")


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- the scheduler ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SchedulerOptions:
    speedup: float = 1.0        # test-only (SNAPSTART_SCHEDULE_SPEEDUP)
    grace_s: float = 60.0       # how late the latest missed tick may still fire
    poll_s: float = 1.0         # how often triggers.json's mtime is looked at

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "SchedulerOptions":
        env = os.environ if environ is None else environ
        raw = env.get("SNAPSTART_SCHEDULE_SPEEDUP") or "1"
        try:
            speedup = float(raw)
        except ValueError:
            raise ConfigError("SNAPSTART_SCHEDULE_SPEEDUP must be a number >= 1") from None
        if not 1 <= speedup <= 86400:
            raise ConfigError("SNAPSTART_SCHEDULE_SPEEDUP must be a number >= 1")
        return cls(speedup=speedup)

    @property
    def grace_ms(self) -> int:
        return round(self.grace_s * 1000 / self.speedup)

    def effective(self, when: Expression) -> Expression:
        return when.scaled(self.speedup) if isinstance(when, Rate) else when


@dataclasses.dataclass
class _Row:
    expression: str
    timezone: str | None
    enabled: bool
    anchor_ms: int
    last_tick_ms: int | None
    checked_ms: int


def _ticks(when: Expression, after_ms: int, through_ms: int, anchor_ms: int) -> tuple[
        int, int | None]:
    """(how many ticks in (after, through], capped at MISSED_COUNT_CAP; the last one)."""
    if isinstance(when, Rate):
        first = when.next_after(after_ms, anchor_ms)
        if first is None or first > through_ms:
            return 0, None
        n = (through_ms - first) // when.period_ms + 1
        return n, first + (n - 1) * when.period_ms
    count, last, t = 0, None, when.next_after(after_ms, anchor_ms)
    while t is not None and t <= through_ms and count < MISSED_COUNT_CAP:
        count, last = count + 1, t
        t = when.next_after(t, anchor_ms)
    return count, last


class Scheduler:
    """Fires the configured schedules (see the module docstring); ``run_once`` is one
    pass, the thread started by ``start`` calls it until ``stop``."""

    def __init__(self, service: Any, *, clock: Callable[[], float] = time.time,
                 options: SchedulerOptions | None = None) -> None:
        self.service = service
        self.home = Path(service.settings.home)
        self.clock = clock
        self.options = options or SchedulerOptions.from_env()
        self.schedules: dict[str, Schedule] = {}
        self.errors: dict[str, str] = {}
        self._rows: dict[str, _Row] = {}
        self._follower = config.Follower(self.home)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = False

    # ---- thread ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="snapstart-schedules",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    wait_s = self.run_once()
                except Exception:  # noqa: BLE001 - a schedule must never stop serve
                    log.exception("schedules: pass failed")
                    wait_s = self.options.poll_s
                self._stop.wait(wait_s)
        finally:
            self.service.events.close()     # this thread's connection

    # ---- one pass ----------------------------------------------------------------------
    def run_once(self) -> float:
        """Reload triggers.json if it changed, fire what is due; the seconds until the
        next pass should run."""
        db = self._db()
        if not self._ready:
            db.execute(_SCHEMA)
            self._ready = True
        self._reload(db)
        now_ms = int(self.clock() * 1000)
        wake_ms: int | None = None
        for schedule in self.schedules.values():
            nxt = self._pass(db, schedule, now_ms)
            if nxt is not None:
                wake_ms = nxt if wake_ms is None else min(wake_ms, nxt)
        wait_s = self.options.poll_s
        if wake_ms is not None:
            wait_s = min(wait_s, max(0.0, (wake_ms - int(self.clock() * 1000)) / 1000))
        return wait_s

    def _db(self) -> sqlite3.Connection:
        # The EventStore's connection of this thread (autocommit): BEGIN IMMEDIATE on it
        # makes EventStore.add and our UPDATE one transaction (see the module docstring).
        return self.service.events.connection()

    def _reload(self, db: sqlite3.Connection) -> None:
        try:
            triggers = self._follower.poll()
        except (ConfigError, OSError) as exc:
            log.error("schedules: %s: keeping the schedules loaded before", _message(exc))
            return
        if triggers is None:
            return
        good, bad = _entries(triggers.schedules)
        self.errors = dict(bad)
        for _, message in bad:
            log.error("schedules: %s (not scheduled; the others are)", message)
        self.schedules = {s.id: s for s in good}
        now_ms = int(self.clock() * 1000)
        self._rows = {s.id: self._sync_row(db, s, now_ms) for s in good}

    def _sync_row(self, db: sqlite3.Connection, s: Schedule, now_ms: int) -> _Row:
        """The schedule's durable row, created or re-anchored as the module says."""
        anchor = now_ms - now_ms % 1000
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT expression, timezone, enabled, anchor_ms, last_tick_ms, checked_ms"
                " FROM schedule_state WHERE id = ?", (s.id,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO schedule_state(id, expression, timezone, enabled, anchor_ms,"
                    " checked_ms) VALUES (?, ?, ?, ?, ?, ?)",
                    (s.id, s.expression, s.timezone, int(s.enabled), anchor, anchor))
                out = _Row(s.expression, s.timezone, s.enabled, anchor, None, anchor)
            else:
                out = _Row(row[0], row[1], bool(row[2]), row[3], row[4], row[5])
                changed = (out.expression, out.timezone) != (s.expression, s.timezone)
                if changed or (s.enabled and not out.enabled):
                    # a new grid, and no tick from before this moment
                    out.anchor_ms = out.checked_ms = max(anchor, out.checked_ms)
                out.expression, out.timezone, out.enabled = s.expression, s.timezone, s.enabled
                db.execute(
                    "UPDATE schedule_state SET expression = ?, timezone = ?, enabled = ?,"
                    " anchor_ms = ?, checked_ms = ? WHERE id = ?",
                    (out.expression, out.timezone, int(out.enabled), out.anchor_ms,
                     out.checked_ms, s.id))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return out

    def _pass(self, db: sqlite3.Connection, s: Schedule, now_ms: int) -> int | None:
        """Fire ``s``'s due tick, if any; its next tick after now."""
        row = self._rows[s.id]
        when = self.options.effective(s.when)
        if not s.enabled:
            return None
        base = max(row.anchor_ms, row.checked_ms,
                   row.last_tick_ms if row.last_tick_ms is not None else row.anchor_ms)
        first = when.next_after(base, row.anchor_ms)
        if first is None or first > now_ms:
            return first
        # ticks in (base, now]: only the latest may fire, and only when it is not late
        # by more than the grace window; the others are missed
        window = max(base, now_ms - self.options.grace_ms)
        count, latest = _ticks(when, window, now_ms, row.anchor_ms)
        earlier, _ = _ticks(when, base, window, row.anchor_ms)
        if latest is not None:
            self._fire(db, s, row, latest, missed=earlier + count - 1, now_ms=now_ms)
        else:
            self._missed(db, s, row, earlier, now_ms)
        return when.next_after(now_ms, row.anchor_ms)

    def _missed(self, db: sqlite3.Connection, s: Schedule, row: _Row, n: int,
                now_ms: int) -> None:
        log.warning("schedule %s: %d tick(s) missed (serve was not running, or late by "
                    "more than %.0f s): not fired, as EventBridge does not replay them",
                    s.id, n, self.options.grace_ms / 1000)
        db.execute("UPDATE schedule_state SET checked_ms = ?, missed = missed + ? WHERE id = ?"
                   " AND checked_ms < ?", (now_ms, n, s.id, now_ms))
        row.checked_ms = now_ms

    def _fire(self, db: sqlite3.Connection, s: Schedule, row: _Row, tick: int, *,
              missed: int, now_ms: int) -> bool:
        """Enqueue tick ``tick`` of ``s`` and record it, in one transaction; False if it
        was fired already (by an earlier serve or another one on this home)."""
        if missed:
            log.warning("schedule %s: %d tick(s) missed before %s: not fired, as "
                        "EventBridge does not replay them", s.id, missed, _iso(tick))
        error: str | None = None
        try:
            self.service.manager.registry.resolve(s.function, s.qualifier)
        except SnapStartError as exc:
            # EventBridge would try and fail (FailedInvocations); nothing to queue or retry
            error = f"{exc.error_type}: {exc.message}"
        settings = self.service.settings
        event_id = str(_event_id(s.id, tick))
        payload = s.input if s.input is not None else scheduled_event(
            s.id, tick, region=settings.region, account=settings.account_id)
        db.execute("BEGIN IMMEDIATE")
        try:
            done = db.execute("SELECT last_tick_ms FROM schedule_state WHERE id = ?",
                              (s.id,)).fetchone()
            if done is not None and done[0] is not None and done[0] >= tick:
                db.execute("ROLLBACK")
                row.last_tick_ms = row.checked_ms = done[0]
                return False
            if error is None:
                try:
                    self.service.events.add(s.function, s.qualifier, payload,
                                            trace_id=tracing.function_header({}),
                                            event_id=event_id)
                except sqlite3.IntegrityError:
                    pass                    # this tick's event is queued already
                if not db.in_transaction:   # EventStore.add must not commit on its own
                    raise RuntimeError("EventStore.add committed outside the schedule's "
                                       "transaction: at-most-once cannot hold")
            db.execute(
                "UPDATE schedule_state SET last_tick_ms = ?, checked_ms = ?, last_event = ?,"
                " fired_at = ?, fired = fired + ?, missed = missed + ?, last_error = ?"
                " WHERE id = ?",
                (tick, max(tick, row.checked_ms), None if error else event_id, now_ms / 1000,
                 0 if error else 1, missed, error, s.id))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        row.last_tick_ms = tick
        row.checked_ms = max(tick, row.checked_ms)
        if error is not None:
            log.warning("schedule %s: tick %s not invoked: %s", s.id, _iso(tick), error)
            return True
        try:
            self.service.metrics.events.labels(s.function).inc()
        except AttributeError:
            pass
        self.service.worker.wake()
        return True


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, SnapStartError) else str(exc)


# ---- what `snapstart events ls --schedules` shows -------------------------------------
def describe(home: Path, *, now: float | None = None,
             options: SchedulerOptions | None = None) -> list[dict[str, Any]]:
    """Each configured schedule: id, function, qualifier, expression, timezone, enabled,
    last tick fired, next tick, counts, and its error (invalid, or its last tick's).
    Reads triggers.json and events.db; writes nothing."""
    options = options or SchedulerOptions.from_env()
    now_ms = int((time.time() if now is None else now) * 1000)
    raw = config.load(home).schedules
    good, bad = _entries(raw)
    valid = {s.id: s for s in good}
    errors = dict(bad)
    rows: dict[str, tuple] = {}
    path = Path(home) / "events.db"
    if path.exists():
        db = sqlite3.connect(path, timeout=30)
        try:
            rows = {r[0]: r[1:] for r in db.execute(
                "SELECT id, expression, timezone, anchor_ms, last_tick_ms, checked_ms, fired,"
                " missed, last_error, last_event FROM schedule_state")}
        except sqlite3.OperationalError:        # no schedule ever ran here
            rows = {}
        finally:
            db.close()
    out = []
    for i, entry in enumerate(raw):
        sid = entry.get("id") if isinstance(entry, dict) else None
        key = sid if isinstance(sid, str) else f"schedules[{i}]"
        s = valid.get(key)
        item: dict[str, Any] = {
            "id": key, "function": entry.get("function") if isinstance(entry, dict) else None,
            "qualifier": entry.get("qualifier") if isinstance(entry, dict) else None,
            "expression": entry.get("expression") if isinstance(entry, dict) else None,
            "timezone": entry.get("timezone") if isinstance(entry, dict) else None,
            "enabled": bool(entry.get("enabled", True)) if isinstance(entry, dict) else False,
            "last_tick": None, "next_tick": None, "fired": 0, "missed": 0,
            "last_event": None, "error": errors.get(key)}
        row = rows.get(key)
        if row is not None:
            item.update(last_tick=_iso(row[3]), fired=row[5], missed=row[6],
                        last_event=row[8])
            if item["error"] is None:
                item["error"] = row[7]
        if s is not None and s.enabled:
            # as serve computes it; a schedule serve has not seen yet is anchored now
            if row is not None and (row[0], row[1]) == (s.expression, s.timezone):
                anchor, base = row[2], max(now_ms, row[3] or 0, row[4])
            else:
                anchor = base = now_ms - now_ms % 1000
            item["next_tick"] = _iso(options.effective(s.when).next_after(base, anchor))
        out.append(item)
    return out
