"""Configuration, parsed once into frozen dataclasses.

``Settings.from_env()`` reads the process environment once (never at import time,
never per request). ``FunctionConfig`` is a function's configuration as Lambda
models it; it is validated on construction, so a bad handler string, name, memory
size or timeout is refused before anything is created.

Environment variables read by ``Settings.from_env``:

- ``SNAPSTART_HOME``       all state (default ``~/.snapstart``)
- ``SNAPSTART_CRIU``       path of the criu binary (default: the project-local build,
                            then ``criu`` on PATH)
- ``SNAPSTART_SHM``        tmpfs directory for materialized images and CRIU work
                            dirs (default ``/dev/shm/snapstart``)
- ``SNAPSTART_REGION``     the AWS region reported to functions (default us-east-1)
- ``SNAPSTART_ENDPOINT``   Invoke API endpoint used by ``snapstart invoke`` (read by
                            the CLI's ``--endpoint`` option)
- ``SNAPSTART_UID_RANGE``  ``LO-HI``: each function runs as its own uid == gid from
                            this range (default 800000-899999; identities.py)

As root the default home is ``/var/lib/snapstart``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path
from typing import Mapping

from .errors import ConfigError, InvalidNameError

__all__ = ["Settings", "FunctionConfig", "validate_name", "validate_alias",
           "PROJECT_ROOT", "RUNTIMES"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNTIMES = ("python", "node", "provided")

# Lambda's rules: function names 1-64 of [a-zA-Z0-9-_]; aliases 1-128 of
# [a-zA-Z0-9-_], not starting with a digit-only string (that is a version).
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ALIAS_RE = re.compile(r"^(?!^[0-9]+$)[a-zA-Z0-9_-]{1,128}$")
_HANDLER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\.[A-Za-z_][A-Za-z0-9_]*$")
# node: [dir/]module.export, as Lambda's Node.js runtimes accept it.
_NODE_HANDLER_RE = re.compile(
    r"^(?:[A-Za-z0-9_-]+/)*[A-Za-z0-9_-]+(?:\.[A-Za-z_$][A-Za-z0-9_$]*)+$")
# provided: the handler is only handed to the custom runtime (as _HANDLER).
_PROVIDED_HANDLER_RE = re.compile(r"^[A-Za-z0-9_.:/@+-]{1,128}$")
_ENV_KEY_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")
# Lambda reserves these; a function may not set them.
_RESERVED_ENV = {
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
}
MEMORY_MIN, MEMORY_MAX = 128, 10240
EPHEMERAL_MIN, EPHEMERAL_MAX = 512, 10240   # /tmp size, MB (Lambda's EphemeralStorage)
TIMEOUT_MAX = 900


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):   # no trailing \n
        raise InvalidNameError(
            f"invalid function name {name!r}: 1-64 characters of letters, digits, '-' and '_'")
    return name


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS_RE.fullmatch(alias) or alias == "$LATEST":
        raise InvalidNameError(
            f"invalid alias {alias!r}: 1-128 characters of letters, digits, '-' and '_', "
            "not all digits")
    return alias


# Where `make criu` builds CRIU to keep its kernel-feature cache (criu.kdat): on
# tmpfs, and reachable from every sandbox's mount namespace (mountns.py keeps it),
# or each restore re-probes the kernel (~30 ms).
CRIU_RUNDIR = "/dev/shm/snapstart-criu-run"


def _default_criu() -> str:
    local = PROJECT_ROOT / ".snapstart" / "criu" / "sbin" / "criu"
    if local.exists():
        return str(local)
    return shutil.which("criu") or "criu"


@dataclasses.dataclass(frozen=True)
class Settings:
    home: Path
    criu: str
    shm: Path
    region: str = "us-east-1"
    account_id: str = "000000000000"
    uid_range: tuple[int, int] = (800000, 899999)
    # SNAPSTART_STORE=s3://BUCKET[/PREFIX]: the fleet store (store/s3.py); None: local
    store_url: str | None = None
    # how often a node looks for versions other nodes published (per function)
    store_sync_s: float = 2.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        default_home = (Path("/var/lib/snapstart") if os.geteuid() == 0
                        else Path.home() / ".snapstart")
        home = Path(env.get("SNAPSTART_HOME") or default_home).expanduser()
        if env.get("SNAPSTART_SANDBOX_UID") or env.get("SNAPSTART_SANDBOX_GID"):
            raise ConfigError("SNAPSTART_SANDBOX_UID/GID are gone: every function runs as its "
                              "own uid; set SNAPSTART_UID_RANGE=LO-HI instead")
        from .identities import parse_range
        uid_range = parse_range(env.get("SNAPSTART_UID_RANGE"))
        return cls(
            home=home.resolve(),
            criu=env.get("SNAPSTART_CRIU") or _default_criu(),
            shm=Path(env.get("SNAPSTART_SHM") or "/dev/shm/snapstart"),
            region=env.get("SNAPSTART_REGION") or env.get("AWS_REGION") or "us-east-1",
            uid_range=uid_range,
            store_url=env.get("SNAPSTART_STORE") or None,
            store_sync_s=_seconds(env, "SNAPSTART_STORE_SYNC_S", 2.0),
        )

    def function_arn(self, name: str, qualifier: str | None = None) -> str:
        arn = f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"
        return f"{arn}:{qualifier}" if qualifier else arn


def _seconds(env: Mapping[str, str], key: str, default: float) -> float:
    try:
        value = float(env.get(key) or default)
    except ValueError:
        raise ConfigError(f"{key} must be a number of seconds") from None
    if value < 0:
        raise ConfigError(f"{key} must not be negative")
    return value


@dataclasses.dataclass(frozen=True)
class FunctionConfig:
    """A function's configuration (immutable once part of a published version)."""

    name: str
    handler: str
    runtime: str = "python"
    memory_mb: int = 512
    timeout_s: float = 3.0
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ephemeral_storage_mb: int = 512     # size cap of the clone's private /tmp
    egress: bool = False                # a veth with link-local addresses (netns.py)

    def __post_init__(self) -> None:
        validate_name(self.name)
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {self.runtime!r}; supported: {', '.join(RUNTIMES)}")
        if self.runtime == "provided":
            if not isinstance(self.handler, str) or not _PROVIDED_HANDLER_RE.match(self.handler):
                raise ConfigError(f"invalid handler {self.handler!r}: 1-128 characters of "
                                  "letters, digits and . _ - : / @ +")
        elif not isinstance(self.handler, str) or not (
                _NODE_HANDLER_RE if self.runtime == "node" else _HANDLER_RE).match(self.handler):
            raise ConfigError(
                f"invalid handler {self.handler!r}: expected 'module.function' "
                "(e.g. app.handler or pkg.mod.handler)")
        if not isinstance(self.memory_mb, int) or not MEMORY_MIN <= self.memory_mb <= MEMORY_MAX:
            raise ConfigError(f"memory must be an integer between {MEMORY_MIN} and {MEMORY_MAX} MB")
        if (not isinstance(self.ephemeral_storage_mb, int)
                or not EPHEMERAL_MIN <= self.ephemeral_storage_mb <= EPHEMERAL_MAX):
            raise ConfigError(f"ephemeral storage must be an integer between {EPHEMERAL_MIN} "
                              f"and {EPHEMERAL_MAX} MB")
        if not isinstance(self.egress, bool):
            raise ConfigError("egress must be true or false")
        timeout = self.timeout_s
        if not isinstance(timeout, (int, float)) or not 1 <= timeout <= TIMEOUT_MAX:
            raise ConfigError(f"timeout must be between 1 and {TIMEOUT_MAX} seconds")
        env = dict(self.environment)
        for key, value in env.items():
            if not _ENV_KEY_RE.match(key):
                raise ConfigError(f"invalid environment variable name {key!r}")
            if key in _RESERVED_ENV:
                raise ConfigError(f"environment variable {key} is reserved by Lambda")
            if not isinstance(value, str):
                raise ConfigError(f"environment variable {key} must be a string")
        object.__setattr__(self, "environment", env)

    @property
    def module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    def to_dict(self) -> dict:
        return {"name": self.name, "handler": self.handler, "runtime": self.runtime,
                "memory_mb": self.memory_mb, "timeout_s": self.timeout_s,
                "environment": dict(self.environment),
                "ephemeral_storage_mb": self.ephemeral_storage_mb, "egress": self.egress}

    @classmethod
    def from_dict(cls, data: Mapping) -> "FunctionConfig":
        try:
            return cls(name=data["name"], handler=data["handler"],
                       runtime=data.get("runtime", "python"),
                       memory_mb=int(data.get("memory_mb", 512)),
                       timeout_s=float(data.get("timeout_s", 3.0)),
                       environment=dict(data.get("environment") or {}),
                       ephemeral_storage_mb=int(data.get("ephemeral_storage_mb", 512)),
                       egress=bool(data.get("egress", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed function config: {exc}") from exc
