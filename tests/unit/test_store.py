"""Unit tests of snapstart.store: no root, no kernel feature, tmp_path only.

Image directories are synthetic but shaped like CRIU's: a few small *.img files
and a pages-1.img made of zero pages, random pages, pages repeated from a small
pool (shared-library data) and heap-like pages (pointers, small ints, strings).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from snapstart.config import Settings
from snapstart.errors import (ConfigError, FunctionNotFoundError, SnapshotIncompatibleError,
                              SnapshotIntegrityError, StoreError)
from snapstart.store import HostFacts, LocalStore, Manifest, Store, chunking
from snapstart.store import local as local_mod
from snapstart.store.chunking import (CHUNKER_ID, GAP_PAGES, MAX_CHUNK, PAGE, split,
                                      volatile_ranges)
from snapstart.store.manifest import MAX_MANIFEST_BYTES
from snapstart.store.synthetic import fill_pages

PAGES_MIB = 20


def make_pages(seed: int, n_pages: int) -> bytearray:
    return fill_pages(random.Random(seed), n_pages)


def make_image_dir(path: Path, seed: int = 1, pages_mib: float = PAGES_MIB,
                   pages: bytes | None = None) -> Path:
    rng = random.Random(seed + 1000)
    path.mkdir(parents=True)
    small = {"inventory.img": 86, "core-1.img": 1913, "mm-1.img": 7126, "pagemap-1.img": 2936,
             "files.img": 5681, "fdinfo-2.img": 44, "pstree.img": 26, "ids-1.img": 36}
    for name, size in small.items():
        (path / name).write_bytes(rng.randbytes(size))
        os.chmod(path / name, 0o644)
    os.chmod(path / "core-1.img", 0o600)
    if pages is None:
        pages = make_pages(seed, int(pages_mib * 256))
    (path / "pages-1.img").write_bytes(pages)
    os.chmod(path / "pages-1.img", 0o644)
    return path


def variant(src: Path, dst: Path, *, modify: tuple[int, ...] = (), insert_at: int | None = None,
            insert_pages: int = 0) -> Path:
    """A copy of ``src`` whose pages-1.img has some pages rewritten or inserted."""
    shutil.copytree(src, dst)
    pages = bytearray((src / "pages-1.img").read_bytes())
    rng = random.Random(99)
    for p in modify:
        pages[p * PAGE:(p + 1) * PAGE] = rng.randbytes(PAGE)
    if insert_at is not None:
        pages[insert_at * PAGE:insert_at * PAGE] = rng.randbytes(insert_pages * PAGE)
    (dst / "pages-1.img").write_bytes(pages)
    return dst


def same_tree(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
        assert stat.S_IMODE((a / n).stat().st_mode) == stat.S_IMODE((b / n).stat().st_mode), n


def l1_leftovers(l1: Path) -> list[str]:
    return sorted(p.name for p in l1.iterdir() if p.name != ".locks") if l1.exists() else []


def chunk_files(root: Path) -> list[Path]:
    return sorted((root / "chunks").glob("*/*.zst"))


def pages_chunk(store: LocalStore, name: str, version: int, index: int = 5):
    m = store.manifest(name, version)
    fe = next(f for f in m.files if f.path == "pages-1.img")
    others = {c.hash for f in m.files if f.path != "pages-1.img" for c in f.chunks}
    chunks = [c for c in fe.chunks if c.hash not in others]
    return chunks[index]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return make_image_dir(tmp_path_factory.mktemp("img") / "v1")


@pytest.fixture(scope="module")
def image_v2(tmp_path_factory, image) -> Path:
    """Same function, a few pages different (in place)."""
    return variant(image, tmp_path_factory.mktemp("img2") / "v2", modify=(7, 800, 2500, 4000, 5000))


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store", tmp_path / "l1", level=3)


def run_child(code: str, *args: object, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            **kw)


SLOW_PUT = """
    import sys, time
    from pathlib import Path
    from snapstart.store import LocalStore
    from snapstart.store.chunks import ChunkStore
    root, l1, img, version, delay = sys.argv[1:6]
    orig = ChunkStore.write
    def slow(self, h, data):
        time.sleep(float(delay))
        return orig(self, h, data)
    ChunkStore.write = slow
    LocalStore(Path(root), Path(l1)).put("fn", int(version), Path(img), {"runtime": "python"})
"""


# -- round trip, dedup ---------------------------------------------------------------


def test_round_trip_byte_identical_with_modes(store, image, tmp_path):
    assert isinstance(store, Store)
    m = store.put("fn", 1, image, {"runtime": "python", "init_duration_ms": 120,
                                   "criu_version": "4.2.1"}, progress=True)
    assert m.meta["runtime"] == "python" and m.meta["criu_version"] == "4.2.1"
    assert {"arch", "kernel", "cpu_flags", "created"} <= set(m.meta)
    assert store.versions() == [("fn", 1)] and store.versions("fn") == [("fn", 1)]
    assert store.manifest("fn", 1) == m
    path = store.materialize("fn", 1, progress=True)
    assert path.parent == tmp_path / "l1" and m.digest in path.name
    same_tree(image, path)
    assert store.materialize("fn", 1) == path
    assert store.l1_stats()["hits"] == 1 and store.l1_stats()["misses"] == 1
    assert store.l1_stats()["bytes"] == m.logical_bytes
    assert store.verify() == []
    # secrets at rest: nothing in the store is readable by group/others
    for p in [tmp_path / "store", *(tmp_path / "store").rglob("*")]:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
    assert stat.S_IMODE((tmp_path / "store" / "key").stat().st_mode) == 0o600


def test_same_image_again_stores_almost_nothing(store, image, tmp_path):
    store.put("fn", 1, image, {})
    before = chunk_files(tmp_path / "store")
    store.put("fn", 2, image, {})
    assert chunk_files(tmp_path / "store") == before
    s1, s2 = store.stats()
    assert s2["stored_bytes"] == s2["shared_bytes"] == s1["stored_bytes"]
    assert s1["compression_ratio"] > 1.5 and s1["logical_bytes"] > PAGES_MIB << 20


def test_few_pages_changed_share_most_bytes(store, image, image_v2, tmp_path):
    store.put("fn", 1, image, {})
    store.put("fn", 2, image_v2, {})
    s2 = store.stats()[1]
    assert s2["shared_bytes"] / s2["stored_bytes"] >= 0.5
    assert s2["shared_bytes"] / s2["stored_bytes"] >= 0.9  # 5 pages changed of 5120
    same_tree(image_v2, store.materialize("fn", 2))


def test_inserted_pages_still_share(store, image, tmp_path):
    """Content-defined cuts re-synchronise after an insertion (fixed chunks would not)."""
    shifted = variant(image, tmp_path / "shifted", insert_at=1000, insert_pages=3)
    store.put("fn", 1, image, {})
    store.put("fn", 2, shifted, {})
    s2 = store.stats()[1]
    assert s2["shared_bytes"] / s2["stored_bytes"] >= 0.9


def test_chunker_cuts_on_pages_and_resyncs():
    data = bytes(make_pages(5, 600))
    spans = split(data)
    assert sum(n for _, n in spans) == len(data)
    assert all(off % PAGE == 0 and n <= MAX_CHUNK for off, n in spans)
    assert len(split(b"x" * 1000)) == 1
    shifted = split(os.urandom(2 * PAGE) + data)
    tail = {(off - 2 * PAGE, n) for off, n in shifted}
    assert len(tail & set(spans)) >= len(spans) - 3


# -- chunking around a process's secrets (chunking.py) -----------------------------------

def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _pb(*fields: tuple[int, int | bytes]) -> bytes:
    """A protobuf message: ints as varints, bytes as length-delimited fields."""
    out = b""
    for number, value in fields:
        if isinstance(value, bytes):
            out += _varint(number << 3 | 2) + _varint(len(value)) + value
        else:
            out += _varint(number << 3) + _varint(value)
    return out


def _criu_image(magic: int, *messages: bytes) -> bytes:
    out = (0x54564319).to_bytes(4, "little") + magic.to_bytes(4, "little")   # IMG_COMMON
    return out + b"".join(len(m).to_bytes(4, "little") + m for m in messages)


HEAP, STACK = 0x555555A00000, 0x7FFFFFF00000
HEAP_PAGES, STACK_PAGES, ANON_PAGES = 512, 16, 1024
KEY_PAGES = (3, 40, 41, 97, 200, 300, 301, 302, 450)        # heap pages with the tcache key
CANARY_PAGES = (HEAP_PAGES + ANON_PAGES + 5, HEAP_PAGES + ANON_PAGES + 9)


def criu_like_image(path: Path, key: int, canary: int) -> Path:
    """An image directory in CRIU's formats: one process whose heap starts with
    glibc's tcache_perthread_struct; the tcache key in the free entries of
    KEY_PAGES, the canary at fs_base + 0x28 and in CANARY_PAGES."""
    path.mkdir(parents=True)
    anon = 0x7FFFF7000000
    pages = bytearray(fill_pages(random.Random(7), HEAP_PAGES + ANON_PAGES + STACK_PAGES))
    pages[0:16] = bytes(8) + (0x291).to_bytes(8, "little")    # prev_size, size
    counts, heads = bytearray(128), bytearray(512)
    for binno, page in enumerate(KEY_PAGES):
        entry = HEAP + page * PAGE + 0x110                      # a free chunk's user pointer
        counts[2 * binno:2 * binno + 2] = (1).to_bytes(2, "little")
        heads[8 * binno:8 * binno + 8] = entry.to_bytes(8, "little")
        at = page * PAGE + 0x110
        pages[at:at + 16] = ((entry >> 12)).to_bytes(8, "little") + key.to_bytes(8, "little")
    pages[16:16 + 128 + 512] = counts + heads
    fs_base = STACK + 2 * PAGE
    for page in CANARY_PAGES:
        at = page * PAGE + 0x48
        pages[at:at + 8] = canary.to_bytes(8, "little")
    at = HEAP_PAGES + ANON_PAGES + 2
    pages[at * PAGE + 0x28:at * PAGE + 0x30] = canary.to_bytes(8, "little")
    (path / "pages-1.img").write_bytes(pages)
    runs = [(HEAP, HEAP_PAGES), (anon, ANON_PAGES), (STACK, STACK_PAGES)]
    (path / "pagemap-7.img").write_bytes(_criu_image(
        0x56084025, _pb((1, 1)),
        *(_pb((1, vaddr), (2, 0), (4, 4), (5, n)) for vaddr, n in runs)))
    statuses = (1 | 1 << 5 | 1 << 9, 1 | 1 << 9, 1 | 1 << 1 | 1 << 9)   # heap, anon, stack
    vmas = [_pb((1, vaddr), (2, vaddr + n * PAGE), (3, 0), (4, 0), (5, 3), (6, 0x22),
                (7, status), (8, 1)) for (vaddr, n), status in zip(runs, statuses)]
    (path / "mm-7.img").write_bytes(_criu_image(
        0x57492820, _pb(*((i, 0) for i in range(1, 13)), *((14, v) for v in vmas))))
    gpregs = _pb(*((i, 0) for i in range(1, 22)), (22, fs_base))
    (path / "core-7.img").write_bytes(_criu_image(
        0x55053847, _pb((1, 1), (2, _pb((1, 0), (2, gpregs))))))
    (path / "pstree.img").write_bytes(b"pstree")
    return path


def test_chunks_cut_around_a_process_secrets(tmp_path, monkeypatch):
    a = criu_like_image(tmp_path / "a", key=0x96180EC6153D66D9, canary=0x461CEF8A3FDE0000)
    b = criu_like_image(tmp_path / "b", key=0xC0F2165F99AEC370, canary=0x24B77BD477B30900)
    files = {p.name: p for p in a.iterdir()}
    ranges = volatile_ranges(files)
    volatile = {off // PAGE for lo, hi in ranges["pages-1.img"] for off in range(lo, hi, PAGE)}
    secret = set(KEY_PAGES) | set(CANARY_PAGES) | {HEAP_PAGES + ANON_PAGES + 2}
    assert secret <= volatile
    assert all(min(abs(p - q) for q in secret) <= GAP_PAGES for p in volatile)
    assert volatile_ranges({p.name: p for p in b.iterdir()}) == ranges   # same layout
    data = (a / "pages-1.img").read_bytes()
    spans = split(data, ranges["pages-1.img"])
    assert sum(n for _, n in spans) == len(data)
    cuts = {off for off, _ in spans} | {len(data)}
    assert all(lo in cuts and hi in cuts for lo, hi in ranges["pages-1.img"])
    assert all(n <= MAX_CHUNK and off % PAGE == 0 for off, n in spans)
    # the same cuts whatever the read size, a key across two reads found all the same
    monkeypatch.setattr(chunking, "READ_BLOCK", 3 * PAGE + 0x11C)
    assert volatile_ranges(files) == ranges
    assert split(data, ranges["pages-1.img"]) == spans
    # only the chunks holding a secret differ between the two processes
    data_b = (b / "pages-1.img").read_bytes()
    for off, n in spans:
        if data[off:off + n] != data_b[off:off + n]:
            assert any(lo <= off < hi for lo, hi in ranges["pages-1.img"]), off


def test_secrets_cut_rule_shares_more_and_round_trips(tmp_path, monkeypatch):
    a = criu_like_image(tmp_path / "a", key=0x96180EC6153D66D9, canary=0x461CEF8A3FDE0000)
    b = criu_like_image(tmp_path / "b", key=0xC0F2165F99AEC370, canary=0x24B77BD477B30900)
    shared = {}
    for rule in ("v1", "v2"):
        store = LocalStore(tmp_path / rule / "store", tmp_path / rule / "l1")
        monkeypatch.setattr(local_mod, "volatile_ranges",
                            volatile_ranges if rule == "v2" else lambda files: {})
        m = store.put("fn", 1, a, {})
        store.put("fn", 2, b, {})
        assert m.meta["chunking"] == CHUNKER_ID       # what cut it, as documented
        s2 = store.stats()[1]
        shared[rule] = s2["shared_bytes"] / s2["stored_bytes"]
        same_tree(b, store.materialize("fn", 2))
        same_tree(a, store.materialize("fn", 1))
        assert store.verify() == []
    assert shared["v2"] > 0.85 and shared["v2"] > shared["v1"] + 0.1, shared


def test_images_without_secrets_are_cut_as_before(tmp_path, image):
    """Random bytes in pagemap/mm/core, a heap without tcache, truncated or absent
    images: no volatile pages, i.e. version 1's cuts, never an error."""
    assert volatile_ranges({p.name: p for p in image.iterdir()}) == {}
    img = criu_like_image(tmp_path / "img", key=0x96180EC6153D66D9, canary=0x461CEF8A3FDE0000)
    files = {p.name: p for p in img.iterdir()}
    stack = HEAP_PAGES + ANON_PAGES
    for name, left in (("core-7.img", set(KEY_PAGES)), ("mm-7.img", {stack + 2, stack + 5}),
                       ("pagemap-7.img", set())):
        broken = tmp_path / f"broken-{name}"
        shutil.copytree(img, broken)
        (broken / name).write_bytes((img / name).read_bytes()[:13] + b"\xff" * 7)
        found = volatile_ranges({p.name: p for p in broken.iterdir()})
        pages = {o // PAGE for lo, hi in found.get("pages-1.img", []) for o in range(lo, hi, PAGE)}
        assert left <= pages and (pages >= set(KEY_PAGES)) == (name == "core-7.img"), name
    assert volatile_ranges({k: v for k, v in files.items() if k != "pages-1.img"}) == {}
    small_key = criu_like_image(tmp_path / "small", key=0x1234, canary=0)   # not random
    assert volatile_ranges({p.name: p for p in small_key.iterdir()}) == {}
    data = (image / "pages-1.img").read_bytes()
    assert split(data) == split(data, ())


def test_versions_are_immutable(store, image):
    store.put("fn", 1, image, {})
    with pytest.raises(StoreError, match="already exists"):
        store.put("fn", 1, image, {})


def test_bad_arguments(store, image):
    with pytest.raises(ConfigError):
        store.put("bad name", 1, image, {})
    with pytest.raises(ConfigError):
        store.put("fn", -1, image, {})
    with pytest.raises(StoreError, match="JSON"):
        store.put("fn", 1, image, {"x": b"bytes"})
    with pytest.raises(FunctionNotFoundError):
        store.manifest("fn", 9)
    with pytest.raises(FunctionNotFoundError):
        store.materialize("fn", 9)


# -- integrity ---------------------------------------------------------------------------


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["manifest_byte", "chunk_flip", "chunk_truncate",
                                    "chunk_delete", "foreign_key", "renamed_manifest"])
def test_damage_is_detected_and_named(tmp_path, image, damage):
    store = LocalStore(tmp_path / "store", tmp_path / "l1")
    store.put("fn", 2, image, {})
    mpath = tmp_path / "store" / "manifests" / "fn" / "2.msgpack"
    bad = pages_chunk(store, "fn", 2)
    cpath = tmp_path / "store" / "chunks" / bad.hash[:2] / f"{bad.hash}.zst"
    expect = ["fn:2", bad.hash[:12], "pages-1.img"]
    if damage == "manifest_byte":
        _flip(mpath, mpath.stat().st_size // 2)
        expect = ["fn:2", "not signed by this store's key"]
    elif damage == "chunk_flip":
        _flip(cpath, cpath.stat().st_size // 2)
    elif damage == "chunk_truncate":
        os.truncate(cpath, cpath.stat().st_size // 2)
    elif damage == "chunk_delete":
        cpath.unlink()
        expect.append("missing")
    elif damage == "foreign_key":
        other = LocalStore(tmp_path / "other", tmp_path / "l1")
        other.put("fn", 2, image, {})
        shutil.copy(tmp_path / "other" / "manifests" / "fn" / "2.msgpack", mpath)
        expect = ["fn:2", "not signed by this store's key"]
    elif damage == "renamed_manifest":
        shutil.copy(mpath, mpath.with_name("3.msgpack"))
        store.remove("fn", 2)
        with pytest.raises(SnapshotIntegrityError, match="belongs to fn:2"):
            store.materialize("fn", 3)
        assert l1_leftovers(tmp_path / "l1") == []
        return
    with pytest.raises(SnapshotIntegrityError) as info:
        store.materialize("fn", 2)
    for word in expect:
        assert word in str(info.value)
    assert l1_leftovers(tmp_path / "l1") == []
    problems = store.verify()
    assert problems and all(w in problems[0] for w in expect), problems
    if damage.startswith("chunk"):
        assert problems == store.verify("fn", 2) and len(problems) == 1
        assert problems[0].startswith(f"fn:2: chunk {bad.hash[:12]}..")


def test_oversized_manifest_refused_before_parsing(store, image, tmp_path):
    store.put("fn", 1, image, {})
    mpath = tmp_path / "store" / "manifests" / "fn" / "1.msgpack"
    with open(mpath, "r+b") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)
    with pytest.raises(SnapshotIntegrityError, match="limit"):
        store.manifest("fn", 1)
    with pytest.raises(StoreError, match="gc refused"):
        store.gc()


def test_manifest_save_load(tmp_path, store, image):
    m = store.put("fn", 1, image, {"nested": {"b": [1, 2.5, None], "a": True}})
    key = os.urandom(32)
    m.save_to(tmp_path / "m.msgpack", key)
    again = Manifest.load_from(tmp_path / "m.msgpack", key)
    assert again == m and again.digest == m.digest
    with pytest.raises(SnapshotIntegrityError, match="not signed"):
        Manifest.load_from(tmp_path / "m.msgpack", os.urandom(32))
    data = (tmp_path / "m.msgpack").read_bytes()
    with pytest.raises(SnapshotIntegrityError, match="magic"):
        Manifest.from_bytes(b"X" + data[1:], key)
    with pytest.raises(SnapshotIntegrityError, match="length"):
        Manifest.from_bytes(data[:-1], key)
    with pytest.raises(FileExistsError):
        m.save_to(tmp_path / "m.msgpack", key, exclusive=True)


# -- crash safety, gc ------------------------------------------------------------------


def test_interrupted_publish_leaves_no_version(store, image, tmp_path):
    root, l1 = tmp_path / "store", tmp_path / "l1"
    child = run_child(SLOW_PUT, root, l1, image, 1, 0.02)
    try:
        deadline = time.monotonic() + 30
        while len(chunk_files(root)) < 3:
            assert child.poll() is None, "publisher finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert store.versions() == []
    with pytest.raises(FunctionNotFoundError):
        store.materialize("fn", 1)
    assert store.verify() == []
    assert store.gc()["chunks_removed"] >= 3
    assert chunk_files(root) == [] and list((root / "tmp").iterdir()) == []
    store.put("fn", 1, image, {})
    same_tree(image, store.materialize("fn", 1))


def test_gc_waits_for_concurrent_publish(store, image, image_v2, tmp_path):
    """v2 dedups against v1's chunks while v1 is removed and gc runs: gc must not
    delete a chunk the running put has decided to reuse."""
    root = tmp_path / "store"
    store.put("fn", 1, image, {})
    child = run_child(SLOW_PUT, root, tmp_path / "l1", image_v2, 2, 0.002)
    try:
        deadline = time.monotonic() + 30
        while True:  # wait until the publisher holds the gc lock (shared)
            fd = os.open(root / "gc.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                break
            finally:
                os.close(fd)
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.005)
        store.remove("fn", 1)
        runs = 0
        while child.poll() is None or runs == 0:
            store.gc()
            runs += 1
    finally:
        child.wait()
    assert child.returncode == 0
    assert store.versions() == [("fn", 2)]
    assert store.verify() == []
    same_tree(image_v2, store.materialize("fn", 2))
    assert store.gc()["chunks_removed"] == 0


def test_gc_reclaims_removed_versions(store, image, image_v2, tmp_path):
    store.put("fn", 1, image, {})
    store.put("fn", 2, image_v2, {})
    p1 = store.materialize("fn", 1)
    only_v1 = set(store.manifest("fn", 1).chunk_refs()) - set(store.manifest("fn", 2).chunk_refs())
    store.remove("fn", 1)
    assert not p1.exists()
    with pytest.raises(FunctionNotFoundError):
        store.manifest("fn", 1)
    with pytest.raises(FunctionNotFoundError):
        store.remove("fn", 1)
    result = store.gc()
    assert result["chunks_removed"] == len(only_v1) > 0
    assert store.verify() == []
    same_tree(image_v2, store.materialize("fn", 2))


def test_disk_full_during_put_leaves_no_version(store, image, monkeypatch):
    orig = store._chunks.write
    calls = []

    def full(h, data):
        calls.append(h)
        if len(calls) > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return orig(h, data)

    monkeypatch.setattr(store._chunks, "write", full)
    with pytest.raises(StoreError, match="No space left"):
        store.put("fn", 1, image, {})
    assert store.versions() == []
    monkeypatch.undo()
    store.put("fn", 1, image, {})
    assert store.verify() == []


# -- L1 ----------------------------------------------------------------------------------


def test_l1_evicts_least_recently_used(tmp_path):
    imgs = [make_image_dir(tmp_path / f"img{i}", seed=10 + i, pages_mib=1) for i in range(3)]
    size = sum(p.stat().st_size for p in imgs[0].iterdir())
    store = LocalStore(tmp_path / "store", tmp_path / "l1", l1_budget_bytes=int(size * 2.5))
    for i, img in enumerate(imgs, 1):
        store.put("fn", i, img, {})
    p1 = store.materialize("fn", 1)
    p2 = store.materialize("fn", 2)
    time.sleep(0.01)
    assert store.materialize("fn", 1) == p1  # v1 is now more recent than v2
    p3 = store.materialize("fn", 3)
    assert p1.exists() and p3.exists() and not p2.exists()
    stats = store.l1_stats()
    assert stats["evictions"] == 1 and stats["bytes"] <= store._l1.budget
    same_tree(imgs[1], store.materialize("fn", 2))  # rebuilt on demand
    store.clear_l1()
    assert l1_leftovers(tmp_path / "l1") == [] and store.l1_stats()["bytes"] == 0


def test_l1_never_evicts_an_entry_in_use(tmp_path):
    imgs = [make_image_dir(tmp_path / f"img{i}", seed=20 + i, pages_mib=1) for i in range(2)]
    store = LocalStore(tmp_path / "store", tmp_path / "l1", l1_budget_bytes=1)
    store.put("fn", 1, imgs[0], {})
    store.put("fn", 2, imgs[1], {})
    p1 = store.materialize("fn", 1)
    lock = tmp_path / "l1" / ".locks" / f"{p1.name}.lock"
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)  # as a materialize() of v1 in progress would
    try:
        p2 = store.materialize("fn", 2)
        assert p1.exists() and p2.exists()
    finally:
        os.close(fd)
    store.materialize("fn", 1)  # now v2 is evictable
    assert p1.exists() and not p2.exists()


def test_concurrent_materialize_threads_build_once(store, image):
    store.put("fn", 1, image, {})
    barrier = threading.Barrier(4)
    paths: list[Path] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            barrier.wait()
            paths.append(store.materialize("fn", 1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 1 and len(paths) == 4
    assert store.l1_stats()["misses"] == 1 and store.l1_stats()["hits"] == 3
    same_tree(image, paths[0])


def test_concurrent_materialize_processes(store, tmp_path):
    img = make_image_dir(tmp_path / "img", seed=3, pages_mib=8)
    store.put("fn", 1, img, {})
    go = tmp_path / "go"
    code = """
        import sys, time
        from pathlib import Path
        from snapstart.store import LocalStore
        s = LocalStore(Path(sys.argv[1]), Path(sys.argv[2]))
        Path(sys.argv[4]).touch()
        while not Path(sys.argv[3]).exists():
            time.sleep(0.001)
        print(s.materialize("fn", 1), s.l1_stats()["misses"])
    """
    ready = [tmp_path / f"ready{i}" for i in range(3)]
    children = [run_child(code, tmp_path / "store", tmp_path / "l1", go, r,
                          stdout=subprocess.PIPE, text=True) for r in ready]
    deadline = time.monotonic() + 30
    while not all(r.exists() for r in ready):  # all imported: start them together
        assert time.monotonic() < deadline
        time.sleep(0.005)
    go.touch()
    outs = [c.communicate()[0].split() for c in children]
    assert all(c.returncode == 0 for c in children)
    assert len({o[0] for o in outs}) == 1 and sum(int(o[1]) for o in outs) == 1
    same_tree(img, Path(outs[0][0]))


# -- compatibility, settings --------------------------------------------------------------


def test_check_compatible(store, image):
    m = store.put("fn", 1, image, {"criu_version": "4.2.1"})
    store.check_compatible(m, criu_version="4.2.1")
    store.check_compatible(m, criu_version="4.3")
    store.check_compatible(m)
    with pytest.raises(SnapshotIncompatibleError, match="arch"):
        store.check_compatible(dataclasses.replace(m, meta={**m.meta, "arch": "s390x"}))
    with pytest.raises(SnapshotIncompatibleError, match="CRIU"):
        store.check_compatible(m, criu_version="5.0")
    store._host = HostFacts(arch=m.meta["arch"], kernel="x", cpu_flags=frozenset({"fpu"}))
    with pytest.raises(SnapshotIncompatibleError, match="avx512f"):
        store.check_compatible(dataclasses.replace(m, meta={**m.meta,
                                                            "cpu_flags": ["fpu", "avx512f"]}))


def test_from_settings(tmp_path, image):
    settings = Settings(home=tmp_path / "home", criu="criu", shm=tmp_path / "shm")
    s = LocalStore.from_settings(settings, environ={"SNAPSTART_ZSTD_LEVEL": "9"})
    assert s.root == tmp_path / "home" / "store" and s.level == 9
    key_file = tmp_path / "home" / "store" / "key"
    assert len(key_file.read_bytes()) == 32 and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert LocalStore.from_settings(settings, environ={}).key == s.key
    hexkey = os.urandom(32).hex()
    k = LocalStore.from_settings(settings, environ={"SNAPSTART_STORE_KEY": hexkey})
    assert k.key == bytes.fromhex(hexkey)
    with pytest.raises(ConfigError):
        LocalStore.from_settings(settings, environ={"SNAPSTART_ZSTD_LEVEL": "fast"})
    with pytest.raises(ConfigError):
        LocalStore.from_settings(settings, environ={"SNAPSTART_STORE_KEY": "xyz"})
    s.put("fn", 1, make_image_dir(tmp_path / "small", pages_mib=0.25), {})
    assert s.materialize("fn", 1).parent == tmp_path / "shm" / "l1"


# -- encryption at rest ------------------------------------------------------------------

ENC_KEY = bytes(range(32))
SECRET_ENV = "hunter2-db-password-0123456789"
MARKER = b"PLAINTEXT-MARKER-in-the-heap-7f3a"


def enc_store(tmp_path, key: bytes | None = ENC_KEY) -> LocalStore:
    return LocalStore(tmp_path / "store", tmp_path / "l1", encryption_key=key)


def secret_image(path: Path) -> Path:
    img = make_image_dir(path, seed=7, pages_mib=1)
    (img / "marker.img").write_bytes(MARKER * 2000 + os.urandom(5000) + MARKER)
    return img


def test_encrypted_round_trip_hides_plaintext(tmp_path):
    import hashlib
    from snapstart.store.manifest import MAGIC
    store = enc_store(tmp_path)
    img = secret_image(tmp_path / "img")
    meta = {"runtime": "python", "environment": {"DB_PASSWORD": SECRET_ENV}}
    m = store.put("fn", 1, img, meta)
    assert m.encrypted and store.encrypted
    again = store.manifest("fn", 1)
    assert again == m and again.meta["environment"]["DB_PASSWORD"] == SECRET_ENV
    same_tree(img, store.materialize("fn", 1))
    assert store.stats()[0]["encrypted"] is True and store.verify() == []
    root = tmp_path / "store"
    mbytes = (root / "manifests" / "fn" / "1.msgpack").read_bytes()
    assert mbytes[:10] == MAGIC + b"\x00\x02"
    stored = [p for p in root.rglob("*") if p.is_file() and p.name != "key"]
    assert len(stored) == len(chunk_files(root)) + 2  # + manifest + gc.lock
    for p in stored:
        data = p.read_bytes()
        assert MARKER not in data and SECRET_ENV.encode() not in data, p
        assert b"DB_PASSWORD" not in data and b"pages-1.img" not in data, p
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
    for p in chunk_files(root):
        assert p.read_bytes()[:4] == b"SSE1"
    # names are keyed: the plaintext's SHA-256 appears nowhere
    small = (img / "inventory.img").read_bytes()
    assert hashlib.sha256(small).hexdigest() not in {p.stem for p in chunk_files(root)}
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in root.rglob("*") if d.is_dir())


def test_encrypted_dedup(tmp_path, image, image_v2):
    store = enc_store(tmp_path)
    store.put("fn", 1, image, {})
    n = len(chunk_files(tmp_path / "store"))
    store.put("fn", 2, image, {})
    assert len(chunk_files(tmp_path / "store")) == n  # identical image: nothing new
    store.put("fn", 3, image_v2, {})
    s3 = store.stats()[2]
    assert s3["encrypted"] and s3["shared_bytes"] / s3["stored_bytes"] >= 0.9
    same_tree(image_v2, store.materialize("fn", 3))


@pytest.mark.parametrize("damage", ["chunk_flip", "chunk_swap", "manifest_flip",
                                    "manifest_resigned"])
def test_encrypted_tampering_detected(tmp_path, damage):
    import hmac as _hmac
    store = enc_store(tmp_path)
    store.put("fn", 1, secret_image(tmp_path / "img"), {"e": SECRET_ENV})
    mpath = tmp_path / "store" / "manifests" / "fn" / "1.msgpack"
    bad = pages_chunk(store, "fn", 1, index=1)
    cpath = tmp_path / "store" / "chunks" / bad.hash[:2] / f"{bad.hash}.zst"
    expect = ["fn:1", bad.hash[:12], "pages-1.img", "authentication failed"]
    if damage == "chunk_flip":
        _flip(cpath, cpath.stat().st_size // 2)
    elif damage == "chunk_swap":  # a valid ciphertext of another chunk, renamed
        other = pages_chunk(store, "fn", 1, index=2)
        shutil.copy(cpath.parent.parent / other.hash[:2] / f"{other.hash}.zst", cpath)
    elif damage == "manifest_flip":
        _flip(mpath, 40)
        expect = ["fn:1", "not signed by this store's key"]
    else:  # someone with the HMAC key but not the encryption key
        data = bytearray(mpath.read_bytes()[:-32])
        data[40] ^= 1
        mpath.write_bytes(bytes(data) + _hmac.digest(store.key, bytes(data), "sha256"))
        expect = ["fn:1", "failed authentication"]
    with pytest.raises(SnapshotIntegrityError) as info:
        store.materialize("fn", 1)
    assert all(w in str(info.value) for w in expect), info.value
    assert l1_leftovers(tmp_path / "l1") == []
    problems = store.verify()
    assert problems and all(w in problems[0] for w in expect), problems


def test_encrypted_without_or_with_wrong_key(tmp_path):
    enc_store(tmp_path).put("fn", 1, secret_image(tmp_path / "img"), {})
    plain = enc_store(tmp_path, key=None)
    for op in (plain.manifest, plain.materialize):
        with pytest.raises(SnapshotIntegrityError,
                           match=r"fn:1: .*encrypted; set SNAPSTART_ENCRYPTION_KEY"):
            op("fn", 1)
    assert "encrypted; set SNAPSTART_ENCRYPTION_KEY" in plain.verify()[0]
    wrong = enc_store(tmp_path, key=os.urandom(32))
    with pytest.raises(SnapshotIntegrityError, match="different key"):
        wrong.materialize("fn", 1)
    assert l1_leftovers(tmp_path / "l1") == []
    with pytest.raises(ConfigError):
        enc_store(tmp_path, key=b"short")


def test_store_gaining_a_key_keeps_plaintext_versions(tmp_path, image):
    small = make_image_dir(tmp_path / "img", seed=4, pages_mib=1)
    enc_store(tmp_path, key=None).put("fn", 1, small, {})
    store = enc_store(tmp_path)
    store.put("fn", 2, small, {})
    assert [r["encrypted"] for r in store.stats()] == [False, True]
    same_tree(small, store.materialize("fn", 1))
    same_tree(small, store.materialize("fn", 2))
    assert store.verify() == []
    store.remove("fn", 2)
    store.gc()
    assert all(p.read_bytes()[:4] != b"SSE1" for p in chunk_files(tmp_path / "store"))


def test_encryption_key_from_settings(tmp_path):
    settings = Settings(home=tmp_path / "home", criu="criu", shm=tmp_path / "shm")
    assert not LocalStore.from_settings(settings, environ={}).encrypted
    s = LocalStore.from_settings(settings, environ={"SNAPSTART_ENCRYPTION_KEY": ENC_KEY.hex()})
    assert s.encrypted
    s.put("fn", 1, make_image_dir(tmp_path / "small", pages_mib=0.25), {})
    raw, hexf = tmp_path / "raw.key", tmp_path / "hex.key"
    raw.write_bytes(ENC_KEY)
    hexf.write_text(ENC_KEY.hex() + "\n")
    for f in (raw, hexf):
        os.chmod(f, 0o600)
        t = LocalStore.from_settings(settings, environ={"SNAPSTART_ENCRYPTION_KEY_FILE": str(f)})
        assert t.manifest("fn", 1).encrypted  # the same key
    os.chmod(raw, 0o644)
    with pytest.raises(ConfigError, match="0644.*chmod 600"):
        LocalStore.from_settings(settings, environ={"SNAPSTART_ENCRYPTION_KEY_FILE": str(raw)})
    for env in ({"SNAPSTART_ENCRYPTION_KEY": "ab" * 16},
                {"SNAPSTART_ENCRYPTION_KEY": "xyz"},
                {"SNAPSTART_ENCRYPTION_KEY_FILE": str(tmp_path / "absent")},
                {"SNAPSTART_ENCRYPTION_KEY": ENC_KEY.hex(),
                 "SNAPSTART_ENCRYPTION_KEY_FILE": str(hexf)}):
        with pytest.raises(ConfigError):
            LocalStore.from_settings(settings, environ=env)
