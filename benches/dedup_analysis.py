"""How much two snapshots of one function share, per page and per chunking choice.

Usage: .venv/bin/python benches/dedup_analysis.py [--one-line-change]
Publishes tests/functions/hello twice the way `snapstart publish` does (ASLR off, one
hash seed), optionally changing one line of handler code in between, then reports the
fraction of 4 KiB pages of the second dump present in the first, and the compressed
bytes shared under several content-defined chunking parameters (the store's default is
min 4 / max 64 pages, mask 15). Everything is created in temporary dirs and removed.
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import zstandard

from snapstart.checkpoint.criu import Criu
from snapstart.config import FunctionConfig, Settings
from snapstart.runtimes import runtime_spec
from snapstart.sandbox.sandbox import Sandbox

PAGE = 4096
ROOT = Path(__file__).resolve().parent.parent


def cuts(data: bytes, minp: int, maxp: int, mask: int) -> list[bytes]:
    out, start, n = [], 0, len(data)
    while start < n:
        end, b = None, start + minp * PAGE
        while b <= min(n, start + maxp * PAGE):
            if zlib.crc32(data[b - PAGE:b]) & mask == 0:
                end = b
                break
            b += PAGE
        end = end or min(n, start + maxp * PAGE)
        out.append(data[start:end])
        start = end
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one-line-change", action="store_true")
    args = ap.parse_args()
    ctypes.CDLL(None).prctl(36, 1)   # child subreaper, as the manager is
    tmp = Path(tempfile.mkdtemp(prefix="snapstart-dedup-", dir="/tmp"))
    shm = Path(tempfile.mkdtemp(prefix="snapstart-dedup-", dir="/dev/shm"))
    try:
        os.chmod(tmp, 0o755)
        code = tmp / "code"
        shutil.copytree(ROOT / "tests/functions/hello", code)
        os.chmod(code, 0o755)
        settings = Settings.from_env()
        cfg = FunctionConfig(name="dedup", handler="app.handler")
        criu = Criu(settings.criu)
        dumps = []
        for i in range(2):
            if i == 1 and args.one_line_change:
                app = code / "app.py"
                app.write_text(app.read_text().replace("init ran", "init ran (v2)"))
            spec = runtime_spec(cfg, settings, identity=settings.uid_range[:1] * 2, code_dir=code,
                                packages_dir=None, version="1",
                                snap_start=True, hash_seed=12345)
            sb = Sandbox.spawn(spec, deterministic=True, hash_seed=12345)
            sb.wait_init(30)
            sb.checkpoint(criu, shm / f"img{i}", shm / f"work{i}")
            dumps.append(shm / f"img{i}")
        first = {hashlib.sha1(d[i:i + PAGE]).digest()
                 for f in dumps[0].iterdir() for d in [f.read_bytes()]
                 for i in range(0, len(d), PAGE)}
        total = same = 0
        for f in dumps[1].iterdir():
            if f.name.startswith("pages-"):
                d = f.read_bytes()
                for i in range(0, len(d), PAGE):
                    total += 1
                    same += hashlib.sha1(d[i:i + PAGE]).digest() in first
        print(f"pages of the second dump present in the first: {100 * same / total:.0f} % "
              f"({same}/{total})")
        cctx = zstandard.ZstdCompressor(level=3)
        for minp, maxp, mask in [(4, 64, 15), (2, 32, 7), (1, 16, 3), (1, 8, 1), (1, 1, 0)]:
            have = {hashlib.sha256(c).digest() for f in dumps[0].iterdir()
                    for c in cuts(f.read_bytes(), minp, maxp, mask)}
            stored = shared = chunks = 0
            for f in dumps[1].iterdir():
                for c in cuts(f.read_bytes(), minp, maxp, mask):
                    z = len(cctx.compress(c))
                    stored += z
                    chunks += 1
                    shared += z if hashlib.sha256(c).digest() in have else 0
            print(f"chunks min {minp} max {maxp} pages mask {mask:2}: {chunks:5} chunks, "
                  f"{stored / 2**20:.2f} MiB, shared {100 * shared / stored:.0f} %")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
