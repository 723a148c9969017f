"""The restore manager: publishes versions and serves invocations on clones.

Data flow (one way): caller -> ``Manager`` -> ``Sandbox`` -> agent -> runtime.

Dispatch for ``invoke(name[:qualifier])``:

1. an idle *warm* clone of that version, if any;
2. else a *restored* clone: materialize the version's snapshot (verified) to L1
   tmpfs, reseed the kernel CRNG, CRIU-restore into a fresh network namespace,
   resume (after-restore hooks) and deliver the event;
3. else (no snapshot, ``$LATEST``, ``no_snapshot=True``, or the snapshot failed
   integrity/compatibility/restore) a *cold* init in a new sandbox. A fallback
   is recorded in ``InvokeResult.notes`` and logged.

The manager owns every sandbox it creates and kills them on ``close()``. It is a
child subreaper so restored trees (children of CRIU) are reaped by it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import __version__
from ..checkpoint.criu import Criu
from ..config import CRIU_RUNDIR, FunctionConfig, Settings
from ..errors import (AfterRestoreError, ConfigError, InitError,
                      OutOfMemoryError,
                      PayloadError, PublishError, RestoreError, RuntimeExitError,
                      SandboxError, SandboxTimeoutError, SnapshotError,
                      SnapshotIncompatibleError, SnapStartError, StoreError, ThrottledError)
from ..registry import LATEST, Registry, VersionInfo
from ..runtimes import runtime_spec
from ..sandbox.cgroups import favor_dynmods
from ..sandbox.cgroups import sweep_stale as sweep_stale_cgroups
from ..sandbox.mountns import SandboxFs
from ..sandbox.procs import owner_tag
from ..sandbox.sandbox import InvokeRequest, InvokeResult, RestoreSlot, Sandbox
from ..sandbox.state import SandboxState
from .limits import ConcurrencyLimits

__all__ = ["Manager", "PublishResult", "MAX_SYNC_PAYLOAD", "check_payload"]

log = logging.getLogger("snapstart.manager")
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
PR_SET_CHILD_SUBREAPER = 36


def check_payload(payload: bytes, limit: int = MAX_SYNC_PAYLOAD) -> None:
    """Lambda's checks on an invocation payload: size, then JSON."""
    if len(payload) > limit:
        raise PayloadError(f"Request must be smaller than {limit} bytes for the "
                           "InvokeFunction operation", error_type="RequestTooLargeException")
    try:
        json.loads(payload or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"Could not parse request body into json: {exc}") from None


@dataclass(frozen=True)
class PublishResult:
    name: str
    version: int
    init_duration_ms: float
    dump_duration_ms: float
    image_bytes: int
    stored_bytes: int

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version,
                "init_duration_ms": round(self.init_duration_ms, 2),
                "dump_duration_ms": round(self.dump_duration_ms, 2),
                "image_bytes": self.image_bytes, "stored_bytes": self.stored_bytes}


def _default_concurrency() -> int:
    """Account concurrency sized to the machine: ~256 MB of RAM per clone, 4..256."""
    try:
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError):
        mem_mb = 4096
    return max(4, min(256, mem_mb // 256))


class Manager:
    def __init__(self, settings: Settings | None = None, *, keep_warm: bool = True,
                 max_concurrency: int | None = None, restore_slots: int | None = None,
                 log_sink: Callable[[str, str, bytes], None] | None = None) -> None:
        """``restore_slots``: how many prepared restore slots (namespace + cgroup +
        criu worker, see ``RestoreSlot``) to keep ready; default 2 for a long-lived
        manager (``keep_warm``), 0 for one-shot use."""
        self.settings = settings or Settings.from_env()
        self.registry = Registry(self.settings)
        self.criu = Criu(self.settings.criu)
        self.keep_warm = keep_warm
        self.max_concurrency = max_concurrency or _default_concurrency()
        self.log_sink = log_sink
        self._store = None
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str], list[Sandbox]] = {}
        self._all: set[Sandbox] = set()
        self._active = 0
        self._closed = False
        # reserved concurrency (limits.py) and provisioned clones (set_provisioned)
        self.limits = ConcurrencyLimits(self.max_concurrency,
                                        path=self.settings.home / "concurrency.json")
        self._provisioned: dict[tuple[str, str], int] = {}
        self._prov_members: dict[tuple[str, str], set[Sandbox]] = {}
        self._housekeeper: threading.Thread | None = None
        self._stop = threading.Event()
        self._slot_target = (2 if keep_warm else 0) if restore_slots is None else restore_slots
        self._slots: list[RestoreSlot] = []
        self._slot_cond = threading.Condition(self._lock)
        self._slot_thread: threading.Thread | None = None
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        sweep_stale_cgroups()   # groups of managers that died without cleaning up
        # cheap cgroup migrations for this boot (cgroups.py); the marker lives on tmpfs
        favor_dynmods(Path(CRIU_RUNDIR) / "favordynmods")
        if not self.settings.home.exists():
            # root only: sandboxes see their code through bind mounts (mountns.py)
            self.settings.home.mkdir(parents=True, mode=0o700)
        (self.settings.shm / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
        # CRIU's kernel-feature cache lives on tmpfs, which a reboot empties: without
        # its directory every CRIU call re-probes the kernel (~30 ms).
        os.makedirs(CRIU_RUNDIR, mode=0o755, exist_ok=True)
        _sweep_stale_dirs(self.settings.shm)   # ... and their CRIU work / staging dirs
        self._fs = SandboxFs()         # a restore slot's filesystem (no code yet)
        self.owner = owner_tag(self.settings.home)   # names our sandboxes in /proc

    @property
    def store(self):
        if self._store is None:
            from ..store import LocalStore  # lazy: keeps `snapstart --help` fast
            self._store = LocalStore.from_settings(self.settings)
        return self._store

    # ---- publish -----------------------------------------------------------------
    def publish(self, code_dir: Path, config: FunctionConfig, *, progress: bool = False,
                init_timeout_s: float = 120.0) -> PublishResult:
        """Init once, checkpoint, store: a new immutable version."""
        self.registry.set_latest(config, Path(code_dir))
        n, vdir = self.registry.allocate_version(config.name)
        staging = self.settings.shm / "staging" / _private_name()
        try:
            shutil.copytree(self.registry.latest(config.name).code_dir, vdir / "code",
                            symlinks=True)
            packages = self._install_requirements(vdir)
            for tree in (vdir / "code", packages):
                if tree is not None:
                    self.registry.share_with_sandbox(tree)
            seed = self._hash_seed(config.name)
            spec = runtime_spec(config, self.settings, code_dir=vdir / "code",
                                packages_dir=packages, version=str(n), snap_start=True,
                                log_stream=f"publish/{n}", hash_seed=seed)
            t0 = time.monotonic()
            sandbox = self._track(Sandbox.spawn(spec, owner=self.owner,
                                                name=f"{config.name}:{n}:publish",
                                                deterministic=True, hash_seed=seed,
                                                memory_mb=config.memory_mb,
                                                fs=self._fs_for(config, vdir / "code",
                                                                packages),
                                                egress=config.egress,
                                                log_sink=self._sink(config.name, "publish")))
            try:
                kind = sandbox.wait_init(init_timeout_s)
            except InitError as exc:
                raise PublishError(f"init failed: {exc.error_type}: {exc.message}",
                                   error_type=exc.error_type) from exc
            init_ms = (time.monotonic() - t0) * 1000
            if kind != "snapshot" and not spec.snapshot_on_next:
                sandbox.kill()
                raise PublishError("the runtime asked for an invocation instead of calling "
                                   "GET /runtime/restore/next; it does not support snap-start")
            t1 = time.monotonic()
            try:
                dump = sandbox.checkpoint(self.criu, staging / "images", staging / "work")
            finally:
                self._untrack(sandbox)
            dump_ms = (time.monotonic() - t1) * 1000
            snapshot = {"ctl_inode": sandbox.ctl_inode, "init_duration_ms": init_ms,
                        "dump_duration_ms": dump_ms, "image_bytes": dump.image_bytes,
                        "criu_version": self.criu.version(),
                        # the agent frozen in the image speaks this (bootstrap.protocol)
                        "agent_protocol": sandbox.protocol_version,
                        "agent_layout": sandbox.layout,
                        "snapstart_version": __version__}
            meta = {"config": config.to_dict(), "runtime": config.runtime,
                    "python": sys.version.split()[0], **snapshot}
            self.store.put(config.name, n, staging / "images", meta, progress=progress)
            stored = self._stored_bytes(config.name, n)
            self.registry.commit_version(config.name, n, config, snapshot)
            log.info("published %s:%d (init %.0f ms, dump %.0f ms, %d bytes)", config.name, n,
                     init_ms, dump_ms, dump.image_bytes)
            return PublishResult(name=config.name, version=n, init_duration_ms=init_ms,
                                 dump_duration_ms=dump_ms, image_bytes=dump.image_bytes,
                                 stored_bytes=stored)
        except BaseException:
            self.registry.abort_version(config.name, n)
            with contextlib.suppress(Exception):
                self.store.remove(config.name, n)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _fs_for(config: FunctionConfig, code: Path | None = None,
                packages: Path | None = None) -> SandboxFs:
        return SandboxFs(size_mb=config.ephemeral_storage_mb,
                         task=str(code) if code else None,
                         packages=str(packages) if packages else None)

    def _hash_seed(self, name: str) -> int:
        """A per-function PYTHONHASHSEED: stable across versions (so snapshots of two
        versions deduplicate), secret (derived from the store's key)."""
        digest = hmac.new(self.store.key, b"pythonhashseed:" + name.encode(), hashlib.sha256)
        return int.from_bytes(digest.digest()[:4], "little")

    def _stored_bytes(self, name: str, n: int) -> int:
        for row in self.store.stats():
            if row.get("name") == name and row.get("version") == n:
                return int(row.get("stored_bytes", 0))
        return 0

    @staticmethod
    def _install_requirements(vdir: Path) -> Path | None:
        req = vdir / "code" / "requirements.txt"
        if not req.exists():
            return None
        target = vdir / "packages"
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", "--no-input", "--target",
                               str(target), "-r", str(req)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise PublishError("pip could not install requirements.txt: "
                               + (proc.stderr.strip().splitlines() or ["(no output)"])[-1])
        return target

    # ---- invoke ------------------------------------------------------------------
    def invoke(self, name: str, payload: bytes = b"{}", *, qualifier: str | None = None,
               no_snapshot: bool = False, force_new: bool = False,
               client_context: str | None = None, trace_id: str | None = None,
               request_id: str | None = None) -> InvokeResult:
        info = self.registry.resolve(name, qualifier)
        check_payload(payload)
        req = InvokeRequest(request_id=request_id or str(uuid.uuid4()), payload=payload,
                            arn=self.settings.function_arn(name, info.version
                                                           if info.version != LATEST else None),
                            timeout_s=info.config.timeout_s, trace_id=trace_id,
                            client_context=client_context)
        self._acquire(info.name)
        try:
            return self._dispatch(info, req, no_snapshot=no_snapshot, force_new=force_new)
        finally:
            self._release(info.name)

    def _acquire(self, name: str | None = None) -> None:
        with self._lock:
            if self._closed:
                raise SandboxError("manager is closed")
            if self._active >= self.max_concurrency:
                raise ThrottledError("Rate Exceeded.",
                                     reason="ConcurrentInvocationLimitExceeded")
            if name is not None:
                self.limits.acquire(name)     # reserved concurrency; raises ThrottledError
            self._active += 1

    def _release(self, name: str | None = None) -> None:
        with self._lock:
            self._active -= 1
            if name is not None:
                self.limits.release(name)

    @property
    def active(self) -> int:
        """Invocations running now (concurrent executions)."""
        return self._active

    def _dispatch(self, info: VersionInfo, req: InvokeRequest, *, no_snapshot: bool,
                  force_new: bool) -> InvokeResult:
        key = (info.name, info.version)
        sandbox = None if force_new else self._pop_idle(key)
        notes: list[str] = []
        if sandbox is not None:
            try:
                return self._run(sandbox, key, req, start_type="warm")
            except RuntimeExitError:
                # it died idle (just before this event was delivered): start afresh
                pass
        if info.snapshot and not no_snapshot:
            try:
                t0 = time.monotonic()
                sandbox = self._restore(info)
                criu_ms = (time.monotonic() - t0) * 1000
            except (SnapshotError, RestoreError, StoreError) as exc:
                note = (f"snapshot of {info.name}:{info.version} unusable "
                        f"({type(exc).__name__}: {exc.message.splitlines()[0]}); "
                        "fell back to a cold init")
                log.warning(note)
                notes.append(note)
            else:
                result = self._run(sandbox, key, req, start_type="restored", resume=True)
                # Restore Duration: CRIU restore + resume until the runtime asks for work
                result.restore_duration_ms = criu_ms + (result.restore_duration_ms or 0.0)
                result.notes = notes
                return result
        return self._cold(info, key, req, notes)

    def _restore(self, info: VersionInfo) -> Sandbox:
        """Restore a clone of ``info``'s snapshot. Without a prepared slot, one is
        prepared on a thread while the manifest is checked and the images are
        materialized (the two overlap: ~20 ms of namespaces, cgroup and criu swrk
        against 1 ms from L1 or ~50-100 ms from the compressed store)."""
        n = int(info.version)
        fs = self._fs_for(info.config)
        slot = self._take_slot()
        work = slot.work_dir if slot else self.settings.shm / "run" / _private_name()
        pool = pending = None
        if slot is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapstart-slot")
            pending = pool.submit(RestoreSlot.prepare, self.criu, work, owner=self.owner,
                                  fs=fs)
        try:
            try:
                manifest = self.store.manifest(info.name, n)
                self.store.check_compatible(manifest, criu_version=self.criu.version())
                check_agent_protocol(f"{info.name}:{n}", manifest.meta)
                images = self.store.materialize(info.name, n)
            finally:
                if pool is not None:
                    pool.shutdown(wait=True)
            if pending is not None:
                slot = pending.result()
        except BaseException:
            if pending is not None and pending.exception() is None:
                slot = pending.result()
            if slot is not None:
                slot.discard()
            shutil.rmtree(work, ignore_errors=True)
            raise
        try:
            sandbox = Sandbox.restore(self.criu, images, work,
                                      ctl_inode=int(info.snapshot["ctl_inode"]),
                                      owner=self.owner,
                                      name=f"{info.name}:{info.version}",
                                      task=info.code_dir, packages=info.packages_dir,
                                      memory_mb=info.config.memory_mb, slot=slot, fs=fs,
                                      egress=info.config.egress,
                                      log_sink=self._sink(info.name, info.version))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self._track(sandbox)

    # ---- prepared restore slots ------------------------------------------------
    def _take_slot(self) -> RestoreSlot | None:
        if self._slot_target <= 0:
            return None
        with self._lock:
            if self._slot_thread is None and not self._closed:
                self._slot_thread = threading.Thread(target=self._fill_slots,
                                                     name="snapstart-slots", daemon=True)
                self._slot_thread.start()
            slot = self._slots.pop() if self._slots else None
            self._slot_cond.notify_all()
        return slot

    def _fill_slots(self) -> None:
        """Keep ``restore_slots`` slots prepared (one thread: forks are serialized)."""
        while True:
            with self._lock:
                while not self._closed and len(self._slots) >= self._slot_target:
                    self._slot_cond.wait()
                if self._closed:
                    return
            try:
                slot = RestoreSlot.prepare(self.criu,
                                           self.settings.shm / "run" / _private_name(),
                                           owner=self.owner, fs=self._fs)
            except SnapStartError as exc:
                log.warning("cannot prepare a restore slot: %s", exc)
                self._stop.wait(1.0)
                continue
            with self._lock:
                if self._closed:
                    keep = False
                else:
                    self._slots.append(slot)
                    keep = True
            if not keep:
                self._discard_slot(slot)
                return

    @staticmethod
    def _discard_slot(slot: RestoreSlot) -> None:
        slot.discard()
        shutil.rmtree(slot.work_dir, ignore_errors=True)

    def _cold(self, info: VersionInfo, key: tuple[str, str], req: InvokeRequest,
              notes: list[str]) -> InvokeResult:
        spec = runtime_spec(info.config, self.settings, code_dir=info.code_dir,
                            packages_dir=info.packages_dir, version=info.version,
                            snap_start=False)
        t0 = time.monotonic()
        sandbox = self._track(Sandbox.spawn(spec, owner=self.owner,
                                            name=f"{info.name}:{info.version}",
                                            memory_mb=info.config.memory_mb,
                                            fs=self._fs_for(info.config, info.code_dir,
                                                            info.packages_dir),
                                            egress=info.config.egress,
                                            log_sink=self._sink(info.name, info.version)))
        logs = bytearray()
        try:
            sandbox.wait_init(max(10.0, info.config.timeout_s), logs)
        except InitError as exc:
            self._untrack(sandbox)
            return InvokeResult(request_id=req.request_id,
                                payload=json.dumps(exc.to_lambda()).encode(),
                                function_error="Unhandled", duration_ms=0.0, logs=bytes(logs),
                                start_type="cold",
                                init_duration_ms=(time.monotonic() - t0) * 1000, notes=notes)
        init_ms = (time.monotonic() - t0) * 1000
        result = self._run(sandbox, key, req, start_type="cold")
        result.init_duration_ms = init_ms
        result.logs = bytes(logs) + result.logs
        result.notes = notes
        return result

    def _run(self, sandbox: Sandbox, key: tuple[str, str], req: InvokeRequest, *,
             start_type: str, resume: bool = False) -> InvokeResult:
        try:
            result = sandbox.invoke(req, resume=resume)
        except RuntimeExitError as exc:
            self._untrack(sandbox)
            if exc.retryable and start_type == "warm":
                raise
            return InvokeResult(request_id=req.request_id,
                                payload=json.dumps(exc.to_lambda()).encode(),
                                function_error="Unhandled", duration_ms=0.0, start_type=start_type)
        except (SandboxTimeoutError, AfterRestoreError, OutOfMemoryError) as exc:
            self._untrack(sandbox)
            return InvokeResult(request_id=req.request_id,
                                payload=json.dumps(exc.to_lambda()).encode(),
                                function_error="Unhandled", duration_ms=0.0, start_type=start_type)
        except BaseException:
            self._untrack(sandbox)
            raise
        result.start_type = start_type
        if self.keep_warm and sandbox.state is SandboxState.IDLE and not self._closed:
            with self._lock:
                self._idle.setdefault(key, []).append(sandbox)
        else:
            self._untrack(sandbox)
        return result

    def invoke_clones(self, name: str, n: int, payload: bytes = b"{}", *,
                      qualifier: str | None = None) -> list[InvokeResult | SnapStartError]:
        """Restore ``n`` fresh clones of one version at once, invoke each once."""
        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(self.invoke, name, payload, qualifier=qualifier,
                                   force_new=True) for _ in range(n)]
            out: list[InvokeResult | SnapStartError] = []
            for fut in futures:
                try:
                    out.append(fut.result())
                except SnapStartError as exc:
                    out.append(exc)
            return out

    # ---- pool bookkeeping --------------------------------------------------------
    def _sink(self, name: str, stream: str) -> Callable[[bytes], None] | None:
        if self.log_sink is None:
            return None
        sink = self.log_sink
        return lambda data: sink(name, stream, data)

    def _track(self, sandbox: Sandbox) -> Sandbox:
        with self._lock:
            self._all.add(sandbox)
        return sandbox

    def _untrack(self, sandbox: Sandbox) -> None:
        sandbox.kill()
        with self._lock:
            self._all.discard(sandbox)
            for members in self._prov_members.values():
                members.discard(sandbox)

    def _pop_idle(self, key: tuple[str, str]) -> Sandbox | None:
        """The most recently used idle clone that is still healthy (others are dropped)."""
        while True:
            with self._lock:
                pool = self._idle.get(key)
                if not pool:
                    return None
                sandbox = pool.pop()
            if sandbox.healthy():
                return sandbox
            self._untrack(sandbox)

    def idle_count(self, name: str | None = None) -> int:
        with self._lock:
            return sum(len(v) for k, v in self._idle.items() if name is None or k[0] == name)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._closed = True
            sandboxes = list(self._all)
            self._all.clear()
            self._idle.clear()
            slots, self._slots = self._slots, []
            filler = self._slot_thread
            self._slot_cond.notify_all()
        if filler is not None:
            filler.join()
        for slot in slots:
            self._discard_slot(slot)
        for sandbox in sandboxes:
            sandbox.kill()

    def __enter__(self) -> "Manager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- housekeeping ------------------------------------------------------------
    def remove_version(self, name: str, n: int) -> None:
        self.registry.remove_version(name, n)
        with contextlib.suppress(SnapStartError):
            self.store.remove(name, n)

    # ---- provisioned concurrency -------------------------------------------------
    def set_provisioned(self, name: str, qualifier: str | None, n: int, *,
                        wait_s: float = 0.0) -> str:
        """Keep ``n`` clones of a published version restored and idle (start_type warm).

        Returns the version. With ``wait_s`` the missing clones are restored in this
        thread (up to that long); the housekeeper replenishes them later either way.
        """
        info = self.registry.resolve(name, qualifier)
        if info.version == LATEST or not info.snapshot:
            raise ConfigError("Provisioned Concurrency Configs cannot be applied to unpublished "
                              "function versions ($LATEST)")
        if not isinstance(n, int) or n < 0:
            raise ConfigError("ProvisionedConcurrentExecutions must be a non-negative integer")
        key = (info.name, info.version)
        with self._lock:
            if n == 0:
                self._provisioned.pop(key, None)
                members = self._prov_members.pop(key, set())
            else:
                self._provisioned[key] = n
                self._prov_members.setdefault(key, set())
                members = set()
        for sandbox in members:           # un-provisioned clones become plain idle clones
            sandbox.last_used = time.monotonic()
        if wait_s > 0 and n > 0:
            self._replenish(key, deadline=time.monotonic() + wait_s)
        return info.version

    def provisioned_status(self, name: str, version: str) -> tuple[int, int, int]:
        """(requested, allocated, available) clones of one version."""
        key = (name, version)
        with self._lock:
            members = self._prov_members.get(key, set())
            idle = set(self._idle.get(key, []))
            return (self._provisioned.get(key, 0), len(members),
                    sum(1 for s in members if s in idle))

    def provisioned_ready(self) -> int:
        with self._lock:
            return sum(len(m) for m in self._prov_members.values())

    def _replenish(self, key: tuple[str, str], *, deadline: float | None = None) -> None:
        while not self._closed:
            with self._lock:
                want = self._provisioned.get(key, 0) - len(self._prov_members.get(key, ()))
            if want <= 0 or (deadline is not None and time.monotonic() > deadline):
                return
            try:
                info = self.registry.version(key[0], int(key[1]))
                sandbox = self._prewarm(info)
            except SnapStartError as exc:
                log.warning("provisioned clone of %s:%s failed: %s", key[0], key[1], exc.message)
                return
            with self._lock:
                if self._closed or key not in self._provisioned:
                    extra = True
                else:
                    extra = False
                    self._prov_members[key].add(sandbox)
                    self._idle.setdefault(key, []).append(sandbox)
            if extra:
                self._untrack(sandbox)

    def _prewarm(self, info: VersionInfo) -> Sandbox:
        """Restore a clone and resume it (after-restore hooks) without an event: IDLE."""
        sandbox = self._restore(info)
        try:
            sandbox.resume()
        except BaseException:
            self._untrack(sandbox)
            raise
        return sandbox

    # ---- housekeeping thread -------------------------------------------------------
    def start_housekeeping(self, *, idle_timeout_s: float = 300.0,
                           max_lifetime_s: float = 7200.0, interval_s: float = 1.0) -> None:
        """Reap idle clones, recycle old ones, keep provisioned clones topped up."""
        if self._housekeeper is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.housekeep_once(idle_timeout_s=idle_timeout_s,
                                        max_lifetime_s=max_lifetime_s)
                except Exception:  # noqa: BLE001 - the thread must survive anything
                    log.exception("housekeeping failed")

        self._housekeeper = threading.Thread(target=loop, name="snapstart-housekeeper",
                                             daemon=True)
        self._housekeeper.start()

    def housekeep_once(self, *, idle_timeout_s: float, max_lifetime_s: float) -> int:
        """One pass; returns how many clones were shut down."""
        now = time.monotonic()
        doomed: list[Sandbox] = []
        with self._lock:
            provisioned = set().union(*self._prov_members.values()) \
                if self._prov_members else set()
            for key, pool in self._idle.items():
                keep = []
                for sandbox in pool:
                    old = now - sandbox.created > max_lifetime_s
                    idle = (sandbox not in provisioned
                            and now - sandbox.last_used > idle_timeout_s)
                    if old or idle or not sandbox.alive or _pid_dead(sandbox.pid):
                        doomed.append(sandbox)
                    else:
                        keep.append(sandbox)
                pool[:] = keep
            keys = list(self._provisioned)
        for sandbox in doomed:
            self._untrack(sandbox)
        for key in keys:
            self._replenish(key)
        return len(doomed)


def check_agent_protocol(label: str, meta: dict) -> None:
    """Refuse a snapshot whose frozen agent speaks a control protocol this host does
    not (bootstrap.protocol): published by another snapstart release."""
    from bootstrap import protocol

    version = meta.get("agent_protocol")
    if version not in protocol.SUPPORTED:
        made_by = meta.get("snapstart_version") or "a snapstart release before 0.2"
        raise SnapshotIncompatibleError(
            f"{label}: its agent speaks control protocol {version or 1} (published by "
            f"{made_by}); this snapstart speaks {sorted(protocol.SUPPORTED)}: publish the "
            "function again")


def _private_name() -> str:
    """A work / staging dir name that says which process owns it (``<pid>-<hex>``)."""
    return f"{os.getpid()}-{uuid.uuid4().hex}"


def _sweep_stale_dirs(shm: Path) -> None:
    """Remove CRIU work dirs and publish staging dirs whose owner process is gone
    (a manager killed with -9 leaves its prepared restore slots' dirs behind). The
    tmpfs is shared by every manager of this SNAPSTART_SHM: a live owner's are kept."""
    for parent in (shm / "run", shm / "staging"):
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for entry in entries:
            owner = entry.name.split("-", 1)[0]
            if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
                shutil.rmtree(entry, ignore_errors=True)


def _pid_dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True
