"""One unprivileged identity per function: uid == gid, from a configured range.

Every function runs as its own uid and gid, so no function can open another's
``/proc/PID/{environ,mem,maps}``, signal it, or read its code (each code tree is
group-owned by its function's gid, mode 0750/0640). Clones of one function share the
identity; two functions never do.

The ledger ``$SNAPSTART_HOME/identities.json`` (format 1, root-only 0600) records
``{"format": 1, "range": [lo, hi], "functions": {name: uid}}``. An identity is
allocated once, on a function's first ``set_latest``, and never given to another
function, even after the first is deleted (files or snapshots it left behind keep
naming it). A function's identity is stable across versions and restarts; snapshots
carry it (the restored processes' credentials come from the image) and record it in
their facts (``uid``), checked before a restore.

Allocation takes the lowest uid of the range that is not

- in the ledger,
- a user or group in the host's passwd/group databases (``pwd``/``grp``: NSS),
- inside a subordinate id range of ``/etc/subuid`` or ``/etc/subgid`` (containers'
  user namespaces map host ids from there).

The range comes from ``SNAPSTART_UID_RANGE`` (``LO-HI``, default ``800000-899999``);
0 and ids below 1000 are refused. The ledger is guarded by an flock
(``identities.lock``), so concurrent publishers never hand out one uid twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
from pathlib import Path
from typing import Iterator

from .errors import ConfigError
from .jsonfile import write_private

__all__ = ["DEFAULT_RANGE", "LEDGER_FORMAT", "Identities", "parse_range", "subordinate_ranges"]

DEFAULT_RANGE = (800000, 899999)
LEDGER_FORMAT = 1
MIN_ID = 1000


def parse_range(text: str | None) -> tuple[int, int]:
    if not text:
        return DEFAULT_RANGE
    try:
        lo_s, hi_s = text.split("-", 1)
        lo, hi = int(lo_s), int(hi_s)
    except ValueError:
        raise ConfigError(f"SNAPSTART_UID_RANGE must be LO-HI (e.g. 800000-899999), "
                          f"not {text!r}") from None
    if lo < MIN_ID or hi < lo or hi >= 2**31 - 1:
        raise ConfigError(f"SNAPSTART_UID_RANGE {text!r}: need {MIN_ID} <= LO <= HI < 2^31-1 "
                          "(functions never run as root or as a system user)")
    return lo, hi


def subordinate_ranges(paths: tuple[str, ...] = ("/etc/subuid", "/etc/subgid")
                       ) -> list[tuple[int, int]]:
    """[lo, hi] of every subordinate id range on the host."""
    out = []
    for path in paths:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                lo, count = int(parts[1]), int(parts[2])
                if count:
                    out.append((lo, lo + count - 1))
    return out


def _taken_on_host(uid: int, subranges: list[tuple[int, int]]) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return any(lo <= uid <= hi for lo, hi in subranges)


class Identities:
    """The ledger of function identities under one home."""

    def __init__(self, home: Path, id_range: tuple[int, int]) -> None:
        self.home = home
        self.range = id_range
        self.path = home / "identities.json"
        self._cache: tuple[tuple[int, int], dict[str, int]] | None = None

    # ---- reading ------------------------------------------------------------------
    def _read(self) -> dict[str, int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_ino)
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the identity ledger {self.path}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT:
            raise ConfigError(f"{self.path}: unknown identity ledger format "
                              f"{data.get('format') if isinstance(data, dict) else data!r} "
                              f"(this snapstart reads format {LEDGER_FORMAT})")
        functions = {str(k): int(v) for k, v in data.get("functions", {}).items()}
        self._cache = (stamp, functions)
        return functions

    def get(self, name: str) -> tuple[int, int] | None:
        uid = self._read().get(name)
        return None if uid is None else (uid, uid)

    def all(self) -> dict[str, int]:
        return dict(self._read())

    # ---- allocation ---------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home / "identities.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def adopt(self, name: str, uid: int) -> None:
        """Record ``name`` as ``uid`` in this (new) ledger: a function's identity
        carried into another home (`snapstart check` runs in a temporary one)."""
        if uid < MIN_ID:
            raise ConfigError(f"refusing identity {uid} for {name}: below {MIN_ID}")
        with self._locked():
            functions = dict(self._read())
            current = functions.get(name)
            others = {u for n, u in functions.items() if n != name}
            if (current is not None and current != uid) or uid in others:
                raise ConfigError(f"{self.path}: {name} or uid {uid} is taken already")
            functions[name] = uid
            self._write(functions)

    def ensure(self, name: str) -> tuple[tuple[int, int], bool]:
        """The function's (uid, gid), allocated on first use; and whether it is new."""
        found = self.get(name)
        if found is not None:
            return found, False
        with self._locked():
            functions = dict(self._read())
            if name in functions:
                uid = functions[name]
                return (uid, uid), False
            used = set(functions.values())
            subranges = subordinate_ranges()
            lo, hi = self.range
            free = next((u for u in range(lo, hi + 1)
                         if u not in used and not _taken_on_host(u, subranges)), None)
            if free is None:
                raise ConfigError(f"no free function identity left in SNAPSTART_UID_RANGE "
                                  f"{lo}-{hi} ({len(used)} allocated)")
            uid = functions[name] = free
            self._write(functions)
            return (uid, uid), True

    def _write(self, functions: dict[str, int]) -> None:
        """The ledger, atomically and root-only (under the lock)."""
        write_private(self.path, {"format": LEDGER_FORMAT, "range": list(self.range),
                                  "functions": functions}, durable=True)
