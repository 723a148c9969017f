"""A function with big init-time state, like model weights: MODEL_MB of non-zero,
non-repeating bytes (the kernel's CSPRNG output, so neither CRIU's zero-page
skipping nor compression makes them cheaper), filled at init. Each invoke reads a
few scattered 4 KiB pages of it ("inference" touches a small part), and returns a
checksum so the bench can check the data survived the snapshot.
"""
import hashlib
import os
import time

MB = int(os.environ.get("MODEL_MB", "400"))
_t0 = time.time()
WEIGHTS = bytearray(MB << 20)
with open("/dev/urandom", "rb", buffering=0) as _f:     # filled in place: no second copy
    _view = memoryview(WEIGHTS)
    for _off in range(0, len(WEIGHTS), 1 << 24):
        _f.readinto(_view[_off:_off + (1 << 24)])
DIGEST = hashlib.sha256(WEIGHTS[: 1 << 20]).hexdigest()[:16]   # of the first MiB
INIT_SECONDS = time.time() - _t0
PAGES = len(WEIGHTS) // 4096


def handler(event, context):
    seed = int(event.get("seed", 1))
    total = 0
    for i in range(int(event.get("pages", 64))):     # 64 pages: 0.06 % of 400 MB
        page = (seed * 2654435761 + i * 40503) % PAGES
        total += WEIGHTS[page * 4096]
    return {"mb": MB, "digest": DIGEST, "checksum": total,
            "init_seconds": round(INIT_SECONDS, 3)}
