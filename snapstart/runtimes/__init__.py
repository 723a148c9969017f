"""How each runtime is started inside a sandbox: argv, environment, working dir.

Environment follows Lambda's (names verbatim): AWS_LAMBDA_RUNTIME_API, _HANDLER,
LAMBDA_TASK_ROOT, AWS_LAMBDA_FUNCTION_NAME/VERSION/MEMORY_SIZE, AWS_REGION,
AWS_EXECUTION_ENV, AWS_LAMBDA_INITIALIZATION_TYPE (``snap-start`` when publishing,
``on-demand`` for cold starts), log group/stream names, plus the function's own
variables (which may not override the reserved ones; ``FunctionConfig`` refuses
them).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import PROJECT_ROOT, FunctionConfig, Settings

__all__ = ["RuntimeSpec", "runtime_spec", "RUNTIME_API"]

RUNTIME_API = "127.0.0.1:9001"
SITECUSTOMIZE_DIR = PROJECT_ROOT / "bootstrap" / "python"


@dataclass(frozen=True)
class RuntimeSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    init_type: str
    # Checkpoint at the runtime's first GET /invocation/next instead of at
    # GET /restore/next: for runtimes without SnapStart support (``provided``).
    snapshot_on_next: bool = False
    uid: int = 0
    gid: int = 0
    seccomp: bool = True

    def to_frame(self) -> dict:
        return {"op": "start", "argv": self.argv, "env": self.env, "cwd": self.cwd,
                "init_type": self.init_type, "uid": self.uid, "gid": self.gid,
                "seccomp": self.seccomp}


def runtime_spec(config: FunctionConfig, settings: Settings, *, code_dir: Path,
                 packages_dir: Path | None, version: str, snap_start: bool,
                 log_stream: str = "", hash_seed: int | None = None) -> RuntimeSpec:
    init_type = "snap-start" if snap_start else "on-demand"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "HOME": "/tmp",
        "AWS_LAMBDA_RUNTIME_API": RUNTIME_API,
        "_HANDLER": config.handler,
        "LAMBDA_TASK_ROOT": str(code_dir),
        "AWS_LAMBDA_FUNCTION_NAME": config.name,
        "AWS_LAMBDA_FUNCTION_VERSION": version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_LAMBDA_INITIALIZATION_TYPE": init_type,
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream or f"{version}/snapstart",
    }
    reach: list[Path] = []         # what the runtime's uid must be able to read
    if config.runtime == "python":
        py = f"python{sys.version_info.major}.{sys.version_info.minor}"
        env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{py}"
        path = [str(code_dir)]
        if packages_dir is not None:
            path.append(str(packages_dir))
        path.append(str(SITECUSTOMIZE_DIR))
        env["PYTHONPATH"] = ":".join(path)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if hash_seed is not None:
            env["PYTHONHASHSEED"] = str(hash_seed)
        argv = [sys.executable, "-m", "awslambdaric", config.handler]
    elif config.runtime == "node":
        from .node import node_launch
        launch = node_launch(config, snap_start=snap_start)
        env.update(launch.env)
        argv, reach = launch.argv, launch.reach
    elif config.runtime == "provided":
        from .provided import provided_argv
        argv = provided_argv(code_dir)
    else:  # pragma: no cover - FunctionConfig refuses unknown runtimes
        raise ValueError(config.runtime)
    merged = dict(config.environment)
    merged.update(env)
    uid, gid = sandbox_identity(settings, [Path(argv[0]), code_dir, SITECUSTOMIZE_DIR]
                                + ([packages_dir] if packages_dir else []) + reach)
    # node (aws-lambda-ric 3.x) and provided have no restore/next: see their modules.
    return RuntimeSpec(argv=argv, env=merged, cwd=str(code_dir), init_type=init_type,
                       uid=uid, gid=gid,
                       snapshot_on_next=config.runtime in ("node", "provided"))


def unreachable(path: Path, uid: int, gid: int) -> Path | None:
    """The first component of ``path`` that (uid, gid) cannot traverse or read."""
    path = Path(os.path.realpath(path))
    chain = list(reversed(path.parents)) + [path]
    for part in chain:
        try:
            st = part.stat()
        except OSError:
            return part
        need = 0o1 if part != path or part.is_dir() else 0o4
        if st.st_uid == uid:
            bits = (st.st_mode >> 6) & 7
        elif st.st_gid == gid:
            bits = (st.st_mode >> 3) & 7
        else:
            bits = st.st_mode & 7
        if not bits & need:
            return part
    return None


def sandbox_identity(settings: Settings, paths: list[Path]) -> tuple[int, int]:
    """(uid, gid) for the runtime: the configured unprivileged identity, or root
    (with a warning) when that identity could not reach the interpreter or code."""
    uid, gid = settings.sandbox_uid, settings.sandbox_gid
    if uid == 0:
        return 0, 0
    for path in paths:
        blocked = unreachable(path, uid, gid)
        if blocked is not None:
            _warn_once(f"functions run as root: uid {uid} cannot reach {path} "
                       f"({blocked} is mode {blocked.stat().st_mode & 0o777:o}); build the venv "
                       "from /usr/bin/python3 (`make`) and keep SNAPSTART_HOME reachable")
            return 0, 0
    return uid, gid


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logging.getLogger("snapstart.runtimes").warning(message)
