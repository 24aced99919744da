"""Move a chatd SQLite database into PostgreSQL: users, messages, receipts, revocations.

Run it with chatd stopped (or at least with nothing writing to the SQLite file). It is
idempotent: rows already in PostgreSQL are kept (for messages, a delivered/read time
missing there is filled in), so a second run after an interruption finishes the job and
a third one changes nothing. Seqs and user ids are kept as they are, then the
PostgreSQL sequences are moved past them.

Login failures are not moved: they only matter for a few minutes of rate limiting, and
neither are the messages' counts of failed pushes (a diagnostic, for log lines). The
``conversations`` table is rebuilt from the messages.

Every table is verified afterwards: row counts and a checksum of the rows' canonical
text in primary-key order, computed by SQLite's reader here and by PostgreSQL itself.

The command line, ``chatd migrate-data --from data/chatd.db --to postgresql://...``, is
in :mod:`chatd.migrate_cli`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import apsw
import attrs
import psycopg

from chatd.store.base import SchemaMismatch, StoreError
from chatd.store.postgres import INSERT_LOCK, PostgresStore
from chatd.store.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION

__all__ = ["Report", "TableReport", "migrate_data"]

CHUNK_ROWS: Final = 5000  # rows read from SQLite per step: bounds memory, not speed


@attrs.frozen(kw_only=True)
class TableReport:
    table: str
    source_rows: int
    target_rows: int
    copied: int  # rows this run inserted (or, for messages, gave a missing receipt time)
    source_checksum: str
    target_checksum: str

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_checksum == self.target_checksum


@attrs.frozen(kw_only=True)
class Report:
    tables: tuple[TableReport, ...]

    @property
    def ok(self) -> bool:
        """Every table holds the same rows on both sides."""
        return all(table.ok for table in self.tables)

    def table(self, name: str) -> TableReport:
        return next(table for table in self.tables if table.table == name)


@attrs.frozen(kw_only=True)
class _Table:
    """How one table moves and how its rows are written down for the checksum.

    ``columns`` are read from SQLite and written to PostgreSQL in this order;
    ``canonical`` lists, for each column, the PostgreSQL expression whose text the
    checksum uses, and ``python`` turns the SQLite value into the same text.
    """

    name: str
    key: str
    order: str  # the key in SQLite's order (bytewise for text)
    columns: tuple[str, ...]
    canonical: tuple[str, ...]
    python: tuple[Callable[[Any], str | None], ...]
    on_conflict: str


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _flag(value: Any) -> str:
    return "1" if value else "0"


def _millis(value: float) -> str:
    """A Unix-seconds float as whole milliseconds: float text differs between the two."""
    return str(math.floor(value * 1000))


TABLES: Final[tuple[_Table, ...]] = (
    _Table(
        name="users",
        key="id",
        order="id",
        columns=(
            "id",
            "username",
            "password_hash",
            "disabled",
            "token_generation",
            "created_at",
            "changed_at",
        ),
        canonical=(
            "id::text",
            "username",
            "password_hash",
            "disabled::int::text",
            "token_generation::text",
            "created_at::text",
            "changed_at::text",
        ),
        python=(_text, _text, _text, _flag, _text, _text, _text),
        on_conflict="ON CONFLICT DO NOTHING",
    ),
    _Table(
        name="messages",
        key="seq",
        order="seq",
        columns=(
            "seq",
            "sender_id",
            "recipient_id",
            "client_id",
            "body",
            "ts",
            "delivered_at",
            "read_at",
        ),
        canonical=(
            "seq::text",
            "sender_id::text",
            "recipient_id::text",
            "client_id",
            "body",
            "ts::text",
            "delivered_at::text",
            "read_at::text",
        ),
        python=(_text, _text, _text, _text, _text, _text, _text, _text),
        # A receipt recorded in SQLite after an earlier run still arrives.
        on_conflict="""ON CONFLICT (seq) DO UPDATE SET
            delivered_at = COALESCE(messages.delivered_at, EXCLUDED.delivered_at),
            read_at = COALESCE(messages.read_at, EXCLUDED.read_at)
            WHERE (messages.delivered_at IS NULL AND EXCLUDED.delivered_at IS NOT NULL)
                OR (messages.read_at IS NULL AND EXCLUDED.read_at IS NOT NULL)""",
    ),
    _Table(
        name="revoked_tokens",
        key="jti",
        order='jti COLLATE "C"',
        columns=("jti", "user_id", "expires_at", "revoked_at"),
        canonical=(
            "jti",
            "user_id::text",
            "expires_at::text",
            "floor(revoked_at * 1000)::bigint::text",
        ),
        python=(_text, _text, _text, _millis),
        on_conflict="ON CONFLICT DO NOTHING",
    ),
    _Table(
        name="retired_tokens",
        key="jti",
        order='jti COLLATE "C"',
        columns=("jti", "family", "user_id", "expires_at", "grace_until", "retired_at"),
        canonical=(
            "jti",
            "family",
            "user_id::text",
            "expires_at::text",
            "floor(grace_until * 1000)::bigint::text",
            "floor(retired_at * 1000)::bigint::text",
        ),
        python=(_text, _text, _text, _text, _millis, _millis),
        on_conflict="ON CONFLICT DO NOTHING",
    ),
    _Table(
        name="revoked_families",
        key="family",
        order='family COLLATE "C"',
        columns=("family", "user_id", "expires_at", "revoked_at"),
        canonical=(
            "family",
            "user_id::text",
            "expires_at::text",
            "floor(revoked_at * 1000)::bigint::text",
        ),
        python=(_text, _text, _text, _millis),
        on_conflict="ON CONFLICT DO NOTHING",
    ),
    _Table(
        name="token_families",
        key="family",
        order='family COLLATE "C"',
        columns=("family", "head", "user_id", "expires_at"),
        canonical=("family", "head", "user_id::text", "expires_at::text"),
        python=(_text, _text, _text, _text),
        on_conflict="ON CONFLICT DO NOTHING",
    ),
)


# conversations is derived from messages (each side's newest seq): rebuilt, not copied.
REBUILD_CONVERSATIONS: Final = """
    INSERT INTO conversations (user_id, peer_id, last_seq)
    SELECT user_id, peer_id, max(seq) FROM (
        SELECT sender_id AS user_id, recipient_id AS peer_id, seq FROM messages
        UNION ALL SELECT recipient_id, sender_id, seq FROM messages
    ) sides GROUP BY user_id, peer_id
    ON CONFLICT (user_id, peer_id)
        DO UPDATE SET last_seq = GREATEST(conversations.last_seq, EXCLUDED.last_seq)
"""


def _field(text: str | None) -> str:
    """One field of a row's canonical text: length-prefixed, so rows never run together."""
    return "-" if text is None else f"{len(text)}:{text}"


def _row_digest(table: _Table, row: Sequence[Any]) -> bytes:
    text = "".join(_field(convert(value)) for convert, value in zip(table.python, row, strict=True))
    return hashlib.md5(text.encode()).hexdigest().encode()


def _pg_checksum_query(table: _Table) -> str:
    """count(*) and the md5 of the rows' md5s in key order, as :func:`_row_digest` makes them."""
    fields = " || ".join(
        f"coalesce(length({expr}) || ':' || {expr}, '-')" for expr in table.canonical
    )
    return (
        f"SELECT count(*), md5(coalesce(string_agg(md5({fields}), '' ORDER BY {table.order}), ''))"
        f" FROM {table.name}"
    )


class _Source:
    """The SQLite file, read in one read transaction so every table is one snapshot."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise StoreError(f"{path}: no such SQLite database")
        self.conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        self.in_transaction = False

    def begin(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchall()[0][0]
        assert isinstance(version, int)
        if version != SQLITE_SCHEMA_VERSION:
            raise SchemaMismatch(version, SQLITE_SCHEMA_VERSION)
        self.conn.execute("BEGIN")
        self.in_transaction = True

    def chunk(self, table: _Table, after: Any) -> list[tuple[Any, ...]]:
        """The next CHUNK_ROWS rows in key order with key > ``after`` (None: from the start)."""
        columns = ", ".join(table.columns)
        where = "" if after is None else f"WHERE {table.key} > ?"
        query = f"SELECT {columns} FROM {table.name} {where} ORDER BY {table.key} LIMIT ?"
        args = (CHUNK_ROWS,) if after is None else (after, CHUNK_ROWS)
        return [tuple(row) for row in self.conn.execute(query, args)]

    def close(self) -> None:
        if self.in_transaction:
            self.conn.execute("COMMIT")
        self.conn.close()


async def _copy_table(
    source: _Source, target: psycopg.AsyncConnection[Any], table: _Table
) -> tuple[int, int, str]:
    """Copy one table through a temporary staging table; ``(source rows, copied, md5)``."""
    stage = f"stage_{table.name}"
    columns = ", ".join(table.columns)
    # with the defaults of the columns not copied (messages.failed_pushes starts at 0)
    await target.execute(
        f"CREATE TEMP TABLE {stage} (LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DROP"
    )
    digest = hashlib.md5()
    count = 0
    after: Any = None
    while rows := await asyncio.to_thread(source.chunk, table, after):
        async with target.cursor().copy(f"COPY {stage} ({columns}) FROM STDIN") as copy:
            for row in rows:
                await copy.write_row(row)
                digest.update(_row_digest(table, row))
        count += len(rows)
        after = rows[-1][0]
    cur = await target.execute(
        f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {stage}"
        f" ORDER BY {table.key} {table.on_conflict}"
    )
    return count, max(cur.rowcount, 0), digest.hexdigest()


async def migrate_data(
    sqlite_path: str | Path, pg_url: str, *, schema: str | None = None
) -> Report:
    """Copy the SQLite database at ``sqlite_path`` into PostgreSQL at ``pg_url``.

    The PostgreSQL schema (``schema``, default ``public``) is created or upgraded first.
    Everything is copied in one PostgreSQL transaction.

    Raises:
        SchemaMismatch: the SQLite file is not at the version this chatd knows.
        StoreError: either database cannot be read or written.
    """
    store = PostgresStore(pg_url, schema=schema)
    await store.migrate()
    try:
        source = await asyncio.to_thread(_Source, Path(sqlite_path))
    except apsw.Error as exc:
        raise StoreError(f"{sqlite_path}: {exc}") from exc
    copied: dict[str, tuple[int, int, str]] = {}
    try:
        await asyncio.to_thread(source.begin)
        async with await store.connect() as target, target.transaction():
            # Message-inserting nodes take this lock too: none slips in between the
            # copy and the sequence moves below.
            await target.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (INSERT_LOCK, store.schema)
            )
            for table in TABLES:
                copied[table.name] = await _copy_table(source, target, table)
            await target.execute(REBUILD_CONVERSATIONS)
            for name, key in (("users", "id"), ("messages", "seq")):
                await target.execute(
                    f"SELECT setval(pg_get_serial_sequence('{name}', '{key}'),"
                    f" coalesce((SELECT max({key}) FROM {name}), 0) + 1, false)"
                )
    except apsw.Error as exc:
        raise StoreError(f"{sqlite_path}: {exc}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"copy into PostgreSQL failed: {exc}") from exc
    finally:
        await asyncio.to_thread(source.close)
    return await _verify(store, copied)


async def _verify(store: PostgresStore, copied: dict[str, tuple[int, int, str]]) -> Report:
    reports: list[TableReport] = []
    try:
        async with await store.connect() as target:
            for table in TABLES:
                cur = await target.execute(_pg_checksum_query(table))
                row = await cur.fetchone()
                assert row is not None
                source_rows, inserted, source_checksum = copied[table.name]
                reports.append(
                    TableReport(
                        table=table.name,
                        source_rows=source_rows,
                        target_rows=int(row[0]),
                        copied=inserted,
                        source_checksum=source_checksum,
                        target_checksum=str(row[1]),
                    )
                )
    except psycopg.Error as exc:
        raise StoreError(f"verification query failed: {exc}") from exc
    return Report(tables=tuple(reports))
