"""Snapshot manifests: the signed list of what a published function version is made of.

A manifest names, for each file of a CRIU image directory, its mode, size and the
chunks (content hashes) it is made of, plus the caller's and the host's metadata.
It is the only thing that says which chunks belong to a version, so it is signed
with the store's key and nothing in it is parsed before the signature checks out.
This module knows nothing about where chunks live (``chunks.py``) or how files are
cut (``chunking.py``).

File format (``root/manifests/<name>/<version>.msgpack``, mode 0600)::

    offset   size  field
    0        8     MAGIC = b"SNAPMAN1"
    8        2     format version, u16 big-endian: 1 = plaintext, 2 = encrypted body
    10       4     body length N, u32 big-endian
    14       N     version 1: body, canonical msgpack (below)
                   version 2: key id (8) | nonce (12) | AES-256-GCM(body) | tag (16),
                   associated data = MAGIC + the u16 format version (crypto.py)
    14+N     32    HMAC-SHA256(store key, bytes[0 : 14+N])

Version 2 is written when the store has an encryption key: the body holds the
function's configuration (environment variables), so it is a secret. The HMAC is
over the stored (encrypted) bytes and checked first; then the key id tells "wrong
key" apart from damage; then the tag is checked. A version-2 manifest read without
a key fails with "... is encrypted; set SNAPSTART_ENCRYPTION_KEY". ``encrypted``
(the Manifest field) says which version it was read from / will be written as, and
so whether its chunks are encrypted (chunks.py): never mixed within a version.

Body: a msgpack map, written canonically (map keys sorted, at every level; ints in
their shortest form; floats as float64), so equal manifests written by this module
have equal bytes and equal digests::

    {"files":   [[path: str, mode: int, size: int,
                  [[hash: bin(32), raw_size: int, stored_size: int], ...]], ...],
     "meta":    {str: JSON-able value},      # caller's meta + host facts
                                             # (publisher.py lists its keys)
     "name":    str,                         # function name
     "version": int}                         # function version

``path`` is relative, "/"-separated, normalised (no "", ".", ".." components);
``mode`` is the permission bits (<= 0o777); a file's bytes are its chunks'
uncompressed bytes concatenated; ``hash`` is SHA-256 of a chunk's uncompressed
bytes (version 2: their keyed hash, crypto.py); ``stored_size`` (compressed size) is informational (stats), never trusted.

The body is not compressed (a 46 MiB image's manifest is ~30 KiB), so the only
size to bound before parsing is the file's. ``digest`` = SHA-256 of the body bytes
as stored (version 2: as decrypted) (hex); it keys materialized copies (L1).

Load order, each step guarding the next (``from_bytes``):
  1. file size <= MAX_MANIFEST_BYTES (16 MiB), checked with fstat before reading;
  2. magic, format version, N == size - 46;
  3. HMAC, constant-time; a manifest modified or written by another store (another
     key) fails here: "not signed by this store's key";
  3a. version 2: key id, then AES-GCM decryption and tag check;
  4. msgpack, with the unpacker's length limits and strict map keys;
  5. schema and limits: <= MAX_FILES files, <= MAX_CHUNKS chunk references,
     1 <= raw_size <= MAX_CHUNK_RAW (4 MiB), sum(raw_size) == size,
     total size <= MAX_LOGICAL_BYTES (64 GiB), safe paths, no duplicate paths.
Every failure raises ``SnapshotIntegrityError`` naming the version and the item.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import math
import os
import posixpath
import secrets
import struct
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import msgpack

from ..errors import SnapshotIntegrityError
from ._fs import fsync_dir, write_new_file
from .crypto import StoreCipher

__all__ = ["Manifest", "FileEntry", "ChunkRef", "MAGIC", "FORMAT_VERSION", "FORMAT_VERSION_ENCRYPTED",
           "MAX_MANIFEST_BYTES", "MAX_CHUNK_RAW", "MAX_LOGICAL_BYTES", "MAX_FILES",
           "MAX_CHUNKS", "read_signed_body", "check_json_able"]

MAGIC = b"SNAPMAN1"
FORMAT_VERSION = 1
FORMAT_VERSION_ENCRYPTED = 2
_HEADER = struct.Struct(">8sHI")
_MAC_LEN = 32
MAX_MANIFEST_BYTES = 16 << 20
MAX_CHUNK_RAW = 4 << 20
MAX_LOGICAL_BYTES = 64 << 30
MAX_FILES = 65536
MAX_CHUNKS = 4 << 20
_HASH_LEN = 32


class ChunkRef(NamedTuple):
    """One chunk of a file: SHA-256 (hex; keyed if encrypted) of its uncompressed
    bytes, sizes."""

    hash: str
    raw_size: int
    stored_size: int


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One file of an image directory."""

    path: str
    mode: int
    size: int
    chunks: tuple[ChunkRef, ...]


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A published version's snapshot: its files, as chunks, and its metadata."""

    name: str
    version: int
    files: tuple[FileEntry, ...]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    # stored as format version 2 (encrypted body, encrypted chunks); module docstring
    encrypted: bool = False

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    @functools.cached_property
    def body(self) -> bytes:
        """The msgpack body: as loaded, or encoded canonically (module docstring)."""
        return _pack({
            "name": self.name,
            "version": self.version,
            "meta": self.meta,
            "files": [[f.path, f.mode, f.size,
                       [[bytes.fromhex(c.hash), c.raw_size, c.stored_size] for c in f.chunks]]
                      for f in self.files],
        })

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the body: identifies this manifest's content."""
        return hashlib.sha256(self.body).hexdigest()

    @property
    def logical_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def chunk_refs(self) -> dict[str, ChunkRef]:
        """Distinct chunks of this version, by hash."""
        return {c.hash: c for f in self.files for c in f.chunks}

    def to_bytes(self, key: bytes, cipher: StoreCipher | None = None) -> bytes:
        """The signed file; encrypted (version 2) iff ``self.encrypted``."""
        body = self.body
        fmt = FORMAT_VERSION
        if self.encrypted:
            if cipher is None:
                raise ValueError(f"manifest {self.label} is encrypted: a cipher is needed")
            fmt = FORMAT_VERSION_ENCRYPTED
            body = cipher.seal_manifest(body, _aad(fmt))
        if len(body) + _HEADER.size + _MAC_LEN > MAX_MANIFEST_BYTES:
            raise ValueError(f"manifest {self.label} exceeds {MAX_MANIFEST_BYTES} bytes")
        head = _HEADER.pack(MAGIC, fmt, len(body)) + body
        return head + hmac.new(key, head, hashlib.sha256).digest()

    @classmethod
    def from_bytes(cls, data: bytes, key: bytes, *, what: str = "manifest",
                   cipher: StoreCipher | None = None) -> "Manifest":
        body, encrypted = _open_envelope(data, key, what, cipher)
        return cls.from_body(body, what=what, encrypted=encrypted)

    @classmethod
    def from_body(cls, body: bytes, *, what: str = "manifest",
                  encrypted: bool = False) -> "Manifest":
        """Parse a body whose signature was already checked (``read_signed_body``)."""
        try:
            raw = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise SnapshotIntegrityError(f"{what}: undecodable manifest body: {exc}") from exc
        m = _from_obj(raw, what, encrypted)
        m.__dict__["body"] = body  # the cached_property's slot: digest = hash of these bytes
        return m

    def save_to(self, path: Path, key: bytes, *, exclusive: bool = False,
                cipher: StoreCipher | None = None) -> None:
        """Write atomically (temp file in the same directory, fsync, rename/link).

        ``exclusive``: fail with ``FileExistsError`` if ``path`` exists.
        """
        data = self.to_bytes(key, cipher)
        path = Path(path)
        tmp = path.parent / f".{path.name}.tmp-{secrets.token_hex(6)}"
        try:
            write_new_file(tmp, data)
            if exclusive:
                os.link(tmp, path)
            else:
                os.replace(tmp, path)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        fsync_dir(path.parent)

    @classmethod
    def load_from(cls, path: Path, key: bytes, *, what: str | None = None,
                  cipher: StoreCipher | None = None) -> "Manifest":
        what = what or f"manifest {path}"
        body, encrypted = read_signed_body(Path(path), key, what, cipher)
        return cls.from_body(body, what=what, encrypted=encrypted)


def read_signed_body(path: Path, key: bytes, what: str,
                     cipher: StoreCipher | None = None) -> tuple[bytes, bool]:
    """Steps 1-3a of loading: (the verified, decrypted body, unparsed; encrypted?).

    ``FileNotFoundError`` propagates (the caller knows what "absent" means).
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_MANIFEST_BYTES:
            raise SnapshotIntegrityError(
                f"{what}: manifest is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise SnapshotIntegrityError(f"{what}: manifest grew over the size limit while read")
    return _open_envelope(data, key, what, cipher)


def _aad(fmt: int) -> bytes:
    return MAGIC + fmt.to_bytes(2, "big")


def _open_envelope(data: bytes, key: bytes, what: str,
                   cipher: StoreCipher | None) -> tuple[bytes, bool]:
    if len(data) > MAX_MANIFEST_BYTES:
        raise SnapshotIntegrityError(
            f"{what}: manifest is {len(data)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    if len(data) < _HEADER.size + _MAC_LEN:
        raise SnapshotIntegrityError(f"{what}: manifest truncated ({len(data)} bytes)")
    magic, fmt, n = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotIntegrityError(f"{what}: not a snapstart manifest (bad magic)")
    if fmt not in (FORMAT_VERSION, FORMAT_VERSION_ENCRYPTED):
        raise SnapshotIntegrityError(f"{what}: unsupported manifest format version {fmt}")
    if n != len(data) - _HEADER.size - _MAC_LEN:
        raise SnapshotIntegrityError(
            f"{what}: manifest body length {n} does not match the file size {len(data)}")
    head, mac = data[:-_MAC_LEN], data[-_MAC_LEN:]
    if not hmac.compare_digest(hmac.new(key, head, hashlib.sha256).digest(), mac):
        raise SnapshotIntegrityError(
            f"{what}: manifest signature mismatch: modified, or not signed by this "
            "store's key")
    if fmt == FORMAT_VERSION:
        return head[_HEADER.size:], False
    if cipher is None:
        raise SnapshotIntegrityError(
            f"{what}: the snapshot is encrypted; set SNAPSTART_ENCRYPTION_KEY (or "
            "SNAPSTART_ENCRYPTION_KEY_FILE)")
    try:
        return cipher.open_manifest(head[_HEADER.size:], _aad(fmt)), True
    except ValueError as exc:
        raise SnapshotIntegrityError(f"{what}: manifest {exc}") from None


def check_json_able(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A plain-dict copy of ``meta``; ``ValueError``/``TypeError`` if not JSON-able."""
    copy: dict[str, Any] = json.loads(json.dumps(dict(meta), allow_nan=False))
    return copy


def _pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(_canonical(obj), use_bin_type=True)
    return packed


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj


def _from_obj(raw: Any, what: str, encrypted: bool) -> Manifest:
    def bad(msg: str) -> SnapshotIntegrityError:
        return SnapshotIntegrityError(f"{what}: malformed manifest: {msg}")

    if not isinstance(raw, dict) or set(raw) != {"files", "meta", "name", "version"}:
        raise bad("unexpected top-level keys")
    name, version, meta, files = raw["name"], raw["version"], raw["meta"], raw["files"]
    if not isinstance(name, str) or not isinstance(version, int) or isinstance(version, bool):
        raise bad("name/version have the wrong type")
    if not isinstance(meta, dict) or not isinstance(files, list):
        raise bad("meta/files have the wrong type")
    if len(files) > MAX_FILES:
        raise bad(f"{len(files)} files, over the limit of {MAX_FILES}")
    _check_meta(meta, bad)
    entries = []
    seen: set[str] = set()
    total = 0
    nchunks = 0
    for item in files:
        if not (isinstance(item, list) and len(item) == 4):
            raise bad("file entry is not [path, mode, size, chunks]")
        path, mode, size, chunks = item
        if not isinstance(path, str) or not _safe_path(path):
            raise bad(f"unsafe file path {path!r}")
        if path in seen:
            raise bad(f"duplicate file path {path!r}")
        seen.add(path)
        if not _is_int(mode) or not 0 <= mode <= 0o777:
            raise bad(f"{path}: bad mode {mode!r}")
        if not _is_int(size) or size < 0 or not isinstance(chunks, list):
            raise bad(f"{path}: bad size or chunk list")
        nchunks += len(chunks)
        if nchunks > MAX_CHUNKS:
            raise bad(f"over {MAX_CHUNKS} chunk references")
        refs = []
        acc = 0
        for c in chunks:
            if not (isinstance(c, list) and len(c) == 3 and isinstance(c[0], bytes)
                    and len(c[0]) == _HASH_LEN and _is_int(c[1]) and _is_int(c[2])):
                raise bad(f"{path}: malformed chunk reference")
            h, raw_size, stored = c
            if not 1 <= raw_size <= MAX_CHUNK_RAW or stored < 0:
                raise bad(f"{path}: chunk {h.hex()[:12]}.. has raw size {raw_size}")
            acc += raw_size
            refs.append(ChunkRef(h.hex(), raw_size, stored))
        if acc != size:
            raise bad(f"{path}: chunks add up to {acc} bytes, file size is {size}")
        total += size
        if total > MAX_LOGICAL_BYTES:
            raise bad(f"total size over the {MAX_LOGICAL_BYTES}-byte limit")
        entries.append(FileEntry(path, mode, size, tuple(refs)))
    return Manifest(name=name, version=version, files=tuple(entries), meta=meta,
                    encrypted=encrypted)


def _check_meta(obj: Any, bad: Any, depth: int = 0) -> None:
    if depth > 32:
        raise bad("meta nested too deeply")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise bad("meta has a non-string key")
            _check_meta(v, bad, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _check_meta(v, bad, depth + 1)
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            raise bad("meta holds a non-finite number")
    elif not (obj is None or isinstance(obj, (str, int, bool))):
        raise bad(f"meta holds a {type(obj).__name__}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _safe_path(path: str) -> bool:
    if not path or path.startswith("/") or "\0" in path or "\\" in path:
        return False
    if posixpath.normpath(path) != path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))
