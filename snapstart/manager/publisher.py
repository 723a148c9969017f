"""Publish: a function's code in, an immutable version with a snapshot out.

Steps (``Publisher.publish``): copy the code into a new version directory, install
its requirements.txt with pip, start a sandbox in snap-start mode (ASLR off and a
per-function hash seed, so two versions' snapshots share pages), wait for init and
the before-snapshot hooks, checkpoint it with CRIU, store the images (chunked,
compressed, signed) with the metadata a restore checks, commit the version. Any
failure leaves nothing behind: the version is aborted and its snapshot removed.

The metadata it stores (the manifest's ``meta``, store/manifest.py, to which the
store adds its host facts, store/host.py; the same facts are the registry's
``version.json`` ``snapshot``): ``ctl_inode``, ``init_duration_ms``,
``dump_duration_ms``, ``image_bytes``, ``criu_version``, ``agent_protocol``,
``agent_layout``, ``uid``, ``gid``, ``snapstart_version``, ``hooks``; the manifest's
also ``config``, ``runtime``, ``python``. ``hooks`` is the function's registered
hooks in the order they run, ``[{"kind": "before_snapshot" | "after_restore",
"name": "app.reset_id", "at": "app.py:12"}, ...]`` (absent in snapshots published
before it was recorded; None when the runtime listed none: ``provided``). The
runtime lists them after its before-snapshot hooks in ``/tmp/.snapstart-hooks.json``
(bootstrap/python/sitecustomize.py, bootstrap/node/snapstart-preload.js); the file
is taken out of the sandbox (read, removed) before the dump, so no clone sees it.
It is the function's own account: bounded, checked for shape, shown, never acted on.

Must not dispatch invocations: that is the manager's.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..checkpoint.criu import Criu
from ..config import FunctionConfig, Settings
from ..errors import InitError, PublishError, SandboxError, StoreError
from ..registry import Registry
from ..runtimes import runtime_spec
from ..sandbox.mountns import SandboxFs, take_tmp_file
from ..sandbox.sandbox import Sandbox
from .clones import Clones
from ..sandbox.procs import private_name

__all__ = ["Publisher", "PublishResult", "sandbox_fs"]

log = logging.getLogger("snapstart.manager")
HOOKS_FILE = ".snapstart-hooks.json"     # in the sandbox's /tmp (module docstring)
_HOOKS_MAX_BYTES = 64 * 1024
_HOOKS_MAX = 256
_HOOK_KINDS = ("before_snapshot", "after_restore")


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


def sandbox_fs(config: FunctionConfig, code: Path | None = None,
               packages: Path | None = None) -> SandboxFs:
    """A sandbox's filesystem for ``config`` (code and packages: cold and publish)."""
    return SandboxFs(size_mb=config.ephemeral_storage_mb,
                     task=str(code) if code else None,
                     packages=str(packages) if packages else None)


class Publisher:
    def __init__(self, *, settings: Settings, registry: Registry, store: Callable[[], Any],
                 criu: Criu, owner: str, clones: Clones,
                 sink: Callable[[str, str], Callable[[bytes], None] | None]) -> None:
        self.settings = settings
        self.registry = registry
        self._store = store
        self.criu = criu
        self.owner = owner
        self.clones = clones
        self._sink = sink

    def publish(self, code_dir: Path, config: FunctionConfig, *, progress: bool = False,
                init_timeout_s: float = 120.0, snap_start: bool = True) -> PublishResult:
        """Init once, checkpoint, store: a new immutable version. ``snap_start=False``
        (SAM's ``SnapStart: ApplyOn: None``): the version is recorded without a
        snapshot (no init runs now); its invocations start cold."""
        store = self._store()
        self.registry.set_latest(config, Path(code_dir))
        n, vdir = self.registry.allocate_version(config.name)
        staging = self.settings.shm / "staging" / private_name()
        try:
            packages = None
            identity = self.registry.identity(config.name)
            try:
                shutil.copytree(self.registry.latest(config.name).code_dir, vdir / "code",
                                symlinks=True)
                packages = self._install_requirements(vdir)
                for tree in (vdir / "code", packages):
                    if tree is not None:
                        self.registry.share_with_sandbox(tree, identity[1])
            except OSError as exc:
                raise PublishError(f"cannot prepare the function's code: {exc}") from exc
            if not snap_start:
                self.registry.commit_version(config.name, n, config, None)
                return PublishResult(name=config.name, version=n, init_duration_ms=0.0,
                                     dump_duration_ms=0.0, image_bytes=0, stored_bytes=0)
            seed = self._hash_seed(store, config.name)
            spec = runtime_spec(config, self.settings, identity=identity, code_dir=vdir / "code",
                                packages_dir=packages, version=str(n), snap_start=True,
                                log_stream=f"publish/{n}", hash_seed=seed)
            t0 = time.monotonic()
            sandbox = self.clones.track(Sandbox.spawn(
                spec, owner=self.owner, name=f"{config.name}:{n}:publish", deterministic=True,
                hash_seed=seed, memory_mb=config.memory_mb,
                fs=sandbox_fs(config, vdir / "code", packages), egress=config.egress,
                log_sink=self._sink(config.name, "publish")))
            try:
                kind = sandbox.wait_init(init_timeout_s)
            except InitError as exc:
                self.clones.untrack(sandbox)
                raise PublishError(f"init failed: {exc.error_type}: {exc.message}",
                                   error_type=exc.error_type) from exc
            init_ms = (time.monotonic() - t0) * 1000
            if kind != "snapshot" and not spec.snapshot_on_next:
                self.clones.untrack(sandbox)
                raise PublishError("the runtime asked for an invocation instead of calling "
                                   "GET /runtime/restore/next; it does not support snap-start")
            hooks = _registered_hooks(sandbox.pid, config.name)
            t1 = time.monotonic()
            try:
                dump = sandbox.checkpoint(self.criu, staging / "images", staging / "work")
            finally:
                self.clones.untrack(sandbox)
            dump_ms = (time.monotonic() - t1) * 1000
            snapshot = {"ctl_inode": sandbox.ctl_inode, "init_duration_ms": init_ms,
                        "dump_duration_ms": dump_ms, "image_bytes": dump.image_bytes,
                        "criu_version": self.criu.version(),
                        # the agent frozen in the image speaks this (bootstrap.protocol)
                        "agent_protocol": sandbox.protocol_version,
                        "agent_layout": sandbox.layout,
                        # the credentials frozen in the image (identities.py)
                        "uid": spec.uid, "gid": spec.gid,
                        "snapstart_version": __version__, "hooks": hooks}
            meta = {"config": config.to_dict(), "runtime": config.runtime,
                    "python": sys.version.split()[0], **snapshot}
            store.put(config.name, n, staging / "images", meta, progress=progress)
            try:    # the first restore finds the images in L1 already
                store.adopt_into_l1(config.name, n, staging / "images")
            except StoreError as exc:
                log.warning("%s:%d: images not kept in L1 (%s); the first restore "
                            "materializes them", config.name, n, exc.message)
            stored = self._stored_bytes(store, config.name, n)
            self.registry.commit_version(config.name, n, config, snapshot)
            log.info("published %s:%d (init %.0f ms, dump %.0f ms, %d bytes)", config.name, n,
                     init_ms, dump_ms, dump.image_bytes)
            return PublishResult(name=config.name, version=n, init_duration_ms=init_ms,
                                 dump_duration_ms=dump_ms, image_bytes=dump.image_bytes,
                                 stored_bytes=stored)
        except BaseException:
            self.registry.abort_version(config.name, n)
            with contextlib.suppress(Exception):
                store.remove(config.name, n)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _hash_seed(store: Any, name: str) -> int:
        """A per-function PYTHONHASHSEED: stable across versions (so snapshots of two
        versions deduplicate), secret (derived from the store's key)."""
        digest = hmac.new(store.key, b"pythonhashseed:" + name.encode(), hashlib.sha256)
        return int.from_bytes(digest.digest()[:4], "little")

    @staticmethod
    def _stored_bytes(store: Any, name: str, n: int) -> int:
        for row in store.stats():
            if row.get("name") == name and row.get("version") == n:
                return int(row.get("stored_bytes", 0))
        return 0

    @staticmethod
    def _install_requirements(vdir: Path) -> Path | None:
        req = vdir / "code" / "requirements.txt"
        if not req.exists():
            return None
        target = vdir / "packages"
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                                   "--disable-pip-version-check", "--no-input", "--target",
                                   str(target), "-r", str(req)], capture_output=True, text=True)
        except OSError as exc:
            raise PublishError(f"cannot run pip: {exc}") from exc
        if proc.returncode != 0:
            raise PublishError("pip could not install requirements.txt: "
                               + (proc.stderr.strip().splitlines() or ["(no output)"])[-1])
        return target


def _registered_hooks(pid: int, name: str) -> list[dict[str, str]] | None:
    """The hooks the runtime of sandbox ``pid`` listed (module docstring), taken out
    of its /tmp; None if it listed none or the list is unreadable (logged)."""
    try:
        data = take_tmp_file(pid, HOOKS_FILE, _HOOKS_MAX_BYTES)
    except SandboxError as exc:
        log.warning("%s: registered hooks not recorded (%s)", name, exc.message)
        return None
    if data is None:
        return None
    try:
        rows = json.loads(data)["hooks"]
        hooks = []
        for row in rows[:_HOOKS_MAX]:
            kind, hook, at = row["kind"], row["name"], row.get("at", "")
            if kind not in _HOOK_KINDS or not isinstance(hook, str) or not isinstance(at, str):
                raise ValueError(f"bad entry {row!r:.80}")
            hooks.append({"kind": kind, "name": hook[:200], "at": at[:200]})
        return hooks
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s: registered hooks not recorded (unreadable list: %s)", name, exc)
        return None
