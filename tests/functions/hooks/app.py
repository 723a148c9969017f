"""Hook ordering: before-snapshot hooks LIFO, after-restore hooks FIFO."""
from snapshot_restore_py import register_after_restore, register_before_snapshot

ORDER = []


@register_before_snapshot
def b1():
    ORDER.append("b1")
    print("hook b1")


@register_before_snapshot
def b2():
    ORDER.append("b2")
    print("hook b2")


@register_after_restore
def a1():
    ORDER.append("a1")
    print("hook a1")


@register_after_restore
def a2():
    ORDER.append("a2")
    print("hook a2")


def handler(event, context):
    return {"order": ORDER}
