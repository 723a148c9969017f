"""The content-addressed chunk store: compressed chunks, stored once, verified on read.

Layout (under the store root)::

    chunks/<h[0:2]>/<h>.zst    one zstd frame; h = SHA-256 (64 hex) of the UNcompressed
                               bytes; mode 0600, directories 0700
    tmp/<h>.<random>.tmp       a chunk being written (removed by gc: stale once no
                               put holds the gc lock)

Chunk file format: a single zstd frame (zstandard's ``compress``: the frame header
carries the content size, checksum flag off -- SHA-256 is the checksum).

Encrypted chunks (a ``ChunkStore`` given a ``StoreCipher``, crypto.py): the name is
HMAC-SHA256(name subkey, uncompressed bytes) instead of SHA-256, and the file is
``b"SSE1" | nonce (12) | AES-256-GCM(the zstd frame above) | tag (16)`` with the
name as associated data (same path, same ``.zst`` suffix, so gc and verify need not
know). Compression comes first: ciphertext does not compress. Which form a chunk
must have is decided by its manifest (``encrypted``), never by the file's first
bytes, so a plaintext chunk cannot stand in for an encrypted one.

Writing (``write``): compress, write to tmp/, fsync, then ``link`` into place. A
chunk that already exists is never replaced (``link`` fails with EEXIST and the
temp file is dropped), so a chunk file changes only from absent to complete, and a
reader never sees a partial chunk under its final name.

Reading (``read``) verifies, in this order, before trusting anything:
  1. the file exists (else "missing");
  2. its size (fstat) <= zstd's compress bound of the expected raw size (plus the
     encryption overhead when encrypted) (else "oversized"), before it is read;
  2a. encrypted: magic, then the GCM tag (else "corrupt (authentication failed...)"),
     before anything is decompressed;
  3. the frame header's content size == the expected raw size (else "truncated or
     corrupt"; a frame without content size is refused);
  4. decompression with ``max_output_size = raw size`` succeeds and yields exactly
     raw size bytes;
  5. SHA-256 (encrypted: the keyed hash) of the output == the chunk's name (else
     "hash mismatch").
Failures raise ``SnapshotIntegrityError`` with the hash and the caller's label.

This module must not know about manifests or versions; gc decides what is garbage.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import weakref
from pathlib import Path
from typing import Iterator

import zstandard

from ..errors import SnapshotIntegrityError
from ._fs import fsync_dir, mkdir_private, write_new_file
from .crypto import CHUNK_OVERHEAD, InvalidTag, StoreCipher

__all__ = ["ChunkStore", "chunk_hash", "compress_bound"]


def chunk_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compress_bound(n: int) -> int:
    """ZSTD_COMPRESSBOUND(n), plus room for a frame header."""
    extra = ((128 << 10) - n) >> 11 if n < (128 << 10) else 0
    return n + (n >> 8) + extra + 32


_NO_KEY = "is encrypted; set SNAPSTART_ENCRYPTION_KEY"


def _oversized(size: int, raw_size: int, encrypted: bool) -> str | None:
    """Step 2: what is wrong with a stored size the raw size cannot explain."""
    if size > compress_bound(raw_size) + (CHUNK_OVERHEAD if encrypted else 0):
        return f"oversized ({size} bytes for {raw_size} raw)"
    return None


class ChunkStore:
    def __init__(self, chunks_dir: Path, tmp_dir: Path, level: int,
                 cipher: StoreCipher | None = None) -> None:
        self.dir = chunks_dir
        self.tmp = tmp_dir
        self.level = level
        # set: new chunks are written encrypted, under keyed names
        self.cipher = cipher
        self._local = threading.local()
        self._dirfd = os.open(chunks_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        weakref.finalize(self, os.close, self._dirfd)

    def path(self, h: str) -> Path:
        return self.dir / h[:2] / f"{h}.zst"

    def name(self, data: bytes) -> str:
        """The name ``write`` expects for ``data``: keyed when encrypting."""
        return chunk_hash(data) if self.cipher is None else self.cipher.chunk_name(data)

    def stored_size(self, h: str) -> int | None:
        """Size of the stored chunk, or None if it is absent."""
        try:
            return os.stat(self.path(h)).st_size
        except FileNotFoundError:
            return None

    def write(self, h: str, data: bytes) -> tuple[int, bool]:
        """Store ``data`` (whose hash is ``h``) unless present: (stored size, written?)."""
        existing = self.stored_size(h)
        if existing is not None:
            return existing, False
        blob = self._cctx().compress(data)
        if self.cipher is not None:
            blob = self.cipher.seal_chunk(h, blob)
        if not self._link_new(h, blob):
            return os.stat(self.path(h)).st_size, False
        return len(blob), True

    def _link_new(self, h: str, blob: bytes) -> bool:
        """Put ``blob`` under ``h``'s name: a temp file, fsynced, then ``link``ed into
        place (never replaces). False if the chunk was there already."""
        tmp = self.tmp / f"{h}.{secrets.token_hex(4)}.tmp"
        try:
            write_new_file(tmp, blob)
            final = self.path(h)
            try:
                os.link(tmp, final)
            except FileNotFoundError:
                mkdir_private(final.parent)
                os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        return True

    def sync_dirs(self, prefixes: set[str]) -> None:
        """fsync the chunk directories new chunks were linked into (and their parent,
        which may have gained a directory)."""
        for p in prefixes:
            fsync_dir(self.dir / p)
        if prefixes:
            fsync_dir(self.dir)

    def read(self, h: str, raw_size: int, label: str, item: str, *,
             encrypted: bool = False) -> bytes:
        """The verified, decompressed chunk; ``SnapshotIntegrityError`` names
        ``label`` (the version), the chunk and ``item`` (the file) otherwise."""
        data, reason = self.load(h, raw_size, encrypted=encrypted)
        if data is None:
            raise SnapshotIntegrityError(f"{label}: chunk {h[:12]}.. {reason} ({item})")
        return data

    def load(self, h: str, raw_size: int, *,
             encrypted: bool = False) -> tuple[bytes, None] | tuple[None, str]:
        """(verified bytes, None), or (None, what is wrong with the chunk)."""
        if encrypted and self.cipher is None:
            return None, _NO_KEY
        try:
            # relative to an open directory: no walk down the store's full path
            fd = os.open(f"{h[:2]}/{h}.zst", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dirfd)
        except FileNotFoundError:
            return None, "missing"
        except OSError as exc:
            return None, f"unreadable ({exc.strerror or exc})"
        try:
            size = os.fstat(fd).st_size
            oversized = _oversized(size, raw_size, encrypted)
            if oversized:
                return None, oversized
            # read exactly ``size``: a larger read buffer costs more than the fstat
            blob = _read_upto(fd, size)
        except OSError as exc:
            return None, f"unreadable ({exc.strerror or exc})"
        finally:
            os.close(fd)
        return self._open_blob(h, blob, raw_size, encrypted)

    def verify_blob(self, h: str, blob: bytes, raw_size: int, *,
                    encrypted: bool = False) -> tuple[bytes, None] | tuple[None, str]:
        """Steps 2-5 of the module docstring on a stored chunk's bytes (held in memory:
        a chunk fetched from elsewhere)."""
        if encrypted and self.cipher is None:
            return None, _NO_KEY
        oversized = _oversized(len(blob), raw_size, encrypted)
        if oversized:
            return None, oversized
        return self._open_blob(h, blob, raw_size, encrypted)

    def _open_blob(self, h: str, blob: bytes, raw_size: int,
                   encrypted: bool) -> tuple[bytes, None] | tuple[None, str]:
        """Steps 2a-5: authenticate, decompress, hash."""
        cipher = self.cipher
        if encrypted and cipher is not None:
            try:
                blob = cipher.open_chunk(h, blob)
            except ValueError as exc:
                return None, f"corrupt ({exc})"
            except InvalidTag:
                return None, ("corrupt (authentication failed: modified, or encrypted "
                              "with another key)")
        try:
            fcs = zstandard.frame_content_size(blob)
            if fcs != raw_size:
                return None, (f"truncated or corrupt (frame header says {fcs} bytes, "
                              f"expected {raw_size})")
            out = self._dctx().decompress(blob, max_output_size=raw_size)
        except zstandard.ZstdError as exc:
            return None, f"truncated or corrupt ({exc})"
        if len(out) != raw_size:
            return None, f"truncated (decompressed {len(out)} of {raw_size} bytes)"
        expect = (cipher.chunk_name(out) if encrypted and cipher is not None
                  else hashlib.sha256(out).hexdigest())
        if not hmac.compare_digest(expect, h):
            return None, "corrupt (hash mismatch)"
        return out, None

    def install(self, h: str, blob: bytes, raw_size: int, label: str, *,
                encrypted: bool = False) -> None:
        """Keep a stored chunk copied from elsewhere (the fleet's bucket, s3.py) once
        it verifies; ``SnapshotIntegrityError`` and nothing kept if it does not.
        Written like ``write``: temp file, then ``link`` (never replaces)."""
        _, reason = self.verify_blob(h, blob, raw_size, encrypted=encrypted)
        if reason is not None:
            raise SnapshotIntegrityError(f"{label}: fetched chunk {h[:12]}.. {reason}")
        self._link_new(h, blob)

    def iter_hashes(self) -> Iterator[tuple[str, Path]]:
        """Every chunk file present (hash, path); names that are not chunks are skipped."""
        try:
            subdirs = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for sub in subdirs:
            if not (sub.is_dir(follow_symlinks=False) and len(sub.name) == 2):
                continue
            for ent in os.scandir(sub.path):
                name = ent.name
                if name.endswith(".zst") and len(name) == 68 and name.startswith(sub.name):
                    yield name[:64], Path(ent.path)

    def _cctx(self) -> zstandard.ZstdCompressor:
        # zstd contexts are not thread-safe: one per thread.
        c = getattr(self._local, "cctx", None)
        if c is None:
            c = self._local.cctx = zstandard.ZstdCompressor(
                level=self.level, write_content_size=True, write_checksum=False)
        return c

    def _dctx(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "dctx", None)
        if d is None:
            d = self._local.dctx = zstandard.ZstdDecompressor()
        return d


def _read_upto(fd: int, n: int) -> bytes:
    """Up to ``n`` bytes: all of them unless EOF comes first."""
    blob = os.read(fd, n)
    if not blob or len(blob) == n:
        return blob
    parts = [blob]
    got = len(blob)
    while got < n:
        more = os.read(fd, n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
