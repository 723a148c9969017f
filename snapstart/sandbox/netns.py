"""Anonymous network namespaces for sandboxes (no name, no bind mount, no /run).

``new_netns()`` creates a network namespace in a short-lived thread
(``unshare(CLONE_NEWNET)`` affects only the calling thread), brings ``lo`` up,
keeps the namespace alive through an fd on ``/proc/thread-self/ns/net`` and creates
the host<->agent control socketpair *inside* it. Closing the fd (and ending every
process in it) destroys the namespace: nothing is left to clean up by name.

Cost measured here: ~1 ms. ``lo`` is brought up with one SIOCSIFFLAGS ioctl rather
than netlink: importing pyroute2 costs ~340 ms on this machine, which a one-shot CLI
restore would pay in full; pyroute2 is used where real netlink work is needed.

Egress (off by default; ``FunctionConfig.egress``): ``add_egress`` gives the
namespace a veth pair, ``eth0`` inside, ``snp<N>`` on the host, addressed from a
link-local /30 (``169.254.128.0/17``: host ``.1``, clone ``.2``, default route via
the host end; the block holding 169.254.169.254 is never used). The host end has
IPv4 forwarding off and both ends have IPv6 off, and one nftables rule (table
``inet snapstart_egress``, created once per boot by the first egress sandbox, shared
by all: ``iifname "snp*" fib daddr . iif type != local drop``) drops whatever a clone
sends to a host address other than its own host end. So a clone reaches a service
listening on its host end (a proxy on 169.254.x.1 or 0.0.0.0, say) and nothing else:
not another clone, not the host's other addresses (an Invoke API listening on the
machine's address included), not the host's 127.0.0.0/8 services, not beyond the
host, even when the host forwards. Without ``nft`` an egress sandbox is refused. To
give functions the internet, an operator adds forwarding + NAT for
``169.254.128.0/17`` deliberately. The host end name is the allocator: creating
``snp<N>`` fails if another clone (of any manager) holds block N. The pair dies with
the namespace (nothing to delete). Cost: ~20 ms with pyroute2 imported (netlink on
both sides), paid at publish/cold start and on the restore path of egress functions.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import random
from dataclasses import dataclass

from ..errors import SandboxError
from .nsutil import CLONE_NEWNET, check, libc, on_thread

__all__ = ["NetNs", "new_netns", "Egress", "add_egress"]

EGRESS_BASE = (169 << 24) | (254 << 16) | (128 << 8)   # 169.254.128.0/17, /30 blocks
EGRESS_BLOCKS = 8192
_METADATA_BLOCK = ((169 - 128) << 8 | 252) // 4         # holds 169.254.169.254
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
IFF_UP = 0x1


@dataclass
class NetNs:
    fd: int                    # keeps the namespace alive
    inode: int                 # what CRIU calls net[<inode>]
    host_sock: socket.socket   # host end of the control channel
    agent_sock: socket.socket  # agent end (created inside the namespace)

    def close(self) -> None:
        for sock in (self.host_sock, self.agent_sock):
            try:
                sock.close()
            except OSError:
                pass
        self.close_fd()

    def close_fd(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close_agent_end(self) -> None:
        self.agent_sock.close()


def _lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))


def _make_netns() -> NetNs:
    check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    _lo_up()
    host, agent = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return NetNs(fd=fd, inode=os.fstat(fd).st_ino, host_sock=host, agent_sock=agent)


def new_netns() -> NetNs:
    try:
        return on_thread(_make_netns, "snapstart-netns")
    except Exception as exc:
        raise SandboxError(f"cannot create a network namespace: {exc}") from exc


@dataclass(frozen=True)
class Egress:
    host_if: str          # host end of the veth
    host_addr: str        # the clone's gateway
    clone_addr: str       # eth0's address inside the clone


def _ip(n: int) -> str:
    return socket.inet_ntoa(n.to_bytes(4, "big"))


def _sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def add_egress(netns_fd: int) -> Egress:
    """Give the namespace behind ``netns_fd`` a veth to the host (see the docstring)."""
    from pyroute2 import IPRoute                       # lazy: ~340 ms to import
    from pyroute2.netlink.exceptions import NetlinkError

    guard_host()
    start = random.randrange(EGRESS_BLOCKS)
    with IPRoute() as ipr:
        for i in range(EGRESS_BLOCKS):
            block = (start + i) % EGRESS_BLOCKS
            if block == _METADATA_BLOCK:
                continue
            name = f"snp{block}"
            try:
                ipr.link("add", ifname=name, kind="veth",
                         peer={"ifname": "eth0", "net_ns_fd": netns_fd})
                break
            except NetlinkError as exc:
                if exc.code != 17:                    # EEXIST: block taken, try the next
                    raise SandboxError(f"cannot create the egress veth: {exc}") from exc
        else:
            raise SandboxError("no free egress address block (169.254.128.0/17 exhausted)")
        base = EGRESS_BASE + 4 * block
        egress = Egress(host_if=name, host_addr=_ip(base + 1), clone_addr=_ip(base + 2))
        try:
            _sysctl(f"/proc/sys/net/ipv4/conf/{name}/forwarding", "0")
            _sysctl(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "1")
            index = ipr.link_lookup(ifname=name)[0]
            ipr.addr("add", index=index, address=egress.host_addr, prefixlen=30)
            ipr.link("set", index=index, state="up")
            _inside(netns_fd, lambda: _clone_end(egress))
        except (OSError, NetlinkError, IndexError) as exc:
            try:
                ipr.link("del", ifname=name)
            except NetlinkError:
                pass
            raise SandboxError(f"cannot configure the egress veth: {exc}") from exc
    return egress


_NFT_TABLE = "snapstart_egress"
_NFT_RULES = f"""table inet {_NFT_TABLE} {{
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "snp*" fib daddr . iif type != local drop
    }}
}}
"""
_guarded = False


def guard_host() -> None:
    """The nftables rule of the module docstring, once (idempotent, across processes)."""
    global _guarded
    if _guarded:
        return
    import shutil
    import subprocess

    nft = shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if nft is None:
        raise SandboxError("egress needs nftables (`nft`) to keep clones off the host's "
                           "other addresses; install the nftables package")
    lock = os.open("/run/snapstart-egress.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = subprocess.run([nft, "list", "chain", "inet", _NFT_TABLE, "input"],
                              capture_output=True, text=True)
        if have.returncode != 0:
            made = subprocess.run([nft, "-f", "-"], input=_NFT_RULES, capture_output=True,
                                  text=True)
            if made.returncode != 0:
                raise SandboxError(f"cannot install the egress guard (nft): "
                                   f"{made.stderr.strip()[:300]}")
    finally:
        os.close(lock)
    _guarded = True


def _clone_end(egress: Egress) -> None:
    from pyroute2 import IPRoute

    _sysctl("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1")
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=index, address=egress.clone_addr, prefixlen=30)
        ipr.link("set", index=index, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=egress.host_addr)


def _inside(netns_fd: int, fn) -> None:
    """Run ``fn`` on a thread inside the network namespace (netlink, /proc/sys/net)."""

    def body() -> None:
        check(libc.setns(netns_fd, CLONE_NEWNET), "setns(net)")
        fn()

    on_thread(body, "snapstart-egress")
