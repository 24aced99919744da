"""Connections to the SQLite file and the small helpers every part of the store uses.

Every connection is opened in the thread that uses it (apsw connections are not shared).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import apsw

from chatd.files import create_private_file
from chatd.observe.logs import EventLogger
from chatd.store.base import StoreError

__all__ = [
    "as_store_error",
    "connect",
    "connect_writer",
    "create_private",
    "last_seq",
    "log",
    "rows",
    "scalar",
    "set_last_seq",
]

# One logger for every module of the SQLite store: its log lines name the store, as
# they did when it was one module.
log = EventLogger(logging.getLogger("chatd.store.sqlite"))

BUSY_TIMEOUT_MS: Final = 5000  # other processes (chatd backup, sqlite3 shell) hold locks briefly
WAL_CHECKPOINT_PAGES: Final = 10_000


def rows(conn: apsw.Connection, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Every row of one statement, consumed fully (an open statement would block COMMIT)."""
    return [tuple(row) for row in conn.execute(sql, args)]


def scalar(conn: apsw.Connection, sql: str, args: Sequence[Any] = ()) -> Any:
    found = rows(conn, sql, args)
    return found[0][0] if found else None


def last_seq(conn: apsw.Connection) -> int:
    """The last seq this database issued (AUTOINCREMENT never reuses one)."""
    value = scalar(conn, "SELECT seq FROM sqlite_sequence WHERE name = 'messages'")
    return 0 if value is None else int(value)


def set_last_seq(conn: apsw.Connection, seq: int) -> None:
    conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'messages'", (seq,))
    if conn.changes() == 0:  # no message yet: the row comes with the first
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?)", (seq,))


def create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite gives its WAL, SHM and
    journal files the database file's mode). An error is left for SQLite to report."""
    with contextlib.suppress(OSError):
        create_private_file(path)


def as_store_error(exc: Exception) -> Exception:
    """Database errors become :class:`StoreError`, and so does a value SQLite cannot
    bind (apsw raises OverflowError for an int beyond 64 bits: bad input, which libchat
    already refuses); anything else (a bug) passes through."""
    if isinstance(exc, apsw.Error | OverflowError):
        error = StoreError(f"sqlite: {exc}")
        error.__cause__ = exc
        return error
    return exc


def connect(path: Path, *, create: bool) -> apsw.Connection:
    if create:
        create_private(path)
    flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
    conn = apsw.Connection(str(path), flags=flags)
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    return conn


def connect_writer(path: Path, sync: str) -> apsw.Connection:
    """The write connection: WAL mode, ``synchronous`` as ``sync`` says."""
    conn = connect(path, create=True)
    try:
        if str(scalar(conn, "PRAGMA journal_mode = WAL")).lower() != "wal":
            raise StoreError(f"{path}: cannot switch to WAL mode")
        conn.execute(f"PRAGMA synchronous = {sync.upper()}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Statement journals, and the savepoints of a group run again after a failed
        # job, keep the pages they change for a rollback: otherwise in a temporary file.
        conn.execute("PRAGMA temp_store = MEMORY")
        # Checkpoint every 10,000 WAL pages (40 MiB) instead of 1,000: each index page
        # that many commits rewrote is copied back once, with one fsync of the file.
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
    except BaseException:
        conn.close()
        raise
    return conn
