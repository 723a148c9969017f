"""CRIU adapter: checkpoint and restore sandbox process trees through pycriu.

Only this module talks to CRIU. It drives ``criu swrk`` over RPC with pycriu and
translates every CRIU failure into ``DumpError`` / ``RestoreError`` (keeping the
request type, CRIU's errno and the tail of CRIU's log).

The sandbox layout CRIU sees (see ../shared/PLATFORM.md for why):

- the tree's root is the agent, PID 1 of its own PID and time namespaces, session
  leader, inside an anonymous network namespace created by the manager;
- the network namespace is external: dumped as ``net[<inode>]:netns`` and supplied
  per clone with ``inherit_fd {key: "netns", fd}``;
- the agent's end of the control socketpair is an external unix socket
  (``unix[<inode>]``), replaced per clone by a fresh socketpair end with
  ``inherit_fd {key: "socket:[<inode>]", fd}``;
- the runtime's TCP connection to the agent (parked in GET /restore/next) is inside
  the tree: ``tcp_established``; network locking is skipped (no iptables, and each
  clone has its own namespace anyway);
- restore uses ``rst_sibling`` so the restored root becomes the manager's child
  (the manager is also a child subreaper) and can be reaped by pid.

CRIU writes its log to a work directory (never into the shared image directory, so
many clones can restore from one materialized snapshot at once).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, DumpError, RestoreError

__all__ = ["Criu", "DumpResult"]

NETNS_KEY = "netns"
_NETWORK_LOCK_SKIP = 3
_CG_IGNORE = 0   # cgroups are the manager's: restored tasks inherit criu's own group


@dataclass(frozen=True)
class DumpResult:
    image_bytes: int


def _log_tail(work_dir: Path, name: str, lines: int = 15) -> str:
    try:
        text = (work_dir / name).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in text if "Error" in line or "error" in line]
    return "\n".join((errors or text)[-lines:])


class Criu:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        self._version: str | None = None

    # ---- facts ----------------------------------------------------------------
    def version(self) -> str:
        if self._version is None:
            try:
                out = subprocess.run([self.binary, "--version"], capture_output=True,
                                     text=True, timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise CheckpointError(f"cannot run criu at {self.binary}: {exc}") from exc
            match = re.search(r"Version:\s*([0-9.]+)", out)
            if not match:
                raise CheckpointError(f"cannot parse `criu --version` output: {out!r}")
            self._version = match.group(1)
        return self._version

    def check(self) -> tuple[bool, str]:
        try:
            proc = subprocess.run([self.binary, "check"], capture_output=True, text=True,
                                  timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
        out = (proc.stdout + proc.stderr).strip().splitlines()
        ok = proc.returncode == 0 and any("Looks good" in line for line in out)
        return ok, (out[-1] if out else "")

    # ---- RPC ------------------------------------------------------------------
    def _client(self):
        import pycriu  # lazy: protobuf import is ~30 ms

        client = pycriu.criu()
        client.use_binary(self.binary)
        client.opts.network_lock = _NETWORK_LOCK_SKIP
        client.opts.tcp_established = True
        client.opts.manage_cgroups_mode = _CG_IGNORE
        client.opts.log_level = 2
        return client

    def dump(self, pid: int, images_dir: Path, work_dir: Path, *, netns_inode: int,
             unix_inodes: list[int]) -> DumpResult:
        """Checkpoint the tree rooted at ``pid`` into ``images_dir``; the tree is killed."""
        import pycriu

        images_dir.mkdir(parents=True, exist_ok=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        client = self._client()
        img_fd = os.open(images_dir, os.O_DIRECTORY)
        work_fd = os.open(work_dir, os.O_DIRECTORY)
        try:
            os.set_inheritable(img_fd, True)
            os.set_inheritable(work_fd, True)
            opts = client.opts
            opts.pid = pid
            opts.images_dir_fd = img_fd
            opts.work_dir_fd = work_fd
            opts.log_file = "dump.log"
            opts.leave_running = False
            opts.external.append(f"net[{netns_inode}]:{NETNS_KEY}")
            for ino in unix_inodes:
                opts.external.append(f"unix[{ino}]")
            try:
                client.dump()
            except pycriu.CRIUExceptionExternal as exc:
                raise DumpError("CRIU could not checkpoint the sandbox", request="dump",
                                errno=exc.errno, log_tail=_log_tail(work_dir, "dump.log")) from exc
            except pycriu.CRIUException as exc:
                raise DumpError(f"CRIU dump failed: {exc}", request="dump",
                                log_tail=_log_tail(work_dir, "dump.log")) from exc
        finally:
            os.close(img_fd)
            os.close(work_fd)
        size = sum(p.stat().st_size for p in images_dir.iterdir() if p.is_file())
        return DumpResult(image_bytes=size)

    def restore(self, images_dir: Path, work_dir: Path, *, netns_fd: int, ctl_fd: int,
                ctl_inode: int, cgroup=None) -> int:
        """Restore a clone; return the host pid of its root (a child of this process).

        With ``cgroup``, ``criu swrk`` is started, moved into that group and only then
        asked to restore, so every restored task is born inside the clone's limits.
        """
        import pycriu

        work_dir.mkdir(parents=True, exist_ok=True)
        client = self._client()
        img_fd = os.open(images_dir, os.O_DIRECTORY)
        work_fd = os.open(work_dir, os.O_DIRECTORY)
        inheritable = [img_fd, work_fd, netns_fd, ctl_fd]
        try:
            for fd in inheritable:
                os.set_inheritable(fd, True)
            opts = client.opts
            opts.images_dir_fd = img_fd
            opts.work_dir_fd = work_fd
            opts.log_file = "restore.log"
            opts.rst_sibling = True
            ifd = opts.inherit_fd.add()
            ifd.key, ifd.fd = NETNS_KEY, netns_fd
            ifd = opts.inherit_fd.add()
            ifd.key, ifd.fd = f"socket:[{ctl_inode}]", ctl_fd
            try:
                if cgroup is not None:
                    # pycriu connects lazily; connect now so swrk can join the group
                    client.sk = client._comm.connect(False)
                    cgroup.add(client._comm.swrk)
                resp = client.restore()
            except pycriu.CRIUExceptionExternal as exc:
                raise RestoreError("CRIU could not restore the snapshot", request="restore",
                                   errno=exc.errno,
                                   log_tail=_log_tail(work_dir, "restore.log")) from exc
            except pycriu.CRIUException as exc:
                raise RestoreError(f"CRIU restore failed: {exc}", request="restore",
                                   log_tail=_log_tail(work_dir, "restore.log")) from exc
            return resp.pid
        finally:
            os.close(img_fd)
            os.close(work_fd)
            for fd in (netns_fd, ctl_fd):
                try:
                    os.set_inheritable(fd, False)
                except OSError:
                    pass
