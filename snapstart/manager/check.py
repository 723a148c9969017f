"""`snapstart check`: find values a function derives at init that every restored clone
would share (a UUID, a session id, a key, a start time), before users hit them.

Method, in a private, temporary SNAPSTART_HOME and SNAPSTART_SHM (removed at the
end; the function's real versions and store are not touched; its code is the
version's, its identity the function's own):

1. publish the version's code twice: two independent inits, in two sandboxes, with
   their own randomness and clocks. bootstrap/python/_snapstart_check.py writes what
   the function's modules hold just before each snapshot (it travels in /tmp);
2. restore two clones of the first and resume them without an event (no handler
   runs): the reporter writes what the modules hold after every after-restore hook;
3. a hazard is a name path whose value differs between the two inits (it came from
   randomness or the clock) but is equal in the two clones (nothing regenerated it).

A module-level ``__snapstart_shared__ = ("NAME", ...)`` marks names as intentionally
shared. A second, language-independent layer compares the two inits' images page by
page (checkpoint/inspect.py ``page_diff``): how much memory differs, by kind. For
runtimes other than Python (node, provided) only that layer runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..config import Settings
from ..errors import ConfigError
from ..identities import Identities
from ..registry import VersionInfo

__all__ = ["Finding", "CheckResult", "check_uniqueness"]

REPORTS_ENV = "SNAPSTART_CHECK_REPORTS"
REPORT_DIR = ".snapstart-check"     # in a sandbox's /tmp (bootstrap/python/_snapstart_check.py)


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
    names_compared: bool                   # False: no name-level report (not Python)

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
    raise ConfigError("the function's init left no check report (is it a Python "
                      "function on awslambdaric?)")


def _restored_report(pid: int) -> dict[str, str]:
    path = Path(f"/proc/{pid}/root/tmp/{REPORT_DIR}/restored.json")
    return json.loads(path.read_text())


def check_uniqueness(settings: Settings, info: VersionInfo) -> CheckResult:
    """The hazards of ``info``'s init (see the module docstring)."""
    from ..checkpoint.inspect import page_diff
    from .manager import Manager

    python = info.config.runtime == "python"
    base = Path(tempfile.mkdtemp(prefix="snapstart-check-", dir="/tmp"))
    os.chmod(base, 0o711)
    shm = Path(settings.shm).parent / base.name          # snapstart-check-XXXX
    temp = dataclasses.replace(settings, home=base / "home", shm=shm)
    try:
        # the function's own identity in the temporary home
        Identities(temp.home, settings.uid_range).adopt(info.name, info.uid)
        env = dict(info.config.environment)
        if python:
            env[REPORTS_ENV] = "1"
        config = dataclasses.replace(info.config, environment=env)
        with Manager(temp, keep_warm=True, restore_slots=0) as manager:
            first = manager.publish(info.code_dir, config)
            second = manager.publish(info.code_dir, config)
            images_a = manager.store.materialize(info.name, first.version)
            images_b = manager.store.materialize(info.name, second.version)
            differing = page_diff(images_a, images_b)
            if not python:
                return CheckResult(findings=[], differing_bytes=differing,
                                   names_compared=False)
            init_a, init_b = _init_report(images_a), _init_report(images_b)
            version = manager.registry.version(info.name, first.version)
            clones = [manager.prewarm(version), manager.prewarm(version)]
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
