"""`snapstart check` (issue 17, uniqueness check): values init derives from
randomness or the clock, found by running init twice and restoring two clones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import cli, serve_env  # noqa: E402

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]
PROJECT = Path(__file__).resolve().parents[2]


def _check(settings, *args: str) -> subprocess.CompletedProcess:
    return cli(settings, "check", *args, check=False, timeout=300)


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
    # the language-independent layer: memory that differs between the two inits
    assert out["names_compared"] and sum(out["differing_bytes"].values()) > 0
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


def test_node_hazards_are_named_by_path_and_the_handler_never_runs(manager, publish,
                                                                   settings):
    publish("node-hazards", handler="index.handler", runtime="node")
    versions = manager.registry.versions("node-hazards")
    proc = _check(settings, "node-hazards", "--json")
    # the handler throws "the handler ran": the check answers its clones' events itself
    assert "the handler ran" not in proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    # a top-level crypto.randomUUID() that only the handler uses (found in its
    # scope), a start Date, a random id in an exported object; not: a seed an
    # after-restore hook regenerates, a name in __snapstart_shared__, a table
    assert {f["path"] for f in out["findings"]} == {
        "index.INSTANCE_ID", "index.STARTED_AT", "index.client.sessionId"}
    assert out["names_compared"] and sum(out["differing_bytes"].values()) > 0
    assert manager.registry.versions("node-hazards") == versions
    assert not list(Path("/tmp").glob("snapstart-check-*"))


def test_a_node_function_whose_hooks_regenerate_nothing_random_is_clean(manager, publish,
                                                                        settings):
    publish("node-hooks", handler="index.handler", runtime="node")
    proc = _check(settings, "node-hooks")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "node-hooks:1: 0 hazard(s)" in proc.stdout


def test_other_runtimes_get_the_memory_layer_and_unknown_names_an_error(manager, publish,
                                                                       settings):
    proc = _check(settings, "missing")
    assert proc.returncode == 1 and "ResourceNotFoundException" in proc.stderr
    publish("provided-echo", runtime="provided", handler="echo")
    proc = _check(settings, "provided-echo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "memory that differs between two inits:" in proc.stdout
    assert "names are compared for Python and Node functions only" in proc.stdout


def test_publish_check_publishes_then_reports(manager, settings):
    proc = subprocess.run([sys.executable, "-m", "snapstart.cli", "publish",
                           str(PROJECT / "tests/functions/hazards"), "--name", "hz",
                           "--handler", "app.handler", "--check"],
                          env=serve_env(settings), capture_output=True, text=True,
                          timeout=300, cwd=str(PROJECT))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("published hz:1")
    assert "HAZARD app.INSTANCE_ID" in proc.stdout
    assert manager.registry.versions("hz") == [1]          # published all the same

