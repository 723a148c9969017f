"""Encryption at rest: AES-256-GCM for chunks and manifest bodies, keyed chunk names.

A snapshot holds everything the function had in memory and its configuration with
its environment variables: secrets. With an encryption key configured, the store
(L2) keeps chunks and manifest bodies only as ciphertext. L1 (l1.py) stays
plaintext: CRIU restores from plain files; it lives on tmpfs, in 0700 directories.

Key: 32 bytes, from ``SNAPSTART_ENCRYPTION_KEY`` (64 hex chars) or
``SNAPSTART_ENCRYPTION_KEY_FILE`` (a file of 32 raw bytes or 64 hex chars, refused if
group or others have any permission on it); not both. Subkeys are derived from it,
one per use, as HMAC-SHA256(key, label)::

    b"snapstart-chunk-name"     chunk names: HMAC-SHA256(subkey, plaintext) (hex), so a
                                name does not reveal the plaintext's SHA-256 and equal
                                plaintexts still get equal names (dedup works)
    b"snapstart-chunk-aead"     AES-256-GCM key for chunks
    b"snapstart-manifest-aead"  AES-256-GCM key for manifest bodies
    b"snapstart-key-id"         first 8 bytes: key id, stored with each manifest so a
                                wrong key is told apart from damage

Encrypted chunk file (chunks.py): ``b"SSE1" | nonce (12) | AES-GCM(zstd frame) | tag
(16)``, associated data = the chunk's name (64 ASCII hex). Encrypted manifest body
(manifest.py, format version 2): ``key id (8) | nonce (12) | AES-GCM(msgpack body) |
tag (16)``, associated data = ``b"SNAPMAN1" + u16 format version``. Nonces are random
(os.urandom): each key encrypts far fewer than 2**32 messages per chunk name or
manifest, so a nonce collision is negligible.

This module must not know about files, layouts or manifests' contents.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import Mapping


from ..errors import ConfigError

__all__ = ["StoreCipher", "KEY_BYTES", "CHUNK_MAGIC", "CHUNK_OVERHEAD", "InvalidTag",
           "encryption_key_from_env"]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_BYTES = 8
CHUNK_MAGIC = b"SSE1"
CHUNK_OVERHEAD = len(CHUNK_MAGIC) + NONCE_BYTES + TAG_BYTES
MANIFEST_OVERHEAD = KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES


def _subkey(key: bytes, label: bytes) -> bytes:
    return hmac.digest(key, label, "sha256")


class InvalidTag(Exception):
    """Authentication of an encrypted chunk failed (modified, or another key)."""


class StoreCipher:
    """The derived keys of one encryption key; thread-safe (AESGCM objects are).
    ``cryptography`` is imported only here: stores without encryption (and the CLI's
    start) never pay for it."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ConfigError(f"the encryption key must be {KEY_BYTES} bytes")
        self._name_key = _subkey(key, b"snapstart-chunk-name")
        self._chunk = AESGCM(_subkey(key, b"snapstart-chunk-aead"))
        self._manifest = AESGCM(_subkey(key, b"snapstart-manifest-aead"))
        self.key_id = _subkey(key, b"snapstart-key-id")[:KEY_ID_BYTES]

    def chunk_name(self, data: bytes) -> str:
        return hmac.digest(self._name_key, data, "sha256").hex()

    def seal_chunk(self, name: str, frame: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return CHUNK_MAGIC + nonce + self._chunk.encrypt(nonce, frame, name.encode())

    def open_chunk(self, name: str, blob: bytes) -> bytes:
        """The zstd frame; ``ValueError`` (bad framing) or ``InvalidTag``."""
        if len(blob) < CHUNK_OVERHEAD or blob[:len(CHUNK_MAGIC)] != CHUNK_MAGIC:
            raise ValueError("not an encrypted chunk (bad magic or too short)")
        from cryptography.exceptions import InvalidTag as _Invalid

        nonce = blob[len(CHUNK_MAGIC):len(CHUNK_MAGIC) + NONCE_BYTES]
        try:
            return self._chunk.decrypt(nonce, blob[len(CHUNK_MAGIC) + NONCE_BYTES:],
                                       name.encode())
        except _Invalid:
            raise InvalidTag(f"chunk {name[:12]}.. failed authentication") from None

    def seal_manifest(self, body: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return self.key_id + nonce + self._manifest.encrypt(nonce, body, aad)

    def open_manifest(self, payload: bytes, aad: bytes) -> bytes:
        """The body; ``ValueError`` naming the cause (wrong key, damage)."""
        if len(payload) < MANIFEST_OVERHEAD:
            raise ValueError("encrypted body truncated")
        if not hmac.compare_digest(payload[:KEY_ID_BYTES], self.key_id):
            raise ValueError("encrypted with a different key than "
                             "SNAPSTART_ENCRYPTION_KEY")
        from cryptography.exceptions import InvalidTag as _Invalid

        nonce = payload[KEY_ID_BYTES:KEY_ID_BYTES + NONCE_BYTES]
        try:
            return self._manifest.decrypt(nonce, payload[KEY_ID_BYTES + NONCE_BYTES:], aad)
        except _Invalid:
            raise ValueError("encrypted body failed authentication (modified)") from None


def encryption_key_from_env(env: Mapping[str, str]) -> bytes | None:
    """The key from ``SNAPSTART_ENCRYPTION_KEY`` or ``..._KEY_FILE``; None if unset."""
    hex_key = env.get("SNAPSTART_ENCRYPTION_KEY")
    key_file = env.get("SNAPSTART_ENCRYPTION_KEY_FILE")
    if hex_key and key_file:
        raise ConfigError("set SNAPSTART_ENCRYPTION_KEY or SNAPSTART_ENCRYPTION_KEY_FILE, "
                          "not both")
    if hex_key:
        return _parse_hex(hex_key.strip(), "SNAPSTART_ENCRYPTION_KEY")
    if key_file:
        return _read_key_file(Path(key_file))
    return None


def _parse_hex(text: str, what: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{what} must be {2 * KEY_BYTES} hex characters") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{what} must be {2 * KEY_BYTES} hex characters "
                          f"({KEY_BYTES} bytes), not {len(key)} bytes")
    return key


def _read_key_file(path: Path) -> bytes:
    what = f"SNAPSTART_ENCRYPTION_KEY_FILE {path}"
    try:
        with open(path, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if mode & 0o077:
                raise ConfigError(f"{what} has mode {mode:04o}: group or others may "
                                  "access it; chmod 600 it")
            data = f.read(4 * KEY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read it: {exc.strerror or exc}") from exc
    if len(data) == KEY_BYTES:
        return data
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        text = ""
    if len(text) != 2 * KEY_BYTES:
        raise ConfigError(f"{what} must hold {KEY_BYTES} raw bytes or "
                          f"{2 * KEY_BYTES} hex characters")
    return _parse_hex(text, what)
