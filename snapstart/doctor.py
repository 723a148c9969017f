"""``snapstart doctor``: one line per requirement, with ok/FAIL and the fix."""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import ConfigError

__all__ = ["Check", "run_checks"]

_FIX_CRIU = ("run `make criu` (builds CRIU 4.2 from Debian's source) or set SNAPSTART_CRIU "
             "to a CRIU whose `criu check` passes")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    hard: bool = True


def _unshare_probe(flag: int) -> tuple[bool, str]:
    """Try unshare(flag) in a throwaway thread (PID/time: affect only future children)."""
    from .sandbox.nsutil import libc, on_thread

    # CLONE_NEWPID / CLONE_NEWTIME on a thread fail with EINVAL in a threaded process,
    # so probe those in a forked child instead.
    if flag in (0x20000000, 0x00000080):
        pid = os.fork()
        if pid == 0:
            os._exit(0 if libc.unshare(flag) == 0 else 1)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) == 0, "ok" if status == 0 else "unshare failed"

    def work() -> tuple[bool, str]:
        rc = libc.unshare(flag)
        return rc == 0, os.strerror(ctypes.get_errno()) if rc else "ok"

    return on_thread(work, "snapstart-doctor")


def run_checks(settings: Settings) -> list[Check]:
    from .checkpoint.criu import Criu, compatibility_problem

    checks: list[Check] = []
    is_root = os.geteuid() == 0
    checks.append(Check("root", is_root, "running as root" if is_root else f"uid {os.geteuid()}",
                        "run as root (CRIU and namespaces need CAP_SYS_ADMIN)"))
    criu = Criu(settings.criu)
    try:
        # any CRIU whose `criu check` passes, minus known kernel/version breakage
        version = criu.version()
        problem = compatibility_problem(version, platform.release())
        checks.append(Check("criu", problem is None,
                            f"{settings.criu} version {version}" +
                            (f": {problem}" if problem else ""),
                            _FIX_CRIU if problem else ""))
    except Exception as exc:  # any failure here is reported, not raised
        checks.append(Check("criu", False, f"{settings.criu}: {exc}", _FIX_CRIU))
        version = ""
    if version:
        ok, detail = criu.check()
        checks.append(Check("criu check", ok, detail, _FIX_CRIU))
        try:
            import pycriu
            maps = "mmap_page_image" in pycriu.rpc.criu_opts.DESCRIPTOR.fields_by_name
        except Exception:  # noqa: BLE001 - reported, not raised
            maps = False
        checks.append(Check("restore maps pages", maps,
                            "restores map private memory from the page images "
                            "(patch 0003)" if maps else
                            "this CRIU copies every page at restore: restore time grows "
                            "with the image", "`make criu` (scripts/criu-patches)", hard=False))
    from .config import CRIU_RUNDIR
    from .sandbox.cgroups import kernel_at_least

    dynmods = Path(CRIU_RUNDIR) / "favordynmods"
    if not kernel_at_least(6, 18):
        checks.append(Check("cheap cgroup migration", False,
                            f"kernel {platform.release()} < 6.18: each restore slot's "
                            "migration waits an RCU grace period (~10 ms, off the path with "
                            "prepared slots)", "Linux >= 6.18", hard=False))
    else:
        checks.append(Check("cheap cgroup migration", True,
                            "favordynmods on (this boot)" if dynmods.exists() else
                            "favordynmods is switched on by the first manager this boot "
                            "(one-way, host-wide: sandbox/cgroups.py)"))
    kdat = list(Path("/dev/shm").glob("snapstart-criu-run/criu.kdat")) + \
        list(Path("/run").glob("criu.kdat"))
    on_tmpfs = any(_fstype(p) == "tmpfs" for p in kdat)   # /run is tmpfs on some hosts
    checks.append(Check("kdat cache on tmpfs", on_tmpfs,
                        str(kdat[0]) if kdat else "no criu.kdat yet (created by the first criu call)",
                        "build CRIU with RUNDIR on tmpfs (`make criu` does); ~50 ms per restore",
                        hard=False))
    for name, flag in (("net namespace", 0x40000000), ("pid namespace", 0x20000000),
                       ("time namespace", 0x00000080), ("ipc namespace", 0x08000000),
                       ("uts namespace", 0x04000000), ("mount namespace", 0x00020000)):
        ok, detail = _unshare_probe(flag)
        checks.append(Check(name, ok, detail, "kernel needs CONFIG_*_NS and root"))
    uffd = Path("/proc/sys/vm/unprivileged_userfaultfd").exists() or Path("/dev/userfaultfd").exists()
    checks.append(Check("userfaultfd", uffd, "available" if uffd else "missing",
                        "kernel needs CONFIG_USERFAULTFD (lazy restore)", hard=False))
    controllers = []
    try:
        for line in Path("/proc/cgroups").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 4 and fields[3] == "1":
                controllers.append(fields[0])
    except OSError:
        pass
    want = {"memory", "pids", "cpu"}
    checks.append(Check("cgroup controllers", want <= set(controllers),
                        ",".join(sorted(controllers)) or "none",
                        "enable memory, pids and cpu cgroup controllers", hard=False))
    shm = settings.shm.parent if not settings.shm.exists() else settings.shm
    try:
        fstype = _fstype(shm)
    except OSError:
        fstype = "?"
    checks.append(Check("L1 on tmpfs", fstype == "tmpfs", f"{settings.shm} ({fstype})",
                        "set SNAPSTART_SHM to a tmpfs directory", hard=False))
    import sys

    from .runtimes import SITECUSTOMIZE_DIR, unreachable
    from .identities import Identities

    lo, hi = settings.uid_range
    # a function's uid owns nothing outside its code: what it needs must be reachable
    # through "other" permission bits (a uid of the range that is nobody's)
    blocked = [p for p in (Path(sys.executable), SITECUSTOMIZE_DIR)
               if p.exists() and unreachable(p, hi, hi) is not None]
    problem = (f"a function's uid cannot reach {blocked[0]}: its functions would be refused"
               if blocked else None)
    try:
        ledger = f"{len(Identities(settings.home, settings.uid_range).all())} allocated"
    except ConfigError as exc:
        ledger, problem = "ledger unreadable", problem or exc.message
    checks.append(Check("function identities", problem is None,
                        problem or f"one uid per function from {lo}-{hi} ({ledger}); never root",
                        "build the venv with `make` (Debian's /usr/bin/python3); a ledger "
                        "this snapstart cannot read needs the snapstart that wrote it",
                        hard=False))
    return checks


def _fstype(path: Path) -> str:
    best, fstype = "", "?"
    target = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        mnt = fields[1]
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
            best, fstype = mnt, fields[2]
    return fstype

