"""Functions, versions and aliases on disk (under ``SNAPSTART_HOME``).

Layout::

    $SNAPSTART_HOME/
      functions/<name>/
        .lock                      flock: version allocation, alias updates
        latest/config.json         $LATEST: the unpublished function's config
        latest/code/               $LATEST: its code
        versions/<n>/code/         immutable copy of the code published as version n
        versions/<n>/packages/     requirements.txt installed with pip --target (optional)
        versions/<n>/version.json  {"config": {...}, "snapshot": {...}, "created": t}
        versions/<n>/.incomplete   present while publishing; such a version is invisible
        aliases.json               {"alias": n}
      store/                       the snapshot store (snapstart.store)

Permissions: the home and the directories down to a version are 0711 (traversable,
not listable); each function runs as its own uid == gid (identities.py, ledger
``identities.json``); its code and packages are group-owned by that gid, 0750/0640,
never world-readable, so a function reads its own code and no other's. The JSON files
(config, versions, aliases) are root-only (0600): they hold the environment variables,
which are sealed with the store's key (AES-256-GCM, associated data
``b"snapstart-env\0" + name``) when encryption is on::

    "environment": {"$sealed": "<base64 of key id | nonce | ciphertext | tag>"}

(``$sealed`` cannot be a variable's name, so a plain environment never looks sealed.)

The store stays 0700.

A version is visible once ``version.json`` exists and ``.incomplete`` does not; the
code must live at its final path *before* the checkpoint, because the restored
processes refer to it by path (cwd, sys.path). Every name is validated with
Lambda's rules before it becomes a path, so nothing can escape the home.

Fleet (``SNAPSTART_STORE=s3://...``, store/s3.py): the bucket is the registry of
record and this layout is the node's copy of it. Version numbers are claimed in the
bucket (a conditional write), so two nodes publishing at once get distinct ones; a
committed version's code and record, and alias changes, are pushed to the bucket.
``resolve`` looks in the bucket for versions this node lacks at most every
``SNAPSTART_STORE_SYNC_S`` seconds per function (default 2), and at once when a
name or version is unknown here; what it finds is verified and copied into this
layout (code unpacked, shared with the function's uid, which the snapshot records
and this node adopts). A node that pulled a function without having $LATEST gets the
newest pulled version as its $LATEST. Sync failures (endpoint down) are logged and
resolution goes on with what the node has.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import FunctionConfig, Settings, validate_alias, validate_name
from .errors import (ConfigError, FunctionNotFoundError, InvalidNameError, SnapStartError,
                     StoreError)
from .identities import Identities
from .jsonfile import write_private

__all__ = ["Registry", "VersionInfo", "LATEST"]

log = logging.getLogger("snapstart.registry")
LATEST = "$LATEST"
_FORCED_SYNC_GAP_S = 0.25    # an unknown name asks the bucket at most this often
_SEALED = "$sealed"          # the environment's key when sealed (not a variable name)
_STALE_INCOMPLETE_S = 3600


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str                 # "1", "2", ... or "$LATEST"
    config: FunctionConfig
    code_dir: Path
    packages_dir: Path | None
    snapshot: dict | None        # publish facts (None for $LATEST)
    uid: int = -1                # the function's identity (identities.py); gid == uid

    @property
    def identity(self) -> tuple[int, int]:
        return self.uid, self.uid


class Registry:
    def __init__(self, settings: Settings, *, remote: Callable[[], Any] | None = None) -> None:
        """``remote``: gives the fleet store (store/s3.py S3Store) when
        ``settings.store_url`` is set (default: one made from the settings)."""
        self.settings = settings
        self._remote_factory = remote
        self._remote: Any = None
        self._synced: dict[str, float] = {}     # name -> last bucket sync (monotonic)
        self._sync_locks: dict[str, threading.Lock] = {}
        self.root = settings.home / "functions"
        self.identities = Identities(settings.home, settings.uid_range)
        self._cipher_state: tuple[object | None] | None = None
        # resolve() is on every invoke's path: cache it, validated by the mtimes of
        # what can change it (three stat calls instead of reading JSON files).
        self._cache: dict[tuple[str, str | None], tuple[tuple, VersionInfo]] = {}
        self._stamp_paths: dict[str, tuple[str, str, str]] = {}   # name -> what _stamp stats

    def _fdir(self, name: str) -> Path:
        return self.root / validate_name(name)

    # ---- the fleet's bucket ------------------------------------------------------
    @property
    def remote(self) -> Any:
        """The fleet store, or None for a single node."""
        if not self.settings.store_url:
            return None
        if self._remote is None:
            if self._remote_factory is not None:
                self._remote = self._remote_factory()
            else:
                from .store.s3 import S3Store
                self._remote = S3Store.from_settings(self.settings, self.settings.store_url)
        return self._remote

    def sync(self, name: str, *, force: bool = False) -> None:
        """Copy versions and aliases of ``name`` that the bucket has and this node
        lacks (module docstring); no-op without a fleet store or within the interval."""
        if not self.settings.store_url:
            return
        called = time.monotonic()
        last = self._synced.get(name)
        if not force and last is not None and called - last < self.settings.store_sync_s:
            return
        if len(self._sync_locks) > 4096:        # unknown names asked for: bounded
            self._synced.clear()
            self._sync_locks.clear()
        lock = self._sync_locks.setdefault(name, threading.Lock())
        # a periodic sync is skipped while another runs; a forced one (an unknown
        # version) waits for it: what it was looking for may be what that one brings
        if not lock.acquire(blocking=force):
            return
        try:
            last = self._synced.get(name)
            if last is not None and (last >= called or called - last < _FORCED_SYNC_GAP_S):
                return
            self._synced[name] = time.monotonic()
            self._pull(name)
        finally:
            lock.release()

    def _pull(self, name: str) -> None:
        try:
            remote = self.remote
            local = set(self.versions(name))
            for n in remote.remote_versions(name):
                if n not in local:
                    self._install(name, n, remote)
            aliases = remote.fetch_aliases(name)
            if aliases is not None:
                have = set(self.versions(name))
                aliases = {a: v for a, v in aliases.items() if v in have}
                if aliases != self.aliases(name):
                    with self.lock(name):
                        write_private(self._fdir(name) / "aliases.json", aliases)
        except SnapStartError as exc:
            log.warning("fleet sync of %s skipped: %s", name, exc.message)

    def _install(self, name: str, n: int, remote: Any) -> None:
        """Copy ``name:n`` from the bucket into this layout (verified by the store)."""
        record, unpack = remote.fetch_version(name, n)
        uid = int((record.get("snapshot") or {}).get("uid", -1))
        if self.identities.get(name) is None and uid >= 0:
            self.identities.adopt(name, uid)
        gid = self.identity(name)[1]
        with self.lock(name):
            vroot = self._fdir(name) / "versions"
            self._mkdirs(vroot)
            vdir = vroot / str(n)
            if (vdir / "version.json").exists():
                return
            shutil.rmtree(vdir, ignore_errors=True)
            vdir.mkdir(mode=0o711)
            (vdir / ".incomplete").write_text(str(os.getpid()))
            try:
                unpack(vdir)
                for tree in (vdir / "code", vdir / "packages"):
                    if tree.is_dir():
                        self.share_with_sandbox(tree, gid)
                write_private(vdir / "version.json", record)
                (vdir / ".incomplete").unlink()
            except BaseException:
                shutil.rmtree(vdir, ignore_errors=True)
                raise
            latest = self._fdir(name) / "latest"
            if not (latest / "config.json").exists():
                self._mkdirs(latest)
                shutil.rmtree(latest / "code", ignore_errors=True)
                _copy_code(vdir / "code", latest / "code")
                self.share_with_sandbox(latest / "code", gid)
                write_private(latest / "config.json", record["config"])
            os.utime(vroot)
        log.info("fleet: pulled %s:%d", name, n)

    def _mkdirs(self, path: Path) -> None:
        """Create ``path`` and its parents below the home as traversable (0711)."""
        home = self.settings.home
        missing = [p for p in [path, *path.parents] if not p.exists()
                   and (p == home or home in p.parents)]
        for p in reversed(missing):
            p.mkdir(mode=0o711, exist_ok=True)
            os.chmod(p, 0o711)

    # ---- identities and secrets ------------------------------------------------
    def identity(self, name: str) -> tuple[int, int]:
        """The function's (uid, gid), allocated on first use. A function created
        before identities existed gets one now and its code trees are re-shared."""
        found = self.identities.get(name)
        if found is not None:
            return found
        ident, new = self.identities.ensure(validate_name(name))
        if new:
            fdir = self._fdir(name)
            trees = [fdir / "latest" / "code"] + [
                v / sub for v in sorted((fdir / "versions").glob("[0-9]*"))
                for sub in ("code", "packages")]
            for tree in trees:
                if tree.is_dir():
                    self.share_with_sandbox(tree, ident[1])
            for js in [fdir / "aliases.json", fdir / "latest" / "config.json",
                       *fdir.glob("versions/*/version.json")]:
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(js, 0o600)
        return ident

    def _cipher(self):
        """The store's cipher when encryption is on (read from the environment once)."""
        if self._cipher_state is None:
            from .store.crypto import StoreCipher, encryption_key_from_env
            key = encryption_key_from_env(os.environ)
            self._cipher_state = (StoreCipher(key) if key is not None else None,)
        return self._cipher_state[0]

    def _config_out(self, config: FunctionConfig) -> dict:
        data = config.to_dict()
        cipher = self._cipher()
        if cipher is not None and data.get("environment"):
            import base64
            body = json.dumps(data["environment"], sort_keys=True).encode()
            sealed = cipher.seal_manifest(body, b"snapstart-env\0" + config.name.encode())
            data["environment"] = {_SEALED: base64.b64encode(sealed).decode()}
        return data

    def _config_in(self, name: str, data: dict) -> FunctionConfig:
        env = data.get("environment")
        if isinstance(env, dict) and set(env) == {_SEALED} and isinstance(env[_SEALED], str):
            cipher = self._cipher()
            if cipher is None:
                raise ConfigError(f"the environment of {name} is encrypted: set "
                                  "SNAPSTART_ENCRYPTION_KEY (or _KEY_FILE) to use it")
            import base64
            try:
                body = cipher.open_manifest(base64.b64decode(env[_SEALED]),
                                            b"snapstart-env\0" + name.encode())
            except ValueError as exc:
                raise ConfigError(f"cannot open the environment of {name}: {exc}") from None
            data = dict(data, environment=json.loads(body))
        return FunctionConfig.from_dict(data)

    def share_with_sandbox(self, path: Path, gid: int) -> None:
        """Make a code tree readable by its function's group only."""
        for root, dirs, files in os.walk(path):
            os.chown(root, -1, gid)
            os.chmod(root, 0o750)
            for f in files:
                fp = os.path.join(root, f)
                if os.path.islink(fp):
                    continue
                os.chown(fp, -1, gid)
                os.chmod(fp, 0o750 if os.stat(fp).st_mode & 0o111 else 0o640)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        fdir = self._fdir(name)
        self._mkdirs(fdir)
        with open(fdir / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- functions ---------------------------------------------------------------
    def functions(self) -> list[str]:
        if self.settings.store_url:
            try:
                for name in self.remote.remote_functions():
                    self.sync(name)
            except SnapStartError as exc:
                log.warning("fleet: listing the bucket's functions failed: %s", exc.message)
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if (p / "latest" / "config.json").exists())

    def exists(self, name: str) -> bool:
        return (self._fdir(name) / "latest" / "config.json").exists()

    def set_latest(self, config: FunctionConfig, code_src: Path) -> None:
        """Create or update $LATEST from a code directory."""
        code_src = Path(code_src)
        if not code_src.is_dir():
            raise ConfigError(f"function code directory {code_src} does not exist")
        latest = self._fdir(config.name) / "latest"
        self._mkdirs(latest)
        gid = self.identity(config.name)[1]
        staging = latest / f".code.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        _copy_code(code_src, staging)
        self.share_with_sandbox(staging, gid)
        old = latest / "code.old"
        shutil.rmtree(old, ignore_errors=True)
        if (latest / "code").exists():
            os.replace(latest / "code", old)
        os.replace(staging, latest / "code")
        shutil.rmtree(old, ignore_errors=True)
        write_private(latest / "config.json", self._config_out(config))

    def latest(self, name: str) -> VersionInfo:
        latest = self._fdir(name) / "latest"
        try:
            data = json.loads((latest / "config.json").read_text())
        except FileNotFoundError:
            raise FunctionNotFoundError(f"Function not found: {self.settings.function_arn(name)}") \
                from None
        return VersionInfo(name=name, version=LATEST, config=self._config_in(name, data),
                           code_dir=latest / "code", packages_dir=None, snapshot=None,
                           uid=self.identity(name)[0])

    # ---- versions ----------------------------------------------------------------
    def allocate_version(self, name: str) -> tuple[int, Path]:
        """Reserve the next version number (in a fleet: claimed in the bucket); its
        directory is marked incomplete."""
        with self.lock(name):
            vroot = self._fdir(name) / "versions"
            self._mkdirs(vroot)
            self._sweep_incomplete(vroot)
            numbers = [int(p.name) for p in vroot.iterdir() if p.name.isdigit()]
            n = max(numbers, default=0) + 1
            if self.remote is not None:
                n = self.remote.claim_version(name, at_least=n)
            vdir = vroot / str(n)
            vdir.mkdir(mode=0o711)
            (vdir / ".incomplete").write_text(str(os.getpid()))
            return n, vdir

    @staticmethod
    def _sweep_incomplete(vroot: Path) -> None:
        """Remove versions whose publisher died (crash / Ctrl-C mid-publish)."""
        for p in vroot.iterdir():
            marker = p / ".incomplete"
            if not marker.exists():
                continue
            try:
                pid = int(marker.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            alive = pid > 0 and Path(f"/proc/{pid}").exists()
            if not alive or time.time() - marker.stat().st_mtime > _STALE_INCOMPLETE_S:
                shutil.rmtree(p, ignore_errors=True)

    def commit_version(self, name: str, n: int, config: FunctionConfig,
                       snapshot: dict | None) -> None:
        vdir = self._fdir(name) / "versions" / str(n)
        write_private(vdir / "version.json", {"config": self._config_out(config),
                                            "snapshot": snapshot, "created": time.time()})
        if self.remote is not None:      # the record goes last: then it exists for all
            self.remote.push_version(name, n, vdir)
        (vdir / ".incomplete").unlink()
        os.utime(vdir.parent)   # invalidates resolve() caches (here and in other processes)

    def abort_version(self, name: str, n: int) -> None:
        shutil.rmtree(self._fdir(name) / "versions" / str(n), ignore_errors=True)

    def versions(self, name: str) -> list[int]:
        vroot = self._fdir(name) / "versions"
        if not vroot.is_dir():
            return []
        return sorted(int(p.name) for p in vroot.iterdir()
                      if p.name.isdigit() and (p / "version.json").exists()
                      and not (p / ".incomplete").exists())

    def version(self, name: str, n: int) -> VersionInfo:
        vdir = self._fdir(name) / "versions" / str(n)
        if (vdir / ".incomplete").exists():
            raise FunctionNotFoundError(f"Function not found: {self.settings.function_arn(name, str(n))}")
        try:
            data = json.loads((vdir / "version.json").read_text())
        except FileNotFoundError:
            raise FunctionNotFoundError(
                f"Function not found: {self.settings.function_arn(name, str(n))}") from None
        packages = vdir / "packages"
        return VersionInfo(name=name, version=str(n),
                           config=self._config_in(name, data["config"]),
                           code_dir=vdir / "code",
                           packages_dir=packages if packages.is_dir() else None,
                           snapshot=data.get("snapshot"), uid=self.identity(name)[0])

    def remove_version(self, name: str, n: int) -> None:
        with self.lock(name):
            aliases = self.aliases(name)
            users = [a for a, v in aliases.items() if v == n]
            if users:
                raise ConfigError(f"version {n} of {name} is used by alias(es) {', '.join(users)}")
            vdir = self._fdir(name) / "versions" / str(n)
            if not (vdir / "version.json").exists():
                raise FunctionNotFoundError(
                    f"Function not found: {self.settings.function_arn(name, str(n))}")
            shutil.rmtree(vdir)

    # ---- aliases -----------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, int]:
        try:
            return json.loads((self._fdir(name) / "aliases.json").read_text())
        except FileNotFoundError:
            return {}

    def set_alias(self, name: str, alias: str, version: int) -> None:
        validate_alias(alias)
        with self.lock(name):
            if version not in self.versions(name):
                raise FunctionNotFoundError(
                    f"Function not found: {self.settings.function_arn(name, str(version))}")
            aliases = self.aliases(name)
            aliases[alias] = version
            if self.remote is not None:
                self.remote.push_aliases(name, aliases)
            write_private(self._fdir(name) / "aliases.json", aliases)

    # ---- resolution --------------------------------------------------------------
    def _stamp(self, name: str) -> tuple:
        paths = self._stamp_paths.get(name)
        if paths is None:
            if len(self._stamp_paths) > 4096:
                self._stamp_paths.clear()
            fdir = self._fdir(name)
            paths = self._stamp_paths[name] = (str(fdir / "versions"), str(fdir / "aliases.json"),
                                               str(fdir / "latest" / "config.json"))
        out: list[tuple[int, int] | None] = []
        for path in paths:
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_ino))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def resolve(self, name: str, qualifier: str | None = None) -> VersionInfo:
        """NAME with an optional version number, alias or $LATEST.

        No qualifier means the latest published version (or $LATEST if none).
        """
        key = (name, qualifier or None)
        if self.settings.store_url:
            self.sync(name)
        cached = self._cache.get(key)
        if cached is not None:
            stamp = self._stamp(name)
            if cached[0] == stamp:
                return cached[1]
        else:
            validate_name(name)
            stamp = self._stamp(name)
        try:
            info = self._resolve(name, qualifier)
        except FunctionNotFoundError:
            if not self.settings.store_url:
                raise
            self.sync(name, force=True)     # published on another node a moment ago?
            stamp = self._stamp(name)
            info = self._resolve(name, qualifier)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = (stamp, info)
        return info

    def cached(self, name: str, qualifier: str | None = None) -> VersionInfo | None:
        """``resolve`` when it needs no more than a few stat calls: the version this
        registry resolved last time, if its files did not change since and no fleet
        sync is due; else None (call ``resolve``, on a thread)."""
        cached = self._cache.get((name, qualifier or None))
        if cached is None:
            return None
        if self.settings.store_url:
            last = self._synced.get(name)
            if last is None or time.monotonic() - last >= self.settings.store_sync_s:
                return None
        return cached[1] if cached[0] == self._stamp(name) else None

    def _resolve(self, name: str, qualifier: str | None) -> VersionInfo:
        if not self.exists(name):
            raise FunctionNotFoundError(f"Function not found: {self.settings.function_arn(name)}")
        if qualifier is None or qualifier == "":
            published = self.versions(name)
            return self.version(name, published[-1]) if published else self.latest(name)
        if qualifier == LATEST:
            return self.latest(name)
        if qualifier.isascii() and qualifier.isdigit():   # str.isdigit() also takes "²"
            return self.version(name, int(qualifier))
        try:
            validate_alias(qualifier)
        except InvalidNameError:
            raise FunctionNotFoundError(
                f"Function not found: {self.settings.function_arn(name, qualifier)}") from None
        aliases = self.aliases(name)
        if qualifier not in aliases:
            raise FunctionNotFoundError(
                f"Function not found: {self.settings.function_arn(name, qualifier)}")
        return self.version(name, aliases[qualifier])


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME[:QUALIFIER]`` -> (name, qualifier)."""
    name, _, qualifier = ref.partition(":")
    return validate_name(name), (qualifier or None)


def _copy_code(src: Path, dst: Path) -> None:
    try:
        shutil.copytree(src, dst, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git"))
    except OSError as exc:
        raise StoreError(f"cannot copy function code from {src}: {exc}") from exc
