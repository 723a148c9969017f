"""The fleet store: snapshots and the registry on the S3 API, shared by every node.

Selected with ``SNAPSTART_STORE=s3://BUCKET[/PREFIX]``; the rest is the standard AWS
configuration boto3 reads (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for an
S3-compatible endpoint, ``AWS_REGION``, credentials). Every node of a fleet must
share ``SNAPSTART_STORE_KEY`` (manifests and version records are signed with it, and
the functions' hash seeds derive from it) and, if snapshots are encrypted,
``SNAPSTART_ENCRYPTION_KEY``.

A node keeps its own caches: the bucket's chunks and manifests are copied into the
node's ``LocalStore`` (L2, disk) as they are needed, and materialized into its L1
(tmpfs) as today. Nothing in the bucket is trusted before it is verified: chunks by
their hash (chunks.py), manifests by their HMAC (manifest.py), version records by
their HMAC and the code archive by the SHA-256 the record holds.

Bucket layout, format 2 (``PREFIX/`` before every key)::

    chunks/<h[0:2]>/<h>.zst                      a chunk: the same bytes as a
                                                 LocalStore chunk file (chunks.py)
    functions/<name>/versions/<n>/claim          empty; created with If-None-Match: *
                                                 (a conditional write): whoever
                                                 creates it owns version number n
    functions/<name>/versions/<n>/manifest.msgpack   the signed manifest
    trees/<id>.tar.zst                           a version's code/ or packages/ tree:
                                                 a deterministic tar (sorted, no owners,
                                                 mtime 0), zstd; content-addressed, so
                                                 the packages of a version whose code
                                                 changed are not uploaded again. <id> is
                                                 the SHA-256 of the tar, or with
                                                 encryption its keyed name and the object
                                                 sealed like a chunk (crypto.py)
    functions/<name>/versions/<n>/version.json   the version record, written last: the
                                                 version exists once this does
    functions/<name>/aliases.json                {"alias": n}

Version record (``version.json``)::

    {"format": 2, "name": str, "version": n,
     "record": {...the node's versions/<n>/version.json (registry.py)...},
     "trees": {"code": <id>, "packages": <id> | null},
     "mac": hex HMAC-SHA256(store key, "snapstart-version\\0" + canonical JSON of the
            fields above)}

(Format 1, a per-version ``code.tar.zst`` and its ``code_sha256``, is still read.)

Publishing on a node: claim n (the first free number above what the bucket holds),
publish locally as version n, upload the chunks the bucket lacks (in parallel;
``HEAD`` first), the manifest, the code archive, then the record. A publish that
fails half-way leaves a claim (numbers are never reused, as on Lambda) and perhaps
unreferenced chunks, never a visible version. Nodes never delete chunks from the
bucket (no bucket gc: a chunk may be referenced by a version another node is
publishing); removing a version deletes its record first, then its other objects.

Failures: an unreachable endpoint, refused credentials or a missing bucket are a
``StoreError`` naming the bucket and the cause, after boto3's standard retries
(``SNAPSTART_STORE_TIMEOUT_S`` caps connect/read, default 5/30 s). A publish fails
cleanly; resolving and restoring versions a node holds already keep working from its
caches (registry sync failures are logged, not raised). A chunk that fails
verification is not kept: the restore fails with ``SnapshotIntegrityError`` and the
invocation falls back to a cold start, as for a local store.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..config import validate_name
from ..errors import ConfigError, FunctionNotFoundError, SnapshotIntegrityError, StoreError
from ._fs import mkdir_private, write_new_file
from .local import LocalStore
from .manifest import Manifest

__all__ = ["S3Bucket", "S3Store", "parse_store_url", "FORMAT"]

log = logging.getLogger("snapstart.store.s3")
FORMAT = 2
MAX_CLAIM_TRIES = 64
MAX_CODE_ARCHIVE = 512 << 20        # Lambda's 250 MB unzipped, compressed, with margin
_REFUSED = object()                  # S3Bucket._call: the error was one the caller expects
_MISSING = ("NoSuchKey", "404", "NotFound")
_CONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
_AUTH_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                "ExpiredToken", "InvalidToken", "403"}


def parse_store_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix without slashes at either end)."""
    if not url.startswith("s3://"):
        raise ConfigError(f"SNAPSTART_STORE must be s3://BUCKET[/PREFIX], not {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket or not all(c.isalnum() or c in "-." for c in bucket) or len(bucket) > 63:
        raise ConfigError(f"SNAPSTART_STORE: invalid bucket name {bucket!r}")
    return bucket, prefix.strip("/")


class S3Bucket:
    """The bucket's objects, by key below the prefix; botocore's errors become
    ``StoreError``s that name the bucket. Thread-safe (one boto3 client)."""

    def __init__(self, url: str, *, client: Any = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.bucket, self.prefix = parse_store_url(url)
        env = os.environ if environ is None else environ
        try:
            self.timeout_s = float(env.get("SNAPSTART_STORE_TIMEOUT_S") or 30)
        except ValueError:
            raise ConfigError("SNAPSTART_STORE_TIMEOUT_S must be a number of seconds") from None
        self._client = client
        self._lock = threading.Lock()
        self.bytes_up = 0
        self.bytes_down = 0

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config

                    self._client = boto3.session.Session().client("s3", config=Config(
                        retries={"max_attempts": 3, "mode": "standard"},
                        connect_timeout=min(5.0, self.timeout_s), read_timeout=self.timeout_s,
                        max_pool_connections=32))
        return self._client

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _fail(self, what: str, exc: Exception) -> StoreError:
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket":
                return StoreError(f"{self.url}: bucket {self.bucket} not found")
            if code in _AUTH_ERRORS:
                return StoreError(f"{self.url}: credentials refused ({code}) while {what}")
            return StoreError(f"{self.url}: {what} failed: {code}: "
                              f"{exc.response.get('Error', {}).get('Message', '')}")
        if isinstance(exc, NoCredentialsError):
            return StoreError(f"{self.url}: no AWS credentials configured ({what})")
        if isinstance(exc, EndpointConnectionError):
            return StoreError(f"{self.url}: cannot reach the S3 endpoint ({exc}) while {what}")
        return StoreError(f"{self.url}: {what} failed: {type(exc).__name__}: {exc}")

    def _call(self, what: str, fn: Callable[..., Any], *, refused: tuple[str, ...] = (),
              **kw: Any) -> Any:
        """``fn(Bucket=..., **kw)``; ``_REFUSED`` for an error whose code is in
        ``refused`` (a missing key, a failed condition); any other error a StoreError."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kw)
        except ClientError as exc:
            if self._code(exc) in refused:
                return _REFUSED
            raise self._fail(what, exc) from None
        except BotoCoreError as exc:
            raise self._fail(what, exc) from None

    @staticmethod
    def _code(exc: BaseException) -> str:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    def get(self, rel: str, *, limit: int | None = None) -> bytes | None:
        """The object's bytes, or None if there is no such key."""
        from botocore.exceptions import BotoCoreError

        resp = self._call(f"reading {rel}", self.client.get_object, refused=_MISSING,
                          Key=self.key(rel))
        if resp is _REFUSED:
            return None
        if limit is not None and int(resp.get("ContentLength") or 0) > limit:
            resp["Body"].close()
            raise StoreError(f"{self.url}: {rel} is larger than {limit} bytes")
        try:
            data = resp["Body"].read()
        except BotoCoreError as exc:
            raise self._fail(f"reading {rel}", exc) from None
        with self._lock:
            self.bytes_down += len(data)
        return bytes(data)

    def put(self, rel: str, data: bytes, *, create_only: bool = False) -> bool:
        """Write the object; ``create_only``: only if the key does not exist yet
        (If-None-Match: *), False if it does."""
        kw: dict[str, Any] = {"IfNoneMatch": "*"} if create_only else {}
        if self._call(f"writing {rel}", self.client.put_object,
                      refused=_CONDITION_FAILED if create_only else (),
                      Key=self.key(rel), Body=data, **kw) is _REFUSED:
            return False
        with self._lock:
            self.bytes_up += len(data)
        return True

    def exists(self, rel: str) -> bool:
        return self._call(f"checking {rel}", self.client.head_object, refused=_MISSING,
                          Key=self.key(rel)) is not _REFUSED

    def delete(self, rel: str) -> None:
        self._call(f"deleting {rel}", self.client.delete_object, Key=self.key(rel))

    def list(self, rel_prefix: str) -> list[str]:
        """Keys below ``rel_prefix`` (relative to the store's prefix), all pages."""
        out: list[str] = []
        kw: dict[str, Any] = {"Prefix": self.key(rel_prefix)}
        strip = len(self.key(""))
        while True:
            resp = self._call(f"listing {rel_prefix}", self.client.list_objects_v2, **kw)
            out.extend(obj["Key"][strip:] for obj in resp.get("Contents", ()))
            if not resp.get("IsTruncated"):
                return out
            kw["ContinuationToken"] = resp["NextContinuationToken"]

    def check(self) -> None:
        """The bucket exists and the credentials work (StoreError if not)."""
        self._call("opening the bucket", self.client.head_bucket)


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _vprefix(name: str, n: int) -> str:
    return f"functions/{validate_name(name)}/versions/{int(n)}/"


class S3Store:
    """``Store`` on a bucket (module docstring), with a ``LocalStore`` as the node's
    L2 and L1. Also carries the registry's side of the bucket (versions, code,
    aliases: ``claim_version``, ``push_version``, ``pull``, ``push_aliases``)."""

    def __init__(self, local: LocalStore, bucket: S3Bucket, *, workers: int = 16) -> None:
        self.local = local
        self.bucket = bucket
        self.workers = workers
        local.fetch_missing = self._fetch_chunks
        self.chunks_fetched = 0

    @classmethod
    def from_settings(cls, settings: Any, url: str, *,
                      environ: Mapping[str, str] | None = None) -> "S3Store":
        env = os.environ if environ is None else environ
        if not env.get("SNAPSTART_STORE_KEY"):
            raise ConfigError("SNAPSTART_STORE=s3://... needs SNAPSTART_STORE_KEY, the same on "
                              "every node (manifests are signed with it)")
        return cls(LocalStore.from_settings(settings, environ=env), S3Bucket(url, environ=env))

    # ---- what the Store protocol delegates ------------------------------------------
    @property
    def key(self) -> bytes:
        return self.local.key

    @property
    def encrypted(self) -> bool:
        return self.local.encrypted

    def check_compatible(self, m: Manifest, criu_version: str | None = None) -> None:
        self.local.check_compatible(m, criu_version)

    def adopt_into_l1(self, name: str, version: int, image_dir: Path) -> Path:
        return self.local.adopt_into_l1(name, version, image_dir)

    def gc(self) -> dict[str, int]:
        return self.local.gc()          # this node's caches only (no bucket gc)

    def verify(self, name: str | None = None, version: int | None = None) -> list[str]:
        return self.local.verify(name, version)

    def stats(self) -> list[dict[str, Any]]:
        return self.local.stats()

    def l1_stats(self) -> dict[str, int]:
        return {**self.local.l1_stats(), "s3_bytes_down": self.bucket.bytes_down,
                "s3_bytes_up": self.bucket.bytes_up, "s3_chunks_fetched": self.chunks_fetched}

    def clear_l1(self) -> None:
        self.local.clear_l1()

    # ---- publishing -------------------------------------------------------------------
    def put(self, name: str, version: int, image_dir: Path, meta: Mapping[str, Any], *,
            progress: bool = False) -> Manifest:
        """Publish locally, then upload what the bucket lacks and the manifest."""
        m = self.local.put(name, version, image_dir, meta, progress=progress)
        try:
            refs = m.chunk_refs()

            def upload(h: str) -> int:
                rel = f"chunks/{h[:2]}/{h}.zst"
                if self.bucket.exists(rel):
                    return 0
                data = self.local.chunks.path(h).read_bytes()
                self.bucket.put(rel, data)
                return len(data)

            with ThreadPoolExecutor(self.workers, thread_name_prefix="snapstart-s3") as pool:
                list(pool.map(upload, refs))
            body = self.local.manifest_path(name, version).read_bytes()
            self.bucket.put(_vprefix(name, version) + "manifest.msgpack", body)
        except BaseException:
            try:
                self.local.remove(name, version)
            except Exception:  # noqa: BLE001 - the upload's error is the one to report
                pass
            raise
        return m

    # ---- reading --------------------------------------------------------------------
    def _ensure_manifest(self, name: str, version: int) -> None:
        if self.local.manifest_path(name, version).exists():
            return
        body = self.bucket.get(_vprefix(name, version) + "manifest.msgpack", limit=64 << 20)
        if body is None:
            raise FunctionNotFoundError(f"{name}:{version} not found in the snapshot store")
        path = self.local.manifest_path(name, version)
        mkdir_private(path.parent)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        write_new_file(tmp, body)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        try:
            self.local.manifest(name, version)      # its signature, before anyone uses it
        except SnapshotIntegrityError:
            path.unlink(missing_ok=True)
            raise

    def manifest(self, name: str, version: int) -> Manifest:
        self._ensure_manifest(name, version)
        return self.local.manifest(name, version)

    def materialized(self, name: str, version: int, *,
                     progress: bool = False) -> tuple[Manifest, Path]:
        self._ensure_manifest(name, version)
        return self.local.materialized(name, version, progress=progress)

    def materialize(self, name: str, version: int, *, progress: bool = False) -> Path:
        return self.materialized(name, version, progress=progress)[1]

    def _fetch_chunks(self, m: Manifest) -> None:
        """Before an L1 entry is built: copy the chunks this node lacks from the bucket,
        in parallel, each verified before it is kept."""
        chunks = self.local.chunks
        missing = {h: c for h, c in m.chunk_refs().items() if chunks.stored_size(h) is None}
        if not missing:
            return

        def fetch(h: str) -> int:
            data = self.bucket.get(f"chunks/{h[:2]}/{h}.zst", limit=64 << 20)
            if data is None:
                raise SnapshotIntegrityError(f"{m.label}: chunk {h[:12]}.. missing from "
                                             f"{self.bucket.url}")
            chunks.install(h, data, missing[h].raw_size, m.label, encrypted=m.encrypted)
            return len(data)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="snapstart-s3") as pool:
            got = list(pool.map(fetch, missing))
        self.chunks_fetched += len(got)
        chunks.sync_dirs({h[:2] for h in missing})

    def versions(self, name: str | None = None) -> list[tuple[str, int]]:
        return self.local.versions(name)

    def remove(self, name: str, version: int) -> None:
        prefix = _vprefix(name, version)
        self.bucket.delete(prefix + "version.json")       # invisible first
        for rel in ("manifest.msgpack", "code.tar.zst"):      # trees/ are shared: kept
            self.bucket.delete(prefix + rel)
        try:
            self.local.remove(name, version)
        except FunctionNotFoundError:
            pass

    # ---- the registry's side --------------------------------------------------------
    def remote_versions(self, name: str) -> list[int]:
        """Versions whose record is in the bucket."""
        out = []
        for rel in self.bucket.list(f"functions/{validate_name(name)}/versions/"):
            parts = rel.split("/")
            if len(parts) == 5 and parts[4] == "version.json" and parts[3].isdigit():
                out.append(int(parts[3]))
        return sorted(out)

    def remote_functions(self) -> list[str]:
        names = set()
        for rel in self.bucket.list("functions/"):
            parts = rel.split("/")
            if len(parts) == 5 and parts[4] == "version.json":
                names.add(parts[1])
        return sorted(names)

    def claim_version(self, name: str, at_least: int = 1) -> int:
        """A version number no other node will get: the first free one at or above
        both ``at_least`` and the bucket's highest claim + 1."""
        claimed = [int(rel.split("/")[3]) for rel in
                   self.bucket.list(f"functions/{validate_name(name)}/versions/")
                   if rel.count("/") == 4 and rel.endswith("/claim")
                   and rel.split("/")[3].isdigit()]
        n = max([at_least - 1, *claimed]) + 1
        for _ in range(MAX_CLAIM_TRIES):
            if self.bucket.put(_vprefix(name, n) + "claim", b"", create_only=True):
                return n
            n += 1
        raise StoreError(f"{self.bucket.url}: could not claim a version number for {name} "
                         f"after {MAX_CLAIM_TRIES} tries")

    def _mac(self, doc: Mapping[str, Any]) -> str:
        return hmac.new(self.key, b"snapstart-version\0" + _canonical(doc),
                        hashlib.sha256).hexdigest()

    def _push_tree(self, vdir: Path, tree: str) -> str | None:
        """Upload ``vdir/tree`` unless the bucket has it already; its id."""
        if not (vdir / tree).is_dir():
            return None
        tar = _pack(vdir, (tree,))
        cipher = self.local.cipher
        tree_id = cipher.chunk_name(tar) if cipher else hashlib.sha256(tar).hexdigest()
        rel = f"trees/{tree_id}.tar.zst"
        if not self.bucket.exists(rel):
            import zstandard
            blob = zstandard.ZstdCompressor(level=3).compress(tar)
            self.bucket.put(rel, cipher.seal_chunk(tree_id, blob) if cipher else blob)
        return tree_id

    def _fetch_tree(self, tree_id: str, label: str) -> bytes:
        """A tree's tar, verified against its id."""
        import zstandard

        blob = self.bucket.get(f"trees/{tree_id}.tar.zst", limit=MAX_CODE_ARCHIVE)
        if blob is None:
            raise SnapshotIntegrityError(f"{label}: code tree {tree_id[:12]}.. missing from "
                                         f"{self.bucket.url}")
        cipher = self.local.cipher
        try:
            if cipher is not None:
                blob = cipher.open_chunk(tree_id, blob)
            tar = zstandard.ZstdDecompressor().decompress(
                blob, max_output_size=MAX_CODE_ARCHIVE * 4)
        except Exception:  # noqa: BLE001 - zstd / AES-GCM errors: the tree is not ours
            raise SnapshotIntegrityError(f"{label}: code tree {tree_id[:12]}.. corrupt or "
                                         "sealed with another key") from None
        expect = cipher.chunk_name(tar) if cipher else hashlib.sha256(tar).hexdigest()
        if not hmac.compare_digest(expect, tree_id):
            raise SnapshotIntegrityError(f"{label}: code tree {tree_id[:12]}.. altered")
        return tar

    def push_version(self, name: str, n: int, vdir: Path) -> None:
        """Upload a committed version's code trees and record (after ``put``)."""
        trees = {tree: self._push_tree(vdir, tree) for tree in ("code", "packages")}
        doc = {"format": FORMAT, "name": name, "version": int(n),
               "record": json.loads((vdir / "version.json").read_text()), "trees": trees}
        self.bucket.put(_vprefix(name, n) + "version.json",
                        _canonical({**doc, "mac": self._mac(doc)}))

    def fetch_version(self, name: str, n: int) -> tuple[dict, Callable[[Path], None]]:
        """The verified record of ``name:n`` and a function unpacking its code into a
        version directory; FunctionNotFoundError if the bucket has no such version."""
        prefix = _vprefix(name, n)
        raw = self.bucket.get(prefix + "version.json", limit=4 << 20)
        if raw is None:
            raise FunctionNotFoundError(f"{name}:{n} not found in {self.bucket.url}")
        try:
            doc = json.loads(raw)
            mac = doc.pop("mac")
        except (ValueError, AttributeError, KeyError):
            raise SnapshotIntegrityError(f"{name}:{n}: malformed version record in "
                                         f"{self.bucket.url}") from None
        if not hmac.compare_digest(str(mac), self._mac(doc)):
            raise SnapshotIntegrityError(f"{name}:{n}: version record signature mismatch "
                                         "(another SNAPSTART_STORE_KEY, or tampered)")
        if doc.get("format") not in (1, FORMAT) or doc.get("name") != name \
                or doc.get("version") != n:
            raise SnapshotIntegrityError(f"{name}:{n}: the record in {self.bucket.url} is not "
                                         "this version's")

        def unpack(vdir: Path) -> None:
            if doc["format"] == 1:
                archive = self.bucket.get(prefix + "code.tar.zst", limit=MAX_CODE_ARCHIVE)
                if archive is None or hashlib.sha256(archive).hexdigest() != doc["code_sha256"]:
                    raise SnapshotIntegrityError(f"{name}:{n}: code archive missing or "
                                                 f"altered in {self.bucket.url}")
                import zstandard
                _unpack(zstandard.ZstdDecompressor().decompress(
                    archive, max_output_size=MAX_CODE_ARCHIVE * 4), vdir)
                return
            for tree_id in (doc.get("trees") or {}).values():
                if tree_id:
                    _unpack(self._fetch_tree(str(tree_id), f"{name}:{n}"), vdir)

        return doc["record"], unpack

    def push_aliases(self, name: str, aliases: Mapping[str, int]) -> None:
        self.bucket.put(f"functions/{validate_name(name)}/aliases.json",
                        _canonical(dict(aliases)))

    def fetch_aliases(self, name: str) -> dict[str, int] | None:
        raw = self.bucket.get(f"functions/{validate_name(name)}/aliases.json", limit=1 << 20)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return {str(k): int(v) for k, v in data.items()}
        except (ValueError, AttributeError, TypeError):
            log.warning("%s: ignoring a malformed aliases.json of %s", self.bucket.url, name)
            return None


def _pack(vdir: Path, trees: Iterable[str]) -> bytes:
    """A deterministic tar (sorted, no owners, mtime 0) of ``trees`` under ``vdir``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for tree in trees:
            root = vdir / tree
            if not root.is_dir():
                continue
            paths = [root] + sorted(root.rglob("*"))
            for path in paths:
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(vdir)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                elif info.isdir() or info.issym():
                    tar.addfile(info)
    return buf.getvalue()


def _unpack(raw: bytes, vdir: Path) -> None:
    """Extract ``_pack``'s tar into ``vdir``: regular files, directories and
    symlinks only, every path inside ``vdir``, nothing written through a symlink."""
    dest = vdir.resolve()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for info in tar.getmembers():
            parts = Path(info.name).parts
            if (not parts or info.name.startswith("/") or ".." in parts
                    or parts[0] not in ("code", "packages")):
                raise SnapshotIntegrityError(f"code archive: refusing entry {info.name!r}")
            target = dest.joinpath(*parts)
            if target.parent.resolve() != target.parent or not str(target).startswith(str(dest)):
                raise SnapshotIntegrityError(f"code archive: {info.name!r} escapes through a "
                                             "link")
            if info.isdir():
                target.mkdir(mode=0o750, exist_ok=True)
            elif info.issym():
                os.symlink(info.linkname, target)
            elif info.isreg():
                f = tar.extractfile(info)
                assert f is not None
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o640)
                with os.fdopen(fd, "wb") as out:
                    while chunk := f.read(1 << 20):
                        out.write(chunk)
                os.chmod(target, 0o750 if info.mode & 0o111 else 0o640)
            else:
                raise SnapshotIntegrityError(f"code archive: refusing {info.name!r} "
                                             "(not a file, directory or symlink)")
