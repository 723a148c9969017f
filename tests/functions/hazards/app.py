"""Snapshot hazards for `snapstart check` (tests/integration/test_check.py): values
derived from randomness or the clock at init, one regenerated after restore, and
deterministic ones."""
import time
import uuid

from snapshot_restore_py import register_after_restore

INSTANCE_ID = str(uuid.uuid4())                 # hazard
STARTED_AT = time.time()                        # hazard


class Client:
    def __init__(self):
        import secrets
        self.session = {"key": secrets.token_hex(16), "region": "us-east-1"}


CLIENT = Client()                               # hazard: CLIENT.session['key']
TABLE = {i: i * i for i in range(10)}           # deterministic
CONNECTION = {"id": str(uuid.uuid4())}          # regenerated after restore: clean
RUN_TOKEN = str(uuid.uuid4())                   # marked as intentionally shared
__snapstart_shared__ = ("RUN_TOKEN",)


@register_after_restore
def reconnect():
    CONNECTION["id"] = str(uuid.uuid4())


def handler(event, context):
    return {"instance": INSTANCE_ID}
