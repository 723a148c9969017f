"""snapstart's hook into every Python runtime it starts (imported by ``site``).

Only for snap-start sandboxes: registers an after-restore hook, *first*, so it runs
before the function's own hooks (awslambdaric runs after-restore hooks in
registration order). It reseeds what a CRIU snapshot copies into every clone:
Python's ``random`` module and, when the function imported it, numpy's global RNG.
``os.urandom``/``secrets``/``uuid4`` read the kernel CRNG, which the manager reseeds
before each clone resumes. Keep this tiny: it runs at every runtime start.

Just before the snapshot it lists the function's registered hooks (not these), in
the order they run, in /tmp/.snapstart-hooks.json: ``{"hooks": [{"kind":
"before_snapshot" | "after_restore", "name": "app.reset_id", "at": "app.py:12"}]}``,
which the publisher takes out of the sandbox before the dump (``snapshots inspect``
shows them; snapstart/manager/publisher.py).
"""

import os

if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
    try:
        import snapshot_restore_py
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:  # not an awslambdaric runtime
        register_after_restore = register_before_snapshot = None
    else:
        class _Ran(list):
            """The before-snapshot registry, keeping what awslambdaric pops (runs)
            off it, so the last hook can still list them."""

            def __init__(self) -> None:
                super().__init__()
                self.ran: list = []

            def pop(self, *args):
                item = super().pop(*args)
                self.ran.append(item)
                return item

        if type(getattr(snapshot_restore_py, "_before_snapshot_registry", None)) is list:
            snapshot_restore_py._before_snapshot_registry = _Ran()

    def _snapstart_freeze() -> None:
        # Registered first, so it runs last (LIFO), just before the snapshot: move
        # every object init made into the collector's permanent generation. A clone's
        # collections then never walk (and write to) them: its pages stay shared
        # with the snapshot instead of being copied on its first collection.
        import gc

        _snapstart_record_hooks()
        if os.environ.get("SNAPSTART_CHECK_REPORTS"):      # `snapstart check` runs only
            import _snapstart_check

            _snapstart_check.before_snapshot(register_after_restore)
        gc.collect()
        gc.freeze()

    def _snapstart_record_hooks() -> None:
        import json

        from snapshot_restore_py import get_after_restore, get_before_snapshot

        root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task").rstrip("/") + "/"

        def row(kind: str, func: object) -> dict:
            code = getattr(func, "__code__", None)
            at = ""
            if code is not None:
                path = code.co_filename
                at = f"{path[len(root):] if path.startswith(root) else path}:{code.co_firstlineno}"
            name = getattr(func, "__qualname__", None) or type(func).__name__
            return {"kind": kind, "name": f"{getattr(func, '__module__', None) or '?'}.{name}",
                    "at": at}

        ours = (_snapstart_freeze, _snapstart_reseed)
        before = get_before_snapshot()       # this hook runs last: the others ran
        ran = getattr(before, "ran", None)
        hooks = [row("before_snapshot", f) for f, *_ in (ran if ran is not None
                                                          else reversed(before))
                 if f not in ours]
        hooks += [row("after_restore", f) for f, *_ in get_after_restore() if f not in ours]
        try:
            with open("/tmp/.snapstart-hooks.json", "w") as out:
                json.dump({"hooks": hooks}, out)
        except OSError as exc:   # not worth failing a publish for: shown as not recorded
            print(f"snapstart: cannot record the registered hooks: {exc}")

    def _snapstart_reseed() -> None:
        import random
        import sys

        random.seed()
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            try:
                numpy.random.seed(int.from_bytes(os.urandom(4), "little"))
            except Exception:
                pass

    if register_after_restore is not None:
        register_before_snapshot(_snapstart_freeze)
        register_after_restore(_snapstart_reseed)
