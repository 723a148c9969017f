"""The ``Store`` protocol: what the manager may ask of a snapshot store.

Kept narrow so that another backend (e.g. S3 for chunks and manifests, with the
same local L1) can implement it. Errors are snapstart's: ``FunctionNotFoundError``
for an absent version, ``SnapshotIntegrityError`` for anything that fails
verification, ``SnapshotIncompatibleError`` from ``check_compatible`` and
``StoreError`` for I/O failures of the store itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

from .manifest import Manifest

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    def put(self, name: str, version: int, image_dir: Path, meta: Mapping[str, Any], *,
            progress: bool = False) -> Manifest:
        """Publish ``image_dir`` as an immutable ``name:version``."""
        ...

    def manifest(self, name: str, version: int) -> Manifest:
        """The verified manifest of ``name:version``."""
        ...

    def materialize(self, name: str, version: int, *, progress: bool = False) -> Path:
        """A directory holding the verified, decompressed image files."""
        ...

    def check_compatible(self, m: Manifest, criu_version: str | None = None) -> None:
        """Raise ``SnapshotIncompatibleError`` if this host cannot restore ``m``."""
        ...

    def versions(self, name: str | None = None) -> list[tuple[str, int]]:
        ...

    def remove(self, name: str, version: int) -> None:
        ...

    def gc(self) -> dict[str, int]:
        ...

    def verify(self, name: str | None = None, version: int | None = None) -> list[str]:
        ...

    def stats(self) -> list[dict[str, Any]]:
        ...

    def l1_stats(self) -> dict[str, int]:
        ...

    def clear_l1(self) -> None:
        ...
