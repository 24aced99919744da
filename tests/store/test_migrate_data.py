"""migrate_data: a SQLite database moved into PostgreSQL, verified, idempotent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import apsw
import psycopg
import pytest
from psycopg import sql

from chatd.migrate_data import migrate_data
from chatd.store.base import NewMessage, SchemaMismatch, Store, StoreError, User
from chatd.store.postgres import PostgresStore
from chatd.store.sqlite import SqliteStore
from tests.support.aio import run
from tests.support.pg import PG_DSN as DSN
from tests.support.pg import fresh_schema

pytestmark = pytest.mark.pg

BODIES = ["hi", "pipes | and\nnewlines\\", "émoji 😀 ok", "x" * 5000, "-", "3:abc"]


@pytest.fixture
def schema() -> Iterator[str]:
    with fresh_schema() as name:
        yield name


def new(sender: User, recipient: User, client_id: str, body: str) -> NewMessage:
    return NewMessage(
        sender_id=sender.id,
        sender=sender.username,
        recipient_id=recipient.id,
        recipient=recipient.username,
        client_id=client_id,
        body=body,
        ts=1_700_000_000_000,
    )


async def fill(path: Path) -> None:
    """A small but varied SQLite database: every column, NULLs and not."""
    store = SqliteStore(path)
    await store.open()
    try:
        alice = await store.create_user("alice", "$argon2id$v=19$a|b", 1_000)
        bob = await store.create_user("bob", "$argon2id$v=19$bob", 2_000)
        carol = await store.create_user("carol", "$argon2id$v=19$carol", 3_000)
        assert alice is not None and bob is not None and carol is not None
        await store.set_password(alice.id, "$argon2id$v=19$new")
        await store.set_disabled(carol.id, True)
        batch = [new(alice, bob, f"a-{i}", body) for i, body in enumerate(BODIES)]
        batch += [new(bob, alice, "b-0", "reply"), new(carol, alice, "c-0", "hello")]
        stored = await store.submit(batch)
        await store.mark_delivered(bob.id, [stored[0].seq, stored[1].seq], 5_000)
        await store.mark_read(bob.id, alice.id, stored[0].seq, 6_000)
        await store.revoke_token("jti-Z", alice.id, 4_000_000_000)
        await store.revoke_token("jti-a", bob.id, 4_000_000_001)
        await store.record_login_failure("10.0.0.1", "alice", 1.5)
    finally:
        await store.close()


async def snapshot(store: Store) -> dict[str, object]:
    """Everything a client could see, through the Store interface."""
    users = await store.list_users()
    by_name = {user.username: user for user in users}
    alice, bob = by_name["alice"], by_name["bob"]
    return {
        "users": users,
        "changed": await store.users_changed_since(0),
        "history": await store.history(alice.id, bob.id, None, 100),
        "conversations": await store.conversations(alice.id),
        "undelivered": await store.undelivered(bob.id, 0, 100),
        "revoked": sorted(await store.revoked_since(0)),
    }


async def sqlite_snapshot(path: Path) -> dict[str, object]:
    store = SqliteStore(path)
    await store.open()
    try:
        return await snapshot(store)
    finally:
        await store.close()


async def pg_snapshot(schema: str) -> dict[str, object]:
    store = PostgresStore(DSN, schema=schema)
    await store.open()
    try:
        return await snapshot(store)
    finally:
        await store.close()


def test_everything_arrives_and_verifies(tmp_path: Path, schema: str) -> None:
    path = tmp_path / "chat.db"

    async def body() -> None:
        await fill(path)
        report = await migrate_data(path, DSN, schema=schema)
        assert report.ok
        assert report.table("users").copied == 3
        assert report.table("messages").copied == len(BODIES) + 2
        assert report.table("revoked_tokens").copied == 2
        assert await pg_snapshot(schema) == await sqlite_snapshot(path)

        store = PostgresStore(DSN, schema=schema)
        await store.open()
        try:  # the sequences moved past the copied ids
            dave = await store.create_user("dave", "h", 9_000)
            alice = await store.user_by_name("alice")
            assert dave is not None and alice is not None
            assert dave.id == 4
            stored = await store.submit([new(dave, alice, "d-0", "new here")])
            assert stored[0].seq == len(BODIES) + 3
        finally:
            await store.close()

    run(body)


def test_a_second_run_changes_nothing_and_a_later_receipt_arrives(
    tmp_path: Path, schema: str
) -> None:
    path = tmp_path / "chat.db"

    async def body() -> None:
        await fill(path)
        assert (await migrate_data(path, DSN, schema=schema)).ok
        again = await migrate_data(path, DSN, schema=schema)
        assert again.ok
        assert [table.copied for table in again.tables] == [0] * len(again.tables)

        store = SqliteStore(path)  # bob reads everything in SQLite after the first run
        await store.open()
        try:
            bob = await store.user_by_name("bob")
            alice = await store.user_by_name("alice")
            assert bob is not None and alice is not None
            result = await store.mark_read(bob.id, alice.id, len(BODIES), 7_000)
            assert result.up_to == len(BODIES)
        finally:
            await store.close()
        third = await migrate_data(path, DSN, schema=schema)
        assert third.ok
        assert third.table("messages").copied == len(BODIES) - 1
        assert await pg_snapshot(schema) == await sqlite_snapshot(path)

    run(body)


def test_a_diverging_target_is_reported(tmp_path: Path, schema: str) -> None:
    path = tmp_path / "chat.db"

    async def body() -> None:
        await fill(path)
        assert (await migrate_data(path, DSN, schema=schema)).ok
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(
                sql.SQL("UPDATE {}.messages SET body = 'edited' WHERE seq = 1").format(
                    sql.Identifier(schema)
                )
            )
        report = await migrate_data(path, DSN, schema=schema)
        assert not report.ok
        messages = report.table("messages")
        assert messages.source_rows == messages.target_rows
        assert messages.source_checksum != messages.target_checksum
        assert report.table("users").ok

    run(body)


def test_an_sqlite_file_of_another_version_is_refused(tmp_path: Path, schema: str) -> None:
    path = tmp_path / "chat.db"

    async def body() -> None:
        await fill(path)
        conn = apsw.Connection(str(path))
        conn.execute("PRAGMA user_version = 99")
        conn.close()
        with pytest.raises(SchemaMismatch):
            await migrate_data(path, DSN, schema=schema)
        with pytest.raises(StoreError):
            await migrate_data(tmp_path / "missing.db", DSN, schema=schema)

    run(body)
