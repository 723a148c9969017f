"""Which capabilities snapstart needs, measured (the list 20-daemonset.yaml explains).

For each capability root has, drop it from the bounding set (capsh) and run, in a
fresh SNAPSTART_HOME and SNAPSTART_SHM: publish examples/hello, a restored start, a
cold start, a publish and a restored start with --egress. A capability is needed
when any of them fails, falls back to cold, or hangs (killed after --timeout).
Then everything runs again with only the needed ones, to show they suffice.

Needs root, `make` (CRIU, snapinit, the agent) and capsh (Debian: libcap2-bin).
Runs real sandboxes; takes a few minutes. From the checkout:

    .venv/bin/python deploy/kubernetes/capability-probe.py

What it does not cover: Node and provided runtimes, `snapstart check`, the
Invoke API server itself, cgroup v2 hosts (it creates cgroups on whatever this host
has) and the favordynmods mount when this boot already has it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("publish", "restored", "cold", "publish-egress", "restored-egress")


def run_steps(home: str, shm: str) -> dict[str, str]:
    """The child: one line of JSON, {step: "ok" | what went wrong}."""
    sys.path.insert(0, str(ROOT))
    from snapstart import FunctionConfig, Manager
    from snapstart.config import Settings

    code = str(ROOT / "examples" / "hello")
    out: dict[str, str] = {}
    settings = Settings.from_env({"SNAPSTART_HOME": home, "SNAPSTART_SHM": shm})

    def publish(name: str, **kw) -> str:
        manager.publish(code, FunctionConfig(name=name, handler="app.handler", **kw))
        return "ok"

    def start(name: str, expected: str, **kw) -> str:
        got = manager.invoke(name, b"{}", **kw).start_type
        return "ok" if got == expected else f"started {got}, not {expected}"

    with Manager(settings) as manager:
        steps = {
            "publish": lambda: publish("hello"),
            "restored": lambda: start("hello", "restored"),
            "cold": lambda: start("hello", "cold", no_snapshot=True, force_new=True),
            "publish-egress": lambda: publish("egress", egress=True),
            "restored-egress": lambda: start("egress", "restored"),
        }
        for step in STEPS:
            try:
                out[step] = steps[step]()
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                out[step] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            print(json.dumps({step: out[step]}), flush=True)
    return out


def probe(drop: list[str], timeout_s: float) -> dict[str, str]:
    """Run the steps in a child whose bounding set lacks ``drop``."""
    home = tempfile.mkdtemp(prefix="snapstart-capprobe-home-")
    shm = tempfile.mkdtemp(prefix="snapstart-capprobe-shm-", dir="/dev/shm")
    child = f"exec {sys.executable} {Path(__file__).resolve()} --child {home} {shm}"
    argv = ["capsh", f"--drop={','.join(drop)}", "--", "-c", child] if drop else \
        ["sh", "-c", child]
    results: dict[str, str] = {}
    missing = "not run (the child failed)"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        lines = proc.stdout
        if proc.returncode:
            missing = f"not run (the child exited {proc.returncode}: {proc.stderr[-200:]})"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout
        lines = out.decode() if isinstance(out, bytes) else (out or "")
        missing = f"hung (killed after {timeout_s:.0f} s)"
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    for line in lines.splitlines():
        if line.startswith("{"):
            results.update(json.loads(line))
    for step in STEPS:
        results.setdefault(step, missing)
    return results


def held_capabilities() -> list[str]:
    with open("/proc/self/status") as f:
        bnd = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    decoded = subprocess.run(["capsh", f"--decode={bnd:x}"], capture_output=True,
                             text=True, check=True).stdout
    return decoded.strip().split("=", 1)[1].split(",")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("HOME", "SHM"), help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=90.0,
                        help="seconds before a run counts as hung (default 90)")
    args = parser.parse_args()
    if args.child:
        run_steps(*args.child)
        return
    if not shutil.which("capsh"):
        sys.exit("capsh not found (Debian: apt-get install libcap2-bin)")
    held = held_capabilities()
    baseline = probe([], args.timeout)
    if any(v != "ok" for v in baseline.values()):
        sys.exit(f"the steps fail with every capability: {baseline}")
    needed = []
    for cap in held:
        result = probe([cap], args.timeout)
        failed = {k: v for k, v in result.items() if v != "ok"}
        if failed:
            needed.append(cap)
        print(f"{cap:24} {'NEEDED ' + json.dumps(failed) if failed else 'not needed'}",
              flush=True)
    only = probe([c for c in held if c not in needed], args.timeout)
    ok = all(v == "ok" for v in only.values())
    print(f"needed: {' '.join(c.removeprefix('cap_').upper() for c in needed)}")
    print(f"with only those: {'all steps ok' if ok else json.dumps(only)}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
