"""Hot sets: the pages of a snapshot that a clone's first invocation touches.

A clone restored by mapping its page images (CRIU patch 0003) pays a page fault for
every page it touches afterwards, and a copy for every page it writes: ~640 faults
for a stdlib function's after-restore phase, ~2,900 for numpy + pandas' first
invocation, at ~3.5 us each on a 2-core VM. The pages are nearly the same for every
clone of a version (refcounts, allocator pools, interpreter state), so snapstart
records them once, from the first clone restored without a hot set, and later
clones fault them in ahead, in one system call per run of pages:

- a clone restored on demand: the agent thread populates them while the runtime
  runs its after-restore hooks (on the other core);
- a clone restored ahead of demand (``restored-pool``): populated before it is
  parked, off the request's path.

"Written" pages are those now private to the clone (COW'd from the image);
"read" pages are still the image's (shared between clones). Only memory mapped
from the snapshot's page images counts; pages stay correct whatever the set says
(populating never changes a byte), so a stale or partial set only costs time.

Recorded from ``/proc/PID/maps`` and ``/proc/PID/pagemap`` (bit 63: present, bit 61:
file page), and sent to the agent as ``populate {write, read}`` (bootstrap/protocol.py,
v4): each a bin of little-endian u64 (start, length) pairs.

Only clones of the ``inproc`` layout with an agent of protocol 4 or later get one
(the agent populates its own process). ``HotSets`` is a manager's view: a hot set
per L1 entry, loaded from its file or recorded once, off the request's path.

File (``.hotset`` in the version's L1 entry, 0600; gone with the entry), format 1::

    msgpack {"format": 1, "write": bin, "read": bin}   (same encoding as the frame)
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import msgpack

__all__ = ["HotSet", "HotSets", "record", "load", "save", "FILE_NAME", "MIN_PROTOCOL"]

log = logging.getLogger("snapstart.manager")

FILE_NAME = ".hotset"
MIN_PROTOCOL = 4             # the agent's ``populate``
_MAX_PAGES = 32768           # 128 MiB: beyond it, the rest is left to faults
FORMAT = 1
PAGE = os.sysconf("SC_PAGE_SIZE")
_PRESENT = 1 << 63
_FILE = 1 << 61
_PAIR = struct.Struct("<QQ")
_MAX_RANGES = 65536          # a frame stays far below bootstrap.protocol.MAX_FRAME


@dataclass(frozen=True)
class HotSet:
    write: tuple[tuple[int, int], ...]      # (start, length) in bytes
    read: tuple[tuple[int, int], ...]

    @property
    def pages(self) -> tuple[int, int]:
        """(written, read) page counts."""
        return (sum(n for _, n in self.write) // PAGE, sum(n for _, n in self.read) // PAGE)

    def frame(self) -> dict[str, bytes]:
        return {"write": _pack(self.write), "read": _pack(self.read)}


def _pack(ranges: tuple[tuple[int, int], ...]) -> bytes:
    return b"".join(_PAIR.pack(s, n) for s, n in ranges)


def _unpack(data: object) -> tuple[tuple[int, int], ...]:
    if not isinstance(data, bytes) or len(data) % _PAIR.size or \
            len(data) // _PAIR.size > _MAX_RANGES:
        raise ValueError("malformed range list")
    return tuple(_PAIR.iter_unpack(data))


def _runs(pages: list[int]) -> tuple[tuple[int, int], ...]:
    """Sorted page addresses -> (start, length) runs."""
    out: list[list[int]] = []
    for addr in pages:
        if out and out[-1][0] + out[-1][1] == addr:
            out[-1][1] += PAGE
        else:
            out.append([addr, PAGE])
    return tuple((s, n) for s, n in out[:_MAX_RANGES])


def record(pid: int, images_dir: Path) -> HotSet:
    """The pages of ``pid``'s memory mapped from ``images_dir``'s page images that
    it has written (private now) or read (present, still the image's)."""
    prefix = str(images_dir).rstrip("/") + "/pages-"
    written: list[int] = []
    read: list[int] = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pm:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or not parts[5].startswith(prefix):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            n = (hi - lo) // PAGE
            pm.seek(lo // PAGE * 8)
            entries = pm.read(n * 8)
            for i, (e,) in enumerate(struct.iter_unpack("<Q", entries)):
                if e & _PRESENT:
                    (read if e & _FILE else written).append(lo + i * PAGE)
    written = written[:_MAX_PAGES]
    read = read[:_MAX_PAGES - len(written)]
    return HotSet(write=_runs(written), read=_runs(read))


def save(hot: HotSet, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(msgpack.packb({"format": FORMAT, **hot.frame()}, use_bin_type=True))
    os.replace(tmp, path)


def load(path: Path) -> HotSet | None:
    """The hot set saved at ``path``; None if there is none or it is unreadable (a
    hot set is only ever a hint)."""
    try:
        with open(path, "rb") as f:
            data = msgpack.unpackb(f.read(1 << 22), raw=False)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        return HotSet(write=_unpack(data.get("write")), read=_unpack(data.get("read")))
    except (OSError, ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None


class HotSets:
    """A manager's hot sets, by L1 entry (a snapshot's materialized images)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[Path, HotSet | None] = {}

    @staticmethod
    def eligible(meta: dict) -> bool:
        """Does a clone of a snapshot with this manifest ``meta`` populate itself (an
        inproc agent of protocol MIN_PROTOCOL or later)?"""
        return meta.get("agent_layout") == "inproc" and \
            int(meta.get("agent_protocol") or 0) >= MIN_PROTOCOL

    def get(self, images_dir: Path) -> HotSet | None:
        """The hot set of clones restored from ``images_dir``, or None: none
        recorded yet."""
        with self._lock:
            if images_dir in self._known:
                return self._known[images_dir]
        hot = load(images_dir / FILE_NAME)
        with self._lock:
            return self._known.setdefault(images_dir, hot)

    def record(self, pid: int, images_dir: Path) -> None:
        """Record the hot set of the clone ``pid`` after its first invocation (it
        was restored without one) and keep it in the L1 entry."""
        with self._lock:
            if self._known.get(images_dir) is not None:
                return
        try:
            hot = record(pid, images_dir)
            if not hot.write and not hot.read:
                return
            if images_dir.is_dir():           # not evicted meanwhile
                save(hot, images_dir / FILE_NAME)
        except (OSError, ValueError) as exc:  # the clone ended; the next one records
            log.debug("no hot set from %s: %s", pid, exc)
            return
        with self._lock:
            self._known[images_dir] = hot
