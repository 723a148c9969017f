"""What a snapshot's CRIU images hold: processes, memory by kind, largest mappings.

Reads a materialized image directory (L1) with pycriu's image decoders (CRIU's own
protobuf schemas): ``pstree.img`` (the tree), ``core-N.img`` (command names),
``mm-N.img`` (VMAs, argv's address), ``pagemap-N.img`` (which pages were dumped,
in the order ``pages-K.img`` holds them) and ``files.img`` (the files mappings map).
Nothing is restored, nothing is written. ``snapstart snapshots inspect`` prints it.

Memory kinds, from CRIU's VMA status bits (criu/include/image.h): ``heap``
(VMA_AREA_HEAP), ``stack`` (VMA_AREA_STACK or MAP_GROWSDOWN: the main thread's;
other threads' stacks are anonymous mappings), ``anonymous`` (VMA_ANON_PRIVATE, not
heap/stack), ``shared anonymous`` (VMA_ANON_SHARED), ``shared libraries`` (a private
file mapping of a ``.so``), ``file-backed`` (other private file mappings: a
program's .data, data files), ``shared file`` (VMA_FILE_SHARED), ``kernel`` (vdso,
vvar, vsyscall). "Dumped" is what the image holds for it (pages written since the
file was mapped, for file mappings); "mapped" the VMA's size.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ImageReport", "inspect_images", "page_diff"]

PAGE = 4096
_STACK, _VSYSCALL, _VDSO, _HEAP = 1 << 1, 1 << 2, 1 << 3, 1 << 5
_FILE_PRIVATE, _FILE_SHARED, _ANON_SHARED, _ANON_PRIVATE = 1 << 6, 1 << 7, 1 << 8, 1 << 9
_VVAR = 1 << 12
_PE_PRESENT = 1 << 2
_MAP_GROWSDOWN = 0x0100


@dataclass
class ImageReport:
    processes: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, dict[str, int]] = field(default_factory=dict)   # kind -> bytes
    largest: list[dict[str, Any]] = field(default_factory=list)
    tmp_files: list[dict[str, Any]] = field(default_factory=list)
    image_files: dict[str, int] = field(default_factory=dict)         # name -> bytes

    def to_dict(self) -> dict[str, Any]:
        return {"processes": self.processes, "memory": self.memory, "largest": self.largest,
                "tmp_files": self.tmp_files, "image_files": self.image_files}


def _kind(vma: dict, path: str | None) -> str:
    status = vma["status"]
    if status & (_VDSO | _VVAR | _VSYSCALL):
        return "kernel"
    if status & _HEAP:
        return "heap"
    if status & _STACK or vma.get("flags", 0) & _MAP_GROWSDOWN:
        return "stack"
    if status & _ANON_SHARED:
        return "shared anonymous"
    if status & _FILE_SHARED:
        return "shared file"
    if status & _FILE_PRIVATE:
        name = os.path.basename(path or "")
        return "shared libraries" if ".so" in name else "file-backed"
    return "anonymous"


def _loader(images_dir: Path):
    """load(name) -> the entries of one image file (pycriu's decoders)."""
    import pycriu

    def load(name: str) -> list[dict]:
        with open(images_dir / name, "rb") as f:
            return pycriu.images.load(f)["entries"]
    return load


def _file_names(load, root: str | None) -> dict[int, str]:
    """{file id: path} of the regular files the images name, ``root`` (the sandbox
    root the dump saw them under) stripped."""
    files: dict[int, str] = {}
    for entry in load("files.img"):
        reg = entry.get("reg")
        if reg:
            name = reg.get("name", "")
            if root and name.startswith(root.rstrip("/") + "/"):
                name = name[len(root.rstrip("/")):]
            files[entry["id"]] = name
    return files


def inspect_images(images_dir: Path, *, top: int = 8, tmp_archive: str | None = None,
                   root: str | None = None) -> ImageReport:
    """``tmp_archive``: the name of the archive of /tmp next to the images, if any
    (sandbox/mountns.py's TMP_ARCHIVE); ``root``: the sandbox root to strip from
    the paths of files (sandbox/mountns.py's SANDBOX_ROOT)."""
    load = _loader(images_dir)
    files = _file_names(load, root)
    report = ImageReport()
    mappings: list[dict[str, Any]] = []
    for item in load("pstree.img"):
        pid = item["pid"]
        core = load(f"core-{pid}.img")[0]
        mm = load(f"mm-{pid}.img")[0]
        pages_file, runs = _runs(images_dir, pid, load)   # (vaddr, end, file offset)
        argv = _read_range(pages_file, runs, mm["mm_arg_start"], mm["mm_arg_end"])
        report.processes.append({
            "pid": pid, "ppid": item.get("ppid", 0), "threads": len(item.get("threads", [])),
            "comm": core["tc"]["comm"],
            "argv": [a.decode("utf-8", "replace") for a in argv.split(b"\0") if a],
            "exe": files.get(mm.get("exe_file_id", -1), ""),
        })
        for vma in mm["vmas"]:
            start, end = vma["start"], vma["end"]
            path = files.get(vma.get("shmid", -1)) if vma["status"] & (
                _FILE_PRIVATE | _FILE_SHARED) else None
            dumped = sum(max(0, min(end, r_end) - max(start, r_start))
                         for r_start, r_end, _ in runs)
            kind = _kind(vma, path)
            bucket = report.memory.setdefault(kind, {"mapped": 0, "dumped": 0})
            bucket["mapped"] += end - start
            bucket["dumped"] += dumped
            mappings.append({"pid": pid, "start": hex(start), "kind": kind, "path": path or "",
                             "mapped": end - start, "dumped": dumped})
    report.largest = sorted(mappings, key=lambda m: -m["dumped"])[:top]
    for image in sorted(images_dir.iterdir()):
        if image.is_file() and not image.name.startswith("."):   # not the L1's .hotset
            report.image_files[image.name] = image.stat().st_size
    tmp = images_dir / tmp_archive if tmp_archive else None
    if tmp is not None and tmp.exists():
        with tarfile.open(tmp) as tar:
            for m in tar.getmembers():
                name = m.name[2:] if m.name.startswith("./") else m.name.lstrip("/")
                if name in ("", "."):
                    continue
                report.tmp_files.append({
                    "path": "/tmp/" + name, "bytes": m.size,
                    "type": "dir" if m.isdir() else "link" if m.issym() else "file"})
    return report


def _read_range(pages_file: Path, runs: list[tuple[int, int, int]], start: int,
                end: int) -> bytes:
    """The dumped bytes of [start, end) (argv), or b"" where they were not dumped."""
    out = bytearray()
    with open(pages_file, "rb") as f:
        addr = start
        while addr < end:
            run = next((r for r in runs if r[0] <= addr < r[1]), None)
            if run is None:
                break
            take = min(end, run[1]) - addr
            f.seek(run[2] + addr - run[0])
            out += f.read(take)
            addr += take
    return bytes(out)


def _runs(images_dir: Path, pid: int, load) -> tuple[Path, list[tuple[int, int, int]]]:
    pagemap = load(f"pagemap-{pid}.img")
    runs, offset = [], 0
    for run in pagemap[1:]:
        size = run["nr_pages"] * PAGE
        if run.get("flags", _PE_PRESENT) & _PE_PRESENT:
            runs.append((run["vaddr"], run["vaddr"] + size, offset))
            offset += size
    return images_dir / f"pages-{pagemap[0]['pages_id']}.img", runs


def page_diff(dir_a: Path, dir_b: Path) -> dict[str, int]:
    """Bytes of dumped memory that differ between two images of the same function
    (two independent inits), by memory kind: pages at the same address with other
    contents, or dumped in one image only. Publishes are deterministic (no ASLR, a
    fixed hash seed), so what differs came from randomness, the clock or the pids."""
    import mmap

    load_a, load_b = _loader(dir_a), _loader(dir_b)
    files = _file_names(load_a, None)
    out: dict[str, int] = {}
    pids_b = {item["pid"] for item in load_b("pstree.img")}
    for item in load_a("pstree.img"):
        pid = item["pid"]
        if pid not in pids_b:
            continue
        pages_a, runs_a = _runs(dir_a, pid, load_a)
        pages_b, runs_b = _runs(dir_b, pid, load_b)
        where_b = {}
        for start, end, offset in runs_b:
            for addr in range(start, end, PAGE):
                where_b[addr] = offset + addr - start
        vmas = load_a(f"mm-{pid}.img")[0]["vmas"]
        with open(pages_a, "rb") as fa, open(pages_b, "rb") as fb:
            ma = mmap.mmap(fa.fileno(), 0, prot=mmap.PROT_READ) if runs_a else None
            mb = mmap.mmap(fb.fileno(), 0, prot=mmap.PROT_READ) if runs_b else None
            try:
                for vma in vmas:
                    path = files.get(vma.get("shmid", -1)) if vma["status"] & (
                        _FILE_PRIVATE | _FILE_SHARED) else None
                    kind = _kind(vma, path)
                    for start, end, offset in runs_a:
                        lo, hi = max(start, vma["start"]), min(end, vma["end"])
                        for addr in range(lo, hi, PAGE):
                            a_off = offset + addr - start
                            b_off = where_b.get(addr)
                            if (b_off is None or mb is None or ma is None
                                    or ma[a_off:a_off + PAGE] != mb[b_off:b_off + PAGE]):
                                out[kind] = out.get(kind, 0) + PAGE
            finally:
                for m in (ma, mb):
                    if m is not None:
                        m.close()
    return out
