"""snapstart's hook into every Python runtime it starts (imported by ``site``).

Only for snap-start sandboxes: registers an after-restore hook, *first*, so it runs
before the function's own hooks (awslambdaric runs after-restore hooks in
registration order). It reseeds what a CRIU snapshot copies into every clone:
Python's ``random`` module and, when the function imported it, numpy's global RNG.
``os.urandom``/``secrets``/``uuid4`` read the kernel CRNG, which the manager reseeds
before each clone resumes. Keep this tiny: it runs at every runtime start.
"""

import os

if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:  # not an awslambdaric runtime
        register_after_restore = register_before_snapshot = None

    def _snapstart_freeze() -> None:
        # Registered first, so it runs last (LIFO), just before the snapshot: move
        # every object init made into the collector's permanent generation. A clone's
        # collections then never walk (and write to) them: its pages stay shared
        # with the snapshot instead of being copied on its first collection.
        import gc

        if os.environ.get("SNAPSTART_CHECK_REPORTS"):      # `snapstart check` runs only
            import _snapstart_check

            _snapstart_check.before_snapshot(register_after_restore)
        gc.collect()
        gc.freeze()

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
