"""Shared fixtures.

``home``: a temporary SNAPSTART_HOME and a private tmpfs directory (SNAPSTART_SHM),
removed afterwards. ``managers``: the one factory of managers (and so of sandboxes)
in integration tests: ``managers(settings=None, **kw)`` makes one; every manager it
made is closed at teardown, even after a failure, and the test fails if any process,
or any file under its tmpfs directory, is left behind. ``manager`` is its first one.
``serve``: ``snapstart serve`` subprocesses in the test's home, stopped afterwards.
CRIU's dump and restore logs of every test are kept (SNAPSTART_KEEP_CRIU_LOGS) and,
when the test failed, left on disk and named in its report; otherwise removed.

Marks ``requires_root`` / ``requires_criu`` skip with a stated reason on a developer
machine without them; under CI (``CI=true``) nothing skips: a missing requirement
is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from snapstart.config import FunctionConfig, Settings

FUNCTIONS = Path(__file__).parent / "functions"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _criu_ok() -> str | None:
    settings = Settings.from_env()
    from snapstart.checkpoint.criu import Criu
    try:
        ok, detail = Criu(settings.criu).usable()
    except Exception as exc:
        return f"no usable CRIU ({exc})"
    return None if ok else f"no usable CRIU ({detail})"


def pytest_collection_modifyitems(config, items):
    reasons = {}
    if os.geteuid() != 0:
        reasons["requires_root"] = "needs root (namespaces, CRIU)"
    criu_problem = _criu_ok()
    if criu_problem:
        reasons["requires_criu"] = criu_problem
    if IN_CI:
        return  # never skip in CI: let the tests fail loudly instead
    for item in items:
        for mark, reason in reasons.items():
            if item.get_closest_marker(mark):
                item.add_marker(pytest.mark.skip(reason=reason))


def _children() -> set[int]:
    pid = os.getpid()
    try:
        return {int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def _describe(pids: set[int]) -> list[str]:
    out = []
    for pid in sorted(pids):
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            state = " ".join(line for line in status if line.startswith(("Name:", "State:", "PPid:", "NSpid:")))
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
            out.append(f"{pid} {state} {cmd}")
        except OSError:
            out.append(f"{pid} (gone)")
    return out


@pytest.fixture
def home(monkeypatch):
    # Not tmp_path: pytest's base dir is mode 0700 and functions run as an
    # unprivileged user that must reach their code (as under /var/lib/snapstart).
    base = Path(tempfile.mkdtemp(prefix="snapstart-test-", dir="/tmp"))
    os.chmod(base, 0o711)
    shm = Path("/dev/shm") / f"snapstart-test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SNAPSTART_HOME", str(base / "home"))
    monkeypatch.setenv("SNAPSTART_SHM", str(shm))
    yield Settings.from_env()
    shutil.rmtree(shm, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def settings(home):
    return home


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's outcome on the item (``criu_logs`` reads it)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def criu_logs(request, monkeypatch):
    """CRIU's logs of this test: kept when it failed, removed when it passed."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:40]
    keep = Path(tempfile.mkdtemp(prefix=f"snapstart-criu-logs-{label}-"))
    monkeypatch.setenv("SNAPSTART_KEEP_CRIU_LOGS", str(keep))
    yield keep
    failed = any(getattr(request.node, f"rep_{when}", None) is not None
                 and getattr(request.node, f"rep_{when}").failed for when in ("setup", "call"))
    if failed and any(keep.iterdir()):
        print(f"\nCRIU logs of {request.node.nodeid}: {keep}")
    else:
        shutil.rmtree(keep, ignore_errors=True)


@pytest.fixture
def managers(settings):
    """managers(settings=None, **kw) -> a Manager owned by the test (see the module)."""
    from snapstart.manager import Manager

    before = _children()
    made: list = []

    def make(for_settings: Settings | None = None, **kw):
        made.append(Manager(for_settings or settings, **kw))
        return made[-1]

    yield make
    for mgr in reversed(made):
        mgr.close()
    leftover = _children() - before
    assert not leftover, f"processes left behind: {_describe(leftover)}"
    for s in {id(m.settings): m.settings for m in made}.values():
        run_dir = s.shm / "run"
        assert not run_dir.exists() or not any(run_dir.iterdir()), \
            f"CRIU work dirs left behind: {list(run_dir.iterdir())}"
        staging = s.shm / "staging"
        assert not staging.exists() or not any(staging.iterdir()), \
            "publish staging left behind"


@pytest.fixture
def manager(managers):
    return managers()


def fn_config(name: str, handler: str = "app.handler", **kw) -> FunctionConfig:
    return FunctionConfig(name=name, handler=handler, **kw)


@pytest.fixture
def publish(manager):
    """publish("hello") -> PublishResult, from tests/functions/<dir>."""
    def _publish(directory: str, name: str | None = None, **kw):
        return manager.publish(FUNCTIONS / directory, fn_config(name or directory, **kw))
    return _publish


@pytest.fixture
def serve(home):
    """serve(*args) -> a running ``snapstart serve`` (leaks.ServerProcess) in the test's
    home; all stopped after, and their sandboxes gone. (test_serve.py and
    test_schedules.py have stricter / differently configured ones of their own.)"""
    from leaks import ServerProcess, sandbox_processes, wait_for

    servers: list = []

    def start(*args: str):
        server = ServerProcess(home, *args, log_dir=home.home.parent)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    wait_for(lambda: not sandbox_processes(home), 15, "sandboxes to go")
