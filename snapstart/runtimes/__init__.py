"""How each runtime is started inside a sandbox: argv, environment, working dir.

Environment follows Lambda's (names verbatim): AWS_LAMBDA_RUNTIME_API, _HANDLER,
LAMBDA_TASK_ROOT, AWS_LAMBDA_FUNCTION_NAME/VERSION/MEMORY_SIZE, AWS_REGION,
AWS_EXECUTION_ENV, AWS_LAMBDA_INITIALIZATION_TYPE (``snap-start`` when publishing,
``on-demand`` for cold starts), log group/stream names, plus the function's own
variables (which may not override the reserved ones; ``FunctionConfig`` refuses
them).
"""

from __future__ import annotations

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

    def to_frame(self) -> dict:
        return {"op": "start", "argv": self.argv, "env": self.env, "cwd": self.cwd,
                "init_type": self.init_type}


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
    else:  # pragma: no cover - FunctionConfig refuses unknown runtimes
        raise ValueError(config.runtime)
    merged = dict(config.environment)
    merged.update(env)
    return RuntimeSpec(argv=argv, env=merged, cwd=str(code_dir), init_type=init_type)
