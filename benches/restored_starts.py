"""Restored starts of a one-shot manager (as the CLI runs them): p50 of restored-l1
and restored-l2 for benches/functions hello and data, nothing else.

Usage: .venv/bin/python benches/restored_starts.py [LABEL] [--n N]

A quick A/B tool for changes on the restore path: run it on two commits, alternating,
in one window (the machine is shared and noisy). ``make bench`` is the full suite.
Uses a private SNAPSTART_HOME / SNAPSTART_SHM, removed afterwards.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("label", nargs="?", default="")
    ap.add_argument("--n", type=int, default=15)
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="snapstart-rs-", dir="/tmp")
    os.chmod(base, 0o711)
    shm = f"/dev/shm/snapstart-rs-{os.getpid()}"
    os.environ.update(SNAPSTART_HOME=base + "/home", SNAPSTART_SHM=shm)
    from snapstart.config import FunctionConfig
    from snapstart.manager import Manager

    out = []
    try:
        with Manager(keep_warm=False) as m:
            for name in ("hello", "data"):
                m.publish(ROOT / "benches/functions" / name,
                          FunctionConfig(name=name, handler="app.handler", timeout_s=30))
                for label, before in (("l1", None), ("l2", m.store.clear_l1)):
                    m.invoke(name, b"{}", force_new=True)          # warm-up, discarded
                    samples = []
                    for _ in range(args.n):
                        if before:
                            before()
                        t = time.perf_counter()
                        result = m.invoke(name, b"{}", force_new=True)
                        samples.append((time.perf_counter() - t) * 1000)
                        assert result.start_type == "restored", result.notes
                    out.append(f"{name} {label} p50 {statistics.median(samples):.1f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    print(args.label, " | ".join(out))


if __name__ == "__main__":
    main()
