"""PostgreSQL-only behaviour of PostgresStore: several nodes on one schema, migrations.

The behaviour shared with the SQLite store is in the contract suite (test_contract.py).
Each test works in its own schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import pq, sql
from psycopg_pool import AsyncConnectionPool

from chatd.store.base import SchemaMismatch, StoreError, StoreUnavailable, User
from chatd.store.postgres import INSERT_LOCK, MIGRATIONS, PostgresStore, pool
from chatd.store.postgres.pool import _is_quiet
from tests.faults.pgproxy import Outage
from tests.store.test_contract import new
from tests.support.aio import run
from tests.support.pg import PG_DSN as DSN
from tests.support.pg import fresh_schema
from tests.support.poll import apoll

pytestmark = pytest.mark.pg
T = TypeVar("T")


@pytest.fixture
def schema() -> Iterator[str]:
    with fresh_schema() as name:
        yield name


@contextlib.asynccontextmanager
async def one_connection(schema: str) -> AsyncIterator[PostgresStore]:
    """An open store with one pooled connection: every statement on it is traceable
    (see round_trips)."""
    store = PostgresStore(DSN, schema=schema, min_size=1, max_size=1)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def two_users(store: PostgresStore) -> tuple[User, User]:
    alice = await store.create_user("alice", "hash-a", 1)
    bob = await store.create_user("bob", "hash-b", 2)
    assert alice is not None
    assert bob is not None
    return alice, bob


async def value(conn: psycopg.AsyncConnection[Any], query: str, *params: object) -> object:
    """The first column of the first row of ``query`` on ``conn``."""
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def waiting_for_the_insert_lock(admin: psycopg.AsyncConnection[Any],
                                      store: PostgresStore) -> object:
    """How many of ``store``'s connections wait for an advisory lock (its writer's, for
    the insert lock the test holds)."""
    return await value(
        admin,
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = %s",
        store.application_name,
    )


@contextlib.asynccontextmanager
async def proxied(schema: str) -> AsyncIterator[tuple[PostgresStore, Outage, Any]]:
    """An open store whose connections go through an :class:`Outage` proxy (so the test
    can cut them), the proxy, and a connection of the test's own, straight to PostgreSQL
    (autocommit)."""
    outage = await Outage.to(DSN)
    store = PostgresStore(outage.route(DSN), schema=schema, min_size=1, max_size=2)
    await store.open()
    admin = await psycopg.AsyncConnection.connect(DSN, autocommit=True)
    try:
        yield store, outage, admin
    finally:
        await admin.close()
        await store.close()
        outage.close()


def test_two_nodes_get_distinct_seqs_in_commit_order(schema: str) -> None:
    """Seqs from two nodes never become visible out of order to a reader."""

    async def body() -> None:
        node_a = PostgresStore(DSN, schema=schema)
        node_b = PostgresStore(DSN, schema=schema)
        await node_a.open()
        await node_b.open()
        alice, bob = await two_users(node_a)
        done = asyncio.Event()
        out_of_order: list[tuple[int, int]] = []

        async def observe() -> None:
            seen: set[int] = set()
            async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
                await conn.execute(f'SET search_path TO "{schema}"')
                while not done.is_set():
                    cur = await conn.execute("SELECT seq FROM messages")
                    visible = {row[0] for row in await cur.fetchall()}
                    newest = max(seen, default=0)
                    out_of_order.extend((seq, newest) for seq in visible - seen if seq < newest)
                    seen = visible
                    await asyncio.sleep(0)

        async def send(node: PostgresStore, name: str, sender: User, to: User) -> list[int]:
            seqs: list[int] = []
            for i in range(25):
                batch = [new(sender, to, f"{name}-{i}-{j}") for j in range(3)]
                seqs += [m.seq for m in await node.submit(batch)]
            return seqs

        observer = asyncio.create_task(observe())
        try:
            seqs_a, seqs_b = await asyncio.gather(
                send(node_a, "a", alice, bob), send(node_b, "b", bob, alice)
            )
        finally:
            done.set()
            await observer
            await node_a.close()
            await node_b.close()
        assert len(set(seqs_a) | set(seqs_b)) == 150
        assert seqs_a == sorted(seqs_a)
        assert seqs_b == sorted(seqs_b)
        assert out_of_order == []

    run(body)


def test_same_client_id_on_two_nodes_at_once_is_stored_once(schema: str) -> None:
    async def body() -> None:
        node_a = PostgresStore(DSN, schema=schema)
        node_b = PostgresStore(DSN, schema=schema)
        await node_a.open()
        await node_b.open()
        try:
            alice, bob = await two_users(node_a)
            for i in range(10):
                first, second = await asyncio.gather(
                    node_a.submit([new(alice, bob, f"dup-{i}", "first")]),
                    node_b.submit([new(alice, bob, f"dup-{i}", "second")]),
                )
                assert first == second
            undelivered = await node_b.undelivered(bob.id, 0, 100)
            assert [m.id for m in undelivered] == [f"dup-{i}" for i in range(10)]
        finally:
            await node_a.close()
            await node_b.close()

    run(body)


def test_repeat_in_one_batch_and_across_batches_returns_the_original(schema: str) -> None:
    async def body() -> None:
        store = PostgresStore(DSN, schema=schema)
        await store.open()
        try:
            alice, bob = await two_users(store)
            one, two = await asyncio.gather(
                store.submit([new(alice, bob, "x", "one"), new(alice, bob, "x", "two")]),
                store.submit([new(bob, alice, "x", "from bob")]),
            )
            assert store.commits == 1  # both submits went into one transaction
            assert one[0] == one[1]
            assert one[0].body == "one"
            assert two[0].sender == "bob"
            assert two[0].seq != one[0].seq
            again = await store.submit([new(alice, alice, "x", "changed")])
            assert again == [one[0]]  # the original recipient and body, whatever the repeat
        finally:
            await store.close()

    run(body)


async def round_trips(store: PostgresStore, work: Callable[[], Awaitable[T]]) -> tuple[int, T]:
    """``work()``'s result, and the round trips to the server (its ReadyForQuery
    messages) on the store's pooled connection, the only one (``max_size=1``), while it
    ran; from libpq's trace."""
    async with store._db.pool.connection() as conn:
        pass  # checked now: the writer's checkout takes the quiet connection unchecked
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            result = await work()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        count = sum(line.split("\t")[:3] == ["B", "5", "ReadyForQuery"] for line in trace)
        return count, result


def test_a_batch_commits_in_one_round_trip(schema: str) -> None:
    """A batch is one statement, its own transaction: one round trip (it was five:
    BEGIN, the lock, the insert, the conversations, COMMIT). Repeats of an earlier
    commit cost one more, to read what was stored."""

    async def body() -> None:
        async with one_connection(schema) as store:
            alice, bob = await two_users(store)
            count, (first, second) = await round_trips(store, lambda: asyncio.gather(
                store.submit([new(alice, bob, "a"), new(alice, bob, "b")]),
                store.submit([new(bob, alice, "c"), new(alice, bob, "a", "repeat")]),
            ))
            assert count == 1
            assert store.commits == 1  # both submits in one batch
            assert second[1] == first[0]
            count, stored = await round_trips(store, lambda: store.submit(
                [new(alice, bob, "b", "again"), new(alice, bob, "d")]
            ))
            assert count == 2
            assert stored[0] == first[1]
            conversations = await store.conversations(alice.id)
            assert [(peer, m.id) for peer, m, _ in conversations] == [("bob", "d")]

    run(body)


def test_delivered_marks_asked_for_together_share_one_statement(schema: str) -> None:
    """Calls made in one loop turn (or while a mark statement is on the wire, see
    tests/store/test_marks.py) share one statement: it was one per call, a call per
    loop turn. Each gets its own entries' results, a seq asked for twice going to the
    earliest; a call whose marks fail the statement fails alone."""

    async def body() -> None:
        async with one_connection(schema) as store:
            alice, bob = await two_users(store)
            m = await store.submit([new(alice, bob, f"m{i}") for i in range(4)])
            count, (first, second, third) = await round_trips(store, lambda: asyncio.gather(
                store.mark_delivered_many([(bob.id, [m[0].seq])], 10),
                store.mark_delivered_many([(bob.id, [m[1].seq, m[2].seq])], 11),
                store.mark_delivered(bob.id, [m[2].seq, m[3].seq], 12),
            ))
            assert count == 1
            assert [x.seq for x in first[0]] == [m[0].seq]
            assert [x.seq for x in second[0]] == [m[1].seq, m[2].seq]
            assert [x.seq for x in third] == [m[3].seq]

            more = await store.submit([new(alice, bob, "n")])
            bad, good = await asyncio.gather(
                store.mark_delivered(bob.id, [2**63], 14),  # out of bigint's range
                store.mark_delivered(bob.id, [more[0].seq], 14),
                return_exceptions=True,
            )
            assert isinstance(bad, StoreError)
            assert isinstance(good, list)
            assert [x.seq for x in good] == [more[0].seq]

    run(body)


def test_peer_lists_asked_for_together_share_one_statement(schema: str) -> None:
    """Peer lists asked for while one is being read (a thousand users connecting at
    once, each loading its peers) are read together: one statement, each caller its own
    user's peers in order, none for a user without conversations. It was one each."""

    async def body() -> None:
        async with one_connection(schema) as store:
            alice, bob = await two_users(store)
            carol = await store.create_user("carol", "hash-c", 3)
            dave = await store.create_user("dave", "hash-d", 4)
            assert carol is not None and dave is not None
            await store.submit([new(alice, bob, "a1"), new(carol, alice, "c1")])
            count, lists = await round_trips(store, lambda: asyncio.gather(
                *(store.peers(user.id) for user in (alice, bob, carol, dave, alice))
            ))
            assert count == 1
            assert lists == [["bob", "carol"], ["alice"], ["alice"], [], ["bob", "carol"]]
            lists[0].append("changed")  # each caller's list is its own
            assert await store.peers(alice.id) == ["bob", "carol"]

    run(body)


def test_catch_ups_asked_for_together_share_one_statement(schema: str) -> None:
    """Catch-ups asked for while one is being read (users connecting at once) are read
    together: one statement, each caller its own recipient's undelivered messages after
    its seq, oldest first, at most its limit. It was one each."""

    async def body() -> None:
        async with one_connection(schema) as store:
            alice, bob = await two_users(store)
            carol = await store.create_user("carol", "hash-c", 3)
            assert carol is not None
            to_bob = await store.submit([new(alice, bob, f"b{i}") for i in range(4)])
            to_alice = await store.submit([new(bob, alice, "a0")])
            await store.mark_delivered(bob.id, [to_bob[1].seq], 10)
            count, answers = await round_trips(store, lambda: asyncio.gather(
                store.queued(bob.id, 0, 10),
                store.queued(bob.id, to_bob[0].seq, 1),
                store.queued(alice.id, 0, 10),
                store.queued(carol.id, 0, 10),
            ))
            assert count == 1
            seqs = [[q.message.seq for q in answer] for answer in answers]
            assert seqs == [
                [to_bob[0].seq, to_bob[2].seq, to_bob[3].seq],
                [to_bob[2].seq],
                [to_alice[0].seq],
                [],
            ]
            assert answers[0][0].message == to_bob[0] and answers[0][0].failed_pushes == 0

    run(body)


def test_users_asked_for_together_by_id_share_one_statement(schema: str) -> None:
    """Users looked up by id while one is being read (the sign-ins of users connecting
    at once) are read together: one statement, each caller its own user or None. A
    lookup made after a change waits for a statement that sees it."""

    async def body() -> None:
        async with one_connection(schema) as store:
            alice, bob = await two_users(store)
            count, found = await round_trips(store, lambda: asyncio.gather(
                store.user_by_id(alice.id), store.user_by_id(bob.id),
                store.user_by_id(10_000), store.user_by_id(alice.id),
            ))
            assert count == 1
            assert found == [alice, bob, None, alice]
            await store.set_disabled(bob.id, True)
            changed = await store.user_by_id(bob.id)
            assert changed is not None and changed.disabled

    run(body)


def test_a_batch_draws_no_seq_before_it_holds_the_insert_lock(schema: str) -> None:
    """The insert lock comes before the first seq: while another session holds it, a
    batch waits without drawing one (a seq drawn before the lock could commit after a
    later one), and goes on once it is released."""

    async def body() -> None:
        store = PostgresStore(DSN, schema=schema)
        await store.open()
        try:
            alice, bob = await two_users(store)
            (first,) = await store.submit([new(alice, bob, "first")])
            async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as admin:
                await admin.execute(f'SET search_path TO "{schema}"')
                await value(admin, "SELECT pg_advisory_lock(%s, hashtext(%s))",
                            INSERT_LOCK, schema)
                sending = asyncio.create_task(
                    store.submit([new(alice, bob, "second"), new(alice, bob, "third")])
                )
                await apoll(lambda: waiting_for_the_insert_lock(admin, store),
                            "the writer to wait for the insert lock")
                last = await value(admin, "SELECT last_value FROM messages_seq_seq")
                assert last == first.seq
                await value(admin, "SELECT pg_advisory_unlock(%s, hashtext(%s))",
                            INSERT_LOCK, schema)
                stored = await sending
            assert [m.seq for m in stored] == [first.seq + 1, first.seq + 2]
        finally:
            await store.close()

    run(body)


def test_a_bad_submit_fails_alone_and_the_writer_goes_on(schema: str) -> None:
    async def body() -> None:
        commits: list[int] = []
        store = PostgresStore(DSN, schema=schema, on_commit=lambda n, _s: commits.append(n))
        await store.open()
        try:
            alice, bob = await two_users(store)
            ghost = User(
                id=999_999,
                username="ghost",
                password_hash="",
                disabled=False,
                token_generation=0,
                created_at=0,
            )
            lost, kept = await asyncio.gather(
                store.submit([new(alice, ghost, "lost")]),
                store.submit([new(alice, bob, "kept")]),
                return_exceptions=True,
            )
            assert isinstance(lost, StoreError)
            assert isinstance(kept, list)
            assert kept[0].id == "kept"
            assert commits == [1]  # the batch failed, then each submit was tried alone
            later = await store.submit([new(alice, bob, "later")])
            assert later[0].seq > kept[0].seq
            assert commits == [1, 1]
        finally:
            await store.close()

    run(body)


def test_a_batch_whose_connection_is_cut_goes_again_on_a_new_one(schema: str) -> None:
    """The writer's connection cut while its insert runs (a network blip, or a backend
    gone without a word: 'server closed the connection unexpectedly', seen now and then
    when backends are terminated under load): the batch runs again on a new connection,
    its sender gets the stored message, and the message is stored once, whether the cut
    insert committed or not. The sends failed (answered internal_error) before. Here the
    insert waits for the insert lock, which the test holds, while the proxy cuts it."""

    async def body() -> None:
        async with proxied(schema) as (store, outage, admin):
            alice, bob = await two_users(store)
            await value(admin, "SELECT pg_advisory_lock(%s, hashtext(%s))", INSERT_LOCK, schema)
            sending = asyncio.create_task(store.submit([new(alice, bob, "cut")]))
            await apoll(lambda: waiting_for_the_insert_lock(admin, store),
                        "the writer to wait for the insert lock")
            outage.down()  # cuts every connection of the store
            outage.up()
            await apoll(lambda: waiting_for_the_insert_lock(admin, store),
                        "the batch to wait again, on a new connection")
            await value(admin, "SELECT pg_advisory_unlock(%s, hashtext(%s))", INSERT_LOCK, schema)
            (stored,) = await asyncio.wait_for(sending, 10)
            assert stored.id == "cut"
            count = await value(
                admin, sql.SQL("SELECT count(*) FROM {}.messages").format(sql.Identifier(schema))
            )
            assert count == 1

    run(body)


def test_a_read_whose_connection_is_cut_goes_again_on_a_new_one(schema: str) -> None:
    """A read cut without a word (as the writer's insert above) runs again on a new
    connection: it changes nothing. It failed (StoreUnavailable): for the read of
    messages another node announced, the node then pushed every local user's undelivered
    messages again. Here the read waits for a lock the test holds on the table."""

    async def body() -> None:
        async with proxied(schema) as (store, outage, admin):
            alice, bob = await two_users(store)
            stored = await store.submit([new(alice, bob, "read")])
            await admin.execute("BEGIN")
            await admin.execute(sql.SQL("LOCK TABLE {}.messages IN ACCESS EXCLUSIVE MODE")
                                .format(sql.Identifier(schema)))
            reading = asyncio.create_task(store.messages_by_seq([stored[0].seq]))

            async def reads_waiting() -> bool:
                async with await psycopg.AsyncConnection.connect(DSN) as look:
                    cur = await look.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                        " AND wait_event_type = 'Lock'", (store.application_name,))
                    row = await cur.fetchone()
                    return row is not None and row[0] > 0

            await apoll(reads_waiting, "the read to wait for the table lock")
            outage.down()  # cuts every connection of the store
            outage.up()
            await apoll(reads_waiting, "the read to wait again, on a new connection")
            await admin.execute("COMMIT")
            assert await asyncio.wait_for(reading, 10) == stored

    run(body)


def test_close_finishes_queued_writes(schema: str) -> None:
    async def body() -> None:
        store = PostgresStore(DSN, schema=schema)
        await store.open()
        alice, bob = await two_users(store)
        pending = [asyncio.create_task(store.submit([new(alice, bob, f"q{i}")])) for i in range(5)]
        await asyncio.sleep(0)  # let the submits queue
        await store.close()
        results = [task.result() for task in pending]
        assert sorted(r[0].id for r in results) == [f"q{i}" for i in range(5)]
        with pytest.raises(StoreError):
            await store.submit([new(alice, bob, "late")])

    run(body)


def test_nodes_opening_at_once_on_a_fresh_schema_all_succeed(schema: str) -> None:
    async def body() -> None:
        nodes = [PostgresStore(DSN, schema=schema) for _ in range(3)]
        await asyncio.gather(*(node.open() for node in nodes))
        try:
            for node in nodes:
                await node.ping()
            assert await nodes[0].migrate() == PostgresStore.schema_version
        finally:
            await asyncio.gather(*(node.close() for node in nodes))

    run(body)


def test_open_migrates_an_existing_empty_schema(schema: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')

    async def body() -> None:
        store = PostgresStore(DSN, schema=schema)
        await store.open()
        try:
            assert (await store.stats()).users == 0
        finally:
            await store.close()

    run(body)


def test_schema_of_another_version_is_refused(schema: str) -> None:
    async def body() -> None:
        store = PostgresStore(DSN, schema=schema)
        assert await store.migrate() == PostgresStore.schema_version
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'UPDATE "{schema}".schema_version SET version = 99')
        with pytest.raises(SchemaMismatch) as info:
            await store.open()
        assert (info.value.found, info.value.expected) == (99, PostgresStore.schema_version)
        with pytest.raises(SchemaMismatch):
            await store.migrate()

    run(body)


def test_unreachable_database_is_a_store_error() -> None:
    async def body() -> None:
        store = PostgresStore("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")
        with pytest.raises(StoreError):
            await store.open()

    run(body)


def test_messages_by_seq(schema: str) -> None:
    async def body() -> None:
        store = PostgresStore(DSN, schema=schema)
        await store.open()
        try:
            alice, bob = await two_users(store)
            stored = await store.submit([new(alice, bob, f"m{i}") for i in range(3)])
            wanted = [stored[2].seq, stored[0].seq, 10_000]
            assert await store.messages_by_seq(wanted) == [stored[0], stored[2]]
            assert await store.messages_by_seq([]) == []
        finally:
            await store.close()

    run(body)


def test_a_burst_of_other_queries_leaves_the_live_path_its_connections(schema: str) -> None:
    """Sends, delivered and read marks and the reads of messages other nodes announce
    do not queue behind a burst of other queries (a thousand users connecting at once:
    their tokens, catch-ups and peers): those share all but LIVE_RESERVED of the pool's
    connections. Here the burst's queries wait on a lock the test holds, as long as it
    likes; the live path must get through meanwhile."""
    lock = 0x43480099

    async def body() -> None:
        store = PostgresStore(DSN, schema=schema, min_size=1, max_size=4)
        await store.open()
        holder = await psycopg.AsyncConnection.connect(DSN, autocommit=True)
        burst: list[asyncio.Task[list[tuple[object, ...]]]] = []
        try:
            alice, bob = await two_users(store)
            await holder.execute("SELECT pg_advisory_lock(%s)", (lock,))
            burst = [
                asyncio.create_task(
                    store._db.fetchall("SELECT pg_advisory_xact_lock(%s)", (lock,), bound=None)
                )
                for _ in range(8)
            ]

            async def burst_holds_connections() -> bool:
                cur = await holder.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND objid::bigint = %s AND NOT granted",
                    (lock,),
                )
                row = await cur.fetchone()
                return row is not None and row[0] >= 2

            await apoll(burst_holds_connections, "the burst holds connections")

            async def live() -> None:
                stored = await store.submit([new(alice, bob, "m1"), new(alice, bob, "m2")])
                assert await store.messages_by_seq([m.seq for m in stored]) == stored
                marked = await store.mark_delivered(bob.id, [stored[0].seq], 10)
                assert [m.seq for m in marked] == [stored[0].seq]
                read = await store.mark_read(bob.id, alice.id, stored[1].seq, 11)
                assert read.up_to == stored[1].seq

            await asyncio.wait_for(live(), 10)
            assert not any(task.done() for task in burst)
        finally:
            await holder.close()  # lets the burst through
            await asyncio.gather(*burst, return_exceptions=True)
            await store.close()

    run(body)


def test_queries_queued_behind_answered_ones_wait_past_the_bound(schema: str) -> None:
    """Queries off the live path waiting for their turn while the database answers the
    ones ahead wait past OP_BOUND (load, not an outage: the catch-ups of a thousand users
    connecting at once); they failed as 'no answer within 2.0 s' and closed connections.
    Queued behind a query the database does not answer, they fail after the bound."""
    lock = 0x43480098
    slow = pool.OP_BOUND * 0.3  # each query's seconds: six one after the other pass the bound

    async def body() -> None:
        store = PostgresStore(DSN, schema=schema, min_size=1, max_size=pool.LIVE_RESERVED + 1)
        await store.open()
        holder = await psycopg.AsyncConnection.connect(DSN, autocommit=True)
        try:
            queued = [store._db.fetchall("SELECT pg_sleep(%s)", (slow,)) for _ in range(6)]
            assert len(await asyncio.gather(*queued)) == 6
            assert not store._db.outage.down

            await holder.execute("SELECT pg_advisory_lock(%s)", (lock,))
            started = time.monotonic()
            stuck = await asyncio.gather(
                *(store._db.fetchall("SELECT pg_advisory_xact_lock(%s)", (lock,))
                  for _ in range(3)),
                return_exceptions=True,
            )
            assert all(isinstance(outcome, StoreUnavailable) for outcome in stuck)
            assert time.monotonic() - started < pool.QUEUE_BOUND
        finally:
            await holder.close()
            await store.close()

    run(body)


def test_a_query_waiting_behind_an_unanswered_one_fails_within_the_bound_of_its_own(
    schema: str,
) -> None:
    """In an outage, a query is answered (StoreUnavailable) within OP_BOUND of when it was
    asked, however long it queued: for a turn of the pool (the bug: its turn came when
    the query ahead failed, and then it waited a whole bound more), or for the gathered
    statement ahead of it (the same). Here the queries ahead wait on locks the test
    holds; the second of each pair is asked half a bound after the first."""
    lock = 0x43480097
    late = pool.OP_BOUND / 2

    async def asked_late(first: Awaitable[object], second: Callable[[], Awaitable[object]],
                         ) -> float:
        """Seconds from asking ``second`` (``late`` s after ``first``) to its failure."""
        ahead = asyncio.ensure_future(first)
        await asyncio.sleep(late)  # pacing the second ask, not waiting for a state
        asked = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await second()
        took = time.monotonic() - asked
        with pytest.raises(StoreUnavailable):
            await ahead
        return took

    async def body() -> None:
        turns = PostgresStore(DSN, schema=schema, min_size=1, max_size=pool.LIVE_RESERVED + 1)
        gathered = PostgresStore(DSN, schema=schema, min_size=1, max_size=2)
        await turns.open()
        await gathered.open()
        alice, bob = await two_users(gathered)
        holder = await psycopg.AsyncConnection.connect(DSN, autocommit=True)
        try:
            await holder.execute("SELECT pg_advisory_lock(%s)", (lock,))
            await holder.execute("BEGIN")
            await holder.execute(
                sql.SQL("LOCK TABLE {}.conversations IN ACCESS EXCLUSIVE MODE").format(
                    sql.Identifier(schema)))

            def stuck() -> Awaitable[object]:  # off the live path: it takes a turn
                return turns._db.fetchall("SELECT pg_advisory_xact_lock(%s)", (lock,))

            for took in await asyncio.gather(
                asked_late(stuck(), stuck),
                asked_late(gathered.peers(alice.id), lambda: gathered.peers(bob.id)),
            ):
                assert took < pool.OP_BOUND + 0.5
        finally:
            await holder.close()
            await turns.close()
            await gathered.close()

    run(body)


def test_store_recovers_from_killed_connections(schema: str) -> None:
    """A server restart or a killed backend costs at most the calls in flight."""

    async def body() -> None:
        store = PostgresStore(DSN, schema=schema, min_size=2)
        await store.open()
        try:
            alice, bob = await two_users(store)
            await store.submit([new(alice, bob, "before")])
            async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as admin:
                cur = await admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (store.application_name,),
                )
                row = await cur.fetchone()
                assert row is not None
                assert row[0] >= 1
            stored = await store.submit([new(alice, bob, "after")])
            assert stored[0].id == "after"
            assert [m.id for m in await store.undelivered(bob.id, 0, 10)] == ["before", "after"]
        finally:
            await store.close()

    run(body)


def test_only_a_connection_with_news_is_checked_with_a_round_trip() -> None:
    """The pool checks a connection it hands out by asking the server only when
    something arrived on it since its last query: a terminated backend's error, or the
    end of its socket. A quiet one costs no round trip (issue 17)."""

    async def body() -> None:
        async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
            await conn.execute("SELECT 1")
            assert _is_quiet(conn)
            async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as admin:
                await admin.execute(
                    "SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,)
                )
            await apoll(lambda: not _is_quiet(conn), "the terminated backend to speak")
            with pytest.raises(psycopg.OperationalError):
                await AsyncConnectionPool.check_connection(conn)

    run(body)


def test_statements_on_quiet_connections_the_server_ended_run_again(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pooled backend ended, and (as in the moment before they say so) every
    connection taken for quiet: a submit and a read each fail once with SQLSTATE 57P01,
    never committed, and run again on a checked connection; nothing fails or repeats."""

    async def body() -> None:
        store = PostgresStore(DSN, schema=schema, min_size=4)
        await store.open()
        try:
            alice, bob = await two_users(store)
            await store.submit([new(alice, bob, "before")])
            monkeypatch.setattr(pool, "_is_quiet", lambda conn: True)
            async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as admin:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (store.application_name,),
                )
            stored = await store.submit([new(alice, bob, "after")])
            assert stored[0].id == "after"
            queued = await store.undelivered(bob.id, 0, 10)
            assert [m.id for m in queued] == ["before", "after"]
        finally:
            await store.close()

    run(body)


def test_a_version_2_schema_migrates_to_count_failed_pushes(schema: str) -> None:
    """Schema 3 adds messages.failed_pushes: a schema of version 2 with messages is
    refused until migrated, and keeps every message (none failed yet)."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        for migration in MIGRATIONS[:2]:
            conn.execute(migration)
        conn.execute("UPDATE schema_version SET version = 2")
        conn.execute("INSERT INTO users (id, username, password_hash, created_at)"
                     " VALUES (1, 'alice', 'h', 1), (2, 'bob', 'h', 2)")
        conn.execute("INSERT INTO messages (sender_id, recipient_id, client_id, body, ts)"
                     " VALUES (1, 2, 'old', 'hi', 3)")

    async def body() -> None:
        store = PostgresStore(DSN, schema=schema)
        with pytest.raises(SchemaMismatch):
            await store.open()
        assert await store.migrate() == PostgresStore.schema_version == 3
        await store.open()
        try:
            (queued,) = await store.queued(2, 0, 10)
            assert (queued.message.id, queued.failed_pushes) == ("old", 0)
            await store.count_failed_pushes(2, [queued.message.seq])
            assert [q.failed_pushes for q in await store.queued(2, 0, 10)] == [1]
        finally:
            await store.close()

    run(body)
