"""Schedules (snapstart/triggers/schedule.py): the rate/cron/at grammar, its next fire
times, and the scheduler's at-most-once firing with an injected clock against a real
SQLite event queue. No root, no CRIU, no server."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from snapstart import cli
from snapstart.errors import ConfigError, FunctionNotFoundError
from snapstart.events import EventStore
from snapstart.invoke_api.metrics import Metrics
from snapstart.triggers import config
from snapstart.triggers.schedule import (Cron, Rate, Scheduler, SchedulerOptions, check,
                                         describe, parse)

UTC = timezone.utc


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M")


def _next(expression: str, after: str, n: int = 3, tz: str | None = None,
          anchor: str = "1970-01-01T00:00") -> list[str | None]:
    when = parse(expression, tz)
    t: int | None = _ms(after)
    out: list[str | None] = []
    for _ in range(n):
        assert t is not None
        t = when.next_after(t, _ms(anchor))
        out.append(None if t is None else _iso(t))
        if t is None:
            break
    return out


# ---- grammar: next fire times ----------------------------------------------------------
@pytest.mark.parametrize("expression, after, expected", [
    # last day of the month: leap February, then month ends of 31 and 30 days
    ("cron(0 10 L * ? *)", "2028-01-31T11:00",
     ["2028-02-29T10:00", "2028-03-31T10:00", "2028-04-30T10:00"]),
    ("cron(0 10 L * ? *)", "2027-02-01T00:00",
     ["2027-02-28T10:00", "2027-03-31T10:00", "2027-04-30T10:00"]),
    ("cron(0 10 L 2 ? *)", "2099-03-01T00:00",
     ["2100-02-28T10:00", "2101-02-28T10:00", "2102-02-28T10:00"]),    # 2100: no leap
    # first Monday of the month (2 = MON)
    ("cron(0 9 ? * 2#1 *)", "2026-12-08T00:00",
     ["2027-01-04T09:00", "2027-02-01T09:00", "2027-03-01T09:00"]),
    # nearest weekday to the 15th: Sat 2026-08-15 -> Fri 14th, Sun 2026-11-15 -> Mon 16th
    ("cron(0 8 15W * ? *)", "2026-08-01T00:00",
     ["2026-08-14T08:00", "2026-09-15T08:00", "2026-10-15T08:00"]),
    ("cron(0 8 15W * ? *)", "2026-10-16T00:00", ["2026-11-16T08:00"]),
    # W never leaves the month: Sat 2026-08-01 -> Mon 3rd; Sun 2026-05-31 -> Fri 29th;
    # no tick in April (30 days)
    ("cron(0 0 1W * ? *)", "2026-07-31T00:00", ["2026-08-03T00:00", "2026-09-01T00:00"]),
    ("cron(0 0 31W * ? *)", "2026-04-01T00:00",
     ["2026-05-29T00:00", "2026-07-31T00:00", "2026-08-31T00:00"]),
    ("cron(0 0 LW * ? *)", "2026-05-01T00:00",
     ["2026-05-29T00:00", "2026-06-30T00:00", "2026-07-31T00:00"]),
    ("cron(0 0 L-2 * ? *)", "2026-01-01T00:00",
     ["2026-01-29T00:00", "2026-02-26T00:00", "2026-03-29T00:00"]),
    ("cron(0/15 * * * ? *)", "2026-01-01T00:07",
     ["2026-01-01T00:15", "2026-01-01T00:30", "2026-01-01T00:45"]),
    ("cron(0/15 * * * ? *)", "2026-12-31T23:50", ["2027-01-01T00:00"]),
    # weekdays of 2027 only: 2027-01-01 is a Friday; after the last one, nothing
    ("cron(0 12 ? * MON-FRI 2027)", "2026-06-01T00:00",
     ["2027-01-01T12:00", "2027-01-04T12:00", "2027-01-05T12:00"]),
    ("cron(0 12 ? * MON-FRI 2027)", "2027-12-31T12:00", [None]),
    # Feb 29th: the next after 2097 is 2104 (2100 is not a leap year)
    ("cron(0 0 29 2 ? *)", "2097-03-01T00:00", ["2104-02-29T00:00", "2108-02-29T00:00"]),
    ("cron(0 0 31 * ? *)", "2026-02-01T00:00",
     ["2026-03-31T00:00", "2026-05-31T00:00", "2026-07-31T00:00"]),
    ("cron(0 0 30 2 ? *)", "2026-01-01T00:00", [None]),
    # Day-of-week L alone: Saturday; nL: the last day n; 5th Mondays only where they exist
    ("cron(0 0 ? * L *)", "2026-01-01T00:00",
     ["2026-01-03T00:00", "2026-01-10T00:00", "2026-01-17T00:00"]),
    ("cron(0 0 ? * 6L *)", "2026-01-01T00:00",
     ["2026-01-30T00:00", "2026-02-27T00:00", "2026-03-27T00:00"]),
    ("cron(0 0 ? * FRIL *)", "2026-01-01T00:00", ["2026-01-30T00:00"]),
    ("cron(0 0 ? * 2#5 *)", "2026-01-01T00:00",
     ["2026-03-30T00:00", "2026-06-29T00:00", "2026-08-31T00:00"]),
    # names (any case), lists, wrapping ranges
    ("cron(30 6 ? jan,Jul mon *)", "2026-01-10T00:00",
     ["2026-01-12T06:30", "2026-01-19T06:30", "2026-01-26T06:30"]),
    ("cron(0 22-2 * * ? *)", "2026-01-01T03:00",
     ["2026-01-01T22:00", "2026-01-01T23:00", "2026-01-02T00:00"]),
    ("cron(0 0 1 NOV-FEB ? *)", "2026-03-01T00:00",
     ["2026-11-01T00:00", "2026-12-01T00:00", "2027-01-01T00:00"]),
    ("cron(0 0 ? * FRI-MON *)", "2026-01-01T00:00",      # Thu -> Fri, Sat, Sun
     ["2026-01-02T00:00", "2026-01-03T00:00", "2026-01-04T00:00"]),
    ("cron(5/20 8-10/2 1,15 * ? *)", "2026-01-01T09:00",
     ["2026-01-01T10:05", "2026-01-01T10:25", "2026-01-01T10:45"]),
    ("cron(0 0 1 1 ? 2030/5)", "2026-01-01T00:00",
     ["2030-01-01T00:00", "2035-01-01T00:00", "2040-01-01T00:00"]),
    ("cron(59 23 31 12 ? 2199)", "2199-12-31T23:59", [None]),
    ("at(2027-03-01T12:30:00)", "2026-01-01T00:00", ["2027-03-01T12:30", None]),
])
def test_next_fire_times(expression, after, expected):
    assert _next(expression, after, n=len(expected)) == expected


@pytest.mark.parametrize("expression, period_s", [
    ("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(1 hour)", 3600),
    ("rate(2 hours)", 7200), ("rate(1 day)", 86400), ("rate(7 days)", 604800),
])
def test_rates_tick_from_their_anchor(expression, period_s):
    when = parse(expression)
    assert isinstance(when, Rate) and when.period_ms == period_s * 1000
    anchor = _ms("2026-05-05T10:17")
    # the first tick is one period after the anchor, then every period
    assert when.next_after(anchor - 5000, anchor) == anchor + period_s * 1000
    assert when.next_after(anchor, anchor) == anchor + period_s * 1000
    assert when.next_after(anchor + period_s * 1000, anchor) == anchor + 2 * period_s * 1000
    assert when.next_after(anchor + period_s * 1000 - 1, anchor) == anchor + period_s * 1000


@pytest.mark.parametrize("expression, start, days", [
    ("cron(*/7 9-11 ? * MON-FRI *)", "2026-01-01T00:00", 6),
    ("cron(0/15 22-1 * * ? *)", "2026-02-27T00:00", 4),
    ("cron(5 23 L * ? *)", "2028-02-27T00:00", 4),
    ("cron(0 12 ? * 2#1 *)", "2026-02-27T00:00", 5),
    ("cron(30 0 15W * ? *)", "2026-08-12T00:00", 6),
])
def test_next_after_agrees_with_minute_by_minute_matching(expression, start, days):
    """Every matching minute of the range, and only those, in order."""
    when = parse(expression)
    assert isinstance(when, Cron)
    t0 = datetime.fromisoformat(start)
    expected = [_ms(str(t0 + timedelta(minutes=i))) for i in range(days * 1440)
                if when.matches(t0 + timedelta(minutes=i))]
    got, t = [], _ms(start) - 1
    while True:
        t = when.next_after(t)
        if t is None or t >= _ms(str(t0 + timedelta(days=days))):
            break
        got.append(t)
    assert got == expected and expected


def test_time_zones_follow_eventbridge_schedulers_daylight_saving_rules():
    ny = "America/New_York"
    # 02:30 does not exist on 2026-03-08 (spring forward): no tick that day
    assert _next("cron(30 2 * * ? *)", "2026-03-07T12:00", 2, tz=ny) == \
        ["2026-03-09T06:30", "2026-03-10T06:30"]
    # 01:30 happens twice on 2026-11-01 (fall back): one tick, the first (EDT)
    assert _next("cron(30 1 * * ? *)", "2026-10-31T12:00", 2, tz=ny) == \
        ["2026-11-01T05:30", "2026-11-02T06:30"]
    assert _next("cron(*/20 1 * * ? *)", "2026-11-01T05:35", 2, tz=ny) == \
        ["2026-11-01T05:40", "2026-11-02T06:00"]
    assert _next("cron(0 9 ? * MON *)", "2026-07-01T00:00", 1, tz="Asia/Kolkata") == \
        ["2026-07-06T03:30"]
    assert _next("at(2027-01-01T00:00:00)", "2026-01-01T00:00", 1, tz="Europe/Paris") == \
        ["2026-12-31T23:00"]
    # rates ignore the zone; UTC is UTC
    assert parse("rate(1 day)", ny) == parse("rate(1 day)")
    assert parse("cron(0 0 * * ? *)", "UTC") == parse("cron(0 0 * * ? *)")


# ---- grammar: malformed expressions ----------------------------------------------------
@pytest.mark.parametrize("expression, problem", [
    ("cron(0 12 * * * *)", "exactly one of Day-of-month and Day-of-week must be '?' "
                           "(neither is)"),
    ("cron(0 12 ? * ? *)", "(both are)"),
    ("cron(* * * * ?)", "cron needs 6 fields"),
    ("cron(0 12 * * ? * *)", "got 7"),
    ("cron(60 * * * ? *)", "Minutes field '60': '60' is not a value of Minutes (0-59)"),
    ("cron(0 24 * * ? *)", "Hours field '24'"),
    ("cron(0 0 32 * ? *)", "Day-of-month field '32'"),
    ("cron(0 0 ? FOO * *)", "Month field 'FOO': 'FOO' is not a value of Month "
                            "(1-12 or JAN-DEC)"),
    ("cron(0 0 ? * 8 *)", "Day-of-week field '8': '8' is not a value of Day-of-week "
                          "(1-7 or SUN-SAT)"),
    ("cron(0 0 ? * 2#6 *)", "the week in n#k must be 1-5"),
    ("cron(0 0 ? * MON#1,2 *)", "stand alone"),
    ("cron(0 0 L,15 * ? *)", "L and W stand alone"),
    ("cron(0 0 L-31 * ? *)", "1-30"),
    ("cron(0 0 0W * ? *)", "Day-of-month field '0W'"),
    ("cron(0 0 ? * */2 *)", "'/' is not allowed in Day-of-week"),
    ("cron(0 0 1 1 ? 1969)", "Year field '1969'"),
    ("cron(0 0 1 1 ? 2030-2027)", "range '2030-2027' runs backwards"),
    ("cron(0/0 * * * ? *)", "step '0'"),
    ("cron(0 ? 1 * ? *)", "Hours field '?': '?' is only allowed in Day-of-month or "
                          "Day-of-week"),
    ("cron(0,,5 * * * ? *)", "empty item"),
    ("cron(*-5 * * * ? *)", "Minutes field"),
    ("rate(1 minutes)", "with the value 1 the unit must be 'minute'"),
    ("rate(5 minute)", "with the value 5 the unit must be 'minutes'"),
    ("rate(0 minutes)", "positive integer"),
    ("rate(5 weeks)", "unit 'weeks' is not minute(s), hour(s) or day(s)"),
    ("rate(five minutes)", "not rate(VALUE UNIT)"),
    ("at(2027-02-30T00:00:00)", "day is out of range"),
    ("at(2027-02-01 00:00:00)", "not at(yyyy-mm-ddThh:mm:ss)"),
    ("every 5 minutes", "is not a schedule expression"),
    ("", "is not a schedule expression"),
])
def test_malformed_expressions_say_what_is_wrong(expression, problem):
    with pytest.raises(ConfigError) as err:
        parse(expression)
    assert problem in err.value.message
    assert repr(expression) in err.value.message or expression == ""


def test_bad_time_zone_and_daylight_saving_gap_in_at():
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        parse("cron(0 12 * * ? *)", "Mars/Olympus")
    with pytest.raises(ConfigError, match="does not exist in America/New_York"):
        parse("at(2026-03-08T02:30:00)", "America/New_York")


def test_entry_errors_name_the_schedule():
    with pytest.raises(ConfigError) as err:
        check([{"id": "ok", "function": "f", "expression": "rate(1 minute)"},
               {"id": "nightly", "function": "f", "expression": "cron(0 12 * * * *)"}])
    assert err.value.message.startswith("schedule 'nightly' (schedules[1]): 'cron(0 12 * * * *)'")
    for entry, problem in [
        ({"id": "a", "function": "f", "expression": "rate(1 minute)", "input": "{nope"},
         "schedule 'a' (schedules[0]): input is not JSON text"),
        ({"id": "a", "function": "f"}, "needs an expression"),
        ({"function": "f", "expression": "rate(1 minute)"}, "schedules[0]: needs an id"),
        ({"id": "a", "function": "f", "expression": "rate(1 minute)", "enabled": "yes"},
         "enabled must be true or false"),
        ({"id": "a", "function": "f", "expression": "rate(1 minute)",
          "input": json.dumps({"x": "y" * 300_000})}, "more than an Event invocation takes"),
    ]:
        with pytest.raises(ConfigError) as err:
            check([entry])
        assert problem in err.value.message
    with pytest.raises(ConfigError, match="the id is used by an earlier schedule"):
        check([{"id": "a", "function": "f", "expression": "rate(1 minute)"}] * 2)


# ---- the scheduler, with an injected clock ---------------------------------------------
class _Registry:
    def __init__(self, known: set[str]) -> None:
        self.known = known

    def resolve(self, name: str, qualifier: str | None = None):
        if name not in self.known:
            raise FunctionNotFoundError(f"Function not found: {name}")
        return SimpleNamespace(version="1")


class _Worker:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


T0 = 1_800_000_000.25          # 2027-01-15T08:00:00.25Z


def _service(home: Path):
    settings = SimpleNamespace(home=home, region="eu-west-1", account_id="123456789012")
    return SimpleNamespace(settings=settings, events=EventStore(home / "events.db"),
                           worker=_Worker(), metrics=Metrics(),
                           manager=SimpleNamespace(registry=_Registry({"fn", "other"})))


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def make(home):
    """make(clock, **options) -> a Scheduler on a service of its own over ``home``."""
    made = []

    def _make(clock, **options) -> Scheduler:
        scheduler = Scheduler(_service(home), clock=clock,
                              options=SchedulerOptions(**options))
        made.append(scheduler)
        return scheduler

    yield _make
    for scheduler in made:
        scheduler.service.events.close()


def _configure(home: Path, *entries: dict) -> None:
    with config.locked(home):
        config.save(home, config.Triggers(schedules=[
            {"qualifier": None, "input": None, "enabled": True, **e} for e in entries]))


def _pending(home: Path) -> list[dict]:
    store = EventStore(home / "events.db")
    try:
        return [dict(r.to_dict(), body=json.loads(r.payload)) for r in store.pending()]
    finally:
        store.close()


def _state(home: Path, sid: str) -> dict:
    return next(r for r in describe(home, now=T0) if r["id"] == sid)


def test_each_tick_fires_once_with_eventbridges_payload(home, make):
    _configure(home, {"id": "every-minute", "function": "fn", "expression": "rate(1 minute)"})
    clock = _Clock(T0)
    s = make(clock)
    s.run_once()                              # first seen: anchored at 08:00:00
    assert _pending(home) == []
    clock.t = T0 + 59.5
    assert 0 <= s.run_once() <= 1.0           # woken for the tick, 0.25 s from now
    assert _pending(home) == []
    clock.t = T0 + 60
    s.run_once()
    s.run_once()                              # the same instant again: nothing more
    clock.t = T0 + 119
    s.run_once()
    events = _pending(home)
    assert len(events) == 1
    body = events[0]["body"]
    assert body == {
        "version": "0", "id": events[0]["id"], "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2027-01-15T08:01:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/every-minute"],
        "detail": {}}
    assert events[0]["function"] == "fn" and events[0]["qualifier"] is None
    assert s.service.worker.wakes == 1
    assert s.service.metrics.events.labels("fn")._value.get() == 1
    clock.t = T0 + 120
    s.run_once()
    assert [e["body"]["time"] for e in _pending(home)] == [
        "2027-01-15T08:01:00Z", "2027-01-15T08:02:00Z"]
    row = _state(home, "every-minute")
    assert row["fired"] == 2 and row["last_tick"] == "2027-01-15T08:02:00Z"


def test_a_restart_does_not_fire_a_tick_again(home, make):
    _configure(home, {"id": "m", "function": "fn", "expression": "rate(1 minute)"})
    clock = _Clock(T0)
    make(clock).run_once()
    clock.t = T0 + 60.1
    make(clock).run_once()                    # fires 08:01, then "crashes"
    assert len(_pending(home)) == 1
    for _ in range(3):                        # restarted (again and again) in the same minute
        clock.t += 5
        make(clock).run_once()
    assert len(_pending(home)) == 1
    clock.t = T0 + 120
    make(clock).run_once()
    assert [e["body"]["time"] for e in _pending(home)] == [
        "2027-01-15T08:01:00Z", "2027-01-15T08:02:00Z"]


def test_a_crash_between_enqueue_and_record_fires_the_tick_once(home, make, monkeypatch):
    """EventStore.add runs inside the schedule's transaction: a failure after it (the
    process dying before COMMIT) leaves neither the event nor the record of its tick."""
    _configure(home, {"id": "m", "function": "fn", "expression": "rate(1 minute)"})
    clock = _Clock(T0)
    first = make(clock)
    first.run_once()
    clock.t = T0 + 60.1
    real_add = first.service.events.add

    def add_then_die(*args, **kwargs):
        real_add(*args, **kwargs)             # the INSERT ran...
        raise OSError("killed")               # ...and the process died before COMMIT

    monkeypatch.setattr(first.service.events, "add", add_then_die)
    with pytest.raises(OSError):
        first.run_once()
    assert _pending(home) == [] and _state(home, "m")["last_tick"] is None
    make(clock).run_once()                    # the next serve, in the grace window
    make(clock).run_once()
    events = _pending(home)
    assert len(events) == 1 and events[0]["body"]["time"] == "2027-01-15T08:01:00Z"


def test_two_servers_on_one_home_fire_each_tick_once(home, make):
    _configure(home, {"id": "m", "function": "fn", "expression": "cron(* * * * ? *)"})
    clock = _Clock(T0)
    a, b = make(clock), make(clock)
    a.run_once(), b.run_once()
    for minute in range(1, 4):
        clock.t = T0 + 60 * minute
        b.run_once(), a.run_once()
    assert [e["body"]["time"] for e in _pending(home)] == [
        "2027-01-15T08:01:00Z", "2027-01-15T08:02:00Z", "2027-01-15T08:03:00Z"]


def test_missed_ticks_are_not_replayed(home, make):
    _configure(home, {"id": "five", "function": "fn", "expression": "rate(5 minutes)"},
               {"id": "one", "function": "fn", "expression": "rate(1 minute)"})
    clock = _Clock(T0)
    make(clock).run_once()
    clock.t = T0 + 300
    make(clock).run_once()                    # 08:05 for both (08:01-08:04 of "one" missed)
    # down for 17.5 minutes: 08:10, 08:15, 08:20 and 08:06..08:22 pass unseen
    clock.t = T0 + 300 + 17 * 60 + 30
    s = make(clock)
    s.run_once()
    times = sorted((e["body"]["resources"][0].rsplit("/", 1)[1], e["body"]["time"])
                   for e in _pending(home))
    # rate(1 minute): the latest tick (08:22, 30 s late) is within the grace window and
    # fires; rate(5 minutes): the latest (08:20) is 150 s late: nothing fires
    assert times == [("five", "2027-01-15T08:05:00Z"), ("one", "2027-01-15T08:05:00Z"),
                     ("one", "2027-01-15T08:22:00Z")]
    assert _state(home, "one")["missed"] == 4 + 16 and _state(home, "five")["missed"] == 3
    clock.t = T0 + 25 * 60                    # 08:25: both fire on time again
    s.run_once()
    make(clock).run_once()                    # a restart counts nothing twice
    assert len(_pending(home)) == 5
    assert _state(home, "one")["missed"] == 4 + 16 + 2 and _state(home, "five")["missed"] == 3


def test_new_changed_and_reenabled_schedules_fire_nothing_from_before(home, make):
    clock = _Clock(T0 + 50)                   # 08:00:50
    _configure(home, {"id": "c", "function": "fn", "expression": "cron(* * * * ? *)"})
    s = make(clock)
    s.run_once()
    clock.t = T0 + 59.5                       # not 08:00 (before the schedule existed)
    s.run_once()
    assert _pending(home) == []
    clock.t = T0 + 60
    s.run_once()
    assert len(_pending(home)) == 1           # 08:01
    _configure(home, {"id": "c", "function": "fn", "expression": "cron(* * * * ? *)",
                      "enabled": False})
    clock.t = T0 + 180
    s.run_once()                              # 08:02 and 08:03 while disabled: nothing
    assert len(_pending(home)) == 1
    assert _state(home, "c")["enabled"] is False and _state(home, "c")["next_tick"] is None
    clock.t = T0 + 190
    _configure(home, {"id": "c", "function": "fn", "expression": "cron(* * * * ? *)"})
    s.run_once()                              # enabled at 08:03:10: not 08:03
    assert len(_pending(home)) == 1
    clock.t = T0 + 240
    s.run_once()
    assert [e["body"]["time"] for e in _pending(home)] == [
        "2027-01-15T08:01:00Z", "2027-01-15T08:04:00Z"]
    # a changed rate restarts its grid where it was seen
    clock.t = T0 + 250.5
    _configure(home, {"id": "c", "function": "fn", "expression": "rate(2 minutes)"})
    s.run_once()
    clock.t = T0 + 250 + 119
    s.run_once()
    assert len(_pending(home)) == 2
    clock.t = T0 + 250 + 120
    s.run_once()
    assert _pending(home)[-1]["body"]["time"] == "2027-01-15T08:06:10Z"


def test_triggers_json_is_followed_and_bad_entries_do_not_stop_the_rest(home, make):
    clock = _Clock(T0)
    s = make(clock)
    s.run_once()                              # no triggers.json yet
    assert s.schedules == {}
    _configure(home, {"id": "bad", "function": "fn", "expression": "cron(0 12 * * * *)"},
               {"id": "good", "function": "fn", "expression": "cron(* * * * ? *)",
                "input": '{"from": "schedule"}'},
               {"id": "ghost", "function": "nope", "expression": "cron(* * * * ? *)"})
    s.run_once()
    assert set(s.schedules) == {"good", "ghost"} and "neither is" in s.errors["bad"]
    clock.t = T0 + 60
    s.run_once()
    events = _pending(home)
    assert [(e["function"], e["body"]) for e in events] == [("fn", {"from": "schedule"})]
    rows = {r["id"]: r for r in describe(home, now=clock.t)}
    assert rows["bad"]["error"].startswith("schedule 'bad' (schedules[0]): 'cron(0 12 * * * *)'")
    assert rows["bad"]["next_tick"] is None
    assert rows["good"]["last_tick"] == "2027-01-15T08:01:00Z"
    assert rows["good"]["next_tick"] == "2027-01-15T08:02:00Z"
    # a function that does not exist: the tick is consumed, nothing queued, error shown
    assert rows["ghost"]["last_tick"] == "2027-01-15T08:01:00Z"
    assert rows["ghost"]["error"].startswith("ResourceNotFoundException")
    # a broken file keeps what was loaded
    config.path_of(home).write_text("{not json")
    clock.t = T0 + 120
    s.run_once()
    assert set(s.schedules) == {"good", "ghost"} and len(_pending(home)) == 2


def test_speedup_shortens_rates_for_tests(home, make):
    _configure(home, {"id": "m", "function": "fn", "expression": "rate(1 minute)"})
    clock = _Clock(T0)
    s = make(clock, speedup=30)
    s.run_once()
    for step in range(1, 6):
        clock.t = T0 + 2 * step
        s.run_once()
    assert [e["body"]["time"] for e in _pending(home)] == [
        f"2027-01-15T08:00:{2 * i:02d}Z" for i in range(1, 6)]
    assert SchedulerOptions.from_env({"SNAPSTART_SCHEDULE_SPEEDUP": "30"}).grace_ms == 2000
    with pytest.raises(ConfigError):
        SchedulerOptions.from_env({"SNAPSTART_SCHEDULE_SPEEDUP": "0.5"})


def test_the_thread_fires_and_stops(home):
    """start()/stop() as serve calls them, on the real clock (a rate of 100 ms)."""
    _configure(home, {"id": "fast", "function": "fn", "expression": "rate(1 minute)"})
    s = Scheduler(_service(home), options=SchedulerOptions(speedup=600, poll_s=0.05))
    s.start()
    try:
        deadline = time.monotonic() + 30
        while len(_pending(home)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        s.stop()
    assert s._thread is not None and not s._thread.is_alive()
    times = [e["body"]["time"] for e in _pending(home)]
    assert len(times) >= 3 and len(set(e["id"] for e in _pending(home))) == len(times)


def test_events_ls_schedules(home, make, monkeypatch):
    _configure(home, {"id": "nightly", "function": "fn", "expression": "cron(0 2 * * ? *)"},
               {"id": "bad", "function": "fn", "expression": "rate(1 minutes)"})
    make(_Clock(T0)).run_once()
    monkeypatch.setenv("SNAPSTART_HOME", str(home))
    result = CliRunner().invoke(cli.main, ["events", "ls", "--schedules", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == ["nightly", "bad"]
    assert rows[0]["expression"] == "cron(0 2 * * ? *)" and rows[0]["enabled"] is True
    assert rows[0]["last_tick"] is None and rows[0]["next_tick"].endswith("T02:00:00Z")
    assert "unit must be 'minute'" in rows[1]["error"]
    text = CliRunner().invoke(cli.main, ["events", "ls", "--schedules"]).stdout
    assert text.splitlines()[0].startswith("nightly\tfn\tcron(0 2 * * ? *)\tenabled\tlast=-\t")
