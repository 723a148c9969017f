"""A snapstart fleet on loopback: an S3 endpoint, N `snapstart serve` workers, HAProxy.

Usage (scripts/cluster.sh wraps it; `make cluster-demo` runs `demo`)::

    cluster.py up [--dir DIR] [--workers N]    start it; DIR/cluster.json says where
    cluster.py down [--dir DIR]                stop what `up` started (by PID), remove DIR
    cluster.py demo [--workers N]              up, the scenario below, down; the last
                                               line of output is one JSON object

What runs (all on 127.0.0.1, ports chosen free):
- moto's S3 server (the one S3 implementation that installs here; any S3-compatible
  store works: snapstart speaks the S3 API through boto3), bucket ``snapstart-fleet``;
- N workers: ``snapstart serve``, each with its own SNAPSTART_HOME (L2) and
  SNAPSTART_SHM (L1) -- N "nodes" -- all with SNAPSTART_STORE=s3://snapstart-fleet/demo
  and one SNAPSTART_STORE_KEY;
- HAProxy (Debian's package) in front: ``balance uri depth 3`` + ``hash-type
  consistent`` hashes /2015-03-31/functions/NAME, so a function's requests go to one
  worker (its warm clones are reused) and move only when that worker goes; health
  checks GET /metrics every 500 ms (down after 2 failures, up after 2 successes);
  it names the worker that answered in ``X-Snapstart-Node``.

The demo: publish functions (examples/hello under several names) on worker 1 only,
until HAProxy's hashing has given every worker at least one; invoke each through
HAProxy (every worker restores snapshots it never made: the init marker ``init_at``
is the publish's; its first restore fetches chunks from the store, later ones hit
its own caches); kill -9 one worker under a bounded load (4 clients, 8 s) and count
the requests that fail after the health-check interval; restart it (it rejoins and
restores from its caches: no chunk fetched); stop the S3 endpoint (cached versions
keep serving, a publish fails cleanly).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
BUCKET = "snapstart-fleet"
HEALTH_INTERVAL_S = 0.5
HEALTH_FALL = 2
DETECTION_S = HEALTH_INTERVAL_S * (HEALTH_FALL + 1) + 0.5   # kill -> no new requests to it


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"cluster: {url} did not come up")
            time.sleep(0.1)


class Cluster:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.state_path = directory / "cluster.json"
        self.state: dict = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    # ---- processes -------------------------------------------------------------------
    def _spawn(self, argv: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
        out = open(self.dir / "logs" / log, "ab")
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, cwd=str(ROOT))

    def worker_env(self, i: int) -> dict[str, str]:
        s = self.state
        return dict(os.environ, SNAPSTART_HOME=str(self.dir / f"node-{i}" / "home"),
                    SNAPSTART_SHM=s["workers"][i]["shm"],
                    SNAPSTART_STORE=f"s3://{BUCKET}/demo", SNAPSTART_STORE_KEY=s["store_key"],
                    SNAPSTART_STORE_SYNC_S="1", SNAPSTART_STORE_TIMEOUT_S="3",
                    AWS_ENDPOINT_URL_S3=s["s3_url"], AWS_ACCESS_KEY_ID="fleet",
                    AWS_SECRET_ACCESS_KEY="fleet", AWS_DEFAULT_REGION="us-east-1",
                    AWS_EC2_METADATA_DISABLED="true")

    def start_s3(self) -> None:
        proc = self._spawn([str(VENV / "moto_server"), "-H", "127.0.0.1", "-p",
                            str(self.state["s3_port"])], "s3.log")
        _wait_http(self.state["s3_url"] + "/moto-api/", proc)
        self.state["s3_pid"] = proc.pid

    def start_worker(self, i: int) -> None:
        w = self.state["workers"][i]
        proc = self._spawn([str(VENV / "snapstart"), "serve", "--host", "127.0.0.1",
                            "--port", str(w["port"])], f"worker-{i}.log", self.worker_env(i))
        _wait_http(f"http://127.0.0.1:{w['port']}/metrics", proc)
        w["pid"] = proc.pid

    def up(self, workers: int) -> None:
        if shutil.which("haproxy") is None:
            raise SystemExit("cluster: haproxy is not installed (make deps installs it)")
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o711)
        tag = secrets.token_hex(4)
        self.state = {"s3_port": _port(), "lb_port": _port(),
                      "store_key": secrets.token_hex(32), "workers": []}
        self.state["s3_url"] = f"http://127.0.0.1:{self.state['s3_port']}"
        self.state["lb_url"] = f"http://127.0.0.1:{self.state['lb_port']}"
        for i in range(workers):
            self.state["workers"].append({"name": f"w{i + 1}", "port": _port(),
                                          "shm": f"/dev/shm/snapstart-cluster-{tag}-{i}"})
        self.save()
        self.start_s3()
        self.save()
        import boto3
        boto3.client("s3", endpoint_url=self.state["s3_url"], region_name="us-east-1",
                     aws_access_key_id="fleet", aws_secret_access_key="fleet"
                     ).create_bucket(Bucket=BUCKET)
        for i in range(workers):
            self.start_worker(i)
            self.save()
        cfg = self.dir / "haproxy.cfg"
        servers = "\n".join(f"    server {w['name']} 127.0.0.1:{w['port']} check"
                            for w in self.state["workers"])
        cfg.write_text(f"""# written by scripts/cluster.py
global
    maxconn 2048
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
frontend lambda
    bind 127.0.0.1:{self.state['lb_port']}
    default_backend workers
backend workers
    # one worker per function name: /2015-03-31/functions/NAME (three path segments)
    balance uri depth 3
    hash-type consistent
    option httpchk GET /metrics
    http-check expect status 200
    default-server inter {int(HEALTH_INTERVAL_S * 1000)}ms fall {HEALTH_FALL} rise 2
    http-response set-header X-Snapstart-Node %s
{servers}
""")
        proc = self._spawn(["haproxy", "-f", str(cfg), "-db"], "haproxy.log")
        _wait_http(self.state["lb_url"] + "/2015-03-31/functions/", proc)
        self.state["haproxy_pid"] = proc.pid
        self.save()
        self.wait_all_up()

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=1))

    def wait_all_up(self, timeout_s: float = 15) -> None:
        """Until HAProxy has checked every worker up (each answers with its name)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = set()
            for i in range(40):
                r = self.invoke(f"probe-{i}", timeout=5)
                if r.get("node"):
                    seen.add(r["node"])
            if len(seen) == len(self.state["workers"]):
                return
            time.sleep(0.3)

    def kill(self, pid: int | None, sig: int = signal.SIGTERM, wait_s: float = 30) -> None:
        if not pid:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    return
            except ChildProcessError:     # not our child (another `cluster.py` run)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def down(self) -> None:
        s = self.state
        self.kill(s.get("haproxy_pid"))
        for w in s.get("workers", []):
            self.kill(w.get("pid"))
        self.kill(s.get("s3_pid"))
        for w in s.get("workers", []):
            shutil.rmtree(w["shm"], ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- requests --------------------------------------------------------------------
    def invoke(self, name: str, *, url: str | None = None, timeout: float = 60) -> dict:
        """One Invoke through HAProxy (or ``url``): status, node, start type, payload."""
        req = urllib.request.Request(
            f"{url or self.state['lb_url']}/2015-03-31/functions/{name}/invocations",
            data=json.dumps({"name": name}).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read()
                return {"status": resp.status, "node": resp.headers.get("X-Snapstart-Node"),
                        "start": resp.headers.get("X-Snapstart-Start-Type"),
                        "payload": json.loads(body)}
        except urllib.error.HTTPError as exc:
            return {"status": exc.code, "node": exc.headers.get("X-Snapstart-Node"),
                    "error": exc.read()[:200].decode("utf-8", "replace")}
        except OSError as exc:
            return {"status": 0, "error": str(exc)}

    def publish(self, i: int, name: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV / "snapstart"), "publish", str(ROOT / "examples/hello"),
                               "--name", name, "--handler", "app.handler", "--timeout", "10",
                               "--json"], env=self.worker_env(i), capture_output=True,
                              text=True, timeout=300, cwd=str(ROOT))

    def metric(self, i: int, name: str) -> float:
        port = self.state["workers"][i]["port"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def demo(cluster: Cluster, workers: int) -> dict:
    say = lambda msg: print(f"== {msg}", flush=True)   # noqa: E731
    t0 = time.monotonic()
    cluster.up(workers)
    names = [w["name"] for w in cluster.state["workers"]]
    ports = ", ".join(f"{w['name']}:{w['port']}" for w in cluster.state["workers"])
    say(f"up: S3 {cluster.state['s3_url']}, HAProxy {cluster.state['lb_url']}, "
        f"workers {ports}")
    results: list[dict] = []
    init_at: dict[str, float] = {}
    owner: dict[str, str] = {}
    publishes = 0
    k = 0
    while (set(owner.values()) != set(names) or k < workers) and k < 16:
        k += 1
        fn = f"fn-{k}"
        proc = cluster.publish(0, fn)
        if proc.returncode != 0:
            raise SystemExit(f"publish {fn} failed: {proc.stderr}")
        publishes += 1
        r = cluster.invoke(fn)
        results.append(r)
        if r["status"] != 200:
            raise SystemExit(f"invoke {fn} through HAProxy failed: {r}")
        owner[fn] = r["node"]
        init_at[fn] = r["payload"]["init_at"]
        say(f"published {fn} on w1; first invoke through HAProxy: {r['node']} "
            f"{r['start']} (init_at {r['payload']['init_at']:.3f})")
    fetched_first = {n: cluster.metric(i, "snapstart_l1_s3_chunks_fetched")
                     for i, n in enumerate(names)}
    bytes_first = {n: int(cluster.metric(i, "snapstart_l1_s3_bytes_down"))
                   for i, n in enumerate(names)}
    for fn in owner:
        for _ in range(3):
            results.append(cluster.invoke(fn))
    fetched_after = {n: cluster.metric(i, "snapstart_l1_s3_chunks_fetched")
                     for i, n in enumerate(names)}
    same_init = all(r["payload"]["init_at"] == init_at[r["payload"]["event"]["name"]]
                    for r in results if r.get("status") == 200)
    say(f"every response carries its publish's init_at: {same_init}; chunks fetched from "
        f"the store by each worker: {fetched_first} (after 3 more invokes each: {fetched_after})")

    # ---- kill -9 one worker under a bounded load -------------------------------------
    victim = 1 if workers > 1 else 0
    vname = names[victim]
    load: list[tuple[float, dict]] = []
    stop = threading.Event()
    fns = list(owner)

    def client(j: int) -> None:
        n = 0
        while not stop.is_set() and n < 2000:
            fn = fns[(j + n) % len(fns)]
            sent = time.monotonic()
            load.append((sent, cluster.invoke(fn, timeout=30)))
            n += 1

    threads = [threading.Thread(target=client, args=(j,)) for j in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    killed_at = time.monotonic()
    cluster.kill(cluster.state["workers"][victim]["pid"], signal.SIGKILL, wait_s=10)
    say(f"kill -9 {vname} (pid {cluster.state['workers'][victim]['pid']}) under load")
    time.sleep(6.0)
    stop.set()
    for t in threads:
        t.join()
    failed = [(t, r) for t, r in load if r["status"] != 200]
    after = [(t, r) for t, r in failed if t > killed_at + DETECTION_S]
    routed_to_dead = sum(1 for t, r in load if t > killed_at + DETECTION_S
                         and r.get("node") == vname)
    say(f"load: {len(load)} requests, {len(failed)} failed, {len(after)} of them sent more "
        f"than {DETECTION_S:.1f} s after the kill; {routed_to_dead} routed to {vname} after it")
    for label, group in (("in flight", [f for f in failed if f not in after]),
                         ("after detection", after)):
        kinds: dict[str, int] = {}
        for t, r in group:
            key = (f"{r.get('status')} from {r.get('node')} at +{t - killed_at:.1f}s: "
                   f"{(r.get('error') or '')[:60]!r}")
            kinds[key] = kinds.get(key, 0) + 1
        for key, count in kinds.items():
            say(f"  failed {label}: {count} x {key}")
    results.extend(r for _, r in load)

    # ---- restart it: it rejoins and restores from its own caches -----------------------
    cluster.start_worker(victim)
    cluster.save()
    cluster.wait_all_up()
    mine = [fn for fn, node in owner.items() if node == vname]
    rejoined = [cluster.invoke(fn) for fn in mine]
    results.extend(rejoined)
    refetched = cluster.metric(victim, "snapstart_l1_s3_chunks_fetched")
    say(f"{vname} restarted: its functions {mine} -> "
        f"{[(r.get('node'), r.get('start')) for r in rejoined]}; chunks fetched from the "
        f"store since the restart: {refetched:.0f}")

    # ---- stop the S3 endpoint -----------------------------------------------------------
    cluster.kill(cluster.state["s3_pid"])
    s3_down = [cluster.invoke(fn) for fn in owner]
    results.extend(s3_down)
    proc = cluster.publish(0, "fn-new")
    publish_error = (proc.stderr.strip().splitlines() or ["?"])[-1]
    say(f"S3 endpoint stopped: {sum(r['status'] == 200 for r in s3_down)}/{len(s3_down)} "
        f"invokes of cached versions served; publish exit {proc.returncode}: {publish_error}")

    restored_by_worker = {n: 0 for n in names}
    cold = 0
    for r in results:
        if r.get("status") == 200 and r.get("start") in ("restored", "restored-pool"):
            restored_by_worker[r["node"]] = restored_by_worker.get(r["node"], 0) + 1
        cold += r.get("start") == "cold"
    return {"workers": workers, "functions": len(owner),
            "invocations": sum(1 for r in results if r.get("status") == 200),
            "init_runs": publishes + cold, "publishes": publishes,
            "restored_by_worker": restored_by_worker,
            "same_init_everywhere": same_init,
            "chunks_fetched_first_restores": fetched_first,
            "bytes_fetched_first_restores": bytes_first,
            "failed_in_flight": len(failed) - len(after),
            "failed_after_kill": len(after), "routed_to_killed_after_detection": routed_to_dead,
            "rejoined_chunks_fetched": int(refetched),
            "s3_down_invokes_ok": sum(r["status"] == 200 for r in s3_down),
            "s3_down_publish_failed_cleanly": proc.returncode == 1 and "Traceback" not in proc.stderr,
            "seconds": round(time.monotonic() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["up", "down", "demo"])
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("cluster: run as root (snapstart serve runs CRIU)")
    directory = args.dir or (ROOT / ".snapstart" / ("cluster-demo" if args.command == "demo"
                                                    else "cluster"))
    cluster = Cluster(directory)
    if args.command == "up":
        if cluster.state:
            raise SystemExit(f"cluster: {directory} is up already (cluster.py down first)")
        cluster.up(args.workers)
        print(json.dumps({k: cluster.state[k] for k in ("lb_url", "s3_url")}))
        return 0
    if args.command == "down":
        cluster.down()
        return 0
    if cluster.state:
        cluster.down()                  # a previous demo that was interrupted
    try:
        summary = demo(cluster, args.workers)
    finally:
        cluster.down()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
