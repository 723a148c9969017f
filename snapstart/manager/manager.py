"""The manager: serves invocations on clones of published versions.

Data flow (one way): caller -> ``Manager`` -> ``Sandbox`` -> agent -> runtime.

Dispatch for ``invoke(name[:qualifier])`` (``_dispatch``, top to bottom):

1. an idle *warm* clone of that version (``clones.py``), if any;
2. else, with a snapshot:
   a. a clone *restored ahead* of demand (``ahead.py``, start type restored-pool):
      resume it with the event;
   b. else a *restored* clone: check and materialize the snapshot (L1 tmpfs), take a
      prepared restore slot (``slots.py``), CRIU-restore into it, resume with the
      event;
3. else (no snapshot, ``$LATEST``, ``no_snapshot=True``, or the snapshot failed
   integrity/compatibility/restore) a *cold* init in a new sandbox; a fallback is
   recorded in the result's ``notes`` and logged.

Other jobs, one module each: publishing (``publisher.py``), provisioned
concurrency (``provisioned.py``), concurrency limits (``limits.py``), log lines
(``report.py``). The manager owns every sandbox it creates and kills them on
``close()``; it is a child subreaper, so restored trees are reaped by it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import json
import logging
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from .. import tracing
from ..checkpoint.criu import Criu
from ..checkpoint.hotset import HotSets
from ..config import FunctionConfig, Settings
from ..errors import (AfterRestoreError, InitError, OutOfMemoryError, PayloadError, RestoreError,
                      RuntimeExitError, SandboxError, SandboxTimeoutError, SnapshotError,
                      SnapshotIncompatibleError, SnapStartError, StoreError, ThrottledError)
from ..registry import Registry, VersionInfo
from ..results import InvokeRequest, InvokeResult, ResponseSink, StartType
from ..runtimes import runtime_spec
from ..sandbox.cgroups import sweep_stale as sweep_stale_cgroups
from ..sandbox.procs import owner_tag
from ..sandbox.sandbox import RestoreSlot, Sandbox, prepare_host
from ..sandbox.state import SandboxState
from .ahead import RestoreAhead
from .clones import Clones, Key
from .limits import ConcurrencyLimits
from .provisioned import Provisioned
from .publisher import Publisher, PublishResult, sandbox_fs
from .slots import SlotPool, discard

__all__ = ["Manager", "PublishResult", "MAX_SYNC_PAYLOAD", "check_payload",
           "check_agent_protocol", "check_identity"]

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


def check_identity(label: str, info: VersionInfo) -> None:
    """Refuse a snapshot whose frozen credentials are not its function's identity
    (published before identities, or the ledger was replaced): it would run as
    another uid than its function's clones."""
    frozen = info.snapshot.get("uid") if info.snapshot else None
    if frozen != info.uid:
        raise SnapshotIncompatibleError(
            f"{label}: its snapshot runs as uid {frozen if frozen is not None else '(unknown)'}"
            f", the function's identity is uid {info.uid}: publish the function again")


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
                 refill_slots: bool = True, restore_ahead: int = 0,
                 log_sink: Callable[[str, str, bytes], None] | None = None) -> None:
        """``restore_slots``: prepared restore slots to keep ready (slots.py); default
        2 for a long-lived manager (``keep_warm``), 0 for one-shot use;
        ``refill_slots=False``: prepare them once, at start (the one-shot CLI).
        ``restore_ahead``: clones of each recently invoked version to keep restored
        ahead of demand (ahead.py; ``snapstart serve`` uses 1)."""
        self.settings = settings or Settings.from_env()
        self.registry = Registry(self.settings, remote=lambda: self.store)
        self.criu = Criu(self.settings.criu)
        self.keep_warm = keep_warm
        self.max_concurrency = max_concurrency or _default_concurrency()
        self.log_sink = log_sink
        self._store = None
        self._lock = threading.Lock()
        self._active = 0
        self._closed = False
        self._housekeeper: threading.Thread | None = None
        self._stop = threading.Event()
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        sweep_stale_cgroups()   # groups of managers that died without cleaning up
        run = prepare_host(self.settings.shm)   # favordynmods, CRIU's run dir (tmpfs)
        if not self.settings.home.exists():
            # root only: sandboxes see their code through bind mounts (mountns.py)
            self.settings.home.mkdir(parents=True, mode=0o700)
        _sweep_stale_dirs(self.settings.shm)   # ... and their CRIU work / staging dirs
        self.owner = owner_tag(self.settings.home)   # names our sandboxes in /proc
        self.clones = Clones()
        self.hotsets = HotSets()
        self.slots = SlotPool(self.criu, run, owner=self.owner,
                              target=(2 if keep_warm else 0) if restore_slots is None
                              else restore_slots, refill=refill_slots)
        self.ahead = RestoreAhead(per_version=restore_ahead, max_total=8 * restore_ahead,
                                  restore=self._restore, clones=self.clones, slots=self.slots)
        # reserved concurrency (limits.py) and provisioned clones
        self.limits = ConcurrencyLimits(self.max_concurrency,
                                        path=self.settings.home / "concurrency.json")
        self.provisioned = Provisioned(self.registry, self.clones, self.prewarm,
                                       closed=lambda: self._closed)
        self.publisher = Publisher(settings=self.settings, registry=self.registry,
                                   store=lambda: self.store, criu=self.criu, owner=self.owner,
                                   clones=self.clones, sink=self._sink)

    @property
    def store(self):
        if self._store is None:
            if self.settings.store_url:         # a fleet's bucket (store/s3.py)
                from ..store.s3 import S3Store
                self._store = S3Store.from_settings(self.settings, self.settings.store_url)
            else:
                from ..store import LocalStore  # lazy: keeps `snapstart --help` fast
                self._store = LocalStore.from_settings(self.settings)
        return self._store

    def publish(self, code_dir: Path, config: FunctionConfig, *, progress: bool = False,
                init_timeout_s: float = 120.0, snap_start: bool = True) -> PublishResult:
        """Init once, checkpoint, store: a new immutable version (publisher.py)."""
        return self.publisher.publish(code_dir, config, progress=progress,
                                      init_timeout_s=init_timeout_s, snap_start=snap_start)

    def preload(self) -> None:
        """Open the store and load the rest of the restore path's modules now: for a
        one-shot caller (the CLI), before its request, while its restore slot is
        being prepared (a long-lived manager has them from its first restore)."""
        self.store
        from ..checkpoint import rpc  # noqa: F401

    # ---- invoke ------------------------------------------------------------------
    def invoke(self, name: str, payload: bytes = b"{}", *, qualifier: str | None = None,
               no_snapshot: bool = False, force_new: bool = False,
               client_context: str | None = None, trace_id: str | None = None,
               request_id: str | None = None, sink: ResponseSink | None = None) -> InvokeResult:
        return self.invoke_version(self.registry.resolve(name, qualifier), payload,
                                   no_snapshot=no_snapshot, force_new=force_new,
                                   client_context=client_context, trace_id=trace_id,
                                   request_id=request_id, qualifier=qualifier, sink=sink)

    def invoke_version(self, info: VersionInfo, payload: bytes = b"{}", *,
                       no_snapshot: bool = False, force_new: bool = False,
                       client_context: str | None = None, trace_id: str | None = None,
                       request_id: str | None = None,
                       qualifier: str | None = None,
                       sink: ResponseSink | None = None) -> InvokeResult:
        """``invoke`` of a version the caller resolved already (the Invoke API).
        ``qualifier``: what the caller named (None, a version, an alias or $LATEST):
        the function sees it in ``context.invoked_function_arn``, as on Lambda.
        ``sink``: where a streamed response goes as it arrives (results.ResponseSink)."""
        check_payload(payload)
        req = self._request(info, payload, client_context=client_context, trace_id=trace_id,
                            qualifier=qualifier, request_id=request_id, sink=sink)
        self._acquire(info.name)
        try:
            with tracing.span("dispatch", name=info.name, version=info.version,
                              request_id=req.request_id) as span:
                # every result comes from _run, which stamps its start type and version
                result = self._dispatch(info, req, no_snapshot=no_snapshot,
                                        force_new=force_new)
                _stamp_span(span, result)
                return result
        finally:
            self._release(info.name)

    def _request(self, info: VersionInfo, payload: bytes, *, client_context: str | None,
                 trace_id: str | None, qualifier: str | None, request_id: str | None,
                 sink: ResponseSink | None) -> InvokeRequest:
        return InvokeRequest(request_id=request_id or str(uuid.uuid4()), payload=payload,
                             arn=self.settings.function_arn(info.name, qualifier or None),
                             timeout_s=info.config.timeout_s, trace_id=trace_id,
                             client_context=client_context, sink=sink)

    def _acquire(self, name: str) -> None:
        with self._lock:
            if self._closed:
                raise SandboxError("manager is closed")
            if self._active >= self.max_concurrency:
                raise ThrottledError("Rate Exceeded.",
                                     reason="ConcurrentInvocationLimitExceeded")
            self.limits.acquire(name)     # reserved concurrency; raises ThrottledError
            self._active += 1

    def _release(self, name: str) -> None:
        with self._lock:
            self._active -= 1
            self.limits.release(name)

    @property
    def active(self) -> int:
        """Invocations running now (concurrent executions)."""
        return self._active

    def _dispatch(self, info: VersionInfo, req: InvokeRequest, *, no_snapshot: bool,
                  force_new: bool) -> InvokeResult:
        key = (info.name, info.version)
        # 1. warm
        if not force_new:
            sandbox = self.clones.pop_idle(key)
            if sandbox is not None:
                try:
                    return self._run(sandbox, key, req, StartType.WARM)
                except RuntimeExitError:
                    pass        # it died idle, before this event reached it: start afresh
        notes: list[str] = []
        if info.snapshot and not no_snapshot:
            self.ahead.note(info)
            # 2a. restored ahead of demand
            sandbox = self.ahead.take(key)
            if sandbox is not None:
                try:
                    return self._run(sandbox, key, req, StartType.RESTORED_POOL)
                except RuntimeExitError:
                    pass        # it died while parked, before the event: restore afresh
            # 2b. restored now
            try:
                with self.slots.busy():
                    t0 = time.monotonic()
                    with tracing.span("restore"):
                        sandbox = self._restore(info)
                    criu_ms = (time.monotonic() - t0) * 1000
                    result = self._run(sandbox, key, req, StartType.RESTORED)
            except (SnapshotError, RestoreError, StoreError) as exc:
                note = (f"snapshot of {info.name}:{info.version} unusable "
                        f"({type(exc).__name__}: {exc.message.splitlines()[0]}); "
                        "fell back to a cold init")
                log.warning(note)
                notes.append(note)
            else:
                # Restore Duration: CRIU restore + resume until the runtime asks for work
                return dataclasses.replace(
                    result, restore_duration_ms=criu_ms + (result.restore_duration_ms or 0.0))
        # 3. cold
        return self._cold(info, key, req, notes)

    def _run(self, sandbox: Sandbox, key: Key, req: InvokeRequest,
             start_type: StartType) -> InvokeResult:
        """One invocation on ``sandbox`` (resumed first if it was restored); the clone
        is parked idle after, or killed. A dead, timed-out or failing runtime becomes a
        result in Lambda's shape; RuntimeExitError is raised only for a warm or
        restored-ahead clone that died before the event reached it (retryable)."""
        resume = start_type in (StartType.RESTORED, StartType.RESTORED_POOL)
        try:
            result = sandbox.invoke(req, resume=resume)
        except BaseException as exc:
            return self._failed_run(sandbox, key, req, start_type, exc)
        return self._ran(sandbox, key, result, start_type)

    def _failed_run(self, sandbox: Sandbox, key: Key, req: InvokeRequest,
                    start_type: StartType, exc: BaseException) -> InvokeResult:
        """``_run``'s ending when the invocation raised ``exc`` (the clone is gone)."""
        self.clones.untrack(sandbox)
        if isinstance(exc, RuntimeExitError):
            if exc.retryable and start_type in (StartType.WARM, StartType.RESTORED_POOL):
                raise exc
            return _failed(req, exc, start_type, key[1])
        if isinstance(exc, (SandboxTimeoutError, AfterRestoreError, OutOfMemoryError)):
            return _failed(req, exc, start_type, key[1])
        raise exc

    def _ran(self, sandbox: Sandbox, key: Key, result: InvokeResult,
             start_type: StartType) -> InvokeResult:
        """``_run``'s ending when the clone answered: parked idle again, or retired."""
        if sandbox.record_hot is not None:     # before it is parked or retired
            self.clones.later(self.hotsets.record, sandbox.pid, sandbox.record_hot)
            sandbox.record_hot = None
        if self.keep_warm and sandbox.state is SandboxState.IDLE and not self._closed:
            self.clones.park(key, sandbox)
        else:
            self.clones.retire(sandbox)       # torn down after the caller has its result
        return dataclasses.replace(result, start_type=start_type, executed_version=key[1])

    async def invoke_warm(self, info: VersionInfo, payload: bytes = b"{}", *,
                          client_context: str | None = None, trace_id: str | None = None,
                          qualifier: str | None = None) -> InvokeResult | None:
        """``invoke_version`` on the caller's event loop when an idle clone of ``info``
        can take the event (what ``snapstart serve`` does first: no thread between the
        request and the agent); None when there is none, or it had died idle -- the
        caller then calls ``invoke_version`` on a thread. Concurrency limits, spans and
        results are ``invoke_version``'s."""
        key = (info.name, info.version)
        if not self.clones.has_idle(key):
            return None
        check_payload(payload)
        req = self._request(info, payload, client_context=client_context, trace_id=trace_id,
                            qualifier=qualifier, request_id=None, sink=None)
        import asyncio          # serve's; not on the one-shot CLI's import path

        loop = asyncio.get_running_loop()
        self._acquire(info.name)
        try:
            sandbox = self.clones.pop_idle(key)
            if sandbox is None:
                return None
            with tracing.span("dispatch", name=info.name, version=info.version,
                              request_id=req.request_id) as span:
                try:
                    result = await sandbox.invoke_async(req)
                except BaseException as exc:
                    if not isinstance(exc, Exception):          # cancelled: no awaiting
                        loop.run_in_executor(None, self.clones.untrack, sandbox)
                        raise
                    try:
                        return await loop.run_in_executor(None, functools.partial(
                            self._failed_run, sandbox, key, req, StartType.WARM, exc))
                    except RuntimeExitError:
                        return None     # it died idle, before the event: start afresh
                result = self._ran(sandbox, key, result, StartType.WARM)
                _stamp_span(span, result)
                return result
        finally:
            self._release(info.name)

    def _restore(self, info: VersionInfo) -> Sandbox:
        """Restore a clone of ``info``'s snapshot (state RESTORING: not resumed).
        Without a prepared slot, one is prepared on a thread while the manifest is
        checked and the images are materialized (they overlap)."""
        n = int(info.version)
        fs = sandbox_fs(info.config)
        slot_start = tracing.now_ns()
        slot = self.slots.take()

        def ready(slot: RestoreSlot | None) -> RestoreSlot:
            slot = slot or self.slots.claim(fs=fs)
            slot.attach(info.code_dir, info.packages_dir)
            tracing.record("slot", slot_start, tracing.now_ns(), parent=parent)
            return slot

        # Overlapped with the snapshot's checks: waiting for (or preparing) a slot if
        # none was ready, and mounting the function's code into it.
        parent = tracing.current_context()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapstart-slot")
        pending = pool.submit(ready, slot)
        try:
            try:
                with tracing.span("materialize"):
                    manifest, images = self.store.materialized(info.name, n)
                    self.store.check_compatible(manifest, criu_version=self.criu.version())
                    check_agent_protocol(f"{info.name}:{n}", manifest.meta)
                    check_identity(f"{info.name}:{n}", info)
            finally:
                pool.shutdown(wait=True)
            slot = pending.result()
        except BaseException:
            if pending.done() and pending.exception() is None:
                slot = pending.result()
            if slot is not None:
                discard(slot)
            raise
        assert slot is not None
        try:
            with tracing.span("criu restore"):
                sandbox = Sandbox.restore(
                    self.criu, images, slot.work_dir,
                    ctl_inode=int((info.snapshot or {})["ctl_inode"]), owner=self.owner,
                    task=info.code_dir, packages=info.packages_dir,
                    name=f"{info.name}:{info.version}", memory_mb=info.config.memory_mb,
                    slot=slot, fs=fs, egress=info.config.egress,
                    log_sink=self._sink(info.name, info.version))
        finally:
            shutil.rmtree(slot.work_dir, ignore_errors=True)
        if HotSets.eligible(manifest.meta):
            sandbox.hot = self.hotsets.get(images)
            if sandbox.hot is None:             # the first clone here records it
                sandbox.record_hot = images
        return self.clones.track(sandbox)

    def prewarm(self, info: VersionInfo) -> Sandbox:
        """Restore a clone and resume it (after-restore hooks) without an event: IDLE."""
        sandbox = self._restore(info)
        try:
            sandbox.resume()
        except BaseException:
            self.clones.untrack(sandbox)
            raise
        return sandbox

    def _cold(self, info: VersionInfo, key: Key, req: InvokeRequest,
              notes: list[str]) -> InvokeResult:
        spec = runtime_spec(info.config, self.settings, identity=info.identity,
                            code_dir=info.code_dir,
                            packages_dir=info.packages_dir, version=info.version,
                            snap_start=False)
        t0 = time.monotonic()
        init_start = tracing.now_ns()
        sandbox = self.clones.track(Sandbox.spawn(
            spec, owner=self.owner, name=f"{info.name}:{info.version}",
            memory_mb=info.config.memory_mb,
            fs=sandbox_fs(info.config, info.code_dir, info.packages_dir),
            egress=info.config.egress, log_sink=self._sink(info.name, info.version)))
        logs = bytearray()
        try:
            try:
                sandbox.wait_init(max(10.0, info.config.timeout_s), logs)
            finally:
                tracing.record("init", init_start, tracing.now_ns())
        except InitError as exc:
            self.clones.untrack(sandbox)
            return InvokeResult(request_id=req.request_id,
                                payload=json.dumps(exc.to_lambda()).encode(),
                                function_error="Unhandled", duration_ms=0.0, logs=bytes(logs),
                                start_type=StartType.COLD,
                                init_duration_ms=(time.monotonic() - t0) * 1000,
                                notes=tuple(notes))
        init_ms = (time.monotonic() - t0) * 1000
        result = self._run(sandbox, key, req, StartType.COLD)
        return dataclasses.replace(result, init_duration_ms=init_ms,
                                   logs=bytes(logs) + result.logs, notes=tuple(notes))

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

    # ---- pools -------------------------------------------------------------------
    def _sink(self, name: str, stream: str) -> Callable[[bytes], None] | None:
        if self.log_sink is None:
            return None
        sink = self.log_sink
        return lambda data: sink(name, stream, data)

    def idle_count(self, name: str | None = None) -> int:
        return self.clones.idle_count(name)

    def idle_sandboxes(self, name: str, version: str) -> list[Sandbox]:
        """The idle clones of one version (read-only: memory figures)."""
        return self.clones.idle_of((name, version))

    def set_provisioned(self, name: str, qualifier: str | None, n: int, *,
                        wait_s: float = 0.0) -> str:
        """Keep ``n`` clones of a published version restored and idle (provisioned.py)."""
        return self.provisioned.set(name, qualifier, n, wait_s=wait_s)

    def provisioned_status(self, name: str, version: str) -> tuple[int, int, int]:
        return self.provisioned.status(name, version)

    def provisioned_ready(self) -> int:
        return self.provisioned.ready()

    def remove_version(self, name: str, n: int) -> None:
        self.registry.remove_version(name, n)
        with contextlib.suppress(SnapStartError):
            self.store.remove(name, n)

    # ---- housekeeping ------------------------------------------------------------
    def start_housekeeping(self, *, idle_timeout_s: float = 300.0,
                           max_lifetime_s: float = 7200.0, interval_s: float = 1.0) -> None:
        """Reap idle clones, recycle old ones, keep provisioned clones topped up."""
        if self._housekeeper is not None:
            return
        self.ahead.idle_timeout_s = idle_timeout_s

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
        doomed = self.clones.expire(idle_timeout_s=idle_timeout_s,
                                    max_lifetime_s=max_lifetime_s,
                                    keep=self.provisioned.members())
        doomed += self.ahead.expire()
        for key in self.provisioned.keys():
            self.provisioned.replenish(key)
        return doomed

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._closed = True
        self.ahead.close()
        self.slots.close()
        self.clones.close()
        self._store = None      # its chunk directory is open until it is collected

    def __enter__(self) -> "Manager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stamp_span(span, result: InvokeResult) -> None:
    """The dispatch span's start type (tracing.py), once the result says it."""
    if span is not None:
        span.set_attribute(tracing.ATTRS["start_type"], str(result.start_type))
        span.set_attribute(tracing.ATTRS["coldstart"], result.start_type is not StartType.WARM)


def _failed(req: InvokeRequest, exc: SandboxError, start_type: StartType,
            version: str) -> InvokeResult:
    """A timed-out, crashed or out-of-memory invocation, as Lambda reports it: what the
    function printed, then the platform's own lines; its real duration and memory."""
    line = exc.message if exc.message.startswith("RequestId:") else \
        f"RequestId: {req.request_id} Error: {exc.message}"
    logs = exc.logs + (b"" if not exc.logs or exc.logs.endswith(b"\n") else b"\n") + \
        f"{line}\n{exc.error_type}\n".encode()
    return InvokeResult(request_id=req.request_id, payload=json.dumps(exc.to_lambda()).encode(),
                        function_error="Unhandled", duration_ms=exc.duration_ms, logs=logs,
                        max_memory_used_mb=exc.max_memory_used_mb, start_type=start_type,
                        executed_version=version)


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

