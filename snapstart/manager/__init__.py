"""The manager: dispatch of invocations to clones, publishing, pools (README of the
package: manager.py's docstring)."""

from .manager import MAX_SYNC_PAYLOAD, Manager, check_payload
from .publisher import PublishResult

__all__ = ["Manager", "PublishResult", "MAX_SYNC_PAYLOAD", "check_payload"]
