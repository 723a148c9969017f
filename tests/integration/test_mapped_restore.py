"""Restores map private memory from the page images (CRIU patch 0003,
``--mmap-page-image``) instead of copying it: a restored runtime's memory map shows
the image, clones of one snapshot share the pages they only read, and the copying
restore (``Criu.map_pages = False``) still works and maps nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
