"""Resource abuse: memory hog and fork bomb (contained by the clone's cgroup)."""
import os
import time


def handler(event, context):
    if event.get("action") == "memory":
        blocks = []
        for _ in range(event.get("mb", 1024)):
            blocks.append(bytearray(1 << 20))   # touched: counts against the limit
        return {"allocated_mb": len(blocks)}
    if event.get("action") == "fork":
        pids, failed = [], 0
        for _ in range(event.get("n", 5000)):
            try:
                pid = os.fork()
            except OSError:
                failed += 1
                break
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            pids.append(pid)
        return {"forked": len(pids), "fork_failed": failed}
    return {"ok": True}
