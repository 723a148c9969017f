"""Host facts recorded in a snapshot, and the check that a host can restore it.

CRIU restores a process tree only onto a host that can run it: the same machine
architecture, a CRIU that reads the image format (same major version), and every
CPU feature the dumped code may have picked at start-up (glibc and the JIT-less
interpreters choose memcpy/string variants by cpuid; the FPU/xsave layout must
match). Metadata keys the store adds to every manifest's ``meta``::

    arch          platform.machine()                    e.g. "x86_64"
    kernel        os.uname().release                    informational, not checked
    criu_version  the caller's meta["criu_version"]     e.g. "4.2.1" (may be absent)
    cpu_flags     sorted list: /proc/cpuinfo flags (x86 "flags", arm64 "Features")
                  intersected with CRIU_CPU_FLAGS
    created       caller's meta["created"], else UTC ISO-8601 time of the put

This module reads the host; it never decides policy beyond the three checks.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path
from typing import Any, Mapping

from ..errors import SnapshotIncompatibleError

__all__ = ["CRIU_CPU_FLAGS", "HostFacts", "host_facts", "read_cpu_flags",
           "check_compatible", "criu_major"]

# CPU features whose absence on the restoring host breaks a restored process:
# FPU/xsave state layout, and instruction sets libc/libraries dispatch on at start.
CRIU_CPU_FLAGS = frozenset({
    # x86
    "fpu", "fxsr", "xsave", "xsaveopt", "xsavec", "xsaves", "sse", "sse2", "pni",
    "ssse3", "sse4_1", "sse4_2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2",
    "adx", "aes", "pclmulqdq", "sha_ni", "movbe", "erms", "fsrm", "rdrand", "rdseed",
    "avx512f", "avx512cd", "avx512dq", "avx512bw", "avx512vl", "avx512ifma",
    "avx512vbmi", "avx512_vbmi2", "avx512_vnni", "avx512_bitalg", "avx512_vpopcntdq",
    "avx512_bf16", "avx512_fp16", "vaes", "vpclmulqdq", "gfni", "amx_tile", "amx_bf16",
    "amx_int8", "pku", "ospke", "mpx", "la57",
    # arm64
    "fp", "asimd", "atomics", "crc32", "sha1", "sha2", "sha3", "sha512", "pmull",
    "sve", "sve2", "sme", "bf16", "i8mm", "lse", "paca", "pacg", "bti", "mte",
})


@dataclasses.dataclass(frozen=True)
class HostFacts:
    arch: str
    kernel: str
    cpu_flags: frozenset[str]

    def to_meta(self) -> dict[str, Any]:
        return {"arch": self.arch, "kernel": self.kernel,
                "cpu_flags": sorted(self.cpu_flags)}


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The host's CPU flags that are in ``CRIU_CPU_FLAGS`` (empty if unknown)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split()) & CRIU_CPU_FLAGS
    return frozenset()


def host_facts() -> HostFacts:
    return HostFacts(arch=platform.machine(), kernel=os.uname().release,
                     cpu_flags=read_cpu_flags())


def criu_major(version: str) -> int | None:
    head = str(version).strip().lstrip("v").split(".", 1)[0]
    return int(head) if head.isdigit() else None


def check_compatible(label: str, meta: Mapping[str, Any], host: HostFacts,
                     criu_version: str | None = None) -> None:
    """Raise ``SnapshotIncompatibleError`` naming the first mismatch."""
    arch = meta.get("arch")
    if arch and arch != host.arch:
        raise SnapshotIncompatibleError(
            f"{label}: arch mismatch: snapshot taken on {arch}, this host is {host.arch}")
    snap_criu = meta.get("criu_version")
    if snap_criu and criu_version:
        a, b = criu_major(snap_criu), criu_major(criu_version)
        if a is not None and b is not None and a != b:
            raise SnapshotIncompatibleError(
                f"{label}: CRIU major version mismatch: snapshot taken with CRIU "
                f"{snap_criu}, this host has {criu_version}")
    needed = set(meta.get("cpu_flags") or ())
    missing = sorted(needed - host.cpu_flags)
    if missing:
        raise SnapshotIncompatibleError(
            f"{label}: cpu_flags missing on this host: {', '.join(missing)}")
