"""Schedules through a real ``snapstart serve`` subprocess (root, CRIU): a
``rate(1 minute)`` schedule fires Scheduled Events into restored clones of a published
function, serve is killed with ``kill -9`` right after a tick and restarted, and no tick
is ever fired twice.

Test-only setting: ``SNAPSTART_SCHEDULE_SPEEDUP=30`` makes rate periods (and the grace
window) 30 times shorter, so ``rate(1 minute)`` ticks every 2 s of real time. Nothing
here asserts a timing: only which ticks fired and how often.
"""

from __future__ import annotations

import ast
import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import (ServerProcess, function_logs, sandbox_processes,  # noqa: E402
                   serve_env, wait_for)

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
PROJECT = Path(__file__).resolve().parent.parent.parent
SPEEDUP = {"SNAPSTART_SCHEDULE_SPEEDUP": "30"}      # rate(1 minute) = every 2 s


def _cli(home, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "snapstart.cli", *args],
                          env={**serve_env(home), **SPEEDUP}, capture_output=True, text=True,
                          timeout=180, cwd=str(PROJECT))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def serve(home):
    """serve() -> a running ServerProcess (with SPEEDUP); all stopped, no clone left."""
    servers: list[ServerProcess] = []

    def start() -> ServerProcess:
        servers.append(ServerProcess(home, log_dir=home.home.parent, env=SPEEDUP))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
    from snapstart.sandbox.procs import find_inits, owner_tag

    deadline = time.monotonic() + 10
    while (find_inits(owner_tag(home.home)) or sandbox_processes(home)) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not find_inits(owner_tag(home.home)) and not sandbox_processes(home), \
        "sandbox processes left behind"


def _configure(home, *, enabled: bool) -> None:
    from snapstart.triggers import config

    entries = [
        {"id": "every-minute", "function": "hello", "qualifier": None,
         "expression": "rate(1 minute)", "input": None, "enabled": enabled},
        {"id": "with-input", "function": "hello", "qualifier": "1",
         "expression": "rate(2 minutes)", "input": '{"from": "schedule"}', "enabled": enabled},
        {"id": "broken", "function": "hello", "qualifier": None,
         "expression": "cron(0 12 * * * *)", "input": None, "enabled": enabled},
    ]
    with config.locked(home.home):
        config.save(home.home, config.Triggers(schedules=entries))


def _schedules(home) -> dict[str, dict]:
    return {r["id"]: r for r in json.loads(_cli(home, "events", "ls", "--schedules",
                                                 "--json"))}


def _handled(home) -> list[dict]:
    """Every event the function printed (tests/functions/hello: ``hello: handling {..}``)."""
    out = []
    for line in function_logs(home, "hello").splitlines():
        _, sep, rest = line.partition("hello: handling ")
        if sep:
            out.append(ast.literal_eval(rest.strip()))
    return out


def _db_enabled(home) -> dict[str, int]:
    db = sqlite3.connect(home.home / "events.db", timeout=30)
    try:
        return dict(db.execute("SELECT id, enabled FROM schedule_state"))
    finally:
        db.close()


def test_rate_schedule_fires_each_tick_at_most_once_across_kill9(home, serve):
    out = subprocess.run([sys.executable, "-m", "snapstart.cli", "publish",
                          str(FUNCTIONS / "hello"), "--name", "hello", "--handler",
                          "app.handler", "--json"], env=serve_env(home), capture_output=True,
                         text=True, timeout=180, cwd=str(PROJECT))
    assert out.returncode == 0, out.stderr
    _configure(home, enabled=True)

    first = serve()
    wait_for(lambda: _schedules(home)["every-minute"]["fired"] >= 3, 90, "three ticks")
    # kill -9 right after a tick was committed: the restarted serve must not fire it again
    fired = _schedules(home)["every-minute"]["fired"]
    wait_for(lambda: _schedules(home)["every-minute"]["fired"] > fired, 30, "one more tick")
    first.kill9()
    at_kill = _schedules(home)["every-minute"]
    killed_at = datetime.strptime(at_kill["last_tick"], "%Y-%m-%dT%H:%M:%SZ")

    second = serve()
    wait_for(lambda: _schedules(home)["every-minute"]["fired"] >= at_kill["fired"] + 3,
             90, "three ticks after the restart")
    assert "schedule 'broken' (schedules[2])" in second.output()

    # disabled through triggers.json (followed by mtime): once serve has seen it, no more
    _configure(home, enabled=False)
    wait_for(lambda: _db_enabled(home) == {"every-minute": 0, "with-input": 0}, 90,
             "the reload")
    wait_for(lambda: json.loads(_cli(home, "events", "ls", "--json")) == [], 90,
             "the queue to drain")
    rows = _schedules(home)
    second.stop()

    handled = _handled(home)
    scheduled = [e for e in handled if e.get("detail-type") == "Scheduled Event"]
    ids_by_tick: dict[str, set[str]] = {}
    for event in scheduled:
        ids_by_tick.setdefault(event["time"], set()).add(event["id"])
    # the same event may run twice (async, at least once: serve killed while it ran);
    # a tick fired twice would be two events with two ids
    assert all(len(ids) == 1 for ids in ids_by_tick.values()), ids_by_tick
    assert len(ids_by_tick) == rows["every-minute"]["fired"], (ids_by_tick, rows)
    ticks = sorted(datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ") for t in ids_by_tick)
    assert ticks[0] < killed_at < ticks[-1]
    assert killed_at in ticks
    # one grid across the restart: the anchor is durable
    assert all((t - ticks[0]).total_seconds() % 2 == 0 for t in ticks)
    sample = scheduled[0]
    assert sample["source"] == "aws.events" and sample["detail"] == {}
    assert sample["account"] == "000000000000" and sample["region"] == "us-east-1"
    assert sample["resources"] == ["arn:aws:events:us-east-1:000000000000:rule/every-minute"]
    # `input` is sent verbatim, to the qualifier given
    assert sum(1 for e in handled if e == {"from": "schedule"}) == rows["with-input"]["fired"] >= 1

    assert rows["every-minute"]["enabled"] is False and rows["every-minute"]["next_tick"] is None
    assert "exactly one of Day-of-month and Day-of-week" in rows["broken"]["error"]
    # every invocation went through the normal dispatch and logs: START/REPORT lines
    logs = function_logs(home, "hello")
    assert logs.count("REPORT RequestId: ") >= len(scheduled)
