"""Function URLs and HttpApi/Api routes on serve's port (issue 15; being built)."""

from __future__ import annotations

from typing import Any


def install(app: Any, service: Any) -> None:
    """Nothing routed yet: unknown paths keep the Invoke API's 404."""
