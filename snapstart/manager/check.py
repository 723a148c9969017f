"""`snapstart check`: find values a function derives at init that every restored clone
would share (a UUID, a session id, a key, a start time), before users hit them.

Method, in a private, temporary SNAPSTART_HOME and SNAPSTART_SHM (removed at the
end; the function's real versions and store are not touched; its code is the
version's, its identity the function's own):

1. publish the version's code twice, with SNAPSTART_CHECK_REPORTS=1 in its
   environment: two independent inits, in two sandboxes, with their own randomness
   and clocks. The runtime's reporter writes what the function holds just before
   each snapshot (``init.json``; it travels in /tmp);
2. restore two clones of the first; the reporter writes what the function holds
   after every after-restore hook (``restored.json``), which this reads from each
   clone's /tmp:
   - Python (bootstrap/python/_snapstart_check.py): the clones are resumed without
     an event; the reporter is the last after-restore hook;
   - Node (bootstrap/node/snapstart-check.js): a Node clone runs its after-restore
     hooks only when its first event arrives (bootstrap/node/snapstart-preload.js),
     so each clone is sent one event, which the preload answers itself with a
     ``SnapStart.CheckRun`` function error once the report is written: the handler
     never runs (anything else fails the check);
3. a hazard is a name path whose value differs between the two inits (it came from
   randomness or the clock) but is equal in the two clones (nothing regenerated it).

What is compared: Python, every module-level global of the function's own modules
(``app.CLIENT.session_id``); Node, the handler module's exports and the top-level
bindings reachable from them through functions' closures (``index.INSTANCE_ID``,
``index.client.sessionId``). A module-level ``__snapstart_shared__ = ("NAME", ...)``
(Node: exported) marks names as intentionally shared. A second, language-independent
layer compares the two inits' images page by page (checkpoint/inspect.py
``page_diff``): how much memory differs, by kind. For the ``provided`` runtime only
that layer runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import ConfigError
from ..identities import Identities
from ..registry import VersionInfo
from ..results import InvokeRequest

if TYPE_CHECKING:
    from ..sandbox.sandbox import Sandbox

__all__ = ["Finding", "CheckResult", "check_uniqueness"]

REPORTS_ENV = "SNAPSTART_CHECK_REPORTS"
REPORT_DIR = ".snapstart-check"     # in a sandbox's /tmp (the reporters write it)
NAMED_RUNTIMES = ("python", "node")  # runtimes with a name-level reporter
CHECK_RUN_ERROR = "SnapStart.CheckRun"   # a Node clone's answer to the check's event
_EVENT_TIMEOUT_S = 60.0                # after-restore hooks + the report, in a Node clone


@dataclasses.dataclass(frozen=True)
class Finding:
    path: str              # module.NAME[.attr][key]...
    sample: str            # redacted: the first characters of one init's value
    why: str = ("differs between two inits, so it is identical in every restored clone: "
                "regenerate it in an after-restore hook")

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    findings: list[Finding]
    differing_bytes: dict[str, int]        # memory kind -> bytes differing between inits
    names_compared: bool                   # False: no name-level report (provided)

    def to_dict(self) -> dict:
        return {"findings": [f.to_dict() for f in self.findings],
                "differing_bytes": self.differing_bytes,
                "names_compared": self.names_compared}


def _redact(text: str) -> str:
    return text[:6] + "..." if len(text) > 10 else text


def _init_report(images: Path) -> dict[str, str]:
    from ..sandbox.mountns import TMP_ARCHIVE

    with tarfile.open(images / TMP_ARCHIVE) as tar:
        for member in tar.getmembers():
            if member.name.endswith(f"{REPORT_DIR}/init.json"):
                f = tar.extractfile(member)
                if f is not None:
                    return json.load(f)
    raise ConfigError("the function's init left no check report (is it a Python function "
                      "on awslambdaric or a Node function on aws-lambda-ric?)")


def _restored_report(pid: int) -> dict[str, str]:
    path = Path(f"/proc/{pid}/root/tmp/{REPORT_DIR}/restored.json")
    return json.loads(path.read_text())


def _send_check_event(clone: Sandbox, settings: Settings, info: VersionInfo) -> None:
    """A Node clone's after-restore phase, and its report: one event, which the
    preload answers with CHECK_RUN_ERROR without running the handler."""
    req = InvokeRequest(request_id=str(uuid.uuid4()), payload=b"{}",
                        arn=settings.function_arn(info.name, str(info.version)),
                        timeout_s=max(info.config.timeout_s, _EVENT_TIMEOUT_S))
    result = clone.invoke(req)
    try:
        error = json.loads(result.payload) if result.function_error else {}
    except ValueError:
        error = {}
    if error.get("errorType") != CHECK_RUN_ERROR:
        raise ConfigError("a restored clone of the check did not answer its event with "
                          f"{CHECK_RUN_ERROR} (got {result.payload[:200]!r}): is it a Node "
                          "function on aws-lambda-ric?")


def check_uniqueness(settings: Settings, info: VersionInfo) -> CheckResult:
    """The hazards of ``info``'s init (see the module docstring)."""
    from ..checkpoint.inspect import page_diff
    from .manager import Manager

    named = info.config.runtime in NAMED_RUNTIMES
    base = Path(tempfile.mkdtemp(prefix="snapstart-check-", dir="/tmp"))
    os.chmod(base, 0o711)
    shm = Path(settings.shm).parent / base.name          # snapstart-check-XXXX
    temp = dataclasses.replace(settings, home=base / "home", shm=shm)
    try:
        # the function's own identity in the temporary home
        Identities(temp.home, settings.uid_range).adopt(info.name, info.uid)
        env = dict(info.config.environment)
        if named:
            env[REPORTS_ENV] = "1"
        config = dataclasses.replace(info.config, environment=env)
        with Manager(temp, keep_warm=True, restore_slots=0) as manager:
            first = manager.publish(info.code_dir, config)
            second = manager.publish(info.code_dir, config)
            images_a = manager.store.materialize(info.name, first.version)
            images_b = manager.store.materialize(info.name, second.version)
            differing = page_diff(images_a, images_b)
            if not named:
                return CheckResult(findings=[], differing_bytes=differing,
                                   names_compared=False)
            init_a, init_b = _init_report(images_a), _init_report(images_b)
            version = manager.registry.version(info.name, first.version)
            clones = [manager.prewarm(version), manager.prewarm(version)]
            if info.config.runtime == "node":
                for clone in clones:
                    _send_check_event(clone, temp, version)
            restored = [_restored_report(c.pid) for c in clones]
        differs = {p for p in init_a.keys() & init_b.keys() if init_a[p] != init_b[p]}
        regenerated = {p for p in differs
                       if restored[0].get(p) != restored[1].get(p)}
        findings = [Finding(path=p, sample=_redact(init_a[p]))
                    for p in sorted(differs - regenerated)]
        return CheckResult(findings=findings, differing_bytes=differing, names_compared=True)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
