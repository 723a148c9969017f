"""Zip packages: what ``snapstart publish app.zip`` and ``CodeUri: app.zip`` unpack.

Lambda's rules: at most 250 MB (262,144,000 bytes) unzipped, counted from the entries'
declared sizes before anything is written and enforced again while writing (a size a
zip lies about cannot get past it). Refused with a ``ConfigError`` naming the entry,
and nothing left behind: entries whose path is absolute or leaves the target
(``../``, zip-slip), symbolic links, device files, FIFOs and sockets (Unix mode in
the entry's external attributes), encrypted entries, duplicate names. Directories
and regular files are created 0755/0644 (0755 when the entry is executable).
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import ConfigError

__all__ = ["MAX_UNZIPPED", "unpack_zip", "is_zip"]

MAX_UNZIPPED = 262_144_000


def is_zip(path: Path) -> bool:
    return Path(path).is_file() and zipfile.is_zipfile(path)


def _check(info: zipfile.ZipInfo, label: str) -> PurePosixPath:
    name = info.filename
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\\" in name:
        raise ConfigError(f"{label}: entry {name!r} has an absolute or foreign path")
    if any(part == ".." for part in path.parts):
        raise ConfigError(f"{label}: entry {name!r} points outside the package (zip-slip)")
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise ConfigError(f"{label}: entry {name!r} is a symbolic link (not allowed)")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ConfigError(f"{label}: entry {name!r} is a device file, FIFO or socket "
                          "(not allowed)")
    if info.flag_bits & 0x1:
        raise ConfigError(f"{label}: entry {name!r} is encrypted")
    return path


def unpack_zip(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into the new directory ``dest`` (see the module docstring)."""
    label = str(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConfigError(f"{label}: not a readable zip file ({exc})") from None
    with zf:
        infos = zf.infolist()
        names = set()
        declared = 0
        for info in infos:
            _check(info, label)
            key = info.filename.rstrip("/")
            if key in names:
                raise ConfigError(f"{label}: entry {info.filename!r} appears twice")
            names.add(key)
            declared += info.file_size
        if declared > MAX_UNZIPPED:
            raise ConfigError(f"{label}: unzipped size {declared} bytes exceeds Lambda's "
                              f"limit of {MAX_UNZIPPED} bytes")
        dest.mkdir(mode=0o755)
        try:
            written = 0
            root = dest.resolve()
            for info in infos:
                target = root.joinpath(*PurePosixPath(info.filename).parts)
                if info.is_dir():
                    target.mkdir(mode=0o755, parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                if not str(target.parent.resolve()).startswith(str(root)):
                    raise ConfigError(f"{label}: entry {info.filename!r} leaves the package")
                executable = bool((info.external_attr >> 16) & 0o111)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o755 if executable else 0o644)
                with zf.open(info) as src, os.fdopen(fd, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > MAX_UNZIPPED:
                            raise ConfigError(f"{label}: unzipped size exceeds Lambda's limit "
                                              f"of {MAX_UNZIPPED} bytes")
                        out.write(chunk)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise ConfigError(f"{label}: cannot unpack: {exc}") from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return dest
