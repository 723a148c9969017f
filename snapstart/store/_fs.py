"""Small file-system helpers for the store: full writes, durable renames, flock.

Nothing here knows the store's layout. Every file is created 0600 and every
directory 0700: store contents are secrets at rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path
from typing import Iterator

__all__ = ["write_all", "pwrite_all", "fsync_dir", "mkdir_private", "flocked",
           "try_flock", "rmtree_quiet", "create_file"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def create_file(path: Path | str) -> int:
    """A new file, opened for writing; ``FileExistsError`` if it exists."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)


def write_new_file(path: Path | str, data: bytes | memoryview) -> None:
    """Create ``path`` (private, must not exist), write ``data`` and fsync it."""
    fd = create_file(path)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mkdir_private(path: Path) -> None:
    """``mkdir -p`` with mode 0700 for the directories it creates."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
    except FileNotFoundError:
        mkdir_private(path.parent)
        mkdir_private(path)


@contextlib.contextmanager
def flocked(path: Path, mode: int) -> Iterator[int]:
    """Hold ``flock(mode)`` (LOCK_SH / LOCK_EX) on ``path`` (created if missing).

    Each call opens its own descriptor, so the lock also excludes other threads
    of this process, not only other processes.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def try_flock(path: Path, mode: int, *, wait: bool = False) -> int | None:
    """A descriptor holding ``flock(mode)``; without ``wait``, None if it is held
    elsewhere. The caller closes the descriptor to release the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def rmtree_quiet(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
