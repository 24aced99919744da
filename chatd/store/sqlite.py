"""The SQLite store: apsw in WAL mode, one writer thread with group commit, a reader pool.

Every write (messages, receipts, users, revocations, login failures) becomes a job on one
queue. The writer thread owns the only write connection: it takes every job queued since
its last commit, runs them in one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (a SAVEPOINT per job,
so one failing job does not sink the others), then wakes the event loop once for the whole
batch. A coroutine that wrote therefore returns only after the commit that holds its write.

Reads run on a small thread pool, each thread with its own connection; WAL lets them
proceed while the writer commits. Every connection is opened in the thread that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import apsw

from chatd.files import create_private_file
from chatd.store.base import (
    LoginDecider,
    NewMessage,
    Queued,
    ReadResult,
    Retirement,
    SchemaMismatch,
    Stats,
    StoreError,
    User,
    failure_filter,
    message_from_row,
    user_from_row,
)
from chatd.store.seqlease import SeqLease
from libchat.protocol import Message

__all__ = ["MIGRATIONS", "SqliteStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# --- schema -----------------------------------------------------------------------------

MIGRATIONS: Final[dict[int, str]] = {
    1: """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        token_generation INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        changed_at INTEGER  -- Unix ms of the last set_password/set_disabled; NULL: never
    );
    CREATE INDEX users_changed_at ON users (changed_at);

    -- Append-only. pair_lo/pair_hi (the smaller and larger user id) name the conversation.
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sender_id INTEGER NOT NULL REFERENCES users(id),
        recipient_id INTEGER NOT NULL REFERENCES users(id),
        pair_lo INTEGER NOT NULL,
        pair_hi INTEGER NOT NULL,
        client_id TEXT NOT NULL,
        body TEXT NOT NULL,
        ts INTEGER NOT NULL,
        delivered_at INTEGER,
        read_at INTEGER,
        UNIQUE (sender_id, client_id)
    );
    CREATE INDEX messages_undelivered ON messages (recipient_id, seq)
        WHERE delivered_at IS NULL;
    CREATE INDEX messages_pair ON messages (pair_lo, pair_hi, seq);
    CREATE INDEX messages_unread ON messages (recipient_id, sender_id, seq)
        WHERE read_at IS NULL;

    -- One row per (user, peer), kept in the transaction that inserts the messages.
    CREATE TABLE conversations (
        user_id INTEGER NOT NULL REFERENCES users(id),
        peer_id INTEGER NOT NULL REFERENCES users(id),
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (user_id, peer_id)
    ) WITHOUT ROWID;

    CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        expires_at INTEGER NOT NULL,
        revoked_at REAL NOT NULL
    );
    CREATE INDEX revoked_tokens_at ON revoked_tokens (revoked_at);

    CREATE TABLE login_failures (
        ip TEXT NOT NULL,
        username TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX login_failures_ip ON login_failures (ip, at);
    CREATE INDEX login_failures_username ON login_failures (username, at);
    CREATE INDEX login_failures_at ON login_failures (at);
    """,
    2: """
    -- Tokens retired by a rotating refresh, and families revoked after a reuse.
    CREATE TABLE retired_tokens (
        jti TEXT PRIMARY KEY,
        family TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        grace_until REAL NOT NULL,
        retired_at REAL NOT NULL
    );
    CREATE INDEX retired_tokens_at ON retired_tokens (retired_at);
    CREATE TABLE revoked_families (
        family TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at REAL NOT NULL
    );
    CREATE INDEX revoked_families_at ON revoked_families (revoked_at);
    -- The newest token of each family that has rotated: only it may be refreshed.
    CREATE TABLE token_families (
        family TEXT PRIMARY KEY,
        head TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    """,
    3: """
    -- Pushes of the message that ended unconfirmed (their connection closed first):
    -- the next push is attempt failed_pushes + 1.
    ALTER TABLE messages ADD COLUMN failed_pushes INTEGER NOT NULL DEFAULT 0;
    """,
}
SCHEMA_VERSION: Final = max(MIGRATIONS)

BUSY_TIMEOUT_MS: Final = 5000  # other processes (chatd backup, sqlite3 shell) hold locks briefly
MAX_BATCH_JOBS: Final = 1000  # one transaction's size bound: caps the first job's wait
# Group commit: a transaction starts at most this long after the previous one started,
# so under load each gathers everything queued meanwhile; an idle store commits at once.
# Every commit costs WAL frames (two writes a page), a wake-up of the event loop and the
# settling of its futures: at 2,000 msg/s, 5 ms cut the server's CPU per message by a
# quarter for 3 ms more median latency (bench/RESULTS.md).
COMMIT_INTERVAL: Final = 0.005  # seconds
WAL_CHECKPOINT_PAGES: Final = 10_000
MAX_READS_AT_ONCE: Final = 64  # reads a reader thread takes from the queue in one go
LOGIN_FAILURE_TTL: Final = 24 * 3600.0  # seconds; the login limits look back far less
PRUNE_INTERVAL: Final = 3600.0  # seconds between prunes of old login failures and revocations
BACKUP_PAGES_PER_STEP: Final = 1024  # pages copied per backup step (4 MiB at 4 KiB pages)
_NO_SEQ: Final = 2**63 - 1  # "before" when none is given: above every seq

_USER_COLUMNS: Final = "id, username, password_hash, disabled, token_generation, created_at"


def _message_columns(table: str) -> str:
    """The columns :func:`_message` reads, for ``SELECT``s and ``RETURNING`` clauses."""
    return (
        f"{table}.client_id, {table}.seq,"
        f" (SELECT username FROM users WHERE users.id = {table}.sender_id),"
        f" (SELECT username FROM users WHERE users.id = {table}.recipient_id),"
        f" {table}.body, {table}.ts, {table}.delivered_at, {table}.read_at"
    )


_MESSAGE_COLUMNS: Final = _message_columns("messages")
_M_COLUMNS: Final = _message_columns("m")

_INSERT_MESSAGE: Final = (
    "INSERT INTO messages (sender_id, recipient_id, pair_lo, pair_hi, client_id, body, ts)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (sender_id, client_id) DO NOTHING RETURNING seq, ts"
)
_EXISTING_MESSAGE: Final = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE sender_id = ? AND client_id = ?"
)
_MARK_DELIVERED: Final = (
    "UPDATE messages SET delivered_at = ?"
    " WHERE seq = ? AND recipient_id = ? AND delivered_at IS NULL"
    f" RETURNING {_MESSAGE_COLUMNS}"
)
_UPSERT_CONVERSATION: Final = (
    "INSERT INTO conversations (user_id, peer_id, last_seq) VALUES (?, ?, ?)"
    " ON CONFLICT (user_id, peer_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)"
)


def _now_ms() -> int:
    return int(time.time() * 1000)

# Login attempts: counted failures, and attempts still being checked (reserve_login_attempt).
_IP_ATTEMPTS: Final = "SELECT at FROM login_failures WHERE ip = ? AND at >= ? ORDER BY at"
_ACCOUNT_ATTEMPTS: Final = (
    "SELECT at FROM login_failures WHERE username = ? AND at >= ? ORDER BY at"
)
_INSERT_ATTEMPT: Final = "INSERT INTO login_failures (ip, username, at) VALUES (?, ?, ?)"
# Rows of one attempt are alike: forgetting any one of them is forgetting that attempt.
_DELETE_ATTEMPT: Final = (
    "DELETE FROM login_failures WHERE rowid IN (SELECT rowid FROM login_failures"
    " WHERE ip = ? AND username = ? AND at = ? LIMIT 1)"
)


def _is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is SQLite's SQLITE_FULL or an ENOSPC."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, apsw.FullError) or getattr(cause, "errno", None) == errno.ENOSPC:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _release_wal(conn: apsw.Connection) -> None:
    """The disk is full: copy the WAL into the database and truncate it to nothing, so
    the space it held (up to the checkpoint interval's 40 MiB) is free for the next
    commits at once, instead of being refilled by a WAL that only ever grows until a
    checkpoint. Fails while there is no room to grow the database: then the next failed
    commit tries again."""
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except apsw.Error as exc:
        log.warning("sqlite: cannot checkpoint the WAL while the disk is full: %s", exc)


def _last_seq(conn: apsw.Connection) -> int:
    """The last seq this database issued (AUTOINCREMENT never reuses one)."""
    value = _scalar(conn, "SELECT seq FROM sqlite_sequence WHERE name = 'messages'")
    return 0 if value is None else int(value)


def _set_last_seq(conn: apsw.Connection, seq: int) -> None:
    conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'messages'", (seq,))
    if conn.changes() == 0:  # no message yet: the row comes with the first
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?)", (seq,))


def _rows(conn: apsw.Connection, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Every row of one statement, consumed fully (an open statement would block COMMIT)."""
    return [tuple(row) for row in conn.execute(sql, args)]


def _scalar(conn: apsw.Connection, sql: str, args: Sequence[Any] = ()) -> Any:
    rows = _rows(conn, sql, args)
    return rows[0][0] if rows else None


def _schema_version(conn: apsw.Connection) -> int:
    return int(_scalar(conn, "PRAGMA user_version"))


def _is_empty(conn: apsw.Connection) -> bool:
    return int(_scalar(conn, "SELECT count(*) FROM sqlite_schema")) == 0


def _apply_migrations(conn: apsw.Connection) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION`; call inside a write transaction."""
    found = _schema_version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaMismatch(found, SCHEMA_VERSION)
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.execute(MIGRATIONS[version])
        conn.execute(f"PRAGMA user_version = {version}")
        log.info("sqlite schema migrated", extra={"schema_version": version})
    return SCHEMA_VERSION


def _check_schema(conn: apsw.Connection) -> None:
    """Accept the current version; create the schema in a brand-new empty database."""
    found = _schema_version(conn)
    if found == SCHEMA_VERSION:
        return
    if found == 0 and _is_empty(conn):
        _apply_migrations(conn)
        return
    raise SchemaMismatch(found, SCHEMA_VERSION)


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite gives its WAL, SHM and
    journal files the database file's mode). An error is left for SQLite to report."""
    with contextlib.suppress(OSError):
        create_private_file(path)


def _as_store_error(exc: Exception) -> Exception:
    """Database errors become :class:`StoreError`, and so does a value SQLite cannot
    bind (apsw raises OverflowError for an int beyond 64 bits: bad input, which libchat
    already refuses); anything else (a bug) passes through."""
    if isinstance(exc, apsw.Error | OverflowError):
        error = StoreError(f"sqlite: {exc}")
        error.__cause__ = exc
        return error
    return exc


class _Job:
    """One unit of work for the writer; ``fn`` is None for the stop marker."""

    __slots__ = ("bare", "fn", "future", "messages")

    def __init__(
        self,
        fn: Callable[[apsw.Connection], Any] | None,
        future: asyncio.Future[Any],
        messages: int = 0,
        *,
        bare: bool = False,
    ) -> None:
        self.fn = fn
        self.future = future
        self.messages = messages  # messages it inserts, for the batch-size metric
        self.bare = bare  # a look at the connection outside any transaction


_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class _JobFailed(Exception):
    """A job of a group run without savepoints failed; the group was rolled back."""


def _take_more(jobs_queue: queue.SimpleQueue[_Job], jobs: list[_Job], limit: int) -> None:
    """Add the jobs already queued to ``jobs`` without waiting: up to ``limit`` in all,
    and never past a stop marker (those behind one are for other threads)."""
    while len(jobs) < limit and jobs[-1].fn is not None:
        try:
            jobs.append(jobs_queue.get_nowait())
        except queue.Empty:
            return


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()


def _settle(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the awaiting task was cancelled; the write happened anyway
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class SqliteStore:
    """The :class:`~chatd.store.base.Store` on one SQLite file.

    ``sync`` is ``"full"`` (every commit survives a power cut) or ``"normal"`` (a power
    cut may lose the last commits, never corrupt). ``readers`` sizes the read pool.
    ``commit_interval``: seconds from the start of one transaction to the next at least
    (group commit, see :data:`COMMIT_INTERVAL`).

    Counters for metrics: ``commits`` and ``last_batch_size`` (messages inserted by the
    last transaction, as the PostgreSQL store counts); ``on_commit(batch_size, seconds)``,
    if given, is called on the event loop after each commit.
    """

    schema_version: int = SCHEMA_VERSION

    def __init__(
        self,
        path: str | Path,
        *,
        sync: str = "full",
        readers: int = 2,
        commit_interval: float = COMMIT_INTERVAL,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        if sync not in ("full", "normal"):
            raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
        if readers < 1:
            raise ValueError("readers must be at least 1")
        self.path = Path(path)
        self.sync = sync
        self.readers = readers
        self.commit_interval = commit_interval
        self.commits = 0
        self.last_batch_size = 0
        self.on_commit = on_commit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._closing = False
        self._read_queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._reader_threads: list[threading.Thread] = []
        self._last_prune = 0.0  # writer thread only
        self._data_version = 0  # the writer's last PRAGMA data_version; writer thread only
        self._lease: SeqLease | None = None  # set by continue_seqs(); writer thread only
        # why the last transaction failed, while no later one has committed: ping() then
        # fails too, so /healthz says 503 instead of "ok" while every write fails
        self.write_failure: str | None = None

    # --- lifecycle ------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            raise StoreError("store is already open")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._closing = False
        ready: asyncio.Future[None] = loop.create_future()
        self._writer = threading.Thread(
            target=self._writer_main, args=(ready,), name="chatd-sqlite-writer", daemon=True
        )
        self._writer.start()
        try:
            await ready
        except BaseException:
            self._writer.join()
            self._writer = None
            raise
        try:
            await self._write(_check_schema)
        except BaseException:
            await self._stop_writer()
            raise
        self._reader_threads = [
            threading.Thread(target=self._reader_main, name=f"chatd-sqlite-read-{n}", daemon=True)
            for n in range(self.readers)
        ]
        for thread in self._reader_threads:
            thread.start()
        log.info("sqlite store open", extra={"path": str(self.path), "sync": self.sync})

    async def continue_seqs(self) -> None:
        """From now on keep ``<database>.seqs`` ahead of every seq committed, and if this
        database's seqs are below it (the file was restored from an older backup), make
        new seqs continue above it. The server calls it; admin commands do not."""

        def job(conn: apsw.Connection) -> None:
            lease = SeqLease(self.path)
            last = _last_seq(conn)
            if lease.value > last:
                _set_last_seq(conn, lease.value)
                log.warning(
                    "sqlite store: seqs continue above %d, not %d (%s is ahead of the"
                    " database: was it restored from a backup?)",
                    lease.value, last, lease.path,
                )
            else:
                lease.write(last)
            self._lease = lease

        await self._write(job)

    async def close(self) -> None:
        if self._writer is None:
            return
        if self._lease is not None and not self._closing:
            # the exact last seq: a clean restart leaves no gap
            lease = self._lease
            try:
                await self._write(lambda conn: lease.write(_last_seq(conn)))
            except (StoreError, OSError):
                log.exception("sqlite store: could not record the last seq")
        await self._stop_writer()
        readers, self._reader_threads = self._reader_threads, []
        if readers:
            loop = asyncio.get_running_loop()
            for _ in readers:  # one stop marker each, behind the reads already queued
                self._read_queue.put(_Job(None, loop.create_future()))
            await loop.run_in_executor(None, _join_all, readers)
        log.info("sqlite store closed", extra={"path": str(self.path), "commits": self.commits})

    async def migrate(self) -> int:
        if self._writer is not None:
            return await self._write(_apply_migrations)
        return await asyncio.to_thread(self._migrate_offline)

    async def ping(self) -> None:
        if self._writer is None or not self._writer.is_alive():
            raise StoreError("the sqlite writer is not running")
        failure = self.write_failure
        if failure is not None:
            raise StoreError(f"writes are failing: {failure}")
        await self._read(lambda conn: _scalar(conn, "SELECT 1"))

    async def changed_elsewhere(self) -> bool:
        """Asked of the writer's connection, whose ``PRAGMA data_version`` moves only
        when another connection commits: this server's own writes never count."""

        def look(conn: apsw.Connection) -> bool:
            version = int(_scalar(conn, "PRAGMA data_version"))
            changed, self._data_version = version != self._data_version, version
            return changed

        return await self._write(look, bare=True)

    async def backup(self, dest_path: str | Path) -> None:
        """Write a consistent copy of the live database to ``dest_path`` (replaced)."""
        await asyncio.to_thread(self._backup, Path(dest_path))

    # --- users and tokens -----------------------------------------------------------

    async def create_user(self, username: str, password_hash: str, now_ms: int) -> User | None:
        sql = (
            "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)"
            f" ON CONFLICT (username) DO NOTHING RETURNING {_USER_COLUMNS}"
        )
        args = (username.lower(), password_hash, now_ms)

        def job(conn: apsw.Connection) -> User | None:
            rows = _rows(conn, sql, args)
            return user_from_row(rows[0]) if rows else None

        return await self._write(job)

    async def user_by_name(self, username: str) -> User | None:
        sql = f"SELECT {_USER_COLUMNS} FROM users WHERE username = ?"
        rows = await self._read(lambda conn: _rows(conn, sql, (username.lower(),)))
        return user_from_row(rows[0]) if rows else None

    async def user_by_id(self, user_id: int) -> User | None:
        sql = f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?"
        rows = await self._read(lambda conn: _rows(conn, sql, (user_id,)))
        return user_from_row(rows[0]) if rows else None

    async def list_users(self) -> list[User]:
        sql = f"SELECT {_USER_COLUMNS} FROM users ORDER BY id"
        return [user_from_row(row) for row in await self._read(lambda conn: _rows(conn, sql))]

    async def search_users(self, prefix: str, exclude: str, limit: int) -> list[str]:
        prefix = prefix.lower()
        sql = (
            "SELECT username FROM users WHERE username >= ? AND username < ? AND username != ?"
            " ORDER BY username LIMIT ?"
        )
        args = (prefix, prefix + "\U0010ffff", exclude.lower(), limit)
        return [row[0] for row in await self._read(lambda conn: _rows(conn, sql, args))]

    async def set_password(self, user_id: int, password_hash: str) -> User:
        sql = (
            "UPDATE users SET password_hash = ?, token_generation = token_generation + 1,"
            f" changed_at = ? WHERE id = ? RETURNING {_USER_COLUMNS}"
        )
        args = (password_hash, _now_ms(), user_id)
        return await self._write(lambda conn: self._one_user(conn, sql, args))

    async def set_disabled(self, user_id: int, disabled: bool) -> User:
        sql = (
            "UPDATE users SET disabled = ?, token_generation = token_generation + ?,"
            f" changed_at = ? WHERE id = ? RETURNING {_USER_COLUMNS}"
        )
        args = (int(disabled), int(disabled), _now_ms(), user_id)
        return await self._write(lambda conn: self._one_user(conn, sql, args))

    async def users_changed_since(self, since_ms: int) -> list[User]:
        sql = f"SELECT {_USER_COLUMNS} FROM users WHERE changed_at >= ? ORDER BY id"
        rows = await self._read(lambda conn: _rows(conn, sql, (since_ms,)))
        return [user_from_row(row) for row in rows]

    @staticmethod
    def _one_user(conn: apsw.Connection, sql: str, args: Sequence[Any]) -> User:
        rows = _rows(conn, sql, args)
        if not rows:
            raise StoreError(f"no user with id {args[-1]}")
        return user_from_row(rows[0])

    async def revoke_token(self, jti: str, user_id: int, expires_at: int) -> None:
        sql = (
            "INSERT INTO revoked_tokens (jti, user_id, expires_at, revoked_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (jti) DO NOTHING"
        )
        args = (jti, user_id, expires_at, time.time())

        def job(conn: apsw.Connection) -> None:
            conn.execute(sql, args)
            self._maybe_prune(conn, time.time())

        await self._write(job)

    async def revoked_since(self, since: float) -> list[tuple[str, int]]:
        sql = (
            "SELECT jti, expires_at FROM revoked_tokens WHERE revoked_at >= ? AND expires_at > ?"
            " ORDER BY revoked_at, jti"
        )
        rows = await self._read(lambda conn: _rows(conn, sql, (since, time.time())))
        return [(row[0], row[1]) for row in rows]

    async def retire_token(self, retirement: Retirement, user_id: int) -> bool:
        sql = (
            "INSERT INTO retired_tokens (jti, family, user_id, expires_at, grace_until,"
            " retired_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING RETURNING jti"
        )
        r = retirement
        args = (r.jti, r.family, user_id, r.expires_at, r.grace_until, time.time())
        return bool(await self._write(lambda conn: _rows(conn, sql, args)))

    async def retired_since(self, since: float) -> list[Retirement]:
        sql = (
            "SELECT jti, family, expires_at, grace_until FROM retired_tokens"
            " WHERE retired_at >= ? AND expires_at > ? ORDER BY retired_at, jti"
        )
        rows = await self._read(lambda conn: _rows(conn, sql, (since, time.time())))
        return [
            Retirement(jti=row[0], family=row[1], expires_at=row[2], grace_until=row[3])
            for row in rows
        ]

    async def advance_family(
        self, family: str, presented: str, new_head: str, user_id: int, expires_at: int
    ) -> bool:
        sql = (
            "INSERT INTO token_families (family, head, user_id, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (family) DO UPDATE SET head = excluded.head,"
            " expires_at = excluded.expires_at WHERE token_families.head = ?"
            " RETURNING family"
        )
        args = (family, new_head, user_id, expires_at, presented)
        return bool(await self._write(lambda conn: _rows(conn, sql, args)))

    async def family_head(self, family: str) -> str | None:
        sql = "SELECT head FROM token_families WHERE family = ? AND expires_at > ?"
        args = (family, time.time())
        head = await self._read(lambda conn: _scalar(conn, sql, args))
        return None if head is None else str(head)

    async def revoke_family(self, family: str, user_id: int, expires_at: int) -> None:
        sql = (
            "INSERT INTO revoked_families (family, user_id, expires_at, revoked_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (family) DO UPDATE"
            " SET expires_at = excluded.expires_at, revoked_at = excluded.revoked_at"
            " WHERE excluded.expires_at > revoked_families.expires_at"
        )
        args = (family, user_id, expires_at, time.time())

        def job(conn: apsw.Connection) -> None:
            conn.execute(sql, args)

        await self._write(job)

    async def revoked_families_since(self, since: float) -> list[tuple[str, int]]:
        sql = (
            "SELECT family, expires_at FROM revoked_families"
            " WHERE revoked_at >= ? AND expires_at > ? ORDER BY revoked_at, family"
        )
        rows = await self._read(lambda conn: _rows(conn, sql, (since, time.time())))
        return [(row[0], row[1]) for row in rows]

    async def record_login_failure(self, ip: str, username: str, at: float) -> None:
        sql = "INSERT INTO login_failures (ip, username, at) VALUES (?, ?, ?)"

        def job(conn: apsw.Connection) -> None:
            conn.execute(sql, (ip, username.lower(), at))
            self._maybe_prune(conn, at)

        await self._write(job)

    async def login_failures(self, ip: str, since: float) -> list[float]:
        sql = "SELECT at FROM login_failures WHERE ip = ? AND at >= ? ORDER BY at"
        return [row[0] for row in await self._read(lambda conn: _rows(conn, sql, (ip, since)))]

    async def account_failures(self, username: str, since: float) -> int:
        sql = "SELECT count(*) FROM login_failures WHERE username = ? AND at >= ?"
        args = (username.lower(), since)
        return int(await self._read(lambda conn: _scalar(conn, sql, args)))

    async def recent_login_failures(self, since: float) -> list[tuple[str, str, float]]:
        sql = "SELECT ip, username, at FROM login_failures WHERE at >= ? ORDER BY at"
        rows = await self._read(lambda conn: _rows(conn, sql, (since,)))
        return [(row[0], row[1], row[2]) for row in rows]

    async def clear_login_failures(self, *, ip: str | None = None,
                                   username: str | None = None) -> int:
        where, args = failure_filter(ip, username, "?")

        def job(conn: apsw.Connection) -> int:
            conn.execute(f"DELETE FROM login_failures WHERE {where}", args)
            return int(conn.changes())

        return await self._write(job)

    async def reserve_login_attempt(
        self, ip: str, username: str, since: float, decide: LoginDecider
    ) -> float | None:
        name = username.lower()

        def job(conn: apsw.Connection) -> float | None:
            # The one writer runs jobs one at a time: nothing comes between the look and
            # the insert.
            ip_times = [row[0] for row in _rows(conn, _IP_ATTEMPTS, (ip, since))]
            account_times = [row[0] for row in _rows(conn, _ACCOUNT_ATTEMPTS, (name, since))]
            at = decide(ip_times, account_times)
            if at is not None:
                conn.execute(_INSERT_ATTEMPT, (ip, name, at))
                self._maybe_prune(conn, at)
            return at

        return await self._write(job)

    async def release_login_attempt(self, ip: str, username: str, at: float) -> None:
        args = (ip, username.lower(), at)

        def job(conn: apsw.Connection) -> None:
            conn.execute(_DELETE_ATTEMPT, args)

        await self._write(job)

    def _maybe_prune(self, conn: apsw.Connection, now: float) -> None:
        """Now and then drop login failures older than a day and expired revocations."""
        if now - self._last_prune < PRUNE_INTERVAL:
            return
        self._last_prune = now
        conn.execute("DELETE FROM login_failures WHERE at < ?", (now - LOGIN_FAILURE_TTL,))
        for table in ("revoked_tokens", "retired_tokens", "revoked_families", "token_families"):
            conn.execute(f"DELETE FROM {table} WHERE expires_at < ?", (int(now) - 60,))

    # --- messages -------------------------------------------------------------------

    async def submit(self, messages: Sequence[NewMessage]) -> list[Message]:
        if not messages:
            return []
        batch = tuple(messages)
        return await self._write(
            lambda conn: self._insert_messages(conn, batch), messages=len(batch)
        )

    @staticmethod
    def _insert_messages(conn: apsw.Connection, batch: Sequence[NewMessage]) -> list[Message]:
        stored: list[Message] = []
        last: dict[tuple[int, int], int] = {}  # (user, peer) -> newest seq, for conversations
        for new in batch:
            lo, hi = sorted((new.sender_id, new.recipient_id))
            rows = _rows(
                conn,
                _INSERT_MESSAGE,
                (new.sender_id, new.recipient_id, lo, hi, new.client_id, new.body, new.ts),
            )
            if not rows:  # a repeat: answer with the original, whatever the new content
                original = _rows(conn, _EXISTING_MESSAGE, (new.sender_id, new.client_id))
                stored.append(message_from_row(original[0]))
                continue
            seq, ts = rows[0]
            stored.append(
                Message(
                    id=new.client_id,
                    seq=seq,
                    sender=new.sender,
                    recipient=new.recipient,
                    body=new.body,
                    ts=ts,
                )
            )
            last[(new.sender_id, new.recipient_id)] = seq
            last[(new.recipient_id, new.sender_id)] = seq
        if last:
            conn.executemany(_UPSERT_CONVERSATION, [(u, p, s) for (u, p), s in last.items()])
        return stored

    async def mark_delivered(
        self, recipient_id: int, seqs: Sequence[int], now_ms: int
    ) -> list[Message]:
        return (await self.mark_delivered_many([(recipient_id, seqs)], now_ms))[0]

    async def mark_delivered_many(
        self, marks: Sequence[tuple[int, Sequence[int]]], now_ms: int
    ) -> list[list[Message]]:
        wanted = [(recipient_id, sorted(set(seqs))) for recipient_id, seqs in marks]
        if not any(seqs for _, seqs in wanted):
            return [[] for _ in wanted]

        def job(conn: apsw.Connection) -> list[list[Message]]:
            # A seq already marked by an earlier entry no longer matches: each is
            # returned once, by the first entry that asked for it.
            return [
                [
                    message_from_row(row)
                    for seq in seqs
                    for row in _rows(conn, _MARK_DELIVERED, (now_ms, seq, recipient_id))
                ]
                for recipient_id, seqs in wanted
            ]

        return await self._write(job)

    async def mark_read(self, reader_id: int, peer_id: int, up_to: int, now_ms: int) -> ReadResult:
        lo, hi = sorted((reader_id, peer_id))
        last_sql = "SELECT max(seq) FROM messages WHERE pair_lo = ? AND pair_hi = ?"
        deliver_sql = (
            "UPDATE messages SET delivered_at = ?1, read_at = ?1"
            " WHERE recipient_id = ?2 AND sender_id = ?3 AND seq <= ?4 AND delivered_at IS NULL"
            f" RETURNING {_MESSAGE_COLUMNS}"
        )
        read_sql = (
            "UPDATE messages SET read_at = ?1"
            " WHERE recipient_id = ?2 AND sender_id = ?3 AND seq <= ?4 AND read_at IS NULL"
            " RETURNING seq"
        )
        args = (now_ms, reader_id, peer_id, up_to)

        def job(conn: apsw.Connection) -> ReadResult:
            last = _scalar(conn, last_sql, (lo, hi))
            if last is None or up_to > last:  # beyond the conversation: ignored
                return ReadResult(up_to=None, newly_delivered=())
            delivered = sorted(
                (message_from_row(row) for row in _rows(conn, deliver_sql, args)),
                key=lambda m: m.seq,
            )
            read = [row[0] for row in _rows(conn, read_sql, args)]
            marked = [m.seq for m in delivered] + read
            return ReadResult(
                up_to=max(marked) if marked else None, newly_delivered=tuple(delivered)
            )

        return await self._write(job)

    async def undelivered(self, recipient_id: int, after_seq: int, limit: int) -> list[Message]:
        return [queued.message for queued in await self.queued(recipient_id, after_seq, limit)]

    async def queued(self, recipient_id: int, after_seq: int, limit: int) -> list[Queued]:
        sql = (
            f"SELECT {_MESSAGE_COLUMNS}, messages.failed_pushes FROM messages"
            " WHERE recipient_id = ? AND delivered_at IS NULL AND seq > ? ORDER BY seq LIMIT ?"
        )
        args = (recipient_id, after_seq, limit)
        rows = await self._read(lambda conn: _rows(conn, sql, args))
        return [Queued(message=message_from_row(row), failed_pushes=row[8]) for row in rows]

    async def count_failed_pushes(self, recipient_id: int, seqs: Sequence[int]) -> None:
        args = [(seq, recipient_id) for seq in sorted(set(seqs))]
        if not args:
            return
        sql = (
            "UPDATE messages SET failed_pushes = failed_pushes + 1"
            " WHERE seq = ? AND recipient_id = ? AND delivered_at IS NULL"
        )

        def count(conn: apsw.Connection) -> None:
            for seq_and_recipient in args:
                conn.execute(sql, seq_and_recipient)

        await self._write(count)

    async def messages_by_seq(self, seqs: Sequence[int]) -> list[Message]:
        """The stored messages with these seqs, oldest first (same as the PostgreSQL store)."""
        wanted = sorted(set(seqs))
        if not wanted:
            return []
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE seq = ?"

        def read(conn: apsw.Connection) -> list[Message]:
            return [message_from_row(row) for seq in wanted for row in _rows(conn, sql, (seq,))]

        return await self._read(read)

    async def sent_message(self, sender_id: int, client_id: str) -> Message | None:
        args = (sender_id, client_id)
        rows = await self._read(lambda conn: _rows(conn, _EXISTING_MESSAGE, args))
        return message_from_row(rows[0]) if rows else None

    async def history(
        self, user_id: int, peer_id: int, before: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        lo, hi = sorted((user_id, peer_id))
        sql = (
            f"SELECT {_MESSAGE_COLUMNS} FROM messages"
            " WHERE pair_lo = ? AND pair_hi = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
        )
        args = (lo, hi, _NO_SEQ if before is None else before, limit + 1)
        rows = await self._read(lambda conn: _rows(conn, sql, args))
        page = [message_from_row(row) for row in rows[:limit]]
        page.reverse()
        return page, len(rows) > limit

    async def conversations(self, user_id: int) -> list[tuple[str, Message, int]]:
        sql = (
            f"SELECT u.username, {_M_COLUMNS},"
            " (SELECT count(*) FROM messages x WHERE x.recipient_id = c.user_id"
            "  AND x.sender_id = c.peer_id AND x.read_at IS NULL)"
            " FROM conversations c"
            " JOIN messages m ON m.seq = c.last_seq"
            " JOIN users u ON u.id = c.peer_id"
            " WHERE c.user_id = ? ORDER BY c.last_seq DESC"
        )
        rows = await self._read(lambda conn: _rows(conn, sql, (user_id,)))
        return [(row[0], message_from_row(row[1:9]), row[9]) for row in rows]

    async def peers(self, user_id: int) -> list[str]:
        sql = (
            "SELECT u.username FROM conversations c JOIN users u ON u.id = c.peer_id"
            " WHERE c.user_id = ? AND c.peer_id != c.user_id ORDER BY u.username"
        )
        return [row[0] for row in await self._read(lambda conn: _rows(conn, sql, (user_id,)))]

    async def queue_depth(self, recipient_id: int) -> int:
        sql = "SELECT count(*) FROM messages WHERE recipient_id = ? AND delivered_at IS NULL"
        return int(await self._read(lambda conn: _scalar(conn, sql, (recipient_id,))))

    async def stats(self) -> Stats:
        return await self._read(self._stats)

    def _stats(self, conn: apsw.Connection) -> Stats:
        users = _scalar(conn, "SELECT count(*) FROM users")
        messages = _scalar(conn, "SELECT count(*) FROM messages")
        undelivered = _scalar(conn, "SELECT count(*) FROM messages WHERE delivered_at IS NULL")
        pages = _scalar(conn, "PRAGMA page_count") * _scalar(conn, "PRAGMA page_size")
        try:
            wal = os.path.getsize(f"{self.path}-wal")
        except OSError:
            wal = 0
        return Stats(users=users, messages=messages, undelivered=undelivered, db_bytes=pages + wal)

    # --- the writer -----------------------------------------------------------------

    async def _write(
        self, fn: Callable[[apsw.Connection], T], *, messages: int = 0, bare: bool = False
    ) -> T:
        if self._writer is None or self._closing or self._loop is None:
            raise StoreError("the sqlite store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Job(fn, future, messages, bare=bare))
        return await future

    async def _stop_writer(self) -> None:
        """Queue the stop marker behind every write already queued; wait for the thread."""
        writer, loop = self._writer, self._loop
        assert writer is not None and loop is not None
        self._closing = True
        stopped: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Job(None, stopped))
        await stopped
        writer.join()
        self._writer = None

    def _connect(self, *, create: bool) -> apsw.Connection:
        if create:
            _create_private(self.path)
        flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
        conn = apsw.Connection(str(self.path), flags=flags)
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        return conn

    def _connect_writer(self) -> apsw.Connection:
        conn = self._connect(create=True)
        try:
            if str(_scalar(conn, "PRAGMA journal_mode = WAL")).lower() != "wal":
                raise StoreError(f"{self.path}: cannot switch to WAL mode")
            conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
            conn.execute("PRAGMA foreign_keys = ON")
            # Statement journals, and the savepoints of a group run again after a failed
            # job, keep the pages they change for a rollback: otherwise in a temporary file.
            conn.execute("PRAGMA temp_store = MEMORY")
            # Checkpoint every 10,000 WAL pages (40 MiB) instead of 1,000: each index page
            # that many commits rewrote is copied back once, with one fsync of the file.
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            self._data_version = int(_scalar(conn, "PRAGMA data_version"))
        except BaseException:
            conn.close()
            raise
        return conn

    def _call_loop(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.warning("sqlite writer: event loop closed, results dropped")

    def _writer_main(self, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect_writer()
        except Exception as exc:
            error = _as_store_error(exc)
            self._call_loop(_settle, [(ready, None, error)])
            return
        self._call_loop(_settle, [(ready, None, None)])
        stop: list[_Job] = []
        last_start = 0.0
        try:
            while not stop:
                jobs = [self._queue.get()]
                if jobs[0].bare:  # alone: no transaction, and no wait for a group
                    self._run_bare(conn, jobs)
                    continue
                wait = last_start + self.commit_interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)  # let the others of this group join the commit
                last_start = time.monotonic()
                _take_more(self._queue, jobs, MAX_BATCH_JOBS)
                stop = [job for job in jobs if job.fn is None]
                self._run_bare(conn, [job for job in jobs if job.bare])
                work = [job for job in jobs if job.fn is not None and not job.bare]
                if work:
                    self._run_batch(conn, work)
        finally:
            conn.close()  # before waking close(): its join() must not wait on this
        self._call_loop(_settle, [(job.future, None, None) for job in stop])

    def _run_bare(self, conn: apsw.Connection, jobs: list[_Job]) -> None:
        """Run looks at the writer's connection outside any transaction."""
        outcomes: list[_Outcome] = []
        for job in jobs:
            assert job.fn is not None
            try:
                outcomes.append((job.future, job.fn(conn), None))
            except Exception as exc:
                outcomes.append((job.future, None, _as_store_error(exc)))
        if outcomes:
            self._call_loop(_settle, outcomes)

    def _run_batch(self, conn: apsw.Connection, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            try:
                outcomes = self._transaction(conn, jobs, isolated=False)
            except _JobFailed:
                # Undone as a whole: run them again, each in a savepoint of its own, so
                # only the failing job fails.
                outcomes = self._transaction(conn, jobs, isolated=True)
        except Exception as exc:
            if self.write_failure is None:  # one line per outage, not one per commit
                log.error("sqlite commit failed, %d writes lost: %s", len(jobs), exc)
            if not conn.get_autocommit():
                try:
                    conn.execute("ROLLBACK")
                except apsw.Error:
                    log.exception("sqlite rollback failed")
            if _is_disk_full(exc):
                _release_wal(conn)
            self.write_failure = f"{type(exc).__name__}: {exc}"
            outcomes = [(job.future, None, StoreError(f"commit failed: {exc}")) for job in jobs]
        else:
            self.commits += 1
            if self.write_failure is not None:
                log.warning("sqlite commits work again after: %s", self.write_failure)
                self.write_failure = None
        self.last_batch_size = sum(job.messages for job in jobs)
        seconds = time.perf_counter() - started
        self._call_loop(self._finish_batch, outcomes, self.last_batch_size, seconds)

    def _transaction(
        self, conn: apsw.Connection, jobs: list[_Job], *, isolated: bool
    ) -> list[_Outcome]:
        """Run the jobs in one transaction and commit it. Not ``isolated``: a failing
        job rolls everything back and raises :class:`_JobFailed` (savepoints around each
        job cost a fifth of the writer's time at 4,000 msg/s with 10,000 users; failures
        are rare). ``isolated``: each job runs in a savepoint, a failing one is undone
        alone and its error becomes its outcome. Jobs only touch the database, so they
        can run twice."""
        conn.execute("BEGIN IMMEDIATE")
        outcomes: list[_Outcome] = []
        for job in jobs:
            assert job.fn is not None
            if isolated:
                conn.execute("SAVEPOINT job")
            try:
                result = job.fn(conn)
            except Exception as exc:
                if not isolated:
                    conn.execute("ROLLBACK")
                    raise _JobFailed from exc
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((job.future, None, _as_store_error(exc)))
            else:
                if isolated:
                    conn.execute("RELEASE job")
                outcomes.append((job.future, result, None))
        if self._lease is not None and any(job.messages for job in jobs):
            self._lease.cover(_last_seq(conn))  # before the commit: an OSError undoes it
        conn.execute("COMMIT")
        return outcomes

    def _finish_batch(self, outcomes: list[_Outcome], batch_size: int, seconds: float) -> None:
        """On the loop: wake every writer of the batch, then report to metrics."""
        _settle(outcomes)
        if self.on_commit is not None:
            try:
                self.on_commit(batch_size, seconds)
            except Exception:
                log.exception("on_commit hook failed")

    def _migrate_offline(self) -> int:
        """``migrate()`` on a store that is not open: a connection of its own."""
        conn = self._connect_writer()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = _apply_migrations(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return version
        except apsw.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        finally:
            conn.close()

    # --- the readers ----------------------------------------------------------------

    async def _read(self, fn: Callable[[apsw.Connection], T]) -> T:
        if not self._reader_threads or self._loop is None:
            raise StoreError("the sqlite store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._read_queue.put(_Job(fn, future))
        return await future

    def _reader_main(self) -> None:
        """A reader thread: runs queued reads on its own connection and hands each
        group of results to the loop in one call (a connection storm asks for three
        reads per client; a thread pool's future per read cost the loop more than the
        queries)."""
        conn: apsw.Connection | None = None
        try:
            while True:
                jobs = [self._read_queue.get()]
                _take_more(self._read_queue, jobs, MAX_READS_AT_ONCE)
                outcomes: list[_Outcome] = []
                stop = False
                for job in jobs:
                    if job.fn is None:
                        stop = True
                        outcomes.append((job.future, None, None))
                        continue
                    try:
                        if conn is None:
                            conn = self._connect(create=False)
                            conn.execute("PRAGMA query_only = ON")
                        outcomes.append((job.future, job.fn(conn), None))
                    except Exception as exc:
                        outcomes.append((job.future, None, _as_store_error(exc)))
                if outcomes:
                    self._call_loop(_settle, outcomes)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    # --- backup ---------------------------------------------------------------------

    def _backup(self, dest: Path) -> None:
        """Copy page by page inside one read transaction, so the copy is one snapshot."""
        partial = dest.with_name(dest.name + ".partial")
        partial.unlink(missing_ok=True)
        source = self._connect(create=False)
        try:
            _create_private(partial)  # the copy holds what the database holds: 0600 too
            target = apsw.Connection(str(partial))
            try:
                source.execute("BEGIN")
                _scalar(source, "SELECT count(*) FROM sqlite_schema")  # take the snapshot
                with target.backup("main", source, "main") as copy:
                    while not copy.done:
                        copy.step(BACKUP_PAGES_PER_STEP)
                source.execute("COMMIT")
            finally:
                target.close()
        except apsw.Error as exc:
            partial.unlink(missing_ok=True)
            raise StoreError(f"backup failed: {exc}") from exc
        finally:
            source.close()
        os.replace(partial, dest)
