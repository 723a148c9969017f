"""A hostile tenant's probes (tests/integration/test_tenancy.py).

Each invoke reports what this function can see and reach from inside its sandbox:
the processes in its /proc, what /proc/1 is, its identity, where its code lives, and
the outcome of every attack the event names (open another process's environ, maps
or mem; signal it; read host paths).
"""
import os
import time

SECRET = os.environ.get("TENANT_SECRET", "")


def _try_read(path):
    try:
        with open(path, "rb") as f:
            f.read(64)
        return "read"
    except OSError as exc:
        return exc.strerror


def _try_open_rw(path):
    try:
        fd = os.open(path, os.O_RDWR)
        os.close(fd)
        return "opened"
    except OSError as exc:
        return exc.strerror


def _try_reach(path):
    """List a directory (its entries) or read a file: what a tenant gets from a
    host path."""
    try:
        if os.path.isdir(path):
            return sorted(os.listdir(path))
    except OSError as exc:
        return exc.strerror
    return _try_read(path)


def _try_signal(pid):
    try:
        os.kill(pid, 0)
        return "signalled"
    except OSError as exc:
        return exc.strerror


def handler(event, context):
    event = event or {}
    if event.get("raise"):
        raise RuntimeError("tenant: raised on request")
    if event.get("hold"):
        time.sleep(float(event["hold"]))
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    out = {
        "secret": SECRET,
        "pid": os.getpid(),
        "pids": pids,
        "proc1": _try_read("/proc/1/comm"),
        "uid": os.getuid(), "gid": os.getgid(),
        "groups": os.getgroups(),
        "cwd": os.getcwd(),
        "file": __file__,
        "task_root": os.environ.get("LAMBDA_TASK_ROOT"),
        "environ": dict(os.environ),
        "sys": sorted(os.listdir("/sys")) if os.path.isdir("/sys") else None,
    }
    for pid in event.get("pids", []):
        out.setdefault("attacks", {})[str(pid)] = {
            "environ": _try_read(f"/proc/{pid}/environ"),
            "maps": _try_read(f"/proc/{pid}/maps"),
            "mem": _try_open_rw(f"/proc/{pid}/mem"),
            "signal": _try_signal(pid),
        }
    out["paths"] = {p: _try_reach(p) for p in event.get("paths", [])}
    return out
