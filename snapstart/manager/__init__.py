"""The restore manager: pools of clones per function version."""

from .manager import MAX_SYNC_PAYLOAD, Manager, PublishResult

__all__ = ["Manager", "PublishResult", "MAX_SYNC_PAYLOAD"]
