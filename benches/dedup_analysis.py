"""How much two published versions of one function share, per chunk cut rule (issue 16).

Usage:
    .venv/bin/python benches/dedup_analysis.py [--one-line-change] [--function DIR]
        [--keep-images DIR | --images DIR] [--repeat N] [--json PATH] [--quick]

Publishes the function (default tests/functions/hello) twice through a private
``Manager``, exactly as ``snapstart publish`` does (ASLR off, the function's hash seed,
versions 1 and 2), and keeps both image directories, A and B. ``--one-line-change``
edits one line of the handler file in between: "init ran" -> "init ran (v2)" where the
file has it, else a line ``ONE_LINE_CHANGE = 2`` is appended (``--change 'OLD=>NEW'``:
that replacement instead). ``--keep-images DIR``
keeps them as DIR/A and DIR/B; ``--images DIR`` measures those instead of publishing.

For each cut rule, A then B are put into a fresh ``LocalStore`` (the store's own put
path; for rules other than the store's, its chunker is swapped for the rule's cuts)
and the bench reports, for B (the second publish):

    shared %       compressed bytes of B's chunks that A had stored / B's stored bytes
    upload         bytes (chunks) publishing B adds to a store holding A: B's new chunks
    download       bytes (chunks) another node holding A fetches for B's first restore:
                   the same new chunks (a node holding nothing fetches all of B's)
    chunks         B's distinct chunks
    put ms         ``put`` of B (chunking, hashing, compressing, writing), for the rules
                   that go through the store's own put path
    mat ms         materializing B with L1 empty, chunks in the local store (median)
    node2 ms       another node (its own LocalStore and L1, same key) holding A: copy B's
                   manifest and missing chunk files from this store (a stand-in for the
                   object store: no network latency), then materialize (median)
Timings are medians of --repeat rounds that interleave the rules (the machine is shared).

Rules: ``v1`` the store's rule before (pcdc), ``v2`` the store's rule now (pcdc +
secrets, chunking.py), ``v2-gapN`` v2 with other gaps, ``fine`` smaller pcdc chunks
(min 1, max 16 pages, mask 3), ``v1->v2`` A published by v1 and B by v2 (the first
publish after the upgrade), ``page`` one chunk per page, ``vma`` cuts at every
pagemap run / VMA boundary plus pcdc inside, ``vma-heap1`` the same with one-page
chunks inside the heap VMA. Two more are measured on bytes only, since they need a
change of the manifest or chunk format to be stored: ``delta`` (B's volatile pages
zeroed and cut as v1, plus one "patch" chunk holding those pages, which a manifest
would have to scatter back) and ``v2+dict`` (v2's chunks compressed with a zstd
dictionary trained on A's chunks, as a chunk format with dictionaries would).

Everything is created in temporary directories and removed (but ``--keep-images``).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snapstart.store import chunking  # noqa: E402

PAGE = chunking.PAGE
NAME = "dedup"
Plan = Callable[[Path], dict[str, list[int]]]    # image dir -> {file: chunk lengths}


# -- the two versions -------------------------------------------------------------------

def publish_twice(function: Path, one_line_change: bool, out: Path,
                  edit: str | None = None) -> str:
    """Publish ``function`` as versions 1 and 2; copy their images to out/A, out/B."""
    base = Path(tempfile.mkdtemp(prefix="snapstart-dedup-", dir="/tmp"))
    shm = Path(f"/dev/shm/snapstart-dedup-{os.getpid()}")
    os.chmod(base, 0o711)
    saved = {k: os.environ.get(k) for k in ("SNAPSTART_HOME", "SNAPSTART_SHM")}
    os.environ.update(SNAPSTART_HOME=str(base / "home"), SNAPSTART_SHM=str(shm))
    change = "none"
    try:
        from snapstart.config import FunctionConfig
        from snapstart.manager import Manager

        code = base / "code"
        shutil.copytree(function, code)
        handler_file = next(p for p in (code / "app.py", code / "index.js", code / "index.mjs")
                            if p.exists())
        runtime = "python" if handler_file.suffix == ".py" else "node"
        handler = ("app" if runtime == "python" else "index") + ".handler"
        with Manager(keep_warm=False) as m:
            for i, tag in enumerate(("A", "B")):
                if i == 1 and one_line_change:
                    text = handler_file.read_text()
                    if edit:
                        old, new = edit.split("=>", 1)
                        if old not in text:
                            raise SystemExit(f"--change: {old!r} is not in {handler_file.name}")
                        handler_file.write_text(text.replace(old, new, 1))
                        change = f"{old!r} -> {new!r}"
                    elif "init ran" in text:
                        handler_file.write_text(text.replace("init ran", "init ran (v2)", 1))
                        change = "'init ran' -> 'init ran (v2)'"
                    else:
                        comment = "//" if runtime == "node" else "#"
                        handler_file.write_text(text + f"\n{comment} one line changed\n"
                                                if runtime == "node" else
                                                text + "\nONE_LINE_CHANGE = 2\n")
                        change = "a line appended"
                pub = m.publish(code, FunctionConfig(name=NAME, handler=handler,
                                                     runtime=runtime, timeout_s=30))
                shutil.copytree(m.store.materialize(NAME, pub.version), out / tag)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    return change


def page_stats(a: Path, b: Path) -> dict[str, int]:
    def pages(d: Path) -> Iterator[tuple[str, int, bytes]]:
        for f in sorted(d.glob("pages-*.img")):
            data = f.read_bytes()
            for i in range(0, len(data), PAGE):
                yield f.name, i, data[i:i + PAGE]

    in_a = {hashlib.sha1(p).digest() for _, _, p in pages(a)}
    at_a = {(n, i): hashlib.sha1(p).digest() for n, i, p in pages(a)}
    total = present = same = 0
    for n, i, p in pages(b):
        h = hashlib.sha1(p).digest()
        total += 1
        present += h in in_a
        same += at_a.get((n, i)) == h
    return {"pages": total, "present_in_a": present, "same_offset": same}


# -- cut rules ----------------------------------------------------------------------------

def cdc(data: bytes, lo: int, hi: int, minp: int, maxp: int, mask: int) -> list[int]:
    """pcdc with other parameters, within [lo, hi): chunk lengths."""
    out, start = [], lo
    while start < hi:
        limit = min(hi, start + maxp * PAGE)
        end, b = limit, start + minp * PAGE
        while b <= limit:
            if zlib.crc32(data[b - PAGE:b]) & mask == 0:
                end = b
                break
            b += PAGE
        out.append(end - start)
        start = end
    return out


def plan_pcdc(minp: int, maxp: int, mask: int) -> Plan:
    def plan(d: Path) -> dict[str, list[int]]:
        return {f.name: cdc(f.read_bytes(), 0, f.stat().st_size, minp, maxp, mask)
                for f in sorted(d.iterdir())}
    return plan


def plan_v2(gap: int) -> Plan:
    def plan(d: Path) -> dict[str, list[int]]:
        with patched(chunking, "GAP_PAGES", gap):
            ranges = chunking.volatile_ranges({f.name: f for f in d.iterdir()})
        return {f.name: [n for _, n in chunking.split(f.read_bytes(), ranges.get(f.name, ()))]
                for f in sorted(d.iterdir())}
    return plan


def regions(d: Path) -> dict[str, list[tuple[int, int, bool]]]:
    """{pages file: [(offset, length, in the heap VMA)]}, one per pagemap run x VMA."""
    import pycriu

    def load(name: str) -> list[dict[str, Any]]:
        with open(d / name, "rb") as f:
            return pycriu.images.load(f)["entries"]   # type: ignore[no-any-return]

    out: dict[str, list[tuple[int, int, bool]]] = {}
    for pm in sorted(d.glob("pagemap-*.img")):
        pid = pm.name[len("pagemap-"):-len(".img")]
        head, *runs = load(pm.name)
        vmas = load(f"mm-{pid}.img")[0]["vmas"]
        regs = out.setdefault(f"pages-{head['pages_id']}.img", [])
        off = 0
        for run in runs:
            if not run.get("flags", 4) & 4:
                continue
            start, end = run["vaddr"], run["vaddr"] + run["nr_pages"] * PAGE
            for v in vmas:
                lo, hi = max(start, v["start"]), min(end, v["end"])
                if lo < hi:
                    regs.append((off + lo - start, hi - lo, bool(v["status"] & (1 << 5))))
            off += end - start
    return out


def plan_vma(heap_pages: int | None) -> Plan:
    def plan(d: Path) -> dict[str, list[int]]:
        regs = regions(d)
        out = {}
        for f in sorted(d.iterdir()):
            data = f.read_bytes()
            if f.name not in regs:
                out[f.name] = cdc(data, 0, len(data), 4, 64, 15)
                continue
            lengths: list[int] = []
            pos = 0
            for off, n, heap in sorted(regs[f.name]):
                if off > pos:
                    lengths += cdc(data, pos, off, 4, 64, 15)
                if heap and heap_pages:
                    lengths += cdc(data, off, off + n, heap_pages, heap_pages, 0)
                else:
                    lengths += cdc(data, off, off + n, 4, 64, 15)
                pos = off + n
            lengths += cdc(data, pos, len(data), 4, 64, 15)
            out[f.name] = lengths
        return out
    return plan


# a Plan, or the store's own put path with these chunking.py settings
Real = dict[str, Any]
RULES: dict[str, Plan | Real] = {
    "v1": {"secrets": False},        # the store's put path as it was
    "v2": {},                        # the store's put path as it is
    "v2-gap0": {"GAP_PAGES": 0},
    "v2-gap4": {"GAP_PAGES": 4},
    "v2-gap16": {"GAP_PAGES": 16},
    "v1->v2": {"secrets": "A"},      # A published before the upgrade, B after
    "fine": plan_pcdc(1, 16, 3),
    "page": plan_pcdc(1, 1, 0),
    "vma": plan_vma(None),
    "vma-heap1": plan_vma(1),
}
QUICK = ("v1", "v2")


@contextlib.contextmanager
def patched(obj: Any, attr: str, value: Any) -> Iterator[None]:
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


# -- measuring a rule through the store ------------------------------------------------------

class Stored:
    """One rule's two nodes: node 1 published A then B; node 2 holds A only."""

    def __init__(self, rule: str, plan: Plan | Real, a: Path, b: Path, work: Path) -> None:
        import snapstart.store.local as local_mod
        from snapstart.store import LocalStore

        cuts: dict[bytes, list[int]] = {}
        if callable(plan):
            for d in (a, b):
                for fname, lengths in plan(d).items():
                    cuts[hashlib.sha256((d / fname).read_bytes()).digest()] = lengths

        def planned_chunks(read: Callable[[int], bytes], volatile: Any = ()) -> Iterator[bytes]:
            data = b"".join(iter(lambda: read(4 << 20), b""))
            off = 0
            for n in cuts[hashlib.sha256(data).digest()]:
                yield data[off:off + n]
                off += n

        self.rule, self.b, self.plan = rule, b, plan
        self.dir = work / rule
        self.shm = Path(tempfile.mkdtemp(prefix="snapstart-dedup-", dir="/dev/shm"))
        key = os.urandom(32)
        with contextlib.ExitStack() as swap:
            if callable(plan):
                swap.enter_context(patched(local_mod, "iter_chunks", planned_chunks))
            else:
                for name, value in plan.items():
                    if name == "secrets" and value is False:
                        swap.enter_context(patched(local_mod, "volatile_ranges",
                                                   lambda files: {}))
                    elif name != "secrets":
                        swap.enter_context(patched(chunking, name, value))
            self.s1 = LocalStore(self.dir / "node1", self.shm / "l1", key=key)
            with (patched(local_mod, "volatile_ranges", lambda files: {})
                  if plan == {"secrets": "A"} else contextlib.nullcontext()):
                self.s1.put(NAME, 1, a, {})
            t = time.perf_counter()
            self.s1.put(NAME, 2, b, {})
            self.put_ms = (time.perf_counter() - t) * 1000
        ra = self.s1.manifest(NAME, 1).chunk_refs()
        self.refs = self.s1.manifest(NAME, 2).chunk_refs()
        self.new = [h for h in self.refs if h not in ra]
        # node 2: its own store (same key, as every node of a fleet) holding A
        self.s2 = LocalStore(self.dir / "node2", self.shm / "l1-2", key=key)
        self._copy(self.s1.manifest(NAME, 1).chunk_refs(), 1)
        self.mat: list[float] = []
        self.node2: list[float] = []

    def _copy(self, hashes: Any, version: int) -> None:
        src, dst = self.s1.root, self.s2.root
        (dst / "manifests" / NAME).mkdir(parents=True, exist_ok=True)
        rel = f"manifests/{NAME}/{version}.msgpack"
        shutil.copyfile(src / rel, dst / rel)
        for h in hashes:
            rel = f"chunks/{h[:2]}/{h}.zst"
            (dst / rel).parent.mkdir(exist_ok=True)
            shutil.copyfile(src / rel, dst / rel)

    def round(self, count: bool) -> None:
        """One materialize of B on node 1, one first restore of B on node 2."""
        self.s1.clear_l1()
        t = time.perf_counter()
        out = self.s1.materialize(NAME, 2)
        if count:
            self.mat.append((time.perf_counter() - t) * 1000)
        else:
            assert all((out / f.name).read_bytes() == f.read_bytes() for f in self.b.iterdir())
        self.s2.clear_l1()
        (self.s2.root / f"manifests/{NAME}/2.msgpack").unlink(missing_ok=True)
        for h in self.new:
            (self.s2.root / f"chunks/{h[:2]}/{h}.zst").unlink(missing_ok=True)
        t = time.perf_counter()
        self._copy(self.new, 2)
        self.s2.materialize(NAME, 2)
        if count:
            self.node2.append((time.perf_counter() - t) * 1000)

    def row(self) -> dict[str, Any]:
        stored = sum(c.stored_size for c in self.refs.values())
        new_bytes = sum(self.refs[h].stored_size for h in self.new)
        return {"rule": self.rule, "put_path": "store" if not callable(self.plan) else "planned",
                "chunks": len(self.refs), "stored_bytes": stored,
                "shared_pct": round(100 * (stored - new_bytes) / stored, 1),
                "upload_bytes": new_bytes, "upload_chunks": len(self.new),
                "download_bytes": new_bytes, "download_chunks": len(self.new),
                "download_bytes_cold_node": stored, "download_chunks_cold_node": len(self.refs),
                # planned cuts are computed beforehand: their put time is not comparable
                "put_ms": round(self.put_ms, 1) if not callable(self.plan) else None,
                "materialize_ms": round(statistics.median(self.mat), 1),
                "node2_fetch_materialize_ms": round(statistics.median(self.node2), 1),
                "logical_bytes": self.s1.manifest(NAME, 2).logical_bytes}

    def close(self) -> None:
        shutil.rmtree(self.shm, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- rules that need a format change: bytes only ---------------------------------------------

def chunk_set(d: Path, lengths: dict[str, list[int]]) -> dict[bytes, bytes]:
    out = {}
    for fname, ns in lengths.items():
        data = (d / fname).read_bytes()
        off = 0
        for n in ns:
            if n:
                out[hashlib.sha256(data[off:off + n]).digest()] = data[off:off + n]
            off += n
    return out


def measure_delta(a: Path, b: Path) -> dict[str, Any]:
    """B's volatile pages zeroed and cut by v1, plus one patch chunk per pages file."""
    def chunks(d: Path) -> dict[bytes, bytes]:
        with patched(chunking, "GAP_PAGES", 0):
            ranges = chunking.volatile_ranges({f.name: f for f in d.iterdir()})
        out = {}
        for f in sorted(d.iterdir()):
            data = bytearray(f.read_bytes())
            patch = bytearray()
            for lo, hi in ranges.get(f.name, ()):
                patch += data[lo:hi]
                data[lo:hi] = bytes(hi - lo)
            for off, n in chunking.split(bytes(data)):
                out[hashlib.sha256(data[off:off + n]).digest()] = bytes(data[off:off + n])
            if patch:
                out[hashlib.sha256(patch).digest()] = bytes(patch)
        return out
    return summarize("delta", chunks(a), chunks(b), zstandard.ZstdCompressor(level=3))


def measure_dict(a: Path, b: Path) -> dict[str, Any]:
    plan = plan_v2(chunking.GAP_PAGES)
    ca, cb = chunk_set(a, plan(a)), chunk_set(b, plan(b))
    t = time.perf_counter()
    dictionary = zstandard.train_dictionary(112 << 10, list(ca.values()), level=3)
    train_ms = (time.perf_counter() - t) * 1000
    row = summarize("v2+dict", ca, cb, zstandard.ZstdCompressor(level=3, dict_data=dictionary))
    row["dictionary_bytes"] = len(dictionary.as_bytes())
    row["train_ms"] = round(train_ms)
    return row


def summarize(rule: str, ca: dict[bytes, bytes], cb: dict[bytes, bytes],
              cctx: zstandard.ZstdCompressor) -> dict[str, Any]:
    sizes = {h: len(cctx.compress(c)) for h, c in cb.items()}
    stored = sum(sizes.values())
    new = {h: n for h, n in sizes.items() if h not in ca}
    return {"rule": rule, "put_path": "bytes only", "chunks": len(cb), "stored_bytes": stored,
            "shared_pct": round(100 * (stored - sum(new.values())) / stored, 1),
            "upload_bytes": sum(new.values()), "upload_chunks": len(new),
            "download_bytes": sum(new.values()), "download_chunks": len(new),
            "download_bytes_cold_node": stored, "download_chunks_cold_node": len(cb)}


# -- report -------------------------------------------------------------------------------------

def table(rows: list[dict[str, Any]]) -> str:
    def kib(n: int) -> str:
        return f"{n / 1024:,.0f}"

    lines = ["| rule | shared % | upload KiB (chunks) | download KiB (chunks), node has A | "
             "cold node KiB (chunks) | chunks | put ms | mat ms | node2 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['rule']} | {r['shared_pct']} | {kib(r['upload_bytes'])} ({r['upload_chunks']}) "
            f"| {kib(r['download_bytes'])} ({r['download_chunks']}) "
            f"| {kib(r['download_bytes_cold_node'])} ({r['download_chunks_cold_node']}) "
            f"| {r['chunks']} | {r.get('put_ms') or '-'} | {r.get('materialize_ms', '-')} "
            f"| {r.get('node2_fetch_materialize_ms', '-')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--one-line-change", action="store_true")
    ap.add_argument("--function", type=Path, default=ROOT / "tests/functions/hello")
    ap.add_argument("--change", metavar="OLD=>NEW",
                    help="the one-line change: replace the first OLD with NEW")
    ap.add_argument("--keep-images", type=Path)
    ap.add_argument("--images", type=Path)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true", help="only v1 and v2")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="snapstart-dedup-", dir="/tmp"))
    try:
        if args.images:
            images, change = args.images, "(given images)"
        else:
            images = args.keep_images or work / "images"
            images.mkdir(parents=True, exist_ok=True)
            change = publish_twice(args.function, args.one_line_change or bool(args.change),
                                   images, args.change)
        a, b = images / "A", images / "B"
        pages = page_stats(a, b)
        what = f"images {images}" if args.images else f"function {args.function.name}"
        print(f"{what}, change: {change}; pages of B: {pages['pages']}, "
              f"present in A {100 * pages['present_in_a'] / pages['pages']:.0f} %, "
              f"at the same offset {100 * pages['same_offset'] / pages['pages']:.0f} %",
              flush=True)
        stores: list[Stored] = []
        try:
            for rule, plan in RULES.items():
                if not args.quick or rule in QUICK:
                    stores.append(Stored(rule, plan, a, b, work))
                    print(f"  {rule}: stored", file=sys.stderr, flush=True)
            # rounds interleave the rules, so that load from elsewhere hits them alike;
            # the first round warms up and checks B's files
            for i in range(args.repeat + 1):
                for st in stores:
                    st.round(count=i > 0)
            rows = [st.row() for st in stores]
        finally:
            for st in stores:
                st.close()
        if not args.quick:
            rows.append(measure_delta(a, b))
            rows.append(measure_dict(a, b))
        print(table(rows))
        print(f"v2 = {chunking.CHUNKER_ID}; logical size of B "
              f"{rows[0]['logical_bytes'] / 2**20:.1f} MiB")
        if args.json:
            args.json.write_text(json.dumps({
                "function": args.function.name, "change": change, "pages": pages,
                "chunker": chunking.CHUNKER_ID, "rows": rows}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
