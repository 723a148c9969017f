"""`snapstart snapshots inspect` (issue 17, inspection part): what a published
snapshot holds, read from its real CRIU images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import serve_env, wait_for  # noqa: E402

from bootstrap import protocol  # noqa: E402

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]
PROJECT = Path(__file__).resolve().parents[2]


def _inspect(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snapstart.cli", "snapshots", "inspect",
                           *args], env=serve_env(settings), capture_output=True, text=True,
                          timeout=120, cwd=str(PROJECT))


def test_inspect_names_processes_memory_tmp_and_environment_names(manager, publish,
                                                                  settings):
    publish("tmpfiles", environment={"API_TOKEN": "do-not-print-me"})
    publish("tmpfiles", environment={"API_TOKEN": "do-not-print-me"})      # version 2
    proc = _inspect(settings, "tmpfiles", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["version"] == 2 and out["previous_version"] == 1
    assert out["made_by"]["agent_protocol"] == protocol.VERSION and out["made_by"]["snapstart"]
    # the runtime, PID 2 of the sandbox, with its command line read from the image
    (runtime,) = out["processes"]
    assert runtime["pid"] == 2 and "_snapstart_runtime" in runtime["argv"]
    assert runtime["exe"].startswith("/usr/")                  # sandbox path, not host
    assert out["memory"]["heap"]["dumped"] > 0
    assert sum(k["dumped"] for k in out["memory"].values()) <= out["logical_bytes"]
    assert out["largest"] and out["largest"][0]["dumped"] >= out["largest"][-1]["dumped"]
    assert {"/tmp/init.txt", "/tmp/assets/model.bin"} <= {f["path"] for f in out["tmp_files"]}
    # names, never values; and most of version 2 is version 1's chunks
    assert out["environment_names"] == ["API_TOKEN"]
    assert "do-not-print-me" not in proc.stdout
    assert out["shared_with_previous_bytes"] > out["logical_bytes"] // 2
    text = _inspect(settings, "tmpfiles:1")
    assert text.returncode == 0 and "memory by kind" in text.stdout
    assert "/tmp/init.txt" in text.stdout and "do-not-print-me" not in text.stdout
    # the hot set: none before a restored invocation, then recorded by the first one
    assert out["hot_set"] is None and "hot set: (not recorded yet" in text.stdout
    assert manager.invoke("tmpfiles", force_new=True).start_type == "restored"
    hot = wait_for(lambda: json.loads(_inspect(settings, "tmpfiles", "--json").stdout)
                   ["hot_set"], 10, "the hot set in inspect")
    assert hot["written_pages"] > 0 and hot["read_pages"] > 0
    assert f"hot set: {hot['written_pages']} pages written" in _inspect(settings,
                                                                        "tmpfiles").stdout


def test_inspect_shows_the_registered_hooks_in_the_order_they_run(manager, publish,
                                                                  settings):
    publish("hooks")
    out = json.loads(_inspect(settings, "hooks", "--json").stdout)
    # before-snapshot hooks run LIFO, after-restore hooks FIFO; snapstart's own not shown
    assert [(h["kind"], h["name"]) for h in out["hooks"]] == [
        ("before_snapshot", "app.b2"), ("before_snapshot", "app.b1"),
        ("after_restore", "app.a1"), ("after_restore", "app.a2")]
    assert out["hooks"][0]["at"] == "app.py:13"
    # the list is taken out of /tmp before the dump: no clone sees it
    assert not any(".snapstart-hooks" in f["path"] for f in out["tmp_files"])
    text = _inspect(settings, "hooks")
    assert "before-snapshot  app.b2  (app.py:13)" in text.stdout
    publish("node-hooks", handler="index.handler", runtime="node")
    out = json.loads(_inspect(settings, "node-hooks", "--json").stdout)
    assert [(h["kind"], h["name"], h["at"]) for h in out["hooks"]] == [
        ("before_snapshot", "index.<anonymous>", "index.js:9"),
        ("before_snapshot", "index.<anonymous>", "index.js:8"),
        ("after_restore", "index.<anonymous>", "index.js:14"),
        ("after_restore", "index.<anonymous>", "index.js:19")]
    publish("provided-echo", runtime="provided", handler="echo")
    assert json.loads(_inspect(settings, "provided-echo", "--json").stdout)["hooks"] is None
    assert "hooks: (not recorded)" in _inspect(settings, "provided-echo").stdout


def test_inspect_refuses_what_has_no_snapshot(manager, settings):
    proc = _inspect(settings, "missing")
    assert proc.returncode == 1 and "ResourceNotFoundException" in proc.stderr
    assert "Traceback" not in proc.stderr
