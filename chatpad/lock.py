"""One chatpad per profile: the profile's ``chatpad.lock`` is held for the whole run.

The lock is an exclusive SQLite transaction on that file, so SQLite does the locking the
way each platform wants (byte-range locks on POSIX, ``LockFileEx`` on Windows) and the
operating system drops it when the process ends, however it ends: no stale lock to
detect or clean up after a crash.
"""

from __future__ import annotations

from pathlib import Path

import apsw

from chatpad.files import PRIVATE_FILE, create_private_file, make_private_dir, tighten

__all__ = ["ProfileInUse", "ProfileLock"]


class ProfileInUse(Exception):
    """Another chatpad runs with this profile."""


class ProfileLock:
    """Holds ``path`` until :meth:`release`; raises :class:`ProfileInUse` when another
    process (or another lock in this one) holds it."""

    def __init__(self, path: Path) -> None:
        make_private_dir(path.parent)
        if path.exists():  # never open and close it here: that drops this process's locks
            tighten(path, PRIVATE_FILE)
        else:
            create_private_file(path)
        self._db: apsw.Connection | None = apsw.Connection(str(path))
        try:
            # an empty file is not locked for real: give it a database header first
            self._db.execute("PRAGMA user_version = 1")
            self._db.execute("BEGIN EXCLUSIVE")  # busy timeout 0: fails at once if held
        except apsw.BusyError:
            self.release()
            raise ProfileInUse(str(path.parent)) from None

    def release(self) -> None:
        if self._db is not None:
            self._db.close(force=True)  # the open transaction ends with it
            self._db = None
