"""SOCK-style zygote (fork server) peer for the benchmark suite.

Started as ``python zygote.py CODE_DIR [PACKAGES_DIR] --handler app.handler``. The
parent imports the function's module once (its init), prints ``ready`` and then
reads one JSON event per line from stdin. For each event it forks a child; the
child enters fresh network and PID namespaces (``unshare(CLONE_NEWNET |
CLONE_NEWPID)``) and forks again, so the grandchild is PID 1 of the new PID
namespace. The grandchild runs the handler and writes one JSON line to stdout (a
pipe read by the benchmark process), then exits. Nothing is reused between starts
except the parent's imported, copy-on-write memory: this is the bar a restored
snapshot is compared to.

It must not leave processes behind: each child waits for its grandchild, the parent
reaps its children, and it exits when stdin closes.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import sys

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000


class _Context:
    function_name = "zygote"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:zygote"
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/zygote"
    log_stream_name = "zygote"

    def get_remaining_time_in_millis(self) -> int:
        return 3000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--handler", default="app.handler")
    args = ap.parse_args()
    args.paths = [os.path.abspath(p) for p in args.paths]
    sys.path[:0] = args.paths
    os.chdir(args.paths[0])
    module, func = args.handler.rsplit(".", 1)
    handler = getattr(importlib.import_module(module), func)
    libc = ctypes.CDLL(None, use_errno=True)
    out = sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        pid = os.fork()
        if pid == 0:  # child: new namespaces, then the grandchild is PID 1 there
            code = 1
            try:
                if libc.unshare(CLONE_NEWNET | CLONE_NEWPID) != 0:
                    raise OSError(ctypes.get_errno(), "unshare")
                gpid = os.fork()
                if gpid == 0:
                    try:
                        result = handler(json.loads(line), _Context())
                        os.write(1, json.dumps({"pid": os.getpid(), "result": result},
                                               default=str).encode() + b"\n")
                    finally:
                        os._exit(0)
                _, status = os.waitpid(gpid, 0)
                code = os.waitstatus_to_exitcode(status)
            except BaseException as exc:  # report, never fall back into the loop
                os.write(1, json.dumps({"error": repr(exc)}).encode() + b"\n")
            finally:
                os._exit(code)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
