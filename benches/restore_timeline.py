"""Where a restored start's time goes: a timeline of Manager.invoke(force_new=True).

Usage: .venv/bin/python benches/restore_timeline.py [--slots N] [--n N] [--egress]
                                                    [--function DIR] [--copy-pages]
Prints the p50 of

- each host-side step: manifest check, L1 materialize, mounting the function's code
  into the prepared root, CRNG reseed, the CRIU restore RPC, resume + first invoke;
  slot preparation (off the path with prepared slots) and its layers: network
  namespace, cgroup, mount namespace + sandbox root + snapinit + ``criu swrk`` fork,
  cgroup migration; the egress veth;
- CRIU's own phases inside the restore RPC (benches/criu_phases.py: CRIU runs at -v4
  for this, which adds ~1 ms), and CRIU's restore_time (its stats file);
- the isolation layers alone: a network namespace, a mount namespace with the
  sandbox root.

The function (default tests/functions/errors, a stdlib no-op handler) is published
in a temporary SNAPSTART_HOME, removed afterwards. ``--copy-pages`` restores by
copying page images instead of mapping them (for A/B runs).
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))

from criu_phases import phases  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", type=int, default=2, help="prepared restore slots")
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--egress", action="store_true", help="publish with egress (veth)")
    ap.add_argument("--function", default=str(ROOT / "tests/functions/errors"))
    ap.add_argument("--copy-pages", action="store_true", help="copy page images (no mmap)")
    ap.add_argument("--gap", type=float, default=0.2, help="idle seconds between starts")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="snapstart-tl-", dir="/tmp")
    shm = f"/dev/shm/snapstart-tl-{os.getpid()}"
    os.environ.update(SNAPSTART_HOME=base + "/home", SNAPSTART_SHM=shm)
    import snapstart.checkpoint.criu as cr
    import snapstart.sandbox.mountns as mns
    import snapstart.sandbox.sandbox as sbm
    from snapstart.config import FunctionConfig
    from snapstart.manager import Manager

    steps: dict[str, list[float]] = collections.defaultdict(list)
    crius: list[dict[str, float]] = []

    def wrap(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                steps[label].append((time.perf_counter() - t) * 1000)
        setattr(owner, name, timed)

    m = Manager(restore_slots=args.slots)
    m.criu.log_level = 4
    m.criu.map_pages = not args.copy_pages
    try:
        store = type(m.store)
        wrap(store, "materialized", "manifest + L1 (verify, hit)")
        wrap(sbm.RestoreSlot, "prepare", "slot prepare")
        wrap(sbm, "new_netns", "  netns")
        wrap(sbm.Cgroup, "create", "  cgroup create")
        wrap(sbm.Cgroup, "add", "  cgroup add (migrate)")
        wrap(mns, "run_in_new", "  mount ns + root + init + swrk")
        wrap(sbm.InitProcess, "start", "    snapinit (pid ns, /proc)")
        wrap(sbm, "add_egress", "egress veth")
        wrap(type(m.slots), "take", "take slot")
        wrap(mns, "attach_task", "mount /var/task")
        wrap(sbm, "reseed_crng", "CRNG reseed")
        wrap(cr.Criu, "restore_with", "CRIU restore RPC")
        wrap(sbm.Sandbox, "invoke", "resume + first invoke")
        restore_with = cr.Criu.restore_with      # the timed one: logs are read outside it
        logs: list[tuple[str, float | None]] = []

        def restore_and_log(self, worker, images_dir, **kw):
            try:
                return restore_with(self, worker, images_dir, **kw)
            finally:
                stat = None
                try:
                    from pycriu import images
                    with open(worker.work_dir / "stats-restore", "rb") as f:
                        stat = images.load(f)["entries"][0]["restore"]["restore_time"] / 1000
                except (OSError, KeyError, IndexError):
                    pass
                try:
                    logs.append(((worker.work_dir / "restore.log").read_text(errors="replace"),
                                 stat))
                except OSError:
                    pass
        cr.Criu.restore_with = restore_and_log
        m.publish(Path(args.function),
                  FunctionConfig(name="tl", handler="app.handler", egress=args.egress))
        m.invoke("tl", b"{}", force_new=True)
        time.sleep(0.5)
        steps.clear()
        logs.clear()
        total = []
        for _ in range(args.n):
            t = time.perf_counter()
            m.invoke("tl", b'{"action": "none"}', force_new=True)
            total.append((time.perf_counter() - t) * 1000)
            m.clones.discard_idle()
            time.sleep(args.gap)   # an idle gap, as between requests (lets slots refill)
        mode = "copied" if args.copy_pages else "mapped"
        print(f"restored start, slots={args.slots}, pages {mode}: total p50 "
              f"{statistics.median(total):.1f} ms (n={len(total)})")
        for label, values in steps.items():
            print(f"  {label:32} p50 {statistics.median(values):6.2f} ms  (n={len(values)})")
        for text, stat in logs:
            crius.append(phases(text))
            if stat is not None:
                crius[-1]["CRIU restore_time (stats)"] = stat
        if crius:
            print("CRIU's phases inside the restore RPC (CRIU log, -v4):")
            for key in crius[0]:
                values = [c[key] for c in crius if key in c]
                print(f"  {key:32} p50 {statistics.median(values):6.2f} ms  (n={len(values)})")
        alone = collections.defaultdict(list)
        fs = mns.SandboxFs()
        for _ in range(args.n):
            t = time.perf_counter()
            ns = sbm.new_netns()
            alone["netns"].append((time.perf_counter() - t) * 1000)
            ns.close()
            t = time.perf_counter()
            mns.run_in_new(fs, lambda: None)
            alone["mount ns + sandbox root"].append((time.perf_counter() - t) * 1000)
        print("isolation layers alone (no fork):")
        for label, values in alone.items():
            print(f"  {label:32} p50 {statistics.median(values):6.2f} ms  (n={len(values)})")
    finally:
        m.close()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
