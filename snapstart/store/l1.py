"""L1: materialized (decompressed, verified) image directories on tmpfs, LRU-bounded.

CRIU restores from plain files, so each version to be restored is decompressed
once into a directory under ``l1_dir`` and reused by every later restore. Several
stores (and processes) may share one ``l1_dir``; each store only sees, counts,
evicts and clears its own entries (those whose name starts with its store id).

Layout (``l1_dir``, mode 0700)::

    <store_id>.<name>.<version>.<digest>/     a complete entry (renamed into place)
    .build.<entry>.<pid>.<random>/            an entry being built
    .trash.<entry>.<random>/                  an entry being deleted
    .locks/<entry>.lock                       flock: LOCK_SH to use, LOCK_EX to build
                                              or delete

``store_id`` = first 16 hex of HMAC-SHA256(key, "snapstart-store-id"); ``digest`` =
the manifest digest, so two stores or two versions never share an entry. Function
names cannot contain ".", so the name is unambiguous.

Protocol:
  - lookup: LOCK_SH; entry exists -> touch (mtime = last use), hit.
  - miss: LOCK_EX; re-check; remove stale ``.build.<entry>.*``; build into a fresh
    ``.build`` dir; rename it into place (atomic: an entry is complete or absent).
    If the rename finds the entry already there, the other copy wins.
  - eviction (after each build, and after hits while the last eviction could not
    get under budget, when own entries exceed the byte budget): oldest
    mtime first, never the entry just built, and only entries whose lock can be
    taken LOCK_EX without waiting -- an entry being looked up or built is skipped.
    An entry is renamed to ``.trash`` before it is deleted, so it is gone at once.
Sizes are the sum of file sizes (tmpfs pages used). Counters are process-local.

The lock only covers materialization: a caller that keeps using a directory
(CRIU restoring from it) should size the budget so that entries in use are not the
least recently used ones.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
from pathlib import Path
from typing import Callable

from ._fs import flocked, mkdir_private, rmtree_quiet, try_flock

__all__ = ["L1Cache"]


class L1Cache:
    def __init__(self, l1_dir: Path, store_id: str, budget_bytes: int) -> None:
        self.dir = Path(l1_dir)
        self.store_id = store_id
        self.budget = budget_bytes
        self._locks = self.dir / ".locks"
        mkdir_private(self._locks)
        self._mutex = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        # set when eviction had to skip entries in use: retry on the next hits
        self._over_budget = False

    def entry_name(self, name: str, version: int, digest: str) -> str:
        return f"{self.store_id}.{name}.{version}.{digest}"

    def get(self, name: str, version: int, digest: str,
            build: Callable[[Path], None]) -> Path:
        """The entry's directory, built with ``build(tmp_dir)`` on a miss."""
        ename = self.entry_name(name, version, digest)
        entry = self.dir / ename
        lock = self._lock_path(ename)
        if not self._locks.is_dir():  # tmpfs emptied under a running process
            mkdir_private(self._locks)
        with flocked(lock, fcntl.LOCK_SH):
            if entry.is_dir():
                os.utime(entry)
                self._count(hit=True)
                hit = True
            else:
                hit = False
        if hit:
            if self._over_budget:
                self.evict(keep=ename)
            return entry
        with flocked(lock, fcntl.LOCK_EX):
            if entry.is_dir():
                os.utime(entry)
                self._count(hit=True)
                return entry
            for stale in self.dir.glob(f".build.{ename}.*"):
                rmtree_quiet(stale)
            tmp = self.dir / f".build.{ename}.{os.getpid()}.{secrets.token_hex(4)}"
            os.mkdir(tmp, 0o700)
            try:
                build(tmp)
                try:
                    os.rename(tmp, entry)
                except OSError:
                    if not entry.is_dir():
                        raise
                    rmtree_quiet(tmp)  # another builder won (stale lock file)
            except BaseException:
                rmtree_quiet(tmp)
                raise
            self._count(hit=False)
        self.evict(keep=ename)
        return entry

    def evict(self, keep: str | None = None) -> int:
        """Evict least recently used entries until within budget; bytes freed."""
        entries = self._own_entries()
        total = sum(size for _, _, size in entries)
        freed = 0
        skipped = False
        for ename, _mtime, size in sorted(entries, key=lambda e: e[1]):
            if total <= self.budget:
                break
            if ename == keep:
                continue
            if self._delete(ename, wait=False):
                total -= size
                freed += size
                with self._mutex:
                    self.evictions += 1
            else:
                skipped = True
        self._over_budget = skipped and total > self.budget
        return freed

    def remove_version(self, name: str, version: int) -> None:
        prefix = f"{self.store_id}.{name}.{version}."
        for ename, _, _ in self._own_entries():
            if ename.startswith(prefix):
                self._delete(ename, wait=True)

    def prune(self, keep_digests: set[str]) -> int:
        """Delete own entries whose manifest digest is not in ``keep_digests``."""
        n = 0
        for ename, _, _ in self._own_entries():
            if ename.rsplit(".", 1)[-1] not in keep_digests and self._delete(ename, wait=False):
                n += 1
        return n

    def clear(self) -> None:
        """Delete every entry of this store, and its stale build/trash dirs."""
        for ename, _, _ in self._own_entries():
            self._delete(ename, wait=True)
        mine = f".{self.store_id}."
        for p in self.dir.iterdir():
            if p.name.startswith((".build" + mine, ".trash" + mine)):
                rmtree_quiet(p)
        # Lock files go too; a caller still holding an unlinked one only risks a
        # duplicate build, which get() tolerates.
        for p in self._locks.glob(f"{self.store_id}.*.lock"):
            p.unlink(missing_ok=True)

    def stats(self) -> dict[str, int]:
        entries = self._own_entries()
        with self._mutex:
            return {"hits": self.hits, "misses": self.misses,
                    "bytes": sum(size for _, _, size in entries),
                    "entries": len(entries), "evictions": self.evictions,
                    "budget_bytes": self.budget}

    def _delete(self, ename: str, *, wait: bool) -> bool:
        lock = self._lock_path(ename)
        fd = try_flock(lock, fcntl.LOCK_EX, wait=wait)
        if fd is None:
            return False
        try:
            trash = self.dir / f".trash.{ename}.{secrets.token_hex(4)}"
            try:
                os.rename(self.dir / ename, trash)
            except FileNotFoundError:
                return False
            rmtree_quiet(trash)
            return True
        finally:
            os.close(fd)

    def _own_entries(self) -> list[tuple[str, int, int]]:
        """(entry name, mtime, bytes) of this store's complete entries."""
        out = []
        prefix = self.store_id + "."
        for ent in os.scandir(self.dir):
            if not ent.name.startswith(prefix):
                continue
            try:
                mtime = ent.stat(follow_symlinks=False).st_mtime_ns
                out.append((ent.name, mtime, _tree_bytes(ent.path)))
            except FileNotFoundError:
                continue  # evicted meanwhile
        return out

    def _lock_path(self, ename: str) -> Path:
        return self._locks / f"{ename}.lock"

    def _count(self, *, hit: bool) -> None:
        with self._mutex:
            if hit:
                self.hits += 1
            else:
                self.misses += 1


def _tree_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total
