"""Splitting CRIU image files into chunks: page-granular content-defined chunking,
with the pages that hold a process's random secrets cut apart from the others.

Every file of an image directory goes through the same deterministic chunker;
small files (core-*.img, mm-*.img, pagemap-*.img, ... all well under 16 KiB) come
out as one chunk, i.e. they are stored whole. Cuts depend on nothing but the image
directory's own bytes: the same image always gives the same chunks, whatever the
read block size, so two versions of a function share the chunks they have in common.
The chunker must not look at the store, at other versions or at the clock.

Cut rule, version 2 (``CHUNKER_ID`` = "pcdc/4096/16384/262144/15+secrets/8"; every
manifest records the rule that cut it as its meta ``chunking``)::

    PAGE = 4096, MIN = 4 pages (16 KiB), MAX = 64 pages (256 KiB), MASK = 15, GAP = 8
    volatile pages (pages-*.img only) = the pages that hold one of the dumped
        process's secrets (below); volatile pages at most GAP pages apart, and the
        pages between them, form one volatile run.
    a chunk that starts in a volatile run ends at the run's end, or after MAX;
    any other chunk, from its start, for each page boundary b with
    MIN <= b - start <= MAX:
        cut at b if crc32(the 4 KiB page that ends at b) & MASK == 0
    else cut at start + MAX, at the next volatile run's start, or at end of file,
    whichever comes first.

Version 1 ("pcdc/4096/16384/262144/15", ``CHUNKER_ID_V1``: every snapshot published
before) is the same rule without volatile runs, and version 2 cuts exactly as
version 1 wherever it finds no secret (other C libraries, other architectures,
every file but pages-*.img). Readers never need to know which rule cut a snapshot:
a file is its chunks concatenated under both (manifest.py), chunks are addressed by
their content as before (chunks.py), and old manifests are read as they always were.
The first version published after the change shares with its predecessor about
what version 1 would have (bench: hello 59.6 % vs 59.5 %, data 63.8 % vs 65.0 %, in
more chunks), the ones after it gain what is measured below.

Secrets. Two dumps of one function with ASLR off and a fixed hash seed are ~95 %
identical page for page; most pages that differ are not changed by the function's
code but by values the C library draws at random when a process starts, which
then get copied all over its memory:
  - glibc's ``tcache_key`` (glibc >= 2.34): written into every chunk freed into a
    tcache, so it sits in one heap page in six (tests/functions/hello: 119 of the
    148 pages that differ between two versions, of 730 heap pages). Found through
    the main heap's first chunk, glibc's ``tcache_perthread_struct`` (chunk size
    0x291: 64 u16 counts, then 64 list heads): the word after a listed free
    entry's ``next`` is the key, if most listed entries agree.
  - the stack protector canary (x86_64: at fs_base + 0x28 in the thread control
    block; fs_base from core-<pid>.img): copied into stack frames.
A secret counts only if it looks random (>= 2**47, >= 12 bits set). An image this
parser cannot read (another libc, no heap, another format, damage) has no volatile
pages, i.e. version 1's cuts: a wrong guess only ever costs sharing, never
correctness. The function's own memory decides where its volatile pages are, so it
can only split its own chunks (one per MAX pages at most, as without them).
Finding the secrets is one pass of ``find`` per secret over the pages file, one hit
per page: ~10 ms for 11 MiB of pages, ~60 ms for 44 MiB, once per publish.

Why. Under version 1 nearly every ~20-page heap chunk holds the key, so hardly a
heap chunk is ever shared; volatile runs confine what changes to its pages. GAP is
the price: each volatile run is a chunk, and each chunk costs its own file, hash and
syscalls on every materialize and its own request on every fetch from an object
store. GAP 8 keeps the chunks a new version adds (the requests of a first restore
on a node holding the previous version) at about version 1's count (49 vs 56, 175
vs 163 below) while a quarter to 40 % fewer bytes cross the network. ``benches/dedup_analysis.py --one-line-change``
(tests/functions/hello, 10.7 MiB of image; "shared" = compressed bytes of B that A
had stored; "new" = what publishing B uploads, and what a node holding A downloads
for B's first restore; "mat" = building B's L1 directory from local chunks, L1
empty, median ms)::

    cut rule                              shared   new KiB (chunks)   chunks   mat ms
    version 1                             59.5 %      1,001 (56)        148      12.8
    version 2 (GAP 8)                     70.0 %        745 (49)        176      13.4
    version 2, GAP 0                      77.4 %        569 (120)       316      18.9
    version 2, GAP 4                      72.7 %        680 (63)        204      14.6
    version 2, GAP 16                     65.7 %        844 (43)        152      12.8
    pcdc min 1, max 16, mask 3            76.6 %        605 (103)       691      31.7
    one chunk per page                    92.8 %        208 (161)      2675      79.0
    cuts at every VMA boundary            64.5 %        877 (61)        239      16.2
      ... and 1-page chunks in the heap   81.9 %        470 (152)       864      40.1

The same for benches/functions/data (numpy + pandas, 44.3 MiB; ``--function
benches/functions/data --change '"rows", 100=>"rows", 200'``): version 1 65.0 %, 3,849 KiB (163), 605 chunks,
47 ms; version 2 78.9 %, 2,345 KiB (175), 730 chunks, 49 ms; one chunk per page
96.4 %, 480 KiB (362), 11 241 chunks, 286 ms. Measured, not adopted, since they need
a format change: one "delta" chunk per file holding all its volatile pages, which
the manifest would place back over zero pages (hello 75.8 %, 599 KiB in 28 new
chunks, 145 chunks; data 80.7 %, 2,129 KiB (91), 602 chunks), and zstd
dictionaries trained per function (2 % fewer new bytes). Not helped by any cut rule: a change that shifts the heap (a line added
to data's handler, compiled before numpy is imported, moves every later
allocation: 16 % of B's pages exist in A, both rules share 0.8 %), and Node.js, whose
V8 heap picks its own random addresses (2 vs 3 %).

Earlier measurements of version 1 (content-defined vs fixed-size chunks; real CRIU
4.2.1 dumps of a Python 3.11 process with a 60 000-entry dict, pages-1.img 46 MiB;
these dumps were made with ASLR on/off as listed)::

    A -> B                                   fixed 64K  fixed 256K  pcdc ~64K  pcdc ~256K
    ASLR on (the default), same code              0 %        0 %        2 %        0 %
    ASLR off + PYTHONHASHSEED=0, same code       14 %      7.5 %       12 %        7 %
      ... one handler line changed               15 %      7.5 %       11 %        7 %
      ... 500 more dict entries (heap shifted)  0.7 %      0.1 %      3.9 %      1.1 %
    compression ratio of one version             9.2        9.6        9.5        9.8
    chunks per version                           740        197        628        166

Synthetic images (tests/unit/test_store.py; pages-1.img 20 MiB of zero, random,
repeated and heap-like pages)::

    5 pages rewritten in place                  98 %       94 %       96 %       88 %
    3 pages inserted mid-file                   19 %       19 %     99.5 %       98 %

Content-defined cuts are the only ones that survive a shift (heap growth, an extra
VMA) and compress as well as fixed ones; bigger chunks compress ~3 % better but
share less.

CRIU image files read here (criu/images/*.proto; each file: a u32 magic, preceded
by IMG_COMMON or IMG_SERVICE, then entries of a u32 size and a protobuf message):
``pagemap-<pid>.img`` (pagemap_head {pages_id}, then pagemap_entry {vaddr,
nr_pages, flags}: the runs of pages, in the order ``pages-<pages_id>.img`` holds
the present ones), ``mm-<pid>.img`` (mm_entry {vmas: vma_entry {start, end,
status}}: the heap VMA) and ``core-<pid>.img`` (core_entry {mtype, thread_info
{gpregs {fs_base}}}). Each is read whole and only if under 16 MiB.
"""

from __future__ import annotations

import os
import re
import zlib
from bisect import bisect_right
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from ..protowire import fields

__all__ = ["PAGE", "MIN_CHUNK", "MAX_CHUNK", "GAP_PAGES", "CHUNKER_ID", "CHUNKER_ID_V1",
           "find_cut", "iter_chunks", "split", "volatile_ranges"]

PAGE = 4096
MIN_CHUNK = 4 * PAGE
MAX_CHUNK = 64 * PAGE
_MASK = 15
GAP_PAGES = 8
READ_BLOCK = 4 << 20
CHUNKER_ID_V1 = f"pcdc/{PAGE}/{MIN_CHUNK}/{MAX_CHUNK}/{_MASK}"
CHUNKER_ID = f"{CHUNKER_ID_V1}+secrets/{GAP_PAGES}"

Ranges = Sequence[tuple[int, int]]


def find_cut(view: memoryview) -> int:
    """Length of the chunk that starts at ``view[0]``.

    ``view`` holds at least ``MAX_CHUNK`` bytes unless it is the rest of the file
    or ends where a volatile run starts.
    """
    n = len(view)
    if n <= MIN_CHUNK:
        return n
    limit = min(n, MAX_CHUNK)
    crc32 = zlib.crc32
    pos = MIN_CHUNK
    while pos <= limit:
        if crc32(view[pos - PAGE:pos]) & _MASK == 0:
            return pos
        pos += PAGE
    return limit


def iter_chunks(read: Callable[[int], bytes], volatile: Ranges = ()) -> Iterator[bytes]:
    """Chunks of the stream ``read`` returns (a file's ``read``), in order.

    ``volatile``: sorted, disjoint (start, end) byte ranges of the stream
    (``volatile_ranges``); none gives version 1's cuts.
    """
    buf = b""
    off = 0          # of the next chunk in buf
    pos = 0          # of the next chunk in the stream
    k = 0            # first volatile range that ends after pos
    eof = False
    while True:
        avail = len(buf) - off
        if not eof and avail < MAX_CHUNK:
            block = read(READ_BLOCK)
            if block:
                buf = buf[off:] + block
                off = 0
            else:
                eof = True
            continue
        if avail == 0:
            return
        while k < len(volatile) and volatile[k][1] <= pos:
            k += 1
        if k < len(volatile) and volatile[k][0] <= pos:
            cut = min(volatile[k][1] - pos, MAX_CHUNK, avail)
        else:
            limit = MAX_CHUNK if k == len(volatile) else min(MAX_CHUNK, volatile[k][0] - pos)
            cut = find_cut(memoryview(buf)[off:off + limit])
        yield buf[off:off + cut]
        off += cut
        pos += cut


def split(data: bytes, volatile: Ranges = ()) -> list[tuple[int, int]]:
    """(offset, length) of each chunk of ``data`` (for measurements and tests)."""
    spans = []
    off = 0
    for chunk in iter_chunks(_reader(data), volatile):
        spans.append((off, len(chunk)))
        off += len(chunk)
    return spans


def _reader(data: bytes) -> Callable[[int], bytes]:
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        out = data[pos:pos + n]
        pos += len(out)
        return out

    return read


# -- volatile pages: where a process's secrets are (module docstring) -----------------

_IMG_COMMON, _IMG_SERVICE = 0x54564319, 0x55105940
_MAGIC_PAGEMAP, _MAGIC_MM, _MAGIC_CORE = 0x56084025, 0x57492820, 0x55053847
_MAX_IMAGE = 16 << 20
_PE_PRESENT = 1 << 2
_VMA_AREA_HEAP = 1 << 5
_X86_64 = 1
_TCACHE_CHUNK = 0x291        # tcache_perthread_struct, glibc >= 2.30, 64-bit
_TCACHE_BINS = 64
_CANARY_AT = 0x28            # tcbhead_t.stack_guard, x86_64
_PAGEMAP_RE = re.compile(r"pagemap-([0-9]+)\.img")
_BAD = (OSError, ValueError, KeyError, IndexError)


def volatile_ranges(files: Mapping[str, Path]) -> dict[str, list[tuple[int, int]]]:
    """{pages file: its volatile runs as sorted (start, end) byte ranges} of the image
    whose files are ``files`` (relative path -> path). Never raises for what the
    images hold: what it cannot read has no volatile pages."""
    pages: dict[str, set[int]] = {}
    for rel in sorted(files):
        m = _PAGEMAP_RE.fullmatch(rel)
        if m is None:
            continue
        try:
            found = _volatile_pages(files, m.group(1))
        except _BAD:
            continue
        if found is not None and found[1]:
            pages.setdefault(found[0], set()).update(found[1])
    return {rel: _runs(sorted(p)) for rel, p in pages.items()}


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    """Sorted page indices -> byte ranges of their runs, gaps <= GAP_PAGES closed."""
    runs: list[tuple[int, int]] = []
    for i in pages:
        if runs and i - runs[-1][1] <= GAP_PAGES:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return [(a * PAGE, b * PAGE) for a, b in runs]


def _volatile_pages(files: Mapping[str, Path], pid: str) -> tuple[str, set[int]] | None:
    """(pages file, indices of its pages that hold a secret of process ``pid``)."""
    head, *entries = _entries(files.get(f"pagemap-{pid}.img"), _MAGIC_PAGEMAP)
    pages_rel = f"pages-{_int(_field(head, 1))}.img"
    if pages_rel not in files:
        return None
    runs: list[tuple[int, int, int]] = []     # (vaddr, end, offset in the pages file)
    offset = 0
    for e in entries:
        fields = dict(_fields(e))
        nr = _int(fields.get(5, fields.get(2, 0)))
        present = (_int(fields[4]) & _PE_PRESENT) if 4 in fields else not fields.get(3)
        if present and nr:
            vaddr = _int(fields[1])
            runs.append((vaddr, vaddr + nr * PAGE, offset))
            offset += nr * PAGE
    runs.sort()
    with open(files[pages_rel], "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if offset == 0 or size < offset:
            return None
        mem = _Memory(runs, f.fileno())
        secrets = []
        for find in (_tcache_key, _canary):
            try:
                secret = find(files, pid, mem)
            except _BAD:
                continue
            if secret is not None and _random_looking(secret):
                secrets.append(secret.to_bytes(8, "little"))
        return pages_rel, _pages_holding(f.fileno(), size, secrets)


def _pages_holding(fd: int, size: int, needles: list[bytes]) -> set[int]:
    """Indices of the pages of file ``fd`` in which one of ``needles`` (8 bytes)
    starts. Read in blocks (pread: no mapping that a truncation could turn into
    SIGBUS); one search per page that holds a needle, at most."""
    found: set[int] = set()
    if not needles:
        return found
    for start in range(0, size, READ_BLOCK):
        data = os.pread(fd, READ_BLOCK + 7, start)    # and a needle that crosses the end
        for needle in needles:
            at = data.find(needle)
            while -1 < at < READ_BLOCK:
                page = (start + at) // PAGE
                found.add(page)
                at = data.find(needle, (page + 1) * PAGE - start)
    return found


class _Memory:
    """The dumped process's memory, read by address through its pagemap."""

    def __init__(self, runs: list[tuple[int, int, int]], fd: int) -> None:
        self.runs = runs
        self.starts = [r[0] for r in runs]
        self.fd = fd

    def read(self, addr: int, n: int) -> bytes | None:
        i = bisect_right(self.starts, addr) - 1
        if i < 0 or addr + n > self.runs[i][1]:
            return None
        data = os.pread(self.fd, n, self.runs[i][2] + addr - self.runs[i][0])
        return data if len(data) == n else None

    def word(self, addr: int) -> int | None:
        data = self.read(addr, 8)
        return None if data is None else int.from_bytes(data, "little")


def _tcache_key(files: Mapping[str, Path], pid: str, mem: _Memory) -> int | None:
    """The key in the free entries the main heap's tcache lists first."""
    mm = _entries(files.get(f"mm-{pid}.img"), _MAGIC_MM)[0]
    heap = [_int(_field(_msg(v), 1)) for n, v in _fields(mm)
            if n == 14 and _int(_field(_msg(v), 7)) & _VMA_AREA_HEAP]
    if len(heap) != 1 or mem.word(heap[0] + 8) != _TCACHE_CHUNK:
        return None
    counts = mem.read(heap[0] + 16, 2 * _TCACHE_BINS)
    heads = mem.read(heap[0] + 16 + 2 * _TCACHE_BINS, 8 * _TCACHE_BINS)
    if counts is None or heads is None:
        return None
    keys: Counter[int] = Counter()
    for i in range(_TCACHE_BINS):
        entry = int.from_bytes(heads[8 * i:8 * i + 8], "little")
        if entry and int.from_bytes(counts[2 * i:2 * i + 2], "little"):
            key = mem.word(entry + 8)
            if key is not None:
                keys[key] += 1
    if not keys:
        return None
    key, n = keys.most_common(1)[0]
    return key if 2 * n > sum(keys.values()) else None


def _canary(files: Mapping[str, Path], pid: str, mem: _Memory) -> int | None:
    """x86_64: the stack protector canary in the main thread's control block."""
    core = dict(_fields(_entries(files.get(f"core-{pid}.img"), _MAGIC_CORE)[0]))
    if core.get(1) != _X86_64:
        return None
    gpregs = _msg(_field(_msg(core[2]), 2))
    return mem.word(_int(_field(gpregs, 22)) + _CANARY_AT)


def _random_looking(v: int) -> bool:
    return v >= 1 << 47 and bin(v).count("1") >= 12


def _entries(path: Path | None, magic: int) -> list[bytes]:
    """The messages of a CRIU image file (module docstring); ValueError unless it is
    one with ``magic``."""
    if path is None:
        raise ValueError("absent")
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > _MAX_IMAGE:
            raise ValueError("too big")
        data = f.read()
    off = 4
    first = int.from_bytes(data[0:4], "little")
    if first in (_IMG_COMMON, _IMG_SERVICE):
        first, off = int.from_bytes(data[4:8], "little"), 8
    if first != magic:
        raise ValueError("not the expected image")
    out = []
    while off < len(data):
        n = int.from_bytes(data[off:off + 4], "little")
        off += 4
        if n > len(data) - off:
            raise ValueError("truncated")
        out.append(data[off:off + n])
        off += n
    if not out:
        raise ValueError("empty")
    return out


def _fields(msg: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message (protowire.py)."""
    for num, _, value in fields(msg):
        yield num, value


def _field(msg: bytes, number: int) -> int | bytes:
    for n, v in _fields(msg):
        if n == number:
            return v
    raise ValueError(f"protobuf field {number} missing")


def _int(v: int | bytes) -> int:
    if not isinstance(v, int):
        raise ValueError("protobuf field is not a number")
    return v


def _msg(v: int | bytes) -> bytes:
    if not isinstance(v, bytes):
        raise ValueError("protobuf field is not a message")
    return v
