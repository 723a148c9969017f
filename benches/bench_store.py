"""Benchmark of the snapshot store: compression, publish time, materialization speed,
dedup between versions.

    .venv/bin/python benches/bench_store.py [IMAGE_DIR] [--levels 1,3,9] [--repeat 5]

IMAGE_DIR is a CRIU image directory; without it a synthetic one is generated (a few
small *.img files and a 32 MiB pages-1.img of zero, random, repeated and heap-like
pages, as in tests/unit/test_store.py). Results go to stdout as one JSON document,
a short table to stderr. Each case has an id; the dimensions (arch, cpus, load)
are recorded with the results. Stores are created in a temporary directory on
disk, L1 on /dev/shm (tmpfs) when it exists; both are removed at the end.

Cases:
  level-N         put the image at zstd level N into an empty store: stored bytes,
                  compression ratio, put time; then materialize it ``repeat`` times
                  with L1 cleared before each: MB/s of decompressed output (median,
                  wall clock) and MB per CPU-second (user + system, all threads:
                  what the work costs, whatever else the machine is running)
  l1-hit          materialize of a version already in L1 (median ms)
  dedup-modified  a second version with a few pages rewritten in place (level 3):
                  fraction of its stored bytes shared with the first
  dedup-inserted  a second version with 3 pages inserted mid-file (level 3)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from snapstart.store import LocalStore
from snapstart.store.chunking import CHUNKER_ID, PAGE
from snapstart.store.synthetic import fill_pages


def synthetic_image(path: Path, pages_mib: int = 32, seed: int = 1) -> Path:
    rng = random.Random(seed)
    path.mkdir(parents=True)
    for name, size in {"inventory.img": 86, "core-1.img": 1913, "mm-1.img": 7126,
                       "pagemap-1.img": 2936, "files.img": 5681, "fdinfo-2.img": 44,
                       "pstree.img": 26, "ids-1.img": 36}.items():
        (path / name).write_bytes(rng.randbytes(size))
    (path / "pages-1.img").write_bytes(fill_pages(rng, pages_mib * 256))
    return path


def variant(src: Path, dst: Path, *, modify: int = 0, insert: int = 0) -> Path:
    """A copy of ``src`` whose largest pages-*.img has pages rewritten or inserted."""
    shutil.copytree(src, dst)
    target = max(dst.glob("pages-*.img"), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    n = len(data) // PAGE
    rng = random.Random(7)
    for i in range(modify):
        p = (i + 1) * n // (modify + 1)
        data[p * PAGE:(p + 1) * PAGE] = rng.randbytes(PAGE)
    if insert:
        at = n // 2 * PAGE
        data[at:at] = rng.randbytes(insert * PAGE)
    target.write_bytes(data)
    return dst


def materialize_rate(store: LocalStore, name: str, version: int,
                     repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds (all threads: user + system) per cold materialize."""
    def cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    times, cpu = [], []
    for _ in range(repeat):
        store.clear_l1()
        c = cpu_s()
        t = time.perf_counter()
        store.materialize(name, version)
        times.append(time.perf_counter() - t)
        cpu.append(cpu_s() - c)
    return times, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image_dir", nargs="?", type=Path)
    ap.add_argument("--levels", default="1,3,9")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    shm = Path(tempfile.mkdtemp(prefix="bench-store-l1-",
                                dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        image = args.image_dir or synthetic_image(work / "image")
        files = [p for p in image.rglob("*") if p.is_file()]
        logical = sum(p.stat().st_size for p in files)
        results: dict[str, Any] = {
            "dimensions": {"arch": platform.machine(), "cpus": os.cpu_count(),
                           "loadavg": os.getloadavg(), "python": platform.python_version(),
                           "chunker": CHUNKER_ID},
            "image": {"path": str(args.image_dir) if args.image_dir else "synthetic",
                      "files": len(files), "logical_bytes": logical},
            "cases": [],
        }
        for level in (int(x) for x in args.levels.split(",")):
            store = LocalStore(work / f"store-{level}", shm / f"l1-{level}", level=level)
            t = time.perf_counter()
            store.put("bench", 1, image, {})
            put_s = time.perf_counter() - t
            st = store.stats()[0]
            times, cpu = materialize_rate(store, "bench", 1, args.repeat)
            results["cases"].append({
                "id": f"level-{level}", "level": level, "stored_bytes": st["stored_bytes"],
                "compression_ratio": st["compression_ratio"], "chunks": st["chunks"],
                "put_s": round(put_s, 3),
                "materialize_s": [round(x, 4) for x in times],
                "materialize_mb_s": round(logical / statistics.median(times) / 1e6, 1),
                # CPU time is what a busy machine cannot steal: MB per CPU-second
                "materialize_cpu_s": [round(x, 4) for x in cpu],
                "materialize_mb_per_cpu_s": round(logical / statistics.median(cpu) / 1e6, 1),
            })
            if level == 3:
                store.materialize("bench", 1)
                hits = []
                for _ in range(20):
                    t = time.perf_counter()
                    store.materialize("bench", 1)
                    hits.append(time.perf_counter() - t)
                results["cases"].append({"id": "l1-hit",
                                         "ms": round(statistics.median(hits) * 1000, 3)})
                for case, kw in (("dedup-modified", {"modify": 5}),
                                 ("dedup-inserted", {"insert": 3})):
                    v = variant(image, work / case, **kw)
                    version = 2 if case == "dedup-modified" else 3
                    store.put("bench", version, v, {})
                    s2 = next(s for s in store.stats() if s["version"] == version)
                    results["cases"].append({
                        "id": case, **kw, "stored_bytes": s2["stored_bytes"],
                        "shared_bytes": s2["shared_bytes"],
                        "shared_fraction": round(s2["shared_bytes"] / s2["stored_bytes"], 4)})
                    store.remove("bench", version)
                    store.gc()
            store.clear_l1()
        json.dump(results, sys.stdout, indent=2)
        print()
        _table(results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


def _table(results: dict[str, Any]) -> None:
    err = sys.stderr
    img, dims = results["image"], results["dimensions"]
    print(f"image: {img['path']}  {img['files']} files  {img['logical_bytes'] / 2**20:.1f} MiB"
          f"  (cpus {dims['cpus']}, load {dims['loadavg'][0]:.2f})", file=err)
    print(f"{'case':16s} {'stored MiB':>10s} {'ratio':>6s} {'put s':>6s} {'mat. MB/s':>10s}"
          f" {'MB/cpu-s':>9s}", file=err)
    for c in results["cases"]:
        if c["id"].startswith("level-"):
            print(f"{c['id']:16s} {c['stored_bytes'] / 2**20:10.2f} {c['compression_ratio']:6.2f}"
                  f" {c['put_s']:6.2f} {c['materialize_mb_s']:10.1f}"
                  f" {c['materialize_mb_per_cpu_s']:9.1f}", file=err)
        elif c["id"] == "l1-hit":
            print(f"{'l1-hit':16s} {c['ms']:.3f} ms", file=err)
        else:
            print(f"{c['id']:16s} shared {100 * c['shared_fraction']:.1f} % of "
                  f"{c['stored_bytes'] / 2**20:.2f} MiB stored", file=err)


if __name__ == "__main__":
    main()
