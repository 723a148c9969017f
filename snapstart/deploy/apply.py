"""``snapstart deploy``: make the local state match a SAM template's Plan.

Order, so that a failure leaves the previous deployment in force: (1) the whole
template is resolved and validated (template.py) before anything changes; (2) every
function whose code or configuration changed is published (a new immutable version;
a zip is unpacked first, package.py); (3) only when all published: aliases
(AutoPublishAlias), reserved concurrency, and the triggers of this template's
functions in ``triggers.json`` (triggers/config.py) are switched, and the deploy
state is written. A publish that fails leaves its new versions unreferenced and the
old aliases and triggers in place.

Idempotent: a function is published only when its digest changed -- SHA-256 over its
code (every file's path, mode and bytes, as publish copies them; a zip's bytes) and its
configuration (the FunctionConfig and SnapStart setting) -- or when the version the
last deploy recorded is gone. Deploy state (``$SNAPSTART_HOME/deploy-state.json``,
0600), format 1::

    {"format": 1, "functions": {NAME: {"digest": hex, "version": n, "stack": str,
                                       "template": path}}}

``dry_run`` reports the same changes and makes none.

A running ``snapstart serve`` follows ``triggers.json`` at once (URLs, routes,
schedules, mappings, destinations); reserved and provisioned concurrency take effect
when it (re)starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..jsonfile import write_private
from ..triggers import config as triggers_config
from .package import is_zip, unpack_zip
from .template import FunctionPlan, Plan

__all__ = ["DeployResult", "deploy", "code_digest"]

STATE_FORMAT = 1
_SKIP = {"__pycache__", ".git"}


@dataclasses.dataclass
class DeployResult:
    changes: list[str]
    published: dict[str, int]            # name -> new version
    unchanged: dict[str, int]            # name -> current version
    warnings: list[str]
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def code_digest(code: Path) -> str:
    h = hashlib.sha256()
    if code.is_file():
        h.update(b"zip\0")
        with open(code, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()
    for root, dirs, files in os.walk(code):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP)
        for name in sorted(files):
            if name.endswith(".pyc"):
                continue
            path = Path(root) / name
            st = path.lstat()
            h.update(str(path.relative_to(code)).encode() + b"\0")
            h.update(f"{stat.S_IMODE(st.st_mode):o}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(b"link\0" + os.readlink(path).encode())
            else:
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
            h.update(b"\0")
    return h.hexdigest()


def _digest(fp: FunctionPlan) -> str:
    config = json.dumps({"config": fp.config.to_dict(), "snap_start": fp.snap_start},
                        sort_keys=True)
    return hashlib.sha256((code_digest(fp.code) + config).encode()).hexdigest()


def _load_state(home: Path) -> dict:
    path = home / "deploy-state.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"format": STATE_FORMAT, "functions": {}}
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    if data.get("format") != STATE_FORMAT:
        raise ConfigError(f"{path}: not a deploy state of format {STATE_FORMAT}")
    return data


def deploy(plan: Plan, manager: Any, *, template: Path, dry_run: bool = False,
           progress: bool = False) -> DeployResult:
    home = manager.settings.home
    state = _load_state(home)
    known = state["functions"]
    result = DeployResult(changes=[], published={}, unchanged={}, warnings=list(plan.warnings),
                          dry_run=dry_run)
    todo: list[tuple[FunctionPlan, str]] = []
    for fp in plan.functions:
        name = fp.config.name
        digest = _digest(fp)
        prior = known.get(name)
        versions = manager.registry.versions(name) if manager.registry.exists(name) else []
        if prior and prior.get("digest") == digest and prior.get("version") in versions:
            result.unchanged[name] = int(prior["version"])
            result.changes.append(f"unchanged {name}:{prior['version']}")
        else:
            why = "new" if not prior else ("code or configuration changed"
                                           if prior.get("digest") != digest
                                           else f"version {prior.get('version')} is gone")
            result.changes.append(f"publish {name} ({why}"
                                  f"{'' if fp.snap_start else ', no snapshot: cold starts'})")
            todo.append((fp, digest))
    # (2) publish
    for fp, digest in todo:
        if dry_run:
            continue
        name = fp.config.name
        staging = None
        code = fp.code
        try:
            if is_zip(code):
                staging = Path(tempfile.mkdtemp(prefix="snapstart-deploy-", dir="/tmp"))
                code = unpack_zip(code, staging / "code")
            elif not code.is_dir():
                raise ConfigError(f"{name}: CodeUri {code} is neither a directory nor a zip")
            pub = manager.publish(code, fp.config, progress=progress, snap_start=fp.snap_start)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        result.published[name] = pub.version
        known[name] = {"digest": digest, "version": pub.version, "stack": plan.stack,
                       "template": str(template)}
    # (3) switch aliases, limits and triggers
    current = {fp.config.name: result.published.get(fp.config.name,
                                                    result.unchanged.get(fp.config.name))
               for fp in plan.functions}
    for fp in plan.functions:
        name = fp.config.name
        if fp.alias:
            target = current[name]
            have = manager.registry.aliases(name).get(fp.alias)
            if have != target:
                result.changes.append(f"alias {name}:{fp.alias} -> "
                                      f"{target if target is not None else 'the new version'}")
                if not dry_run and target is not None:
                    manager.registry.set_alias(name, fp.alias, target)
        reserved = manager.limits.reserved(name)
        if fp.reserved != reserved:
            result.changes.append(f"reserved concurrency {name}: {reserved} -> {fp.reserved}")
            if not dry_run:
                if fp.reserved is None:
                    manager.limits.delete_reserved(name)
                else:
                    manager.limits.set_reserved(name, fp.reserved)
    names = {fp.config.name for fp in plan.functions}
    with triggers_config.locked(home):
        old = triggers_config.load(home)
        new = triggers_config.Triggers(**{
            kind: [e for e in getattr(old, kind) if e.get("function") not in names]
            for kind in triggers_config.KINDS})
        for fp in plan.functions:
            if fp.function_url:
                new.function_urls.append(fp.function_url)
            new.http_routes.extend(fp.http_routes)
            new.schedules.extend(fp.schedules)
            new.mappings.extend(fp.mappings)
            if fp.destinations:
                new.destinations.append(fp.destinations)
            if fp.provisioned:
                new.provisioned.append({"function": fp.config.name, "qualifier": fp.alias,
                                        "n": fp.provisioned})
        for kind in triggers_config.KINDS:
            before = [e for e in getattr(old, kind) if e.get("function") in names]
            after = [e for e in getattr(new, kind) if e.get("function") in names]
            if _canon(before) != _canon(after):
                result.changes.append(f"{kind.replace('_', ' ')}: {len(before)} -> {len(after)}")
        if not dry_run:
            triggers_config.save(home, new)
            write_private(home / "deploy-state.json", state)
    return result


def _canon(entries: list[dict]) -> list[str]:
    return sorted(json.dumps(e, sort_keys=True) for e in entries)
