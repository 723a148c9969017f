"""The snapshot store: published CRIU image directories, compressed, deduplicated,
signed and verified, and their decompressed copies on tmpfs for restore.

    put(name, version, image_dir)  -> chunks (chunking.py, chunks.py) + a signed
                                      manifest (manifest.py), atomically
    materialize(name, version)     -> an L1 directory (l1.py) of verified files
    check_compatible(manifest)     -> arch / CRIU / CPU features (host.py)

Modules, one concern each:
    base.py      the ``Store`` protocol the manager programs against
    local.py     ``LocalStore``: the on-disk layout, publishing, gc, verify, stats
    s3.py        ``S3Store``: a fleet's bucket (SNAPSTART_STORE=s3://...), with a
                 LocalStore as the node's cache; the registry's side of the bucket
    manifest.py  the manifest format (magic, version, msgpack body, HMAC), limits
    chunking.py  how files are cut into chunks (page-granular CDC), and why
    chunks.py    the content-addressed chunk files (zstd frames named by SHA-256)
    l1.py        materialized directories: locking, LRU budget
    host.py      host facts recorded at publish time and checked before restore

The store must not know about sandboxes, CRIU invocation or functions beyond their
name and version: it stores and returns directories of bytes.
"""

from .base import Store
from .host import CRIU_CPU_FLAGS, HostFacts
from .local import LocalStore
from .manifest import ChunkRef, FileEntry, Manifest

__all__ = ["Store", "LocalStore", "Manifest", "FileEntry", "ChunkRef", "HostFacts",
           "CRIU_CPU_FLAGS"]
