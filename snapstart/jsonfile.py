"""``write_private``: how snapstart writes its JSON state files under SNAPSTART_HOME
(registry, identities ledger, deploy state, triggers, mapping state).

Atomically -- a temp file ``.<name>.tmp<pid>`` beside it, then ``rename`` over it, so
a reader sees the old file or the new one, never a part -- and root-only (0600): some
of them hold environment variables. ``durable``: fsync the file before the rename
(for what must survive a crash, such as the identities ledger).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_private"]


def write_private(path: Path, data: Any, *, durable: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
