"""Cross-node restores (issue 16): a version published on node A, restored on node B.

    .venv/bin/python benches/bench_fleet.py [--n 5] [--functions hello,data,model]

moto's S3 server on loopback is the bucket (the one S3 implementation that installs
here; the numbers are for a loopback endpoint, not a network). Node A publishes each
function once. Then, per function, p50 of a restored start (``Manager.invoke`` with a
new clone: materialize + CRIU restore + first invoke) on node B:

  cross-node   B is a fresh node (new SNAPSTART_HOME and SNAPSTART_SHM, nothing
               cached): the version record and code are pulled, every chunk is fetched
               from the bucket and verified, then L1 is built; a new node per run
  local-L2     the same node again with its L1 cleared (chunks from its own disk)
  L1           the images still in L1 (the usual restore)

and the bytes: uploaded by A's publish, downloaded by B's first restore, against the
image size. JSON to benches/results/fleet-<time>.json, a table to stdout. The model
function is published with MODEL_MB=100 here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snapstart.config import FunctionConfig, Settings  # noqa: E402
from snapstart.manager import Manager  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, env: dict[str, str]) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="snapstart-bench-node-", dir="/tmp"))
        os.chmod(self.base, 0o711)
        self.shm = Path("/dev/shm") / f"snapstart-bench-node-{uuid.uuid4().hex[:12]}"
        settings = Settings.from_env({**env, "SNAPSTART_HOME": str(self.base / "home"),
                                      "SNAPSTART_SHM": str(self.shm)})
        self.manager = Manager(settings, restore_slots=0)

    def close(self) -> None:
        self.manager.close()
        shutil.rmtree(self.shm, ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)


def _timed_restore(node: Node, name: str) -> float:
    t0 = time.perf_counter()
    result = node.manager.invoke(name, force_new=True)
    ms = (time.perf_counter() - t0) * 1000
    if result.start_type != "restored" or result.function_error:
        raise SystemExit(f"{name}: expected a restored start, got {result.start_type} "
                         f"{result.payload[:200]!r}")
    return ms


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--functions", default="hello,data,model")
    args = ap.parse_args()
    port = _port()
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                             "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    nodes: list[Node] = []
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("moto_server did not start")
                time.sleep(0.1)
        import boto3
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="b",
                     aws_secret_access_key="b").create_bucket(Bucket="bench")
        env = dict(os.environ, SNAPSTART_STORE="s3://bench/fleet",
                   SNAPSTART_STORE_KEY=os.urandom(32).hex(), AWS_ENDPOINT_URL_S3=url,
                   AWS_ACCESS_KEY_ID="b", AWS_SECRET_ACCESS_KEY="b",
                   AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
        os.environ.update({k: env[k] for k in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
                                                "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                                "SNAPSTART_STORE_KEY")})
        a = Node(env)
        nodes.append(a)
        rows = []
        for fn in args.functions.split(","):
            extra = {"MODEL_MB": "100"} if fn == "model" else {}
            config = FunctionConfig(name=fn, handler="app.handler", memory_mb=1024,
                                    timeout_s=60, environment=extra)
            up0 = a.manager.store.bucket.bytes_up
            pub = a.manager.publish(ROOT / "benches" / "functions" / fn, config)
            uploaded = a.manager.store.bucket.bytes_up - up0
            cross, down = [], []
            for _ in range(args.n):
                b = Node(env)
                nodes.append(b)
                cross.append(_timed_restore(b, fn))
                down.append(b.manager.store.bucket.bytes_down)
                if len(cross) < args.n:
                    b.close()
                    nodes.remove(b)
            l2 = []
            for _ in range(args.n):
                b.manager.store.clear_l1()
                l2.append(_timed_restore(b, fn))
            l1 = [_timed_restore(b, fn) for _ in range(args.n)]
            b.close()
            nodes.remove(b)
            row = {"function": fn, "image_bytes": pub.image_bytes, "stored_bytes": pub.stored_bytes,
                   "uploaded_bytes": uploaded, "downloaded_first_restore_bytes": int(statistics.median(down)),
                   "cross_node_ms": round(statistics.median(cross), 2),
                   "local_l2_ms": round(statistics.median(l2), 2),
                   "l1_ms": round(statistics.median(l1), 2), "n": args.n}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        out = ROOT / "benches" / "results" / time.strftime("fleet-%Y%m%dT%H%M%SZ.json", time.gmtime())
        out.write_text(json.dumps({"cpus": os.cpu_count(), "endpoint": "moto_server on loopback",
                                   "rows": rows}, indent=1))
        print(f"| function | image MiB | uploaded MiB | downloaded by a new node MiB | "
              f"cross-node ms | local L2 ms | L1 ms |\n|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['function']} | {r['image_bytes'] / 2**20:.1f} | "
                  f"{r['uploaded_bytes'] / 2**20:.1f} | "
                  f"{r['downloaded_first_restore_bytes'] / 2**20:.1f} | {r['cross_node_ms']} | "
                  f"{r['local_l2_ms']} | {r['l1_ms']} |")
        print(f"(p50 of {args.n}; {out.relative_to(ROOT)})")
    finally:
        for node in nodes:
            node.close()
        moto.send_signal(signal.SIGTERM)
        moto.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
