"""Where a CRIU restore's time goes, from CRIU's own log (written with -v4).

    python benches/criu_phases.py restore.log [restore.log ...]

Every CRIU log line starts with "(SS.uuuuuu)", seconds since CRIU opened the log;
lines of restored task N carry "N:" (CRIU's side) or "pie: N:" (the restorer blob
running inside the task). The restore is cut into consecutive phases at lines the
functions of CRIU 4.2.1 print (the root task is PID 2: snapinit, PID 1, is not in
the image)::

    setup           log opened -> "Forking task with"        images read, files collected
    namespaces      -> "Running post-setup-namespaces"       clone3 into the external PID
                                                             namespace, time, UTS, IPC
    memory          -> "Restoring resources"                 VMAs and page map read,
                                                             premapped areas
    files           -> "Restore via sigreturn"               fds, sockets (TCP repair),
                                                             epoll, cwd/root
    restorer args   -> "Switched to the restorer"            blob, thread stacks
    vma + pages     -> last "mmap-page-image" or "Preadv"    remap VMAs, map (or read)
                                                             page images
    restorer tail   -> last "N: Restored"                    vDSO, timers, signals, threads
    wait tasks      -> "Running post-restore scripts"        CRIU waits for every task
    finish          -> "Restore finished successfully"       creds, seccomp, ptrace stop
                                                             on rt_sigreturn, detach

Prints the median (ms) of each phase over the logs given. ``phases(text)`` is the
function benches/restore_timeline.py uses.
"""

from __future__ import annotations

import re
import statistics
import sys

_TS = re.compile(r"^\((\d+\.\d+)\)")
MARKS = [
    ("setup", "Forking task with"),
    ("namespaces", "Running post-setup-namespaces scripts"),
    ("memory", "Restoring resources"),
    ("files", "Restore via sigreturn"),
    ("restorer args", "Switched to the restorer"),
    ("vma + pages", ("mmap-page-image:", "`- returned")),   # last of these
    ("restorer tail", re.compile(r"^pie: \d+: \d+: Restored$")),  # last of these
    ("wait tasks", "Running post-restore scripts"),
    ("finish", "Restore finished successfully"),
]
_LAST = {"vma + pages", "restorer tail"}


def phases(text: str) -> dict[str, float]:
    """{phase: ms} of one restore log (-v4); phases whose marks are missing are 0."""
    stamps: list[tuple[float, str]] = []
    for line in text.splitlines():
        m = _TS.match(line)
        if m:
            stamps.append((float(m.group(1)) * 1000, line[m.end():]))
    out: dict[str, float] = {}
    prev = 0.0
    for name, pattern in MARKS:
        pats = pattern if isinstance(pattern, tuple) else (pattern,)
        hits = [t for t, msg in stamps
                if any(p.search(msg.strip()) if isinstance(p, re.Pattern) else p in msg
                       for p in pats)]
        if not hits:
            out[name] = 0.0
            continue
        at = hits[-1] if name in _LAST else hits[0]
        out[name] = max(0.0, at - prev)
        prev = at
    out["log total"] = stamps[-1][0] if stamps else 0.0
    return out


def main(paths: list[str]) -> None:
    rows = [phases(open(p, errors="replace").read()) for p in paths]
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"{key:16s} p50 {statistics.median(values):7.2f} ms   (n={len(values)})")


if __name__ == "__main__":
    main(sys.argv[1:])
