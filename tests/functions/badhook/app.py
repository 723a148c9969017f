from snapshot_restore_py import register_before_snapshot


@register_before_snapshot
def fail():
    raise ValueError("before-snapshot hook failed")


def handler(event, context):
    return 1
