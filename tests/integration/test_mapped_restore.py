"""Restores map private memory from the page images (CRIU patch 0003,
``--mmap-page-image``) instead of copying it: a restored runtime's memory map shows
the image, clones of one snapshot share the pages they only read, and the copying
restore (``Criu.map_pages = False``) still works and maps nothing. Hot sets
(snapstart/checkpoint/hotset.py) are recorded once and faulted in ahead."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from leaks import wait_for  # noqa: E402

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]


def _image_mappings(sandbox) -> dict[str, int]:
    """KiB of each mapping backed by a CRIU pages image, over the clone's runtime."""
    out: dict[str, int] = {}
    for pid in {sandbox.pid, *sandbox.runtime_pids()}:
        name = None
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            parts = line.split()
            if parts and "-" in parts[0] and not parts[0].endswith(":"):
                name = parts[5] if len(parts) > 5 else ""
            elif parts and parts[0] == "Rss:" and name and Path(name).name.startswith("pages-"):
                out[name] = out.get(name, 0) + int(parts[1])
    return out


def test_restored_memory_is_mapped_from_the_image_and_copied_on_request(manager, publish):
    publish("hello")
    mapped = manager.invoke("hello", b"{}", force_new=True)
    assert mapped.start_type == "restored", mapped.notes
    sandboxes = manager.idle_sandboxes("hello", "1")
    assert len(sandboxes) == 1
    images = _image_mappings(sandboxes[0])
    assert images, "no mapping of a pages image in the restored runtime"
    first = json.loads(mapped.payload)

    manager.criu.map_pages = False
    try:
        copied = manager.invoke("hello", b"{}", force_new=True)
    finally:
        manager.criu.map_pages = True
    assert copied.start_type == "restored"
    second = json.loads(copied.payload)
    assert first["init_at"] == second["init_at"]               # one init, two clones
    assert first["urandom"] != second["urandom"]
    fresh = [sb for sb in manager.idle_sandboxes("hello", "1") if sb is not sandboxes[0]]
    assert len(fresh) == 1 and not _image_mappings(fresh[0])


def _private_pages(pid: int, ranges) -> tuple[int, int]:
    """(pages of ``ranges`` now private to ``pid``, pages in ``ranges``)."""
    private = total = 0
    with open(f"/proc/{pid}/pagemap", "rb") as pm:
        for start, length in ranges:
            pm.seek(start // 4096 * 8)
            for (e,) in struct.iter_unpack("<Q", pm.read(length // 4096 * 8)):
                total += 1
                private += bool(e >> 63 & 1) and not e >> 61 & 1
    return private, total


def test_hot_set_is_recorded_once_then_faulted_in_ahead(managers, publish, settings):
    """The first restored clone's first invocation records the pages it touched in
    the L1 entry (off the request's path); a clone parked ahead of demand gets the
    written ones privately before its resume, and every clone is still unique."""
    from snapstart.checkpoint import hotset

    first = managers()
    publish("hello")
    before = json.loads(first.invoke("hello", b"{}", force_new=True).payload)
    _, images = first.store.materialized("hello", 1)
    hot = wait_for(lambda: hotset.load(images / hotset.FILE_NAME), 10, "the hot set")
    written, read = hot.pages
    assert written > 50 and read > 0, hot.pages
    mtime = (images / hotset.FILE_NAME).stat().st_mtime_ns

    ahead = managers(restore_ahead=1, keep_warm=False)     # no warm clone to reuse
    on_demand = ahead.invoke("hello", b"{}", force_new=True)      # uses the saved set
    assert on_demand.start_type == "restored"
    key = ("hello", "1")
    parked = wait_for(lambda: ahead.ahead._parked.get(key), 20, "a clone restored ahead")[0]
    private, total = wait_for(lambda: (lambda p: p if p[0] == p[1] else None)(
        _private_pages(parked.pid, hot.write)), 10, "the hot set faulted in")
    assert private == total == written
    pooled = ahead.invoke("hello", b"{}")
    assert pooled.start_type == "restored-pool"
    rows = [before, json.loads(on_demand.payload), json.loads(pooled.payload)]
    assert len({r["init_at"] for r in rows}) == 1                  # one init
    for k in ("urandom", "random", "uuid4", "secrets"):
        assert len({r[k] for r in rows}) == 3, k                    # three clones
    # recorded once: later clones did not rewrite it
    assert (images / hotset.FILE_NAME).stat().st_mtime_ns == mtime
