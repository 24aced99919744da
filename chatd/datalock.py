"""One process at a time on a SQLite database: an advisory lock beside the file.

``chatd serve`` holds ``<database>.lock`` for its whole life (``flock``, released by the
kernel when the process ends, however it ends) with its pid written in it; a second
``serve`` on the same database, or ``migrate-data`` from a database a server is writing
to, finds the lock taken and stops with a line naming the holder.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from chatd.files import PRIVATE_FILE

__all__ = ["DataLock", "DatabaseInUse", "lock_path"]


class DatabaseInUse(Exception):
    """Another process holds the database's lock."""

    def __init__(self, database: Path, pid: int | None) -> None:
        holder = "another chatd" if pid is None else f"another chatd (pid {pid})"
        super().__init__(f"{database} is in use by {holder}")
        self.pid = pid


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class DataLock:
    """The lock of one SQLite database, held until :meth:`release` or the process ends."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, database: Path, *, create: bool = True) -> DataLock:
        """Take the lock and (``create``: for serving) write this process's pid in it.

        Raises:
            DatabaseInUse: another process holds it.
            FileNotFoundError: no lock file, and ``create`` is False.
            OSError: the lock file cannot be made.
        """
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        fd = os.open(lock_path(database), flags, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DatabaseInUse(database, pid) from None
        except BaseException:
            os.close(fd)
            raise
        if create:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    @staticmethod
    def check_free(database: Path) -> None:
        """Raise :class:`DatabaseInUse` if a process holds the lock (taking it only for
        the look, and never creating it)."""
        try:
            lock = DataLock.acquire(database, create=False)
        except FileNotFoundError:
            return
        lock.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
