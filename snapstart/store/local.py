"""``LocalStore``: the snapshot store on a local file system, with an L1 on tmpfs.

Layout of ``root`` (directories 0700, files 0600)::

    key                              32 random bytes: the HMAC key (unless the key is
                                     given, e.g. from SNAPSTART_STORE_KEY)
    gc.lock                          flock: put() holds LOCK_SH for its whole run,
                                     gc() takes LOCK_EX
    manifests/<name>/<version>.msgpack   signed manifest (format: manifest.py)
    manifests/<name>/.<version>.msgpack.tmp-*   a manifest being written
    chunks/<h[0:2]>/<h>.zst          compressed chunks (format: chunks.py)
    tmp/                             chunks being written

Encryption at rest (crypto.py): with an encryption key, ``put`` writes encrypted
chunks under keyed names and a format-2 manifest (encrypted body); reading follows
each manifest's own format, so a store that gains a key keeps serving its older
plaintext versions, and one without the key refuses encrypted versions with
"... encrypted; set SNAPSTART_ENCRYPTION_KEY". Without a key nothing changes: the
files are byte-for-byte those of a store that never knew about encryption.
Encryption covers L2 only: L1 entries (l1.py) are plaintext on tmpfs, 0700, since
CRIU restores from plain files. The ``key`` file (HMAC) is not the encryption key
and must not be: the encryption key is never written into the store.

Publishing (``put``) is atomic: chunks first (temp file, fsync, link into place),
then the chunk directories are fsynced, then the manifest is written to a temp file,
fsynced and linked to its final name (``link`` refuses to replace: versions are
immutable). A put that dies half-way leaves unreferenced chunks and temp files,
never a visible version; gc() reclaims them. gc() runs with the gc lock exclusive,
so no put is between "this chunk exists, skip it" and "my manifest references it"
while gc decides what is garbage.

A chunk that already exists is reused as it is, not re-read: damage to it is found
by ``verify()`` (and by any materialize that reads it), not by the next put.

Materializing reads, verifies and decompresses chunks on a thread pool (zstd and
SHA-256 release the GIL; writes are ``pwrite`` into pre-sized files) into an L1
entry (l1.py), decompressing each distinct chunk once even if it repeats. Hits
check the manifest's signature and nothing else: L1 holds only verified files.

One ``LocalStore`` may be used from many threads, and many processes may open the
same root and L1 directory. ``key`` (the HMAC key) is a public attribute.

Environment (read only by ``from_settings``, from the mapping it is given):
``SNAPSTART_STORE_KEY`` (hex, >= 16 bytes), ``SNAPSTART_ZSTD_LEVEL`` (1-22, default 3),
``SNAPSTART_ENCRYPTION_KEY`` (64 hex) or ``SNAPSTART_ENCRYPTION_KEY_FILE`` (a 0600
file of 32 raw bytes or 64 hex characters): crypto.py.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import stat
import sys
import threading
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import click

from ..config import NAME_RE as _NAME_RE   # Lambda's function-name rule
from ..config import Settings, validate_name
from ..errors import (ConfigError, FunctionNotFoundError, SnapshotIntegrityError,
                      SnapStartError, StoreError)
from . import host as _host
from ._fs import (create_file, flocked, fsync_dir, mkdir_private, pwrite_all, write_new_file)
from .chunking import CHUNKER_ID, iter_chunks, volatile_ranges
from .chunks import ChunkStore
from .crypto import StoreCipher, encryption_key_from_env
from .l1 import L1Cache
from .manifest import (ChunkRef, FileEntry, Manifest, check_json_able,
                       read_signed_body)

__all__ = ["LocalStore"]

T = TypeVar("T")
_MANIFEST_RE = re.compile(r"^(0|[1-9][0-9]{0,18})\.msgpack$")
MIN_KEY_BYTES = 16
_PARSED_CACHE = 64  # parsed manifests kept per store (process-local)


class LocalStore:
    """Snapshots under ``root``; materialized copies under ``l1_dir`` (tmpfs)."""

    def __init__(self, root: Path, l1_dir: Path, *, level: int = 3,
                 l1_budget_bytes: int = 4 << 30, key: bytes | None = None,
                 encryption_key: bytes | None = None) -> None:
        if not isinstance(level, int) or not 1 <= level <= 22:
            raise ConfigError(f"zstd level must be an integer from 1 to 22, not {level!r}")
        if key is not None and len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"store key must be at least {MIN_KEY_BYTES} bytes")
        # None: publish unencrypted; ConfigError for a key of the wrong size
        self._cipher = StoreCipher(encryption_key) if encryption_key is not None else None
        self.root = Path(root)
        self.level = level
        self._manifests = self.root / "manifests"
        self._tmp = self.root / "tmp"
        self._gc_lock = self.root / "gc.lock"
        try:
            for d in (self.root, self._manifests, self._tmp, self.root / "chunks"):
                mkdir_private(d)
            self.key = key if key is not None else _load_or_create_key(self.root / "key")
            store_id = hmac.new(self.key, b"snapstart-store-id", hashlib.sha256).hexdigest()[:16]
            self._l1 = L1Cache(Path(l1_dir), store_id, l1_budget_bytes)
            self._chunks = ChunkStore(self.root / "chunks", self._tmp, level, self._cipher)
        except OSError as exc:
            raise StoreError(f"cannot open the snapshot store at {self.root}: {exc}") from exc
        self.workers = max(2, os.cpu_count() or 2)
        # set by a store this one caches for (s3.py): brings a manifest's chunks this
        # store lacks before an L1 entry is built from them
        self.fetch_missing: Callable[[Manifest], None] | None = None
        self._host: _host.HostFacts | None = None
        self._parsed: OrderedDict[tuple[bool, bytes], Manifest] = OrderedDict()
        self._parsed_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      environ: Mapping[str, str] | None = None) -> "LocalStore":
        env = os.environ if environ is None else environ
        key = None
        if env.get("SNAPSTART_STORE_KEY"):
            try:
                key = bytes.fromhex(env["SNAPSTART_STORE_KEY"])
            except ValueError as exc:
                raise ConfigError("SNAPSTART_STORE_KEY must be hex") from exc
            if len(key) < MIN_KEY_BYTES:
                raise ConfigError(f"SNAPSTART_STORE_KEY must be at least {MIN_KEY_BYTES} bytes")
        level_s = env.get("SNAPSTART_ZSTD_LEVEL") or "3"
        try:
            level = int(level_s)
        except ValueError as exc:
            raise ConfigError(f"SNAPSTART_ZSTD_LEVEL must be an integer, not {level_s!r}") from exc
        return cls(settings.home / "store", settings.shm / "l1", level=level, key=key,
                   encryption_key=encryption_key_from_env(env))

    @property
    def chunks(self) -> ChunkStore:
        """The chunk files (a fleet store copies them to and from its bucket, s3.py)."""
        return self._chunks

    @property
    def cipher(self) -> StoreCipher | None:
        return self._cipher

    def manifest_path(self, name: str, version: int) -> Path:
        """Where ``name:version``'s signed manifest lives (it may not exist)."""
        return self._manifest_path(name, version)

    @property
    def encrypted(self) -> bool:
        """Whether ``put`` encrypts (reading follows each manifest's format)."""
        return self._cipher is not None

    # -- publishing -----------------------------------------------------------------

    def put(self, name: str, version: int, image_dir: Path, meta: Mapping[str, Any], *,
            progress: bool = False) -> Manifest:
        """Publish ``image_dir`` as ``name:version`` (immutable); see the module docstring.

        ``meta`` (JSON-able) is stored with the host facts of host.py added.
        """
        label = _label(name, version)
        try:
            full_meta = check_json_able(meta)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{label}: meta is not JSON-able: {exc}") from exc
        full_meta.update(self._host_facts().to_meta())
        full_meta.setdefault("created", datetime.datetime.now(datetime.timezone.utc)
                             .isoformat(timespec="milliseconds"))
        full_meta["chunking"] = CHUNKER_ID
        mpath = self._manifest_path(name, version)
        try:
            files = _list_image_files(Path(image_dir))
            with flocked(self._gc_lock, fcntl.LOCK_SH):
                if mpath.exists():
                    raise StoreError(f"{label} already exists: published versions are immutable")
                entries = self._put_files(label, files, progress)
                m = Manifest(name=name, version=version, files=tuple(entries), meta=full_meta,
                             encrypted=self._cipher is not None)
                if not mpath.parent.is_dir():
                    mkdir_private(mpath.parent)
                    fsync_dir(self._manifests)
                try:
                    m.save_to(mpath, self.key, exclusive=True, cipher=self._cipher)
                except FileExistsError:
                    raise StoreError(
                        f"{label} already exists: published versions are immutable") from None
        except OSError as exc:
            raise StoreError(f"publishing {label} failed: {exc}") from exc
        except ValueError as exc:  # manifest over its size limit
            raise StoreError(f"publishing {label} failed: {exc}") from exc
        return m

    def _put_files(self, label: str, files: list[tuple[str, Path, int]],
                   progress: bool) -> list[FileEntry]:
        total = sum(size for _, _, size in files)
        pending: dict[str, Future[tuple[int, bool]]] = {}
        window: deque[Future[tuple[int, bool]]] = deque()
        layout: list[tuple[str, int, int, list[tuple[str, int]]]] = []
        # where the image's processes keep their random secrets (chunking.py)
        volatile = volatile_ranges({rel: path for rel, path, _ in files})
        with ThreadPoolExecutor(self.workers, thread_name_prefix="snapstart-put") as pool, \
                _progressbar(progress, total, f"publishing {label}") as bar:
            for rel, path, _ in files:
                with open(path, "rb") as f:
                    mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o777
                    chunks: list[tuple[str, int]] = []
                    for data in iter_chunks(f.read, volatile.get(rel, ())):
                        h = self._chunks.name(data)
                        if h not in pending:
                            fut = pool.submit(self._chunks.write, h, data)
                            pending[h] = fut
                            window.append(fut)
                            # bound the memory held by chunks waiting for a worker
                            while len(window) > 4 * self.workers:
                                window.popleft().result()
                        chunks.append((h, len(data)))
                        bar.update(len(data))
                layout.append((rel, mode, sum(n for _, n in chunks), chunks))
            stored = {h: fut.result() for h, fut in pending.items()}
        self._chunks.sync_dirs({h[:2] for h, (_, new) in stored.items() if new})
        return [FileEntry(rel, mode, size,
                          tuple(ChunkRef(h, n, stored[h][0]) for h, n in chunks))
                for rel, mode, size, chunks in layout]

    # -- reading ----------------------------------------------------------------------

    def manifest(self, name: str, version: int) -> Manifest:
        """The verified manifest (shared with later calls: do not mutate ``meta``)."""
        label = _label(name, version)
        body, encrypted = self._signed_body(name, version)
        return self._parse(body, encrypted, name, version, label)

    def materialize(self, name: str, version: int, *, progress: bool = False) -> Path:
        """An L1 directory of the version's verified files (built on first use)."""
        return self.materialized(name, version, progress=progress)[1]

    def materialized(self, name: str, version: int, *,
                     progress: bool = False) -> tuple[Manifest, Path]:
        """The verified manifest and the L1 directory of its files, from one read
        of the manifest (a restore needs both)."""
        label = _label(name, version)
        body, encrypted = self._signed_body(name, version)
        manifest = self._parse(body, encrypted, name, version, label)

        def build(dest: Path) -> None:
            self._build(manifest, dest, progress)

        try:
            return manifest, self._l1.get(name, version, hashlib.sha256(body).hexdigest(),
                                          build)
        except SnapStartError:
            raise
        except OSError as exc:
            raise StoreError(f"materializing {label} failed: {exc}") from exc

    def _build(self, m: Manifest, dest: Path, progress: bool) -> None:
        if self.fetch_missing is not None:
            self.fetch_missing(m)
        targets: dict[str, list[tuple[int, int]]] = {}
        first: dict[str, tuple[int, str]] = {}
        opened: list[tuple[int, int]] = []
        try:
            for fe in m.files:
                path = dest / fe.path
                if "/" in fe.path:
                    mkdir_private(path.parent)
                fd = create_file(path)
                opened.append((fd, fe.mode))
                if fe.size:
                    os.ftruncate(fd, fe.size)
                off = 0
                for c in fe.chunks:
                    targets.setdefault(c.hash, []).append((fd, off))
                    first.setdefault(c.hash, (c.raw_size, fe.path))
                    off += c.raw_size

            def restore(h: str) -> int:
                raw, item = first[h]
                data = self._chunks.read(h, raw, m.label, item, encrypted=m.encrypted)
                for fd, off in targets[h]:
                    pwrite_all(fd, data, off)
                return raw * len(targets[h])

            with _progressbar(progress, m.logical_bytes, f"materializing {m.label}") as bar:
                _run_parallel(first, restore, self.workers, bar.update)
            for fd, mode in opened:
                os.fchmod(fd, mode)
        finally:
            for fd, _ in opened:
                os.close(fd)

    def adopt_into_l1(self, name: str, version: int, image_dir: Path) -> Path:
        """Make the just-published ``image_dir`` the version's L1 entry by moving its
        files (the bytes the store's chunks were cut from, on the same tmpfs), so the
        first restore after a publish does not decompress what was just compressed.
        ``image_dir`` is emptied of the manifest's files."""
        label = _label(name, version)
        body, encrypted = self._signed_body(name, version)
        manifest = self._parse(body, encrypted, name, version, label)

        def build(dest: Path) -> None:
            for fe in manifest.files:
                src, dst = Path(image_dir) / fe.path, dest / fe.path
                if src.stat().st_size != fe.size:
                    raise StoreError(f"{label}: {fe.path} changed since it was stored")
                if "/" in fe.path:
                    mkdir_private(dst.parent)
                os.rename(src, dst)
                os.chmod(dst, fe.mode)

        try:
            return self._l1.get(name, version, hashlib.sha256(body).hexdigest(), build)
        except OSError as exc:
            raise StoreError(f"adopting {label} into L1 failed: {exc}") from exc

    def check_compatible(self, m: Manifest, criu_version: str | None = None) -> None:
        _host.check_compatible(m.label, m.meta, self._host_facts(), criu_version)

    def versions(self, name: str | None = None) -> list[tuple[str, int]]:
        """Published (name, version) pairs, sorted; manifests are not verified here."""
        if name is not None:
            validate_name(name)
            names = [name]
        else:
            try:
                names = [n for n in os.listdir(self._manifests) if _NAME_RE.match(n)]
            except FileNotFoundError:
                return []
        out: list[tuple[str, int]] = []
        for n in names:
            try:
                entries = os.listdir(self._manifests / n)
            except (FileNotFoundError, NotADirectoryError):
                continue
            out.extend((n, int(mt.group(1))) for e in entries if (mt := _MANIFEST_RE.match(e)))
        return sorted(out)

    # -- maintenance ------------------------------------------------------------------

    def remove(self, name: str, version: int) -> None:
        """Unpublish: the manifest and L1 copies go now, chunks at the next gc()."""
        label = _label(name, version)
        path = self._manifest_path(name, version)
        try:
            try:
                os.unlink(path)
            except FileNotFoundError:
                raise FunctionNotFoundError(f"{label} not found in the snapshot store") from None
            fsync_dir(path.parent)
            self._l1.remove_version(name, version)
        except OSError as exc:
            raise StoreError(f"removing {label} failed: {exc}") from exc

    def gc(self) -> dict[str, int]:
        """Delete chunks no manifest references, stale temp files and L1 entries.

        Waits for running puts to finish (gc lock). Refuses (StoreError) while a
        manifest fails verification: its chunks could not be told from garbage.
        """
        try:
            with flocked(self._gc_lock, fcntl.LOCK_EX):
                referenced: set[str] = set()
                digests: set[str] = set()
                for name, version in self.versions():
                    try:
                        m = self.manifest(name, version)
                    except FunctionNotFoundError:
                        continue  # removed meanwhile
                    except SnapshotIntegrityError as exc:
                        raise StoreError(f"gc refused: {exc.message}; remove that version "
                                         "or restore its manifest first") from exc
                    referenced.update(m.chunk_refs())
                    digests.add(m.digest)
                result = {"chunks_removed": 0, "bytes_removed": 0, "chunks_kept": 0,
                          "tmp_removed": 0, "l1_removed": 0}
                for h, path in list(self._chunks.iter_hashes()):
                    if h in referenced:
                        result["chunks_kept"] += 1
                        continue
                    size = path.stat().st_size
                    path.unlink(missing_ok=True)
                    result["chunks_removed"] += 1
                    result["bytes_removed"] += size
                # no put is running: every temp file is a leftover
                for p in self._tmp.iterdir():
                    p.unlink(missing_ok=True)
                    result["tmp_removed"] += 1
                for d in self._manifests.iterdir():
                    if not d.is_dir():
                        continue
                    for p in d.glob(".*.tmp-*"):
                        p.unlink(missing_ok=True)
                        result["tmp_removed"] += 1
                    with contextlib.suppress(OSError):
                        d.rmdir()  # only if empty
                result["l1_removed"] = self._l1.prune(digests)
                return result
        except OSError as exc:
            raise StoreError(f"gc failed: {exc}") from exc

    def verify(self, name: str | None = None, version: int | None = None) -> list[str]:
        """Re-read and re-hash everything selected; one line per problem found."""
        if name is not None and version is not None:
            label = _label(name, version)
            if not self._manifest_path(name, version).exists():
                raise FunctionNotFoundError(f"{label} not found in the snapshot store")
            selected = [(name, version)]
        else:
            selected = [(n, v) for n, v in self.versions(name)
                        if version is None or v == version]
            if name is not None and not selected:
                raise FunctionNotFoundError(f"function {name} has no snapshot in the store")
        problems: list[str] = []
        users: dict[str, tuple[int, bool, list[tuple[str, str]]]] = {}
        for n, v in selected:
            try:
                m = self.manifest(n, v)
            except FunctionNotFoundError:
                continue
            except SnapshotIntegrityError as exc:
                problems.append(exc.message)
                continue
            for fe in m.files:
                for c in fe.chunks:
                    where = (m.label, fe.path)
                    refs = users.setdefault(c.hash, (c.raw_size, m.encrypted, []))[2]
                    if where not in refs:
                        refs.append(where)
        bad: dict[str, str] = {}

        def check(h: str) -> int:
            data, reason = self._chunks.load(h, users[h][0], encrypted=users[h][1])
            if reason is not None:
                bad[h] = reason
            return 0

        _run_parallel(users, check, self.workers, lambda n: None)
        for h in sorted(bad, key=lambda h: users[h][2][0]):
            for label, item in users[h][2]:
                problems.append(f"{label}: chunk {h[:12]}.. {bad[h]} ({item})")
        return problems

    def stats(self) -> list[dict[str, Any]]:
        """Per version: logical/stored/shared bytes, compression ratio, chunk count,
        whether it is encrypted at rest.

        ``stored_bytes`` counts each distinct chunk of the version once (compressed);
        ``shared_bytes`` is the part of it other versions reference too. Versions
        whose manifest fails verification are left out (``verify`` reports them).
        """
        manifests = []
        for name, version in self.versions():
            try:
                manifests.append(self.manifest(name, version))
            except (FunctionNotFoundError, SnapshotIntegrityError):
                continue  # verify() reports damage
        users: dict[str, int] = {}
        for m in manifests:
            for h in m.chunk_refs():
                users[h] = users.get(h, 0) + 1
        out = []
        for m in manifests:
            refs = m.chunk_refs()
            stored = sum(c.stored_size for c in refs.values())
            logical = m.logical_bytes
            out.append({
                "name": m.name, "version": m.version,
                "logical_bytes": logical, "stored_bytes": stored,
                "compression_ratio": round(logical / stored, 3) if stored else 0.0,
                "shared_bytes": sum(c.stored_size for h, c in refs.items() if users[h] > 1),
                "chunks": len(refs), "files": len(m.files),
                "created": m.meta.get("created"), "encrypted": m.encrypted,
            })
        return out

    def l1_stats(self) -> dict[str, int]:
        """hits, misses, evictions (this process); bytes, entries (now, on disk)."""
        return self._l1.stats()

    def clear_l1(self) -> None:
        """Delete every L1 directory of this store."""
        try:
            self._l1.clear()
        except OSError as exc:
            raise StoreError(f"clearing L1 failed: {exc}") from exc

    # -- internals --------------------------------------------------------------------

    def _manifest_path(self, name: str, version: int) -> Path:
        return self._manifests / name / f"{version}.msgpack"

    def _signed_body(self, name: str, version: int) -> tuple[bytes, bool]:
        label = _label(name, version)
        try:
            return read_signed_body(self._manifest_path(name, version), self.key, label,
                                    self._cipher)
        except FileNotFoundError:
            raise FunctionNotFoundError(f"{label} not found in the snapshot store") from None
        except OSError as exc:
            raise StoreError(f"reading the manifest of {label} failed: {exc}") from exc

    def _parse(self, body: bytes, encrypted: bool, name: str, version: int,
               label: str) -> Manifest:
        # Parsing ~650 chunk references costs ~5 ms; the manager asks for the
        # manifest on every restore. The body's signature was just checked, so a
        # cache keyed by its hash returns exactly what parsing it would.
        digest = (encrypted, hashlib.sha256(body).digest())
        with self._parsed_lock:
            m = self._parsed.get(digest)
            if m is not None:
                self._parsed.move_to_end(digest)
        if m is None:
            m = Manifest.from_body(body, what=label, encrypted=encrypted)
            with self._parsed_lock:
                self._parsed[digest] = m
                while len(self._parsed) > _PARSED_CACHE:
                    self._parsed.popitem(last=False)
        if (m.name, m.version) != (name, version):
            raise SnapshotIntegrityError(
                f"{label}: manifest belongs to {m.label}, not to this version")
        return m

    def _host_facts(self) -> _host.HostFacts:
        if self._host is None:
            self._host = _host.host_facts()
        return self._host


def _label(name: str, version: int) -> str:
    validate_name(name)
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version < 10**19:
        raise ConfigError(f"invalid version {version!r}: a non-negative integer")
    return f"{name}:{version}"


def _list_image_files(image_dir: Path) -> list[tuple[str, Path, int]]:
    """(relative posix path, path, size) of every regular file, sorted; refuses others."""
    if not image_dir.is_dir():
        raise StoreError(f"image directory {image_dir} does not exist")
    out = []
    for root, dirs, files in os.walk(image_dir):
        dirs.sort()
        for fname in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = Path(root) / fname
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"{path}: not a regular file (symlinks, devices and "
                                 "sockets cannot be stored)")
            out.append((path.relative_to(image_dir).as_posix(), path, st.st_size))
    if not out:
        raise StoreError(f"image directory {image_dir} is empty")
    return sorted(out)


def _load_or_create_key(path: Path) -> bytes:
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    tmp = path.parent / f".key.tmp-{secrets.token_hex(6)}"
    try:
        write_new_file(tmp, os.urandom(32))
        with contextlib.suppress(FileExistsError):  # another process won the race
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) < MIN_KEY_BYTES:
        raise StoreError(f"store key file {path} is {len(key)} bytes; expected 32")
    return key


def _run_parallel(items: Iterable[T], fn: Callable[[T], int], workers: int,
                  on_done: Callable[[int], Any]) -> None:
    """Run ``fn`` over ``items`` on ``workers`` threads pulling from one iterator.

    One future per worker rather than per item keeps the per-chunk overhead low.
    The first exception stops every worker and is re-raised.
    """
    it = iter(items)
    lock = threading.Lock()
    failed = threading.Event()

    def worker() -> None:
        while not failed.is_set():
            with lock:
                item = next(it, _DONE)
            if item is _DONE:
                return
            try:
                n = fn(item)  # type: ignore[arg-type]
            except BaseException:
                failed.set()
                raise
            with lock:
                on_done(n)

    with ThreadPoolExecutor(workers, thread_name_prefix="snapstart-store") as pool:
        futures = [pool.submit(worker) for _ in range(workers)]
    for f in futures:
        f.result()


_DONE = object()


class _NoBar:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def _progressbar(enabled: bool, length: int, label: str) -> Iterator[Any]:
    if enabled and sys.stderr.isatty():
        with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
            yield bar
    else:
        yield _NoBar()
