"""Network isolation probe: bind a fixed port, try to reach a host listener."""
import os
import socket


def handler(event, context):
    out = {"netns": os.stat("/proc/self/ns/net").st_ino}
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", 8080))
        s.listen(1)
        out["bind"] = "ok"
    except OSError as exc:
        out["bind"] = str(exc)
    c = socket.socket()
    c.settimeout(0.5)
    try:
        c.connect(("127.0.0.1", int(event["host_port"])))
        out["host_connect"] = "connected"
    except OSError as exc:
        out["host_connect"] = type(exc).__name__
    out["links"] = sorted(name for _, name in socket.if_nameindex())
    return out
