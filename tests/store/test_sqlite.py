"""SQLite-only behaviour of SqliteStore: group commit, sync modes, schema checks, backup.

The behaviour shared with the PostgreSQL store is in the contract suite (test_contract.py).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import apsw
import pytest

from chatd.store.base import SchemaMismatch, StoreError, User
from chatd.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore
from tests.store.test_contract import new
from tests.support.aio import run
from tests.support.poll import apoll

TS = 1_700_000_000_000



async def two_users(store: SqliteStore) -> tuple[User, User]:
    alice = await store.create_user("alice", "hash-a", TS)
    bob = await store.create_user("bob", "hash-b", TS)
    assert alice is not None and bob is not None
    return alice, bob


def pragma(path: Path, name: str) -> object:
    conn = apsw.Connection(str(path))
    try:
        return conn.execute(f"PRAGMA {name}").get
    finally:
        conn.close()


def test_many_submits_share_few_commits(tmp_path: Path) -> None:
    batches: list[int] = []

    async def body() -> None:
        store = SqliteStore(tmp_path / "chat.db")
        store.on_commit = lambda size, seconds: batches.append(size)
        await store.open()
        try:
            alice, bob = await two_users(store)
            before = store.commits
            batches.clear()
            results = await asyncio.gather(
                *(store.submit([new(alice, bob, f"m{i}")]) for i in range(300))
            )
            assert len({stored[0].seq for stored in results}) == 300
            commits = store.commits - before
            assert commits < 300 / 4  # group commit: many submits per transaction
            assert len(batches) == commits  # one wake-up of the loop per batch
            assert sum(batches) == 300
            assert store.last_batch_size == batches[-1]
        finally:
            await store.close()

    run(body)


def test_a_failing_job_does_not_sink_its_batch(tmp_path: Path) -> None:
    async def body() -> None:
        # The 21 submits below are queued while the writer is held by a gate, so they
        # make one group.
        store = SqliteStore(tmp_path / "chat.db")
        await store.open()
        try:
            alice, bob = await two_users(store)
            gate = threading.Event()
            held = asyncio.ensure_future(store._writer.run(lambda conn: gate.wait(10), bare=True))
            before = store.commits
            ghost = User(
                id=9999,
                username="ghost",
                password_hash="",
                disabled=False,
                token_generation=0,
                created_at=0,
            )
            jobs = [store.submit([new(alice, bob, f"ok{i}")]) for i in range(20)]
            jobs.insert(10, store.submit([new(alice, ghost, "bad")]))  # foreign key fails
            tasks = [asyncio.ensure_future(job) for job in jobs]
            await apoll(lambda: store._writer._queue.qsize() == 21, "the 21 jobs queued")
            gate.set()
            await held
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(results[10], StoreError)
            good = [r for i, r in enumerate(results) if i != 10]
            assert all(isinstance(r, list) for r in good)
            assert store.commits - before == 1  # tried together, then each in a savepoint
            assert await store.queue_depth(bob.id) == 20
            assert (await store.stats()).messages == 20
        finally:
            await store.close()

    run(body)


def test_the_sends_and_marks_one_commit_gathers_run_as_one_statement_each(
    tmp_path: Path,
) -> None:
    """Every loop turn's sends are one submit and its delivered marks one job; a commit
    that gathers many turns inserts all their messages with one statement and marks all
    their deliveries with one (each statement step costs the writer a wait for the GIL),
    and still answers each caller with its own messages, marked at its own time."""

    async def body() -> None:
        store = SqliteStore(tmp_path / "chat.db")
        await store.open()
        try:
            alice, bob = await two_users(store)
            first = await store.submit([new(alice, bob, f"old{i}") for i in range(6)])
            statements: list[str] = []

            def trace(cursor: object, sql: str, bindings: object) -> bool:
                statements.append(sql)
                return True

            def watch(conn: apsw.Connection) -> bool:
                conn.exec_trace = trace
                return gate.wait(10)

            gate = threading.Event()
            held = asyncio.ensure_future(store._writer.run(watch, bare=True))
            await apoll(lambda: store._writer._queue.qsize() == 0, "the writer held")
            jobs = [
                store.submit([new(alice, bob, "a1"), new(alice, bob, "a2")]),
                store.mark_delivered_many([(bob.id, [first[0].seq, first[1].seq])], TS + 1),
                store.submit([new(bob, alice, "b1")]),
                store.mark_delivered_many([(bob.id, [first[1].seq, first[2].seq])], TS + 2),
                store.submit([new(alice, bob, "a1")]),  # a repeat: the original back
            ]
            tasks = [asyncio.ensure_future(job) for job in jobs]
            await apoll(lambda: store._writer._queue.qsize() == 5, "the 5 jobs queued")
            gate.set()
            await held
            sent1, marked1, sent2, marked2, repeat = await asyncio.gather(*tasks)
            inserts = [sql for sql in statements if sql.startswith("INSERT INTO messages")]
            updates = [sql for sql in statements if sql.startswith("UPDATE messages")]
            assert (len(inserts), len(updates)) == (1, 1)
            assert [m.id for m in sent1] == ["a1", "a2"] and [m.id for m in sent2] == ["b1"]
            assert sent1[0].seq < sent1[1].seq < sent2[0].seq
            assert repeat == [sent1[0]]
            assert [[(m.seq, m.delivered_at) for m in entry] for entry in marked1] == [
                [(first[0].seq, TS + 1), (first[1].seq, TS + 1)]
            ]
            # first[1] was marked by the earlier call: this one marks first[2] only
            assert [[(m.seq, m.delivered_at) for m in entry] for entry in marked2] == [
                [(first[2].seq, TS + 2)]
            ]
            undelivered = [m.id for m in await store.undelivered(bob.id, 0, 10)]
            assert undelivered == ["old3", "old4", "old5", "a1", "a2"]
        finally:
            await store.close()

    run(body)


def test_sync_normal_works_and_wal_is_on(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"

    async def body() -> None:
        store = SqliteStore(path, sync="normal", readers=1)
        await store.open()
        try:
            alice, bob = await two_users(store)
            await store.submit([new(alice, bob, "n1")])
        finally:
            await store.close()
        again = SqliteStore(path)
        await again.open()
        try:
            assert await again.queue_depth(bob.id) == 1
        finally:
            await again.close()

    run(body)
    assert pragma(path, "journal_mode") == "wal"
    assert pragma(path, "user_version") == SCHEMA_VERSION


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SqliteStore(tmp_path / "x.db", sync="off")
    with pytest.raises(ValueError):
        SqliteStore(tmp_path / "x.db", readers=0)


def test_use_before_open_and_after_close_fails(tmp_path: Path) -> None:
    async def body() -> None:
        store = SqliteStore(tmp_path / "chat.db")
        with pytest.raises(StoreError):
            await store.user_by_id(1)
        with pytest.raises(StoreError):
            await store.create_user("alice", "h", TS)
        await store.open()
        with pytest.raises(StoreError):
            await store.open()
        await store.close()
        await store.close()  # twice is fine
        with pytest.raises(StoreError):
            await store.create_user("alice", "h", TS)
        with pytest.raises(StoreError):
            await store.ping()

    run(body)


def test_unopenable_path_raises_store_error(tmp_path: Path) -> None:
    async def body() -> None:
        store = SqliteStore(tmp_path / "missing-dir" / "chat.db")
        with pytest.raises(StoreError):
            await store.open()

    run(body)


def test_older_schema_is_refused_until_migrated(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"

    async def create() -> None:
        store = SqliteStore(path)
        await store.open()
        await store.close()

    run(create)
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA user_version = 0")  # tables, but an unknown (older) version
    conn.close()

    async def reopen() -> None:
        with pytest.raises(SchemaMismatch) as caught:
            await SqliteStore(path).open()
        assert (caught.value.found, caught.value.expected) == (0, SCHEMA_VERSION)
        assert "chatd migrate" in str(caught.value)

    run(reopen)


def test_migrate_a_fresh_file_without_opening(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"

    async def body() -> None:
        store = SqliteStore(path)
        assert await store.migrate() == SCHEMA_VERSION
        assert await store.migrate() == SCHEMA_VERSION  # idempotent
        await store.open()
        try:
            await store.ping()
        finally:
            await store.close()

    run(body)
    assert pragma(path, "user_version") == SCHEMA_VERSION


def test_backup_is_a_working_copy(tmp_path: Path) -> None:
    copy = tmp_path / "backup" / "copy.db"
    copy.parent.mkdir()

    async def body() -> None:
        store = SqliteStore(tmp_path / "chat.db")
        await store.open()
        try:
            alice, bob = await two_users(store)
            await store.submit([new(alice, bob, f"b{i}") for i in range(50)])
            writes = asyncio.gather(*(store.submit([new(bob, alice, f"w{i}")]) for i in range(50)))
            await store.backup(copy)  # while writes are in flight
            await writes
        finally:
            await store.close()
        restored = SqliteStore(copy)
        await restored.open()
        try:
            stats = await restored.stats()
            assert stats.users == 2
            assert 50 <= stats.messages <= 100
            history, _ = await restored.history(alice.id, bob.id, None, 200)
            assert [m.id for m in history][:50] == [f"b{i}" for i in range(50)]
        finally:
            await restored.close()

    run(body)
    assert not (copy.parent / "copy.db.partial").exists()


def test_old_login_failures_are_pruned(tmp_path: Path) -> None:
    async def body() -> None:
        store = SqliteStore(tmp_path / "chat.db")
        await store.open()
        try:
            day = 24 * 3600.0
            await store.record_login_failure("10.0.0.1", "alice", 1_000_000.0)
            await store.record_login_failure("10.0.0.1", "alice", 1_000_000.0 + 2 * day)
            assert await store.login_failures("10.0.0.1", 0) == [1_000_000.0 + 2 * day]
            assert await store.account_failures("alice", 0) == 1
        finally:
            await store.close()

    run(body)


def test_messages_by_seq(tmp_path: Path) -> None:
    async def body() -> None:
        store = SqliteStore(tmp_path / "chat.db")
        await store.open()
        try:
            alice, bob = await two_users(store)
            sent = await store.submit([new(alice, bob, f"s{i}") for i in range(3)])
            found = await store.messages_by_seq([sent[2].seq, sent[0].seq, 12345])
            assert found == [sent[0], sent[2]]
            assert await store.messages_by_seq([]) == []
        finally:
            await store.close()

    run(body)


def test_changed_elsewhere_sees_other_connections_only(tmp_path: Path) -> None:
    """The server's cheap look for admin changes: its own commits never count, another
    connection's (``chatd user disable``) do, once."""

    async def body() -> None:
        store = SqliteStore(tmp_path / "chat.db")
        await store.open()
        try:
            alice, _ = await two_users(store)
            assert not await store.changed_elsewhere()  # its own commits
            await store.set_disabled(alice.id, True)
            assert not await store.changed_elsewhere()
            other = apsw.Connection(str(tmp_path / "chat.db"))
            other.execute("UPDATE users SET disabled = 0 WHERE id = ?", (alice.id,))
            other.close()
            assert await store.changed_elsewhere()
            assert not await store.changed_elsewhere()
        finally:
            await store.close()

    run(body)


def test_a_version_2_database_migrates_to_count_failed_pushes(tmp_path: Path) -> None:
    """Schema 3 adds messages.failed_pushes: a database of schema 2 with messages is
    refused until ``chatd migrate``, which keeps every message (none failed yet)."""
    path = tmp_path / "chat.db"
    conn = apsw.Connection(str(path))
    for version in (1, 2):
        conn.execute(MIGRATIONS[version])
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO users (id, username, password_hash, created_at)"
                 " VALUES (1, 'alice', 'h', 1), (2, 'bob', 'h', 2)")
    conn.execute("INSERT INTO messages (sender_id, recipient_id, pair_lo, pair_hi, client_id,"
                 " body, ts) VALUES (1, 2, 1, 2, 'old', 'hi', 3)")
    conn.close()

    async def body() -> None:
        with pytest.raises(SchemaMismatch):
            await SqliteStore(path).open()
        store = SqliteStore(path)
        assert await store.migrate() == SCHEMA_VERSION == 3
        await store.open()
        try:
            (queued,) = await store.queued(2, 0, 10)
            assert (queued.message.id, queued.failed_pushes) == ("old", 0)
            await store.count_failed_pushes(2, [queued.message.seq])
            assert [q.failed_pushes for q in await store.queued(2, 0, 10)] == [1]
        finally:
            await store.close()

    run(body)
