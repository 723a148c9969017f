"""`snapstart check` (issue 17, uniqueness check): values init derives from
randomness or the clock, found by running init twice and restoring two clones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import serve_env  # noqa: E402

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]
PROJECT = Path(__file__).resolve().parents[2]


def _check(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snapstart.cli", "check", *args],
                          env=serve_env(settings), capture_output=True, text=True,
                          timeout=300, cwd=str(PROJECT))


def test_check_reports_each_hazard_by_name_path_and_leaves_nothing(manager, publish,
                                                                   settings):
    publish("hazards")
    versions = manager.registry.versions("hazards")
    stored = manager.store.versions("hazards")
    proc = _check(settings, "hazards", "--json")
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    paths = {f["path"] for f in out["findings"]}
    # a uuid4, a time.time() stamp and a random key in a nested client object;
    # not: the id an after-restore hook regenerates, a marked shared name, a table
    assert paths == {"app.INSTANCE_ID", "app.STARTED_AT", "app.CLIENT.session['key']"}
    for finding in out["findings"]:
        assert "after-restore hook" in finding["why"] and len(finding["sample"]) <= 12
    # the published version and its store are untouched; no temporary home is left
    assert manager.registry.versions("hazards") == versions
    assert manager.store.versions("hazards") == stored
    assert not list(Path("/tmp").glob("snapstart-check-*"))
    assert not list(settings.shm.parent.glob("snapstart-check-*"))


def test_a_deterministic_function_is_clean(manager, publish, settings):
    publish("errors")
    proc = _check(settings, "errors")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "errors:1: 0 hazard(s)" in proc.stdout


def test_check_refuses_what_it_cannot_check(manager, publish, settings):
    proc = _check(settings, "missing")
    assert proc.returncode == 1 and "ResourceNotFoundException" in proc.stderr
    publish("provided-echo", runtime="provided", handler="echo")
    proc = _check(settings, "provided-echo")
    assert proc.returncode == 1 and "Python runtimes only" in proc.stderr
