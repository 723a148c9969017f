"""Egress probe (tests/integration/test_isolation.py): report the clone's network
and connect where the event says."""
import socket


def _gateway():
    with open("/proc/net/route") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    return None


def _addresses():
    import fcntl
    import struct
    out = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                ifreq = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()))
                out[name] = socket.inet_ntoa(ifreq[20:24])       # SIOCGIFADDR
            except OSError:
                out[name] = None
    return out


LISTENER = []


def handler(event, context):
    out = {"links": _addresses(), "gateway": _gateway()}
    if "listen" in event:                      # stays open while the clone lives
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", int(event["listen"])))
        s.listen(4)
        LISTENER.append(s)
    if "connect" in event:
        host, port = event["connect"]
        if host == "gateway":                  # this clone's own host end
            host = out["gateway"]
        c = socket.socket()
        c.settimeout(1.0)
        try:
            c.connect((host, int(port)))
            c.sendall(f"hello from {out['links'].get('eth0')}".encode())
            out["connect"] = "connected"
        except OSError as exc:
            out["connect"] = f"{type(exc).__name__}: {exc.strerror or exc}"
        finally:
            c.close()
    return out
