#!/usr/bin/env python3
"""snapstart benchmark suite (issue 5): start latency of restored clones vs. peers.

    python benches/run.py [--n N] [--functions hello,data,web] [--model-sizes 100,200,400]
                          [--out DIR]

For each function in benches/functions/ it publishes one version into a private
SNAPSTART_HOME / SNAPSTART_SHM and measures, from this process, the wall clock of
"request sent -> response received" around each call, on a manager configured as
`snapstart serve` runs one (two prepared restore slots; each restored start after
a 50 ms idle gap, so slots refill; bursts measure back-to-back restores):

    cold          Manager.invoke(no_snapshot=True, force_new=True)
    restored-l1   Manager.invoke(force_new=True), snapshot already on tmpfs (L1)
    restored-l2   store.clear_l1() first, then Manager.invoke(force_new=True)
    restored-pool a clone restored ahead of demand (restore_ahead=1), resumed for the
                  request: its own start type, never mixed into restored-l1
    cli-restored  the one-shot CLI, `snapstart invoke NAME --json` (what `make demo`
                  shows): its own request -> response (``invoke_ms``: restore and
                  invoke, and what of its restore slot -- prepared from the
                  process's start -- was not ready yet; not Python's start);
                  process wall time reported beside it
    warm          Manager.invoke() on a live clone (and through `snapstart serve`
                  when that command exists: start type ``warm-serve``)

and ``model`` (benches/functions/model) at 100, 200 and 400 MB of init-time data:
cold and restored-l1, to show that restoring by mapping page images stays flat.

and the peers on the same machine in the same run:

    rie          the AWS Lambda Runtime Interface Emulator + awslambdaric
                 (``rie-cold``: process start -> first response; ``rie-warm``)
    zygote       a SOCK-style fork server (peers/zygote.py): fork, unshare(NET|PID),
                 fork, handle, reply over a pipe
    process      a new ``python -c`` that imports the handler and runs it once

plus bursts of 1/4/8/16 simultaneous first invokes of a freshly published version
(Manager.invoke_clones), restores per second, and RSS/PSS per idle clone (and the
PSS of a clone in the biggest burst over a lone one's: pages mapped from one
snapshot are shared).

Results are data with dimensions (function, start type, via, arch): JSON, a Markdown
report and PNG plots in --out (report.py). Progress goes to stderr. There are no
assertions on timings here or in the smoke test.

This module must not change snapstart's behaviour: it only drives the public
Manager / store API (plus the manager's idle pool, read-only, to find the processes
of idle clones for the memory figures). Everything it creates -- sandboxes, the
private home, the tmpfs directory, peer processes -- is removed before it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCHES))

from report import write_reports  # noqa: E402  (benches/report.py)
from snapstart.config import FunctionConfig, Settings  # noqa: E402

FUNCTIONS = BENCHES / "functions"
CACHE = BENCHES / ".cache"
EVENTS = BENCHES / "events"
PY = sys.executable
BURST_SIZES = (1, 4, 8, 16)
START_TYPES = ("cold", "restored-l1", "restored-l2", "restored-pool", "cli-restored", "warm")
MODEL_SIZES = (100, 200, 400)
PEERS = ("rie-cold", "rie-warm", "zygote", "process")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentile(sorted_xs: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_xs) == 1:
        return sorted_xs[0]
    pos = (len(sorted_xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def summarize(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"min": None, "p50": None, "p90": None, "p99": None, "mean": None}
    xs = sorted(samples)
    return {"min": round(xs[0], 3), "p50": round(percentile(xs, 0.5), 3),
            "p90": round(percentile(xs, 0.9), 3), "p99": round(percentile(xs, 0.99), 3),
            "mean": round(sum(xs) / len(xs), 3)}


# ---- host facts ------------------------------------------------------------------
def host_facts(settings: Settings, n: int) -> dict[str, Any]:
    cpu = os.environ.get("BENCH_CPU_MODEL") or "unknown"   # set by benches/arm64 (QEMU)
    with suppress(OSError):
        parts: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":")[0].strip().lower()
            if key in ("model name", "cpu model", "hardware") and ":" in line:
                if cpu == "unknown":
                    cpu = line.split(":", 1)[1].strip()
                break
            if key in ("cpu implementer", "cpu part") and ":" in line:   # arm64
                parts.setdefault(key, line.split(":", 1)[1].strip())
        if cpu == "unknown" and parts:
            cpu = f"arm64 implementer {parts.get('cpu implementer')} part {parts.get('cpu part')}"
    criu = "unknown"
    with suppress(Exception):
        from snapstart.checkpoint.criu import Criu
        criu = Criu(settings.criu).version()
    emulated = os.environ.get("BENCH_EMULATED", "") in ("1", "true", "yes")
    arch = platform.machine()
    return {"arch": arch, "arch_label": os.environ.get("BENCH_ARCH_LABEL") or
            (f"{arch} (emulated)" if emulated else arch),
            "cpu_model": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "criu_version": criu, "python_version": platform.python_version(),
            "emulated": emulated, "n": n,
            # the host is shared: load at start/end says how quiet the run was
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


# ---- functions and events --------------------------------------------------------
def web_event() -> bytes:
    """An API Gateway aws-proxy event for POST /orders (from `sam local generate-event`
    when the sam CLI is installed in benches/.cache/sam-venv, else the checked-in one)."""
    fixture = EVENTS / "apigateway-aws-proxy-orders.json"
    sam = CACHE / "sam-venv" / "bin" / "sam"
    if sam.exists():
        body = json.dumps({"item": "book", "quantity": 2, "price_cents": 1250})
        with suppress(subprocess.SubprocessError, OSError, ValueError):
            proc = subprocess.run([str(sam), "local", "generate-event", "apigateway",
                                   "aws-proxy", "--method", "POST", "--path", "orders",
                                   "--body", body], capture_output=True, timeout=60,
                                  env={**os.environ, "SAM_CLI_TELEMETRY": "0"})
            if proc.returncode == 0:
                json.loads(proc.stdout)   # as generated (body base64, path /orders)
                return proc.stdout
    return fixture.read_bytes()


def payload_for(name: str) -> bytes:
    if name == "web":
        return web_event()
    if name == "data":
        return b'{"rows": 200}'
    return b'{"name": "bench"}'


def check_response(name: str, payload: bytes) -> str | None:
    """None when a response looks right, else a short reason (counted as an error)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return "response is not JSON"
    if isinstance(data, dict) and "errorType" in data:
        return f"{data['errorType']}: {str(data.get('errorMessage'))[:120]}"
    if name == "web" and not (isinstance(data, dict) and data.get("statusCode") == 200):
        return f"web: unexpected response {str(data)[:120]}"
    return None


# ---- measurement helpers ---------------------------------------------------------
class Series:
    """Samples of one (function, start type, via) case."""

    def __init__(self, function: str, start_type: str, via: str) -> None:
        self.function, self.start_type, self.via = function, start_type, via
        self.samples: list[float] = []
        self.reported: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self.notes: list[str] = []

    def add_reported(self, key: str, value: float | None) -> None:
        if value is not None:
            self.reported.setdefault(key, []).append(float(value))

    def to_dict(self) -> dict[str, Any]:
        return {"function": self.function, "start_type": self.start_type, "via": self.via,
                "n": len(self.samples), **summarize(self.samples),
                "samples_ms": [round(x, 3) for x in self.samples],
                "reported_p50_ms": {k: summarize(v)["p50"] for k, v in self.reported.items()},
                "errors": len(self.errors), "error_examples": sorted(set(self.errors))[:3],
                "notes": sorted(set(self.notes))}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def manager_series(fn_name: str, start_type: str, n: int, call: Callable[[], Any],
                   expect: str, before: Callable[[], None] | None = None,
                   gap_s: float = 0.0) -> Series:
    """Run `call` (a Manager.invoke) n times (+1 discarded warm-up); ``before`` runs
    (untimed) ahead of each call, then ``gap_s`` of idle time."""
    s = Series(fn_name, start_type, "manager")
    for i in range(n + 1):
        if before is not None:
            before()
        if gap_s:
            time.sleep(gap_s)
        ms, result = timed(call)
        if i == 0:
            continue
        err = check_response(fn_name, result.payload)
        if err:
            s.errors.append(err)
            continue
        if result.start_type != expect:
            s.errors.append(f"start_type {result.start_type} != {expect}")
            s.notes.extend(result.notes or [])
            continue
        s.samples.append(ms)
        s.add_reported("duration_ms", result.duration_ms)
        s.add_reported("init_duration_ms", result.init_duration_ms)
        s.add_reported("restore_duration_ms", result.restore_duration_ms)
        s.add_reported("max_memory_used_mb", result.max_memory_used_mb)
    log(f"  {fn_name:9} {start_type:13} p50 {summarize(s.samples)['p50']} ms "
        f"({len(s.samples)} ok, {len(s.errors)} errors)")
    return s


def cli_series(fn_name: str, version: str, n: int, env: dict[str, str]) -> Series:
    """The one-shot CLI (`snapstart invoke NAME:VERSION --json`, what `make demo`
    shows): its own request -> response time (``invoke_ms``: the restore included,
    Python's start and imports not), and the whole process in ``reported``."""
    s = Series(fn_name, "cli-restored", "cli")
    exe = str(Path(PY).parent / "snapstart")
    payload = payload_for(fn_name).decode()
    for i in range(n + 1):
        t0 = time.perf_counter()
        proc = subprocess.run([exe, "invoke", f"{fn_name}:{version}", "--payload", payload,
                               "--json"], env=env, capture_output=True, timeout=120)
        wall = (time.perf_counter() - t0) * 1000
        if i == 0:
            continue
        try:
            row = json.loads(proc.stdout)
        except ValueError:
            s.errors.append(proc.stderr.decode(errors="replace").strip()[-160:] or "no output")
            continue
        err = check_response(fn_name, json.dumps(row.get("payload")).encode())
        if err or row.get("start_type") != "restored" or "invoke_ms" not in row:
            s.errors.append(err or f"start_type {row.get('start_type')}")
            s.notes.extend(row.get("notes") or [])
            continue
        s.samples.append(float(row["invoke_ms"]))
        s.add_reported("process_wall_ms", wall)
        s.add_reported("restore_duration_ms", row.get("restore_duration_ms"))
    log(f"  {fn_name:9} {'cli-restored':13} p50 {summarize(s.samples)['p50']} ms "
        f"(process p50 {summarize(s.reported.get('process_wall_ms', []))['p50']} ms)")
    return s


# ---- memory ----------------------------------------------------------------------
def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        with suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with suppress(OSError):
                    todo.extend(int(x) for x in
                                Path(f"/proc/{p}/task/{tid}/children").read_text().split())
    return out


def clone_memory_kib(sandbox: Any) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over the clone's processes (agent + runtime + children)."""
    rss = pss = 0
    pids = set(_descendants(sandbox.pid)) | set(sandbox.runtime_pids())
    for pid in pids:
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


def idle_sandboxes(mgr: Any, name: str, version: str) -> list[Any]:
    return mgr.idle_sandboxes(name, version)


# ---- peers -----------------------------------------------------------------------
def _pythonpath(code: Path, packages: Path | None) -> str:
    return ":".join(str(p) for p in (code, packages) if p is not None)


def peer_process(fn_name: str, code: Path, packages: Path | None, payload: bytes,
                 n: int) -> Series:
    s = Series(fn_name, "process", "peer")
    prog = ("import json,sys,app\n"
            "class C: aws_request_id='0'; function_name='p'; function_version='$LATEST';"
            " memory_limit_in_mb=512; invoked_function_arn='arn'\n"
            "print(json.dumps(app.handler(json.loads(sys.argv[1]), C()), default=str))")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "PYTHONPATH": _pythonpath(code, packages), "PYTHONDONTWRITEBYTECODE": "1"}
    for i in range(n + 1):
        ms, proc = timed(lambda: subprocess.run([PY, "-c", prog, payload.decode()],
                                                cwd=code, env=env, capture_output=True,
                                                timeout=60))
        if i == 0:
            continue
        if proc.returncode != 0:
            s.errors.append(proc.stderr.decode(errors="replace").strip()[-160:])
            continue
        err = check_response(fn_name, proc.stdout)
        if err:
            s.errors.append(err)
        else:
            s.samples.append(ms)
    log(f"  {fn_name:6} {'process':12} p50 {summarize(s.samples)['p50']} ms")
    return s


def peer_zygote(fn_name: str, code: Path, packages: Path | None, payload: bytes,
                n: int) -> Series:
    s = Series(fn_name, "zygote", "peer")
    argv = [PY, str(BENCHES / "peers" / "zygote.py"), str(code)]
    if packages is not None:
        argv.append(str(packages))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=code,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                                 "PYTHONDONTWRITEBYTECODE": "1"})
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            s.errors.append("zygote did not start")
            return s
        line = json.dumps(json.loads(payload)).encode() + b"\n"
        for i in range(n + 1):
            def one() -> bytes:
                proc.stdin.write(line)
                proc.stdin.flush()
                return proc.stdout.readline()
            ms, out = timed(one)
            if i == 0:
                continue
            try:
                reply = json.loads(out)
            except ValueError:
                s.errors.append("zygote: no reply")
                break
            if "error" in reply or reply.get("pid") != 1:
                s.errors.append(f"zygote: {str(reply)[:120]}")
                continue
            err = check_response(fn_name, json.dumps(reply["result"]).encode())
            if err:
                s.errors.append(err)
            else:
                s.samples.append(ms)
    finally:
        with suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log(f"  {fn_name:6} {'zygote':12} p50 {summarize(s.samples)['p50']} ms")
    return s


def rie_binary() -> Path | None:
    arch = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine(), "")
    path = CACHE / f"aws-lambda-rie-{arch}"
    return path if path.exists() and os.access(path, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: bytes, timeout: float) -> bytes:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def peer_rie(fn_name: str, code: Path, packages: Path | None, payload: bytes,
             n: int) -> list[Series]:
    cold, warm = Series(fn_name, "rie-cold", "peer"), Series(fn_name, "rie-warm", "peer")
    binary = rie_binary()
    if binary is None:
        for s in (cold, warm):
            s.notes.append("RIE binary not found in benches/.cache (run `make bench`)")
        return [cold, warm]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp",
           "PYTHONPATH": _pythonpath(code, packages), "PYTHONDONTWRITEBYTECODE": "1",
           "AWS_LAMBDA_FUNCTION_NAME": fn_name, "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1"}

    def start() -> tuple[subprocess.Popen, str]:
        port = _free_port()
        proc = subprocess.Popen([str(binary), "--runtime-interface-emulator-address",
                                 f"127.0.0.1:{port}", PY, "-m", "awslambdaric",
                                 "app.handler"], cwd=code, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        return proc, f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"

    def first_response(url: str, proc: subprocess.Popen) -> bytes:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:   # bounded: until the RIE listens
            try:
                return _post(url, payload, timeout=30)
            except (ConnectionError, urllib.error.URLError) as exc:
                if isinstance(exc, urllib.error.HTTPError) or proc.poll() is not None:
                    raise
                time.sleep(0.001)
        raise TimeoutError("RIE did not answer within 30 s")

    def stop(proc: subprocess.Popen) -> None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()

    for i in range(n + 1):
        t0 = time.perf_counter()
        proc, url = start()
        try:
            out = first_response(url, proc)
            ms = (time.perf_counter() - t0) * 1000
            err = check_response(fn_name, out)
            if i > 0:
                (cold.errors.append(err) if err else cold.samples.append(ms))
            if i == n:   # keep the last one for the warm series
                for j in range(n + 1):
                    wms, wout = timed(lambda: _post(url, payload, timeout=30))
                    werr = check_response(fn_name, wout)
                    if j > 0:
                        (warm.errors.append(werr) if werr else warm.samples.append(wms))
        except Exception as exc:  # a peer failing must not stop the suite
            cold.errors.append(f"{type(exc).__name__}: {exc}"[:160])
        finally:
            stop(proc)
    for s in (cold, warm):
        log(f"  {fn_name:6} {s.start_type:12} p50 {summarize(s.samples)['p50']} ms")
    return [cold, warm]


# ---- `snapstart serve` -----------------------------------------------------------
def serve_available() -> bool:
    exe = Path(PY).parent / "snapstart"
    if not exe.exists():
        return False
    proc = subprocess.run([str(exe), "serve", "--help"], capture_output=True, timeout=60)
    return proc.returncode == 0


def warm_via_serve(fn_name: str, version: int, payload: bytes, n: int,
                   env: dict[str, str]) -> Series:
    """Warm invokes through `snapstart serve` (Invoke API over loopback HTTP)."""
    s = Series(fn_name, "warm-serve", "serve")
    port = _free_port()
    exe = str(Path(PY).parent / "snapstart")
    proc = subprocess.Popen([exe, "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}/2015-03-31/functions/{fn_name}/invocations?Qualifier={version}"
    try:
        deadline = time.monotonic() + 30
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                _post(url, payload, timeout=30)
                ready = True
                break
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.05)
        if not ready:
            s.errors.append("snapstart serve did not answer")
            return s
        for i in range(n + 1):
            ms, out = timed(lambda: _post(url, payload, timeout=30))
            err = check_response(fn_name, out)
            if i > 0:
                (s.errors.append(err) if err else s.samples.append(ms))
    except Exception as exc:
        s.errors.append(f"{type(exc).__name__}: {exc}"[:160])
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    log(f"  {fn_name:6} {'warm-serve':12} p50 {summarize(s.samples)['p50']} ms")
    return s


# ---- the suite -------------------------------------------------------------------
GAP_S = 0.05     # idle time before each restored start (prepared slots refill; bursts
                 # measure back-to-back restores separately)


def bench_function(fn_name: str, settings: Settings, n: int, burst: tuple[int, ...],
                   use_serve: bool, env: dict[str, str], out: dict[str, Any]) -> None:
    from snapstart.manager import Manager

    code = FUNCTIONS / fn_name
    payload = payload_for(fn_name)
    config = FunctionConfig(name=fn_name, handler="app.handler", timeout_s=30.0)
    series: list[Series] = []
    with ExitStack() as stack:
        # a long-running manager as `snapstart serve` runs it: prepared restore slots
        # (no clones restored ahead: that is restored-pool's series)
        mgr = stack.enter_context(Manager(settings, keep_warm=False, restore_slots=2))
        log(f"{fn_name}: publishing (pip installs requirements.txt, if any)")
        ms, pub = timed(lambda: mgr.publish(code, config))
        out["publish"][fn_name] = {**pub.to_dict(), "wall_ms": round(ms, 1)}
        version = str(pub.version)
        log(f"{fn_name}: published v{version} in {ms:.0f} ms "
            f"(image {pub.image_bytes / 2**20:.1f} MiB)")
        packages = mgr.registry.resolve(fn_name, version).packages_dir

        def invoke(m: Any = mgr, **kw: Any) -> Callable[[], Any]:
            return lambda: m.invoke(fn_name, payload, qualifier=version, **kw)

        series.append(manager_series(fn_name, "cold", n,
                                     invoke(no_snapshot=True, force_new=True), "cold"))
        mgr.store.materialize(fn_name, int(version))
        series.append(manager_series(fn_name, "restored-l1", n, invoke(force_new=True),
                                     "restored", gap_s=GAP_S))
        series.append(manager_series(fn_name, "restored-l2", n, invoke(force_new=True),
                                     "restored", before=mgr.store.clear_l1, gap_s=GAP_S))
        with suppress(Exception):   # for the record: L1 contents after the L2 series
            out.setdefault("l1_stats", {})[fn_name] = mgr.store.l1_stats()
        with Manager(settings, keep_warm=False, restore_slots=2, restore_ahead=1) as amgr:
            amgr.invoke(fn_name, payload, qualifier=version, force_new=True)  # noted
            key = (fn_name, version)

            def parked() -> None:
                deadline = time.monotonic() + 30
                while amgr.ahead.parked(key) < 1 and time.monotonic() < deadline:
                    time.sleep(0.005)
            series.append(manager_series(fn_name, "restored-pool", n,
                                         invoke(amgr, force_new=True), "restored-pool",
                                         before=parked, gap_s=GAP_S))
        with Manager(settings, keep_warm=True) as wmgr:
            first = wmgr.invoke(fn_name, payload, qualifier=version, force_new=True)
            s = manager_series(fn_name, "warm", n,
                               lambda: wmgr.invoke(fn_name, payload, qualifier=version),
                               "warm")
            s.notes.append(f"first (restored) invoke before the warm series: "
                           f"{first.start_type}")
            series.append(s)
            sbs = idle_sandboxes(wmgr, fn_name, version)
            if sbs:
                rss, pss = clone_memory_kib(sbs[0])
                out["memory"].append({"function": fn_name, "kind": "warm clone, idle",
                                      "clones": 1, "rss_kib": rss, "pss_kib": pss})
        series.append(cli_series(fn_name, version, max(3, n // 2), env))
        if use_serve:
            series.append(warm_via_serve(fn_name, int(version), payload, n, env))

        # peers, same machine, same run
        series.append(peer_zygote(fn_name, code, packages, payload, n))
        series.append(peer_process(fn_name, code, packages, payload, n))
        series.extend(peer_rie(fn_name, code, packages, payload, n))

        for size in burst:
            out["burst"].append(run_burst(fn_name, code, config, settings, size, payload,
                                          out))
    out["results"].extend(s.to_dict() for s in series)


def bench_model(settings: Settings, n: int, sizes: tuple[int, ...], out: dict[str, Any]) -> None:
    """The ``model`` function at each size (MB filled at init): cold vs restored-l1.
    A restored start maps the page images, so it should stay nearly flat in size."""
    from snapstart.manager import Manager

    code = FUNCTIONS / "model"
    runs = max(3, min(n, 10))
    for mb in sizes:
        name = f"model-{mb}"
        config = FunctionConfig(name=name, handler="app.handler", timeout_s=60.0,
                                memory_mb=max(512, mb + 384),
                                environment={"MODEL_MB": str(mb)})
        payload = b'{"seed": 7}'
        with Manager(settings, keep_warm=False, restore_slots=2) as mgr:
            log(f"{name}: publishing")
            ms, pub = timed(lambda: mgr.publish(code, config))
            out["publish"][name] = {**pub.to_dict(), "wall_ms": round(ms, 1)}
            version = str(pub.version)

            def call(**kw: Any) -> Callable[[], Any]:
                return lambda: mgr.invoke(name, payload, qualifier=version, **kw)
            cold = manager_series(name, "cold", runs, call(no_snapshot=True, force_new=True),
                                  "cold")
            mgr.store.materialize(name, int(version))
            restored = manager_series(name, "restored-l1", runs, call(force_new=True),
                                      "restored", gap_s=GAP_S)
            out["results"].extend([cold.to_dict(), restored.to_dict()])
            mgr.remove_version(name, int(version))


def run_burst(fn_name: str, code: Path, config: FunctionConfig, settings: Settings,
              size: int, payload: bytes, out: dict[str, Any]) -> dict[str, Any]:
    """`size` simultaneous first invokes of a freshly published version."""
    from snapstart.manager import Manager

    with Manager(settings, keep_warm=True) as mgr:
        pub = mgr.publish(code, config)
        version = str(pub.version)
        t0 = time.perf_counter()
        results = mgr.invoke_clones(fn_name, size, payload, qualifier=version)
        completion = (time.perf_counter() - t0) * 1000
        ok = [r for r in results if not isinstance(r, Exception)
              and r.start_type == "restored" and not check_response(fn_name, r.payload)]
        errors = [(f"{type(r).__name__}: {r}" if isinstance(r, Exception) else
                   check_response(fn_name, r.payload) or f"start_type {r.start_type}")
                  for r in results if not any(r is o for o in ok)]
        # per-clone restore + first invoke as the manager reports it (materialize,
        # CRIU restore, resume, invoke); queueing before the restore is not included
        per = [(r.restore_duration_ms or 0.0) + r.duration_ms for r in ok]
        rss = pss = 0
        sbs = idle_sandboxes(mgr, fn_name, version)
        for sb in sbs:
            r_kib, p_kib = clone_memory_kib(sb)
            rss += r_kib
            pss += p_kib
        if sbs:
            out["memory"].append({"function": fn_name, "kind": f"restored clone, idle "
                                  f"(burst of {size})", "clones": len(sbs),
                                  "rss_kib": rss // len(sbs), "pss_kib": pss // len(sbs)})
        mgr.remove_version(fn_name, int(version))
    stats = summarize(per)
    row = {"function": fn_name, "n": size, "completion_ms": round(completion, 2),
           "p50": stats["p50"], "p99": stats["p99"], "ok": len(ok), "errors": len(errors),
           "error_examples": sorted(set(errors))[:3],
           "restores_per_s": round(len(ok) / (completion / 1000), 2) if ok else 0.0}
    log(f"  {fn_name:6} burst {size:2}: {completion:.0f} ms, {len(ok)} ok, "
        f"{len(errors)} errors, {row['restores_per_s']} restores/s")
    return row


def ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    p50 = {(r["function"], r["start_type"]): r["p50"] for r in results}
    out: dict[str, dict[str, float | None]] = {}
    for fn in sorted({r["function"] for r in results}):
        def ratio(a: str, b: str) -> float | None:
            x, y = p50.get((fn, a)), p50.get((fn, b))
            return round(x / y, 2) if x and y else None
        out[fn] = {"cold/restored-l1": ratio("cold", "restored-l1"),
                   "restored-l1/warm": ratio("restored-l1", "warm"),
                   "restored-l1/zygote": ratio("restored-l1", "zygote"),
                   "restored-l2/restored-l1": ratio("restored-l2", "restored-l1"),
                   "rie-cold/restored-l1": ratio("rie-cold", "restored-l1"),
                   "restored-pool/zygote": ratio("restored-pool", "zygote"),
                   "cli-restored/restored-l1": ratio("cli-restored", "restored-l1")}
    return out


def pss_ratios(memory: list[dict[str, Any]]) -> dict[str, float | None]:
    """PSS per idle clone in the biggest burst / a lone restored clone's, per function."""
    out: dict[str, float | None] = {}
    for fn in sorted({m["function"] for m in memory}):
        rows = [m for m in memory if m["function"] == fn and m["kind"].startswith("restored")]
        lone = next((m for m in rows if m["clones"] == 1), None)
        big = max(rows, key=lambda m: m["clones"], default=None)
        out[fn] = (round(big["pss_kib"] / lone["pss_kib"], 3)
                   if lone and big and big is not lone and lone["pss_kib"] else None)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=int(os.environ.get("BENCH_N", "20")))
    ap.add_argument("--functions", default=os.environ.get("BENCH_FUNCTIONS",
                                                          "hello,data,web"))
    ap.add_argument("--burst", default=os.environ.get("BENCH_BURST", "1,4,8,16"),
                    help="comma-separated burst sizes ('' for none)")
    ap.add_argument("--burst-functions", default=os.environ.get("BENCH_BURST_FUNCTIONS",
                                                                "hello,data"))
    ap.add_argument("--model-sizes", default=os.environ.get("BENCH_MODEL_SIZES", "100,200,400"),
                    help="MB sizes of the `model` function ('' for none)")
    ap.add_argument("--out", type=Path, default=BENCHES / "results")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be >= 1")
    functions = [f for f in args.functions.split(",") if f]
    burst = tuple(int(x) for x in args.burst.split(",") if x.strip())
    burst_fns = set(f for f in args.burst_functions.split(",") if f)

    run_id = uuid.uuid4().hex[:10]
    home = Path(tempfile.mkdtemp(prefix=f"snapstart-bench-{run_id}-"))
    shm = Path("/dev/shm") / f"snapstart-bench-{run_id}"
    env = {**os.environ, "SNAPSTART_HOME": str(home / "home"), "SNAPSTART_SHM": str(shm)}
    settings = Settings.from_env(env)
    meta = host_facts(settings, args.n)
    log(f"{meta['arch_label']}, {meta['cpu_model']}, {meta['cores']} cores, kernel "
        f"{meta['kernel']}, CRIU {meta['criu_version']}, N={args.n}")
    out: dict[str, Any] = {"meta": meta, "results": [], "burst": [], "memory": [],
                           "publish": {}, "unavailable": {}}
    use_serve = serve_available()
    if not use_serve:
        out["unavailable"]["warm-serve"] = "not available (`snapstart serve` does not exist)"
        log("warm through `snapstart serve`: not available")
    if rie_binary() is None:
        out["unavailable"]["rie"] = "RIE binary not in benches/.cache (run `make bench`)"
    try:
        for fn in functions:
            t0 = time.monotonic()
            log(f"== {fn}")
            bench_function(fn, settings, args.n, burst if fn in burst_fns else (),
                           use_serve, env, out)
            log(f"== {fn} done in {time.monotonic() - t0:.0f} s")
        sizes = tuple(int(x) for x in args.model_sizes.split(",") if x.strip())
        if sizes:
            log(f"== model {sizes} MB")
            bench_model(settings, args.n, sizes, out)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    out["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out["ratios"] = ratios(out["results"])
    out["pss_burst_over_lone"] = pss_ratios(out["memory"])
    rates = [b["restores_per_s"] for b in out["burst"]]
    out["restores_per_s_max"] = max(rates) if rates else None
    paths = write_reports(out, args.out, plots=not args.no_plots)
    print(paths["markdown_text"])
    log("wrote " + ", ".join(str(p) for k, p in paths.items() if k != "markdown_text"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
