"""Function identities (snapstart/identities.py) and the registry's secrets at rest."""

from __future__ import annotations

import json
import pwd
import stat
import threading

import pytest

from snapstart import identities
from snapstart.config import FunctionConfig, Settings
from snapstart.errors import ConfigError
from snapstart.identities import Identities, parse_range
from snapstart.registry import Registry


def test_range_parsing_refuses_root_and_system_ids():
    assert parse_range(None) == identities.DEFAULT_RANGE
    assert parse_range("900000-900009") == (900000, 900009)
    for bad in ("0-10", "10-2000", "5000-4000", "abc", "5000", "5000-3000000000"):
        with pytest.raises(ConfigError, match="SNAPSTART_UID_RANGE"):
            parse_range(bad)


def test_sandbox_uid_variables_are_refused_with_the_replacement_named():
    with pytest.raises(ConfigError, match="SNAPSTART_UID_RANGE"):
        Settings.from_env({"SNAPSTART_SANDBOX_UID": "993"})


def test_allocation_is_stable_unique_and_skips_host_ids(tmp_path, monkeypatch):
    used = pwd.getpwall()[-1].pw_uid                     # a uid the host has
    lo = max(used, 1000)
    monkeypatch.setattr(identities, "subordinate_ranges", lambda: [(lo + 1, lo + 2)])
    ids = Identities(tmp_path, (lo, lo + 5))
    (a, new_a), (b, new_b) = ids.ensure("a"), ids.ensure("b")
    assert new_a and new_b and a != b
    assert a[0] == a[1] and b[0] == b[1]
    taken = {lo} if lo == used else set()
    assert not {a[0], b[0]} & (taken | {lo + 1, lo + 2})   # host user, subuid range
    assert ids.ensure("a") == (a, False)
    # another process (a new Identities) reads the same ledger; mode 0600
    assert Identities(tmp_path, (lo, lo + 5)).get("b") == b
    ledger = tmp_path / "identities.json"
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    assert json.loads(ledger.read_text())["format"] == identities.LEDGER_FORMAT


def test_allocation_under_contention_never_repeats(tmp_path, monkeypatch):
    monkeypatch.setattr(identities, "subordinate_ranges", lambda: [])
    monkeypatch.setattr(identities, "_taken_on_host", lambda uid, sub: False)
    got: dict[str, tuple[int, int]] = {}

    def worker(i: int) -> None:
        got[f"f{i}"] = Identities(tmp_path, (700000, 700099)).ensure(f"f{i}")[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({v for v in got.values()}) == 16


def test_exhausted_range_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(identities, "_taken_on_host", lambda uid, sub: False)
    ids = Identities(tmp_path, (700000, 700000))
    ids.ensure("one")
    with pytest.raises(ConfigError, match="no free function identity"):
        ids.ensure("two")


def test_adopt_carries_an_identity_into_another_home(tmp_path):
    ids = Identities(tmp_path, (700000, 700099))
    ids.adopt("f", 700042)
    assert ids.get("f") == (700042, 700042)
    ids.adopt("f", 700042)                                   # idempotent
    for name, uid in (("f", 700043), ("g", 700042), ("h", 0)):
        with pytest.raises(ConfigError):
            ids.adopt(name, uid)


def test_unknown_ledger_format_is_refused(tmp_path):
    (tmp_path / "identities.json").write_text('{"format": 99, "functions": {}}')
    with pytest.raises(ConfigError, match="format 99"):
        Identities(tmp_path, (700000, 700009)).get("x")


def test_registry_files_are_root_only_and_sealed_with_the_store_key(tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text("def handler(e, c): return 1\n")
    settings = Settings.from_env({"SNAPSTART_HOME": str(tmp_path / "home")})
    monkeypatch.setenv("SNAPSTART_ENCRYPTION_KEY", "cd" * 32)
    reg = Registry(settings)
    reg.set_latest(FunctionConfig(name="f", handler="app.handler",
                                  environment={"PASSWORD": "hunter2"}), code)
    config_json = settings.home / "functions/f/latest/config.json"
    assert stat.S_IMODE(config_json.stat().st_mode) == 0o600
    assert b"hunter2" not in config_json.read_bytes()
    assert reg.latest("f").config.environment == {"PASSWORD": "hunter2"}
    uid, gid = reg.identity("f")
    st = (settings.home / "functions/f/latest/code/app.py").stat()
    assert st.st_gid == gid and stat.S_IMODE(st.st_mode) == 0o640
    assert reg.latest("f").identity == (uid, gid)
    monkeypatch.setenv("SNAPSTART_ENCRYPTION_KEY", "ef" * 32)     # another key
    with pytest.raises(ConfigError, match="different key"):
        Registry(settings).latest("f")
