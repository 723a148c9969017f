"""Where a restored start's time goes: a timeline of Manager.invoke(force_new=True).

Usage: .venv/bin/python benches/restore_timeline.py [--slots N] [--n N] [--egress]
Prints the p50 of each step (manifest check, L1 materialize, slot preparation and its
isolation layers -- network namespace, cgroup, mount namespace + criu swrk fork --,
egress veth, CRIU restore RPC, resume + first invoke) and of the whole call, then the
isolation layers alone (no fork): a network namespace, a mount namespace with the
private /tmp and masked dirs. Uses tests/functions/errors
(a stdlib no-op handler) in a temporary SNAPSTART_HOME, removed afterwards.
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", type=int, default=2, help="prepared restore slots")
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--egress", action="store_true", help="publish with egress (veth)")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="snapstart-tl-", dir="/tmp")
    os.chmod(base, 0o711)
    shm = f"/dev/shm/snapstart-tl-{os.getpid()}"
    os.environ.update(SNAPSTART_HOME=base + "/home", SNAPSTART_SHM=shm)
    import snapstart.checkpoint.criu as cr
    import snapstart.manager.manager as mm
    import snapstart.sandbox.mountns as mns
    import snapstart.sandbox.sandbox as sbm
    from snapstart.config import FunctionConfig
    from snapstart.manager import Manager

    steps: dict[str, list[float]] = collections.defaultdict(list)

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
    try:
        store = type(m.store)
        wrap(store, "manifest", "manifest (verify HMAC)")
        wrap(store, "materialize", "materialize (L1 hit)")
        wrap(sbm.RestoreSlot, "prepare", "slot prepare")
        wrap(sbm, "new_netns", "  netns")
        wrap(sbm.Cgroup, "create", "  cgroup create")
        wrap(sbm.Cgroup, "add", "  cgroup add (migrate)")
        wrap(mns, "run_in_new", "  mount ns + swrk fork")
        wrap(sbm, "add_egress", "egress veth")
        wrap(mm.Manager, "_take_slot", "take slot")
        wrap(sbm, "reseed_crng", "CRNG reseed")
        wrap(cr.Criu, "restore_with", "CRIU restore RPC")
        wrap(sbm.Sandbox, "invoke", "resume + first invoke")
        m.publish(ROOT / "tests/functions/errors",
                  FunctionConfig(name="tl", handler="app.handler", egress=args.egress))
        m.invoke("tl", b"{}", force_new=True)
        time.sleep(0.5)
        steps.clear()
        total = []
        for _ in range(args.n):
            t = time.perf_counter()
            m.invoke("tl", b'{"action": "none"}', force_new=True)
            total.append((time.perf_counter() - t) * 1000)
            with m._lock:
                idle = [s for v in m._idle.values() for s in v]
                m._idle.clear()
            for s in idle:
                m._untrack(s)
            time.sleep(0.2)   # an idle gap, as between requests (lets slots refill)
        print(f"restored start, slots={args.slots}: total p50 {statistics.median(total):.1f} ms")
        for label, values in steps.items():
            print(f"  {label:24} p50 {statistics.median(values):6.2f} ms  (n={len(values)})")
        alone = collections.defaultdict(list)
        tmp = m._tmp
        for _ in range(args.n):
            t = time.perf_counter()
            ns = sbm.new_netns()
            alone["netns"].append((time.perf_counter() - t) * 1000)
            ns.close()
            t = time.perf_counter()
            mns.run_in_new(tmp, lambda: None)
            alone["mount ns (/tmp + masks)"].append((time.perf_counter() - t) * 1000)
        print("isolation layers alone (no fork):")
        for label, values in alone.items():
            print(f"  {label:24} p50 {statistics.median(values):6.2f} ms  (n={len(values)})")
    finally:
        m.close()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
