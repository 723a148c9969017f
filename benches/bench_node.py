#!/usr/bin/env python3
"""Node.js start latency: cold vs restored vs warm, and snapshot size.

    sudo .venv/bin/python benches/bench_node.py [--n 10] [--function DIR --handler H]

Publishes one Node.js function (default: a trivial ``index.handler`` written into the
private home; ``--function tests/functions/node-hello`` for the test function) into
a private SNAPSTART_HOME / SNAPSTART_SHM and measures, from this process, the wall
clock of ``Manager.invoke`` (request in -> response out) for

    cold       invoke(no_snapshot=True, force_new=True): new sandbox, node + ric init
    restored   invoke(force_new=True): CRIU restore of the snapshot (on tmpfs, L1)
               into a fresh netns, resume, first event (after-restore phase included)
    warm       invoke() on the live clone

``--n`` of each, interleaved per round. Prints one JSON line per sample
({"function", "runtime", "start_type", "wall_ms", ...}) and a summary table of
medians. No assertions on timings. Needs root, CRIU and `make node-ric`; removes
everything it created.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRIVIAL = "exports.handler = async (event) => ({ ok: true, event });\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--function", type=Path, default=None)
    ap.add_argument("--handler", default="index.handler")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="snapstart-bench-node-", dir="/tmp"))
    os.chmod(base, 0o711)
    shm = Path("/dev/shm") / f"snapstart-bench-node-{uuid.uuid4().hex[:10]}"
    os.environ["SNAPSTART_HOME"] = str(base / "home")
    os.environ["SNAPSTART_SHM"] = str(shm)

    from snapstart.config import FunctionConfig, Settings
    from snapstart.manager import Manager

    code = args.function
    if code is None:
        code = base / "fn"
        code.mkdir()
        (code / "index.js").write_text(TRIVIAL)
        code.chmod(0o755)
    name = "bench-node"
    label = code.name if args.function else "trivial"
    samples: list[dict] = []
    mgr = Manager(Settings.from_env())
    try:
        pub = mgr.publish(code, FunctionConfig(name=name, handler=args.handler, runtime="node"))
        print(json.dumps({"function": label, "runtime": "node", "publish": pub.to_dict()}))
        mgr.invoke(name, force_new=True)              # materialize the snapshot (L1), warm up
        for _ in range(args.n):
            for start_type, kw in (("cold", {"no_snapshot": True, "force_new": True}),
                                   ("restored", {"force_new": True}),
                                   ("warm", {})):
                t0 = time.perf_counter()
                result = mgr.invoke(name, b'{"bench": true}', **kw)
                wall = (time.perf_counter() - t0) * 1000
                assert result.function_error is None, result.payload
                row = {"function": label, "runtime": "node", "arch": platform.machine(),
                       "start_type": start_type, "observed": result.start_type,
                       "wall_ms": round(wall, 3), "duration_ms": round(result.duration_ms, 3),
                       "init_ms": result.init_duration_ms and round(result.init_duration_ms, 3),
                       "restore_ms": result.restore_duration_ms
                       and round(result.restore_duration_ms, 3)}
                samples.append(row)
                print(json.dumps(row))
    finally:
        mgr.close()
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)

    print(f"\n{label} (node {platform.machine()}), n={args.n}, medians, wall clock via Manager:")
    print("| start type | wall ms | init or restore ms (Manager) |")
    print("|---|---|---|")
    for start_type in ("cold", "restored", "warm"):
        rows = [s for s in samples if s["start_type"] == start_type]
        wall = statistics.median(s["wall_ms"] for s in rows)
        extra = statistics.median((s["init_ms"] or s["restore_ms"] or 0) for s in rows)
        print(f"| {start_type} | {wall:.1f} | {extra:.1f} |")
    print(f"image: {pub.image_bytes / 2**20:.1f} MiB raw CRIU, "
          f"{pub.stored_bytes / 2**20:.1f} MiB stored; init {pub.init_duration_ms:.0f} ms, "
          f"dump {pub.dump_duration_ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
