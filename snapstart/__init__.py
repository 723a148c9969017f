"""snapstart: a snapshot-and-restore cold-start accelerator for serverless functions.

Publish a function once (init, before-snapshot hooks, CRIU checkpoint of the whole
sandbox); serve invocations from clones restored into fresh namespaces.

Heavy modules are imported lazily (``import snapstart`` stays cheap for the CLI).
"""

from __future__ import annotations

from .config import FunctionConfig, Settings
from .errors import *  # noqa: F401,F403  (the exception tree is public)
from .errors import __all__ as _errors_all

__all__ = ["Manager", "FunctionConfig", "Settings", *_errors_all]
__version__ = "0.2.0"


def __getattr__(name: str):
    if name == "Manager":
        from .manager import Manager
        return Manager
    raise AttributeError(name)
