"""Launcher of a Python sandbox's PID 1: ``python -m _snapstart_runtime ...``.

This directory is on the runtime's PYTHONPATH (for ``sitecustomize``), so this is
the one name snapstart adds to a function's import namespace. It loads snapstart's
``bootstrap`` package under the private name ``_snapstart_bootstrap`` (its imports
are relative), so a function's own ``bootstrap``, ``agent`` or ``protocol`` module
never collides with it, and hands over to ``bootstrap/inproc.py``.
"""

import importlib.util
import os
import sys

_NAME = "_snapstart_bootstrap"


def _load_package() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        _NAME, os.path.join(root, "__init__.py"), submodule_search_locations=[root])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)


if __name__ == "__main__":
    _load_package()
    from _snapstart_bootstrap.inproc import main

    main(sys.argv[1:])
