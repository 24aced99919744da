"""Private files: what chatd writes is readable by its own user alone.

The database holds password hashes and every message body, the key file signs tokens,
the logs name users and addresses. So every file chatd creates is 0600 and every
directory 0700, whatever the umask it was started with: ``chatd``'s main sets the umask
to :data:`PRIVATE_UMASK` for the whole run (SQLite's WAL and SHM files, rotated logs and
backups included), and the paths chatd creates on purpose are also created with their
mode spelled out, so code run outside that main (tests, embedders) gets the same.

Files from an older chatd may still be open to others. At startup ``serve`` tightens
the files it owns by name (the database and its WAL and SHM, ``token.key``) with
:func:`tighten` (chmod 0600, one warning line each) and only warns about the data and
log directories and the log file (:func:`open_to_others`): a directory may be shared
with other programs, and a log file may be opened to a log shipper's group on purpose.
This module does no logging itself (the logging module uses it): callers log.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "PRIVATE_UMASK",
    "create_private_file",
    "fsync_dir",
    "make_private_dir",
    "open_to_others",
    "private_umask",
    "replace_durably",
    "tighten",
]

PRIVATE_UMASK: Final = 0o077  # new files 0600 and directories 0700 for the whole process
PRIVATE_FILE: Final = 0o600
PRIVATE_DIR: Final = 0o700
_OTHERS: Final = 0o077  # the group and world bits


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Run the block under :data:`PRIVATE_UMASK`, then put the previous umask back (so
    an in-process caller such as a test keeps its own)."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def make_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents as 0700 directories (``mkdir -p`` would
    make the parents with the umask's mode). An existing directory is left as it is."""
    missing = []
    for directory in (path, *path.parents):
        if directory.is_dir():
            break
        missing.append(directory)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            directory.mkdir(mode=PRIVATE_DIR)
            directory.chmod(PRIVATE_DIR)  # mkdir's mode passes through the umask


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists. SQLite then gives the
    database's WAL, SHM and journal files the same mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    os.close(fd)


def replace_durably(path: Path, data: bytes) -> None:
    """Make ``data`` the content of ``path``, mode 0600, whole or not at all, and on disk
    when this returns: a private temporary file beside it, synced, renamed over it, and
    the directory synced. Raises OSError (the old content is then left as it was)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def fsync_dir(directory: Path) -> None:
    """Sync a directory, so a file just created or renamed in it stays after a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tighten(paths: Iterable[Path]) -> list[tuple[Path, int]]:
    """chmod 0600 each existing file of ``paths`` that is ours and open to others.

    Returns:
        ``(path, old mode)`` of each file tightened, for the caller to log.
    """
    tightened = []
    for path in paths:
        current = _mode_if_ours(path)
        if current is not None and current & _OTHERS:
            path.chmod(PRIVATE_FILE)
            tightened.append((path, current))
    return tightened


def open_to_others(paths: Iterable[Path]) -> list[tuple[Path, int]]:
    """``(path, mode)`` of each existing path of ours that others may read or enter."""
    found = []
    for path in paths:
        current = _mode_if_ours(path)
        if current is not None and current & _OTHERS:
            found.append((path, current))
    return found


def _mode_if_ours(path: Path) -> int | None:
    """The permission bits of ``path`` when it exists and belongs to this process's
    user; None otherwise (a missing file, or one chatd may not chmod anyway)."""
    try:
        info = path.stat()
    except OSError:
        return None
    if info.st_uid != os.geteuid():
        return None
    return stat.S_IMODE(info.st_mode)
