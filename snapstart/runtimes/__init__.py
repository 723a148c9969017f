"""How each runtime is started inside a sandbox: argv, environment, working dir.

Environment follows Lambda's (names verbatim): AWS_LAMBDA_RUNTIME_API, _HANDLER,
LAMBDA_TASK_ROOT, AWS_LAMBDA_FUNCTION_NAME/VERSION/MEMORY_SIZE, AWS_REGION,
AWS_EXECUTION_ENV, AWS_LAMBDA_INITIALIZATION_TYPE (``snap-start`` when publishing,
``on-demand`` for cold starts), log group/stream names, plus the function's own
variables (which may not override the reserved ones; ``FunctionConfig`` refuses
them).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config import PROJECT_ROOT, FunctionConfig, Settings
from ..errors import ConfigError
from ..sandbox.mountns import (PACKAGES_DIR, RUNTIME_DIR, TASK_DIR, runtime_mounts,
                               sandbox_path)

__all__ = ["RuntimeSpec", "runtime_spec", "RUNTIME_API"]

RUNTIME_API = "127.0.0.1:9001"
SITECUSTOMIZE_DIR = PROJECT_ROOT / "bootstrap" / "python"
INPROC_LAUNCHER = "_snapstart_runtime"      # bootstrap/python/_snapstart_runtime.py


@dataclass(frozen=True)
class RuntimeSpec:
    """How to start one runtime. ``argv`` is what Lambda would run (e.g.
    ``python -m awslambdaric app.handler``); what the sandbox's PID 1 execs depends
    on the process layout (bootstrap.protocol):

    - ``inproc`` (Python): PID 1 is the runtime's own interpreter with the agent on a
      thread: ``launch_argv`` (``python -m _snapstart_runtime --ctl-fd N``) with
      ``exec_env``, snapstart's own variables only. It reads the ``start`` frame
      (``to_frame``), confines itself, and only then takes the function's
      environment and puts its directories (``pythonpath``) on sys.path: nothing of
      the function (LD_PRELOAD, PYTHONHOME, a sitecustomize.py) acts while it is root.
    - ``agent`` (node, provided): PID 1 is ``python -m bootstrap.agent``, which
      forks, confines and execs ``argv`` with ``env`` on the same frame.
    """

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
    inproc: bool = False
    pythonpath: tuple[str, ...] = ()
    exec_env: dict[str, str] = field(default_factory=dict)

    def to_frame(self) -> dict:
        return {"op": "start", "argv": self.argv, "env": self.env, "cwd": self.cwd,
                "init_type": self.init_type, "uid": self.uid, "gid": self.gid,
                "seccomp": self.seccomp, "pythonpath": list(self.pythonpath)}

    def launch_argv(self, ctl_fd: int) -> list[str]:
        """The inproc PID 1's command line."""
        if not self.inproc:
            raise ValueError("launch_argv is for the inproc layout")
        return [self.argv[0], "-m", INPROC_LAUNCHER, "--ctl-fd", str(ctl_fd)]


def runtime_spec(config: FunctionConfig, settings: Settings, *, identity: tuple[int, int],
                 code_dir: Path, packages_dir: Path | None, version: str, snap_start: bool,
                 log_stream: str = "", hash_seed: int | None = None) -> RuntimeSpec:
    """The runtime's launch, in the paths a sandbox sees (mountns.py): the code at
    /var/task, its packages at /var/packages, the runtime under /var/runtime.
    ``code_dir``/``packages_dir`` are the host directories mounted there;
    ``identity`` the function's (uid, gid) (Registry.identity)."""
    init_type = "snap-start" if snap_start else "on-demand"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "HOME": "/tmp",
        "AWS_LAMBDA_RUNTIME_API": RUNTIME_API,
        "_HANDLER": config.handler,
        "LAMBDA_TASK_ROOT": TASK_DIR,
        "LAMBDA_RUNTIME_DIR": RUNTIME_DIR,
        "AWS_LAMBDA_FUNCTION_NAME": config.name,
        "AWS_LAMBDA_FUNCTION_VERSION": version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_LAMBDA_INITIALIZATION_TYPE": init_type,
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream or f"{version}/snapstart",
    }
    reach: list[Path] = [Path(sys.executable), PROJECT_ROOT / "bootstrap" / "python"]
    pythonpath: tuple[str, ...] = ()
    if config.runtime == "python":
        py = f"python{sys.version_info.major}.{sys.version_info.minor}"
        env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{py}"
        path = [TASK_DIR]
        if packages_dir is not None:
            path.append(PACKAGES_DIR)
        path.append(sandbox_path(SITECUSTOMIZE_DIR))
        pythonpath = tuple(path)
        env["PYTHONPATH"] = ":".join(path)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if hash_seed is not None:
            env["PYTHONHASHSEED"] = str(hash_seed)
        argv = [sandbox_path(sys.executable), "-m", "awslambdaric", config.handler]
    elif config.runtime == "node":
        from .node import node_launch
        launch = node_launch(config, snap_start=snap_start)
        env.update(launch.env)
        argv = launch.argv
        reach += launch.reach
    elif config.runtime == "provided":
        from .provided import provided_argv
        argv = provided_argv(code_dir)
    else:  # pragma: no cover - FunctionConfig refuses unknown runtimes
        raise ValueError(config.runtime)
    merged = dict(config.environment)
    merged.update(env)
    # inproc: what PID 2 execs with, before it confines itself: snapstart's own
    # variables, and PYTHONPATH holding only snapstart's directory (sitecustomize).
    exec_env = dict(env, PYTHONPATH=sandbox_path(SITECUSTOMIZE_DIR)) if pythonpath else {}
    uid, gid = sandbox_identity(identity, [(code_dir, code_dir)]
                                + ([(packages_dir, packages_dir)] if packages_dir else [])
                                + [(_mount_root(p), p) for p in reach])
    # node (aws-lambda-ric 3.x) and provided have no restore/next: see their modules.
    return RuntimeSpec(argv=argv, env=merged, cwd=TASK_DIR, init_type=init_type,
                       uid=uid, gid=gid,
                       snapshot_on_next=config.runtime in ("node", "provided"),
                       inproc=config.runtime == "python", pythonpath=pythonpath,
                       exec_env=exec_env)


def _mount_root(path: Path) -> Path:
    """The host directory mounted into sandboxes that holds ``path`` (or /usr)."""
    real = os.path.realpath(path)
    for host in runtime_mounts():
        if real == host or real.startswith(host + "/"):
            return Path(host)
    return Path("/")


def unreachable(path: Path, uid: int, gid: int, base: Path | None = None) -> Path | None:
    """The first component of ``path`` (from ``base`` on: a mount root inside a
    sandbox, whose host parents it never traverses) that (uid, gid) cannot traverse
    or read."""
    path = Path(os.path.realpath(path))
    base = Path(os.path.realpath(base)) if base is not None else Path("/")
    chain = [p for p in list(reversed(path.parents)) + [path]
             if p == base or base in p.parents]
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


def sandbox_identity(identity: tuple[int, int],
                     paths: list[tuple[Path, Path]]) -> tuple[int, int]:
    """(uid, gid) the runtime runs as: the function's own. ``paths``: (mount root,
    path) pairs the identity must reach inside the sandbox. Fails closed: never root."""
    uid, gid = identity
    if uid <= 0 or gid <= 0:
        raise ConfigError(f"functions never run as root (identity {uid}/{gid} refused)")
    for base, path in paths:
        blocked = unreachable(path, uid, gid, base)
        if blocked is not None:
            try:
                mode = f"mode {blocked.stat().st_mode & 0o777:o}"
            except OSError:
                mode = "missing"
            raise ConfigError(f"the function's identity (uid {uid}, gid {gid}) cannot reach "
                              f"{path} inside its sandbox ({blocked} is {mode})")
    return uid, gid
