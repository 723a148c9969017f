"""Benchmark ``snapstart serve`` over plain HTTP (http.client keep-alive, no boto3).

Cases (ids in the JSON output):
- ``warm_noop``: C concurrent clients x N warm invokes of a no-op function
  (after one warm-up call per client): throughput and p50/p99 latency.
- ``burst_first``: B simultaneous first invokes of a freshly published function
  (every one needs a restored clone): errors and p50/p99 vs. the p50 of single
  sequential restores (``single_restore``).

Runs in a private SNAPSTART_HOME / SNAPSTART_SHM, starts its own server subprocess on
127.0.0.1 and stops it (and so every clone) at the end. Needs root and CRIU.

    python benches/bench_serve.py [--clients 4] [--requests 2000] [--burst 16]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "tests" / "functions"


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))], 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bench:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="snapstart-bench-"))
        self.shm = Path("/dev/shm") / f"snapstart-bench-{uuid.uuid4().hex[:8]}"
        self.env = dict(os.environ, SNAPSTART_HOME=str(self.tmp / "home"),
                        SNAPSTART_SHM=str(self.shm), PYTHONPATH=str(ROOT))
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "snapstart.cli", *args], env=self.env,
                              check=True, capture_output=True, text=True, cwd=ROOT).stdout

    def publish(self, directory: str, name: str) -> None:
        self.cli("publish", str(FUNCTIONS / directory), "--name", name, "--handler",
                 "app.handler", "--timeout", "30", "--json")

    def start(self, max_concurrency: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "snapstart.cli", "serve", "--port", str(self.port),
             "--max-concurrency", str(max_concurrency)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/metrics")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.shm, ignore_errors=True)

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    @staticmethod
    def invoke(conn: http.client.HTTPConnection, name: str, body: bytes = b"{}") -> tuple:
        t0 = time.perf_counter()
        conn.request("POST", f"/2015-03-31/functions/{name}/invocations", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        ms = (time.perf_counter() - t0) * 1000
        ok = resp.status == 200 and not resp.getheader("X-Amz-Function-Error")
        return ok, ms, resp.getheader("X-Snapstart-Start-Type"), resp.status

    def warm(self, clients: int, requests: int) -> dict:
        latencies: list[list[float]] = [[] for _ in range(clients)]
        errors = [0] * clients
        barrier = threading.Barrier(clients + 1)

        def worker(i: int) -> None:
            conn = self.conn()
            self.invoke(conn, "noop")                      # warm-up: own clone
            barrier.wait()
            for _ in range(requests):
                ok, ms, _, _ = self.invoke(conn, "noop")
                latencies[i].append(ms)
                errors[i] += not ok
            conn.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        flat = [x for lat in latencies for x in lat]
        return {"id": "warm_noop", "function": "errors(noop)", "start_type": "warm",
                "clients": clients, "requests": len(flat), "errors": sum(errors),
                "throughput_rps": round(len(flat) / wall, 1), "p50_ms": _pct(flat, 50),
                "p99_ms": _pct(flat, 99), "mean_ms": round(statistics.mean(flat), 3)}

    def single_restores(self, n: int) -> dict:
        values, types = [], []
        for i in range(n):
            name = f"single{i}"
            conn = self.conn()
            ok, ms, start_type, _ = self.invoke(conn, name)
            conn.close()
            values.append(ms)
            types.append(start_type)
        return {"id": "single_restore", "function": "hello", "runs": n,
                "start_types": sorted(set(filter(None, types))), "p50_ms": _pct(values, 50),
                "p99_ms": _pct(values, 99)}

    def burst(self, n: int) -> dict:
        results: list[tuple] = []
        barrier = threading.Barrier(n)
        lock = threading.Lock()

        def worker() -> None:
            conn = self.conn()
            barrier.wait()
            try:
                out = self.invoke(conn, "burst")
            except OSError as exc:
                out = (False, 0.0, None, str(exc))
            conn.close()
            with lock:
                results.append(out)

        threads = [threading.Thread(target=worker) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok = [r[1] for r in results if r[0]]
        statuses: dict[str, int] = {}
        for r in results:
            statuses[str(r[3])] = statuses.get(str(r[3]), 0) + 1
        return {"id": "burst_first", "function": "hello", "concurrent": n,
                "errors": n - len(ok), "statuses": statuses,
                "start_types": sorted({r[2] for r in results if r[2]}),
                "p50_ms": _pct(ok, 50) if ok else None, "p99_ms": _pct(ok, 99) if ok else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=2000, help="per client")
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--singles", type=int, default=5)
    args = parser.parse_args()
    bench = Bench()
    try:
        bench.publish("errors", "noop")                    # {"action": none} -> {"ok": true}
        for i in range(args.singles):
            bench.publish("hello", f"single{i}")
        bench.publish("hello", "burst")
        bench.start(max_concurrency=max(args.burst, args.clients) + 4)
        out = {"machine": {"cpus": os.cpu_count(), "arch": os.uname().machine},
               "results": [bench.warm(args.clients, args.requests),
                           bench.single_restores(args.singles), bench.burst(args.burst)]}
        single = out["results"][1]["p50_ms"]
        burst = out["results"][2]
        if burst["p50_ms"] and single:
            burst["p50_vs_single_restore_p50"] = round(burst["p50_ms"] / single, 2)
            burst["p99_vs_single_restore_p50"] = round(burst["p99_ms"] / single, 2)
        print(json.dumps(out, indent=1))
    finally:
        bench.close()


if __name__ == "__main__":
    main()
