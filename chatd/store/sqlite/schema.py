"""The SQLite schema: its migrations, and the check that a database is at this version.

``PRAGMA user_version`` holds the version; migration ``n`` brings a database from
``n - 1`` to ``n``. A brand-new empty file gets the whole schema when the store opens;
anything older waits for ``chatd migrate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import apsw

from chatd.store.base import SchemaMismatch, StoreError
from chatd.store.sqlite.db import connect_writer, log, scalar

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "apply_migrations", "check_schema", "migrate_file"]

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


def _schema_version(conn: apsw.Connection) -> int:
    return int(scalar(conn, "PRAGMA user_version"))


def _is_empty(conn: apsw.Connection) -> bool:
    return int(scalar(conn, "SELECT count(*) FROM sqlite_schema")) == 0


def apply_migrations(conn: apsw.Connection) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION`; call inside a write transaction."""
    found = _schema_version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaMismatch(found, SCHEMA_VERSION)
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.execute(MIGRATIONS[version])
        conn.execute(f"PRAGMA user_version = {version}")
        log.info("store.sqlite.migrated", schema_version=version)
    return SCHEMA_VERSION


def check_schema(conn: apsw.Connection) -> None:
    """Accept the current version; create the schema in a brand-new empty database."""
    found = _schema_version(conn)
    if found == SCHEMA_VERSION:
        return
    if found == 0 and _is_empty(conn):
        apply_migrations(conn)
        return
    raise SchemaMismatch(found, SCHEMA_VERSION)


def migrate_file(path: Path, sync: str) -> int:
    """``migrate()`` of a store that is not open, on a connection of its own. Blocks."""
    conn = connect_writer(path, sync)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = apply_migrations(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return version
    except apsw.Error as exc:
        raise StoreError(f"sqlite: {exc}") from exc
    finally:
        conn.close()
