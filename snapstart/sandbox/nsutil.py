"""Per-thread namespace plumbing shared by netns.py and mountns.py.

``unshare``/``setns`` for network and mount namespaces, and ``chroot`` after
``unshare(CLONE_FS)``, change only the calling thread; the manager does them on a
short-lived thread (``on_thread``) and never leaves the host's namespaces itself.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable, TypeVar

__all__ = ["libc", "check", "on_thread", "CLONE_FS", "CLONE_NEWNS", "CLONE_NEWNET",
           "CLONE_NEWIPC", "CLONE_NEWUTS"]

T = TypeVar("T")

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUTS = 0x04000000

libc = ctypes.CDLL(None, use_errno=True)


def check(ret: int, what: str) -> None:
    """Raise ``OSError`` (errno from libc) if a libc call returned non-zero."""
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def on_thread(fn: Callable[[], T], name: str) -> T:
    """Run ``fn`` on a new thread and wait: its result, or its exception re-raised."""
    out: list = []

    def body() -> None:
        try:
            out.append((True, fn()))
        except BaseException as exc:   # handed to the caller's thread
            out.append((False, exc))

    thread = threading.Thread(target=body, name=name)
    thread.start()
    thread.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value
