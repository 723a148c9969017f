"""How a ``provided`` (custom runtime) function is started: Lambda's convention.

The function directory holds an executable ``bootstrap``; it is started with the
common Lambda environment (AWS_LAMBDA_RUNTIME_API, _HANDLER = the handler string,
LAMBDA_TASK_ROOT), cwd = the code directory, and no arguments. A missing or
non-executable bootstrap is refused before a sandbox is created (``ConfigError``
with error type ``Runtime.InvalidEntrypoint``, Lambda's name for it).

Checkpoint rule: at the runtime's first GET /runtime/invocation/next
(``snapshot_on_next``), since custom runtimes generally know nothing of SnapStart.
A custom runtime that does call GET /runtime/restore/next in snap-start mode is
checkpointed there instead and gets its 200 on every restore, like awslambdaric.
The kernel CRNG is reseeded before every restore; any userspace RNG state the
runtime holds is copied into every clone and is the runtime's to reseed.

This module only describes the launch; it must not start anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..sandbox.mountns import TASK_DIR

__all__ = ["provided_argv"]


def provided_argv(code_dir: Path) -> list[str]:
    bootstrap = code_dir / "bootstrap"
    if not bootstrap.is_file() or not os.access(bootstrap, os.X_OK):
        raise ConfigError(f"runtime provided needs an executable file named bootstrap in the "
                          f"function directory ({bootstrap} is missing or not executable)",
                          error_type="Runtime.InvalidEntrypoint")
    return [TASK_DIR + "/bootstrap"]
