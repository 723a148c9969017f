"""Confine the runtime: unprivileged uid/gid, no capabilities, no_new_privs, seccomp.

With uid 0 (no unprivileged identity configured or reachable) every capability
is dropped instead, bounding set included.

Called by the agent in the runtime's child process, between fork and exec (the
agent is single-threaded, so fork is safe). Order matters: drop groups, gid, uid
(the kernel clears every capability when uid 0 becomes non-zero), then
``PR_SET_NO_NEW_PRIVS`` (no setuid binary or file capability can give them back),
then the seccomp filter, then exec.

The seccomp filter is a deny list (EPERM) of what a function never needs and a
sandbox escape often does: ptrace and cross-process memory access, keyrings,
mounts and namespaces, BPF, perf, kernel modules, kexec, reboot, swap, clock
changes, open_by_handle_at, userfaultfd, io_uring (which CRIU cannot checkpoint
either). Syscalls from a foreign ABI (i386/x32 on x86_64) are refused outright so
the list cannot be bypassed with another syscall table. Installed filters are part
of the process state CRIU checkpoints and restores.

BPF program (classic BPF, ``struct seccomp_data``: nr at offset 0, arch at 4)::

    ld  [4]                 ; arch
    jne AUDIT_ARCH, deny
    ld  [0]                 ; nr
    jge 0x40000000, deny    ; x32 ABI (x86_64 only)
    jeq <nr_i>, deny        ; one per denied syscall
    ret ALLOW
    deny: ret ERRNO(EPERM)
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

__all__ = ["confine", "DENIED"]

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM = 1

BPF_LD, BPF_W, BPF_ABS = 0x00, 0x00, 0x20
BPF_JMP, BPF_JEQ, BPF_JGE, BPF_K = 0x05, 0x10, 0x30, 0x00
BPF_RET = 0x06

# (audit arch, {syscall: number})
_TABLES = {
    "x86_64": (0xC000003E, {
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "keyctl": 250, "add_key": 248, "request_key": 249,
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
        "unshare": 272, "setns": 308, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
        "init_module": 175, "finit_module": 313, "delete_module": 176,
        "kexec_load": 246, "kexec_file_load": 320, "reboot": 169,
        "swapon": 167, "swapoff": 168, "acct": 163, "syslog": 103, "quotactl": 179,
        "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159,
        "open_by_handle_at": 304, "name_to_handle_at": 303,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    }),
    "aarch64": (0xC00000B7, {
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "keyctl": 219, "add_key": 217, "request_key": 218,
        "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
        "unshare": 97, "setns": 268, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "init_module": 105, "finit_module": 273, "delete_module": 106,
        "kexec_load": 104, "kexec_file_load": 294, "reboot": 142,
        "swapon": 224, "swapoff": 225, "acct": 89, "syslog": 116, "quotactl": 60,
        "settimeofday": 170, "clock_settime": 112, "clock_adjtime": 266, "adjtimex": 171,
        "open_by_handle_at": 265, "name_to_handle_at": 264,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    }),
}
DENIED = sorted(_TABLES["x86_64"][1])


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes:
    arch, table = _TABLES[machine or platform.machine()]
    numbers = sorted(set(table.values()))
    body = [_insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 4)]
    tail = len(numbers) + 3            # instructions after the arch check, up to ALLOW
    body.append(_insn(BPF_JMP | BPF_JEQ | BPF_K, 0, tail, arch))        # else -> deny
    body.append(_insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 0))
    x32 = 0x40000000 if (machine or platform.machine()) == "x86_64" else 0xFFFFFFFF
    body.append(_insn(BPF_JMP | BPF_JGE | BPF_K, len(numbers) + 1, 0, x32))
    for i, nr in enumerate(numbers):
        body.append(_insn(BPF_JMP | BPF_JEQ | BPF_K, len(numbers) - i, 0, nr))
    body.append(_insn(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW))
    body.append(_insn(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ERRNO | EPERM))
    return b"".join(body)


PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _drop_capabilities(libc) -> None:
    """Empty the bounding set, then effective/permitted/inheritable (capset)."""
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
            break                      # EINVAL: past the last capability this kernel has
    header = struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)                   # two {effective, permitted, inheritable} u32 sets
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def confine(uid: int, gid: int, *, seccomp: bool = True) -> None:
    """Irreversibly drop to (uid, gid) and install the filter. Raises OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    if uid or gid:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    else:
        _drop_capabilities(libc)     # the root fallback: still no capabilities at all
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if not seccomp:
        return
    code = program()
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.addressof(buf))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
