"""Private /tmp probe (tests/integration/test_isolation.py).

Init leaves a file, a directory and a symlink in /tmp, as init code that downloads
a model or unpacks assets would; the snapshot must carry them to every clone.
"""
import os

os.makedirs("/tmp/assets", exist_ok=True)
with open("/tmp/assets/model.bin", "wb") as f:
    f.write(b"weights" * 1000)
with open("/tmp/init.txt", "w") as f:
    f.write(f"written at init by uid {os.getuid()}")
if not os.path.islink("/tmp/etc-link"):
    os.symlink("/etc", "/tmp/etc-link")


def _try_write(directory):
    try:
        with open(os.path.join(directory, "probe"), "w") as f:
            f.write("x")
        return "written"
    except OSError as exc:
        return exc.strerror


def handler(event, context):
    if "write" in event:
        with open(os.path.join("/tmp", event["write"]), "w") as f:
            f.write(event["write"])
    st = os.statvfs("/tmp")
    return {
        "ls": sorted(os.listdir("/tmp")),
        "init": open("/tmp/init.txt").read(),
        "model_bytes": os.path.getsize("/tmp/assets/model.bin"),
        "link": os.readlink("/tmp/etc-link"),
        "tmp_mb": st.f_blocks * st.f_frsize >> 20,
        "mnt_ns": os.stat("/proc/self/ns/mnt").st_ino,
        "elsewhere": {d: _try_write(d) for d in ("/var/tmp", "/dev/shm", "/run/lock")},
    }
