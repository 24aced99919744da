"""chatpad's files are its user's alone: profile folders 0700; the database (whose WAL
and SHM files SQLite creates with the database's mode) and the session file 0600,
whatever the umask. ``chatpad``'s main also sets the umask to 077 for the whole run.

A profile folder or database left open to others by an older chatpad is tightened when
it is opened (one log line). Where the platform has no POSIX modes (Windows) only the
creating happens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = [
    "PRIVATE_UMASK",
    "create_private_file",
    "make_private_dir",
    "private_umask",
    "tighten",
    "write_private",
]

log = logging.getLogger(__name__)

PRIVATE_UMASK: Final = 0o077
PRIVATE_FILE: Final = 0o600
PRIVATE_DIR: Final = 0o700
_OTHERS: Final = 0o077  # the group and world bits
_HAS_MODES: Final = os.name == "posix"


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Run the block under :data:`PRIVATE_UMASK`, then restore the previous umask."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def make_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents as 0700 directories, or tighten ``path``
    (a profile folder: chatpad's own) when it exists open to others."""
    missing = []
    for directory in (path, *path.parents):
        if directory.is_dir():
            break
        missing.append(directory)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            directory.mkdir(mode=PRIVATE_DIR)
            if _HAS_MODES:
                directory.chmod(PRIVATE_DIR)  # mkdir's mode passes through the umask
    tighten(path, PRIVATE_DIR)


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists; tighten it if it is open."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE)
    os.close(fd)
    tighten(path, PRIVATE_FILE)


def tighten(path: Path, mode: int) -> None:
    """chmod ``path`` to ``mode`` when it exists, is ours and is open to others."""
    if not _HAS_MODES:
        return
    try:
        info = path.stat()
    except OSError:
        return
    current = stat.S_IMODE(info.st_mode)
    if info.st_uid == os.geteuid() and current & _OTHERS:
        path.chmod(mode)
        log.warning("%s was open to others (mode %o): now %o", path, current, mode)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (a reader sees the old file or the new,
    never part of one), readable by the owner only, on disk when this returns."""
    make_private_dir(path.parent)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
