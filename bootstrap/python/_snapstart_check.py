"""`snapstart check`'s reporter, inside the function's runtime (only in check runs:
SNAPSTART_CHECK_REPORTS is set; sitecustomize imports this module then).

It writes what the function's own modules (files under LAMBDA_TASK_ROOT) hold in
their globals, to a bounded depth, as {name path: repr} of plain values (str, bytes,
numbers, UUIDs, dates): once just before the snapshot (``init.json``) and once in a
restored clone after every after-restore hook has run (``restored.json``), under
/tmp/.snapstart-check/. Objects snapstart does not understand are walked through
their ``__dict__``; callables, classes and modules are skipped. A function marks a
name as intentionally shared with a module-level ``__snapstart_shared__ = ("NAME",
...)``.
"""

import json
import os
import sys

_DIR = "/tmp/.snapstart-check"
_MAX_DEPTH = 4
_MAX_ITEMS = 32
_MAX_LEAVES = 5000


def _plain(value):
    import datetime
    import decimal
    import uuid

    return isinstance(value, (str, bytes, int, float, complex, uuid.UUID, datetime.date,
                              datetime.time, datetime.timedelta, decimal.Decimal))


def _walk(value, path, out, depth, seen):
    if len(out) >= _MAX_LEAVES or value is None or isinstance(value, bool):
        return
    if _plain(value):
        text = repr(value)
        out[path] = text if len(text) <= 200 else text[:200] + "..."
        return
    if depth >= _MAX_DEPTH or id(value) in seen or callable(value) or isinstance(
            value, type(sys)):
        return
    seen.add(id(value))
    if isinstance(value, dict):
        for key in list(value)[:_MAX_ITEMS]:
            if isinstance(key, (str, int)):
                _walk(value[key], f"{path}[{key!r}]", out, depth + 1, seen)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value[:_MAX_ITEMS]):
            _walk(item, f"{path}[{i}]", out, depth + 1, seen)
    elif isinstance(value, (set, frozenset)):
        return                      # unordered: compared by nothing stable
    else:
        attrs = getattr(value, "__dict__", None)
        if isinstance(attrs, dict):
            for key in list(attrs)[:_MAX_ITEMS]:
                if isinstance(key, str) and not key.startswith("__"):
                    _walk(attrs[key], f"{path}.{key}", out, depth + 1, seen)


def snapshot_of_globals():
    root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task").rstrip("/") + "/"
    out = {}
    seen = set()
    for name, module in sorted(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if not path.startswith(root):
            continue
        shared = set(getattr(module, "__snapstart_shared__", ()) or ())
        for key, value in list(vars(module).items()):
            if key.startswith("__") or key in shared:
                continue
            _walk(value, f"{name}.{key}", out, 0, seen)
    return out


def write(kind):
    os.makedirs(_DIR, exist_ok=True)
    tmp = os.path.join(_DIR, f".{kind}.json.tmp")
    with open(tmp, "w") as f:
        json.dump(snapshot_of_globals(), f)
    os.replace(tmp, os.path.join(_DIR, f"{kind}.json"))


def before_snapshot(register_after_restore):
    """Called last before the snapshot: the init report, and a reporter that runs
    after the function's own after-restore hooks (registered now: it runs last)."""
    write("init")
    register_after_restore(lambda: write("restored"))
