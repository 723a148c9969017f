"""How a Node.js function is started: npm ``aws-lambda-ric`` 3.x, unmodified.

``make node-ric`` installs the ric into ``.snapstart/node`` and builds the OpenSSL
RAND engine + config described in ``bootstrap/node/snapstart-preload.js``. The
runtime is ``node <ric>/bin/index.mjs <handler>`` (what ``npx aws-lambda-ric
index.handler`` runs), cwd = the code directory; inside a sandbox the ric and the
preload are under /var/runtime (sandbox/mountns.py), node itself under /usr.

Checkpoint rule: aws-lambda-ric 3.x has no SnapStart support (it never calls
GET /runtime/restore/next), so a Node sandbox is checkpointed while its runtime is
parked in its first GET /runtime/invocation/next (``snapshot_on_next``). In
snap-start mode the preload turns that call into the before-snapshot phase and its
first answer into the after-restore phase (hooks: ``require('snapstart-hooks')``),
and makes Math.random and crypto unique per clone.

Environment added to the common Lambda one: ``UV_USE_IO_URING=0`` (CRIU cannot
dump io_uring instances; libuv then uses its thread pool), ``NODE_PATH`` (so
``snapstart-hooks`` resolves) and, for snap-start only, ``NODE_OPTIONS`` with the
preload and the OpenSSL config. A function's own NODE_OPTIONS/NODE_PATH are kept,
after snapstart's.

This module only describes the launch; it must not start anything.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..config import PROJECT_ROOT, FunctionConfig
from ..errors import ConfigError
from ..sandbox.mountns import sandbox_path

__all__ = ["NodeLaunch", "node_launch", "NODE_PREFIX", "NODE_BOOTSTRAP"]

NODE_PREFIX = PROJECT_ROOT / ".snapstart" / "node"
NODE_BOOTSTRAP = PROJECT_ROOT / "bootstrap" / "node"
RIC_BIN = NODE_PREFIX / "node_modules" / "aws-lambda-ric" / "bin" / "index.mjs"
OPENSSL_CNF = NODE_PREFIX / "openssl.cnf"
ENGINE = NODE_PREFIX / "snapstart-rand-engine.so"
PRELOAD = NODE_BOOTSTRAP / "snapstart-preload.js"
CHECK_REPORTER = NODE_BOOTSTRAP / "snapstart-check.js"   # loaded in `snapstart check` runs
HOOKS_PATH = NODE_BOOTSTRAP / "modules"


@dataclass(frozen=True)
class NodeLaunch:
    argv: list[str]
    env: dict[str, str]
    reach: list[Path]      # files the runtime's (unprivileged) uid must read


@functools.lru_cache(maxsize=4)
def _node(path: str | None) -> tuple[str, int]:
    """(absolute path of node, major version), once per process."""
    node = path or shutil.which("node", path="/usr/local/bin:/usr/bin:/bin")
    if not node:
        raise ConfigError("runtime node: no `node` binary found; install Node.js 18-20")
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
        major = int(out.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"runtime node: cannot run {node} --version: {exc}") from exc
    return str(Path(node).resolve()), major


def node_launch(config: FunctionConfig, *, snap_start: bool, node: str | None = None) -> NodeLaunch:
    missing = [p for p in (RIC_BIN, OPENSSL_CNF, ENGINE) if not p.exists()]
    if missing:
        raise ConfigError("runtime node is not installed (missing "
                          f"{', '.join(str(p) for p in missing)}): run `make node-ric`")
    node_bin, major = _node(node)
    env = {
        "AWS_EXECUTION_ENV": f"AWS_Lambda_nodejs{major}.x",
        "UV_USE_IO_URING": "0",
        "NODE_PATH": ":".join(filter(None, [sandbox_path(HOOKS_PATH),
                                            config.environment.get("NODE_PATH", "")])),
    }
    if snap_start:
        opts = (f"--require={sandbox_path(PRELOAD)} "
                f"--openssl-config={sandbox_path(OPENSSL_CNF)}")
        own = config.environment.get("NODE_OPTIONS", "")
        env["NODE_OPTIONS"] = f"{opts} {own}".strip()
    reach = [RIC_BIN, HOOKS_PATH / "snapstart-hooks" / "index.js"]
    if snap_start:
        reach += [PRELOAD, CHECK_REPORTER, OPENSSL_CNF, ENGINE]
    return NodeLaunch(argv=[sandbox_path(node_bin), sandbox_path(RIC_BIN), config.handler],
                      env=env, reach=reach)
