"""The PostgreSQL store's message writer: one task per node, group commit.

Every submit queued since the last commit goes into one transaction, one statement
(INSERT_BATCH); the submitters' futures are resolved only after it committed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

import psycopg

from chatd.store.base import NewMessage, StoreError, StoreUnavailable, message_from_row
from chatd.store.postgres.columns import message_select
from chatd.store.postgres.pool import Database, ended_by_server, events, unchecked
from libchat.protocol import Message

__all__ = ["INSERT_BATCH", "INSERT_LOCK", "MAX_BATCH", "BatchWriter"]

INSERT_LOCK: Final = 0x43480002  # advisory lock class around message inserts: see _insert
MAX_BATCH: Final = 2000  # messages per transaction: bounds one commit's size and latency
# A batch's commit in one statement, so one round trip instead of five (BEGIN, lock,
# insert, conversations, COMMIT): on the pool's autocommit connections it is its own
# transaction. The advisory lock (see BatchWriter._insert) comes from a one-row subquery
# joined to the insert's source: taken before any row, hence any seq, is drawn, and held
# until the statement commits. Conversations are grouped: an upsert may not touch a row
# twice (a message to oneself gives the same pair twice).
INSERT_BATCH: Final = """
    WITH inserted AS (
        INSERT INTO messages (sender_id, recipient_id, client_id, body, ts)
        SELECT t.sender_id, t.recipient_id, t.client_id, t.body, t.ts
        FROM (SELECT pg_advisory_xact_lock(%(lock)s, hashtext(%(schema)s))) AS held,
            unnest(%(sender_ids)s::bigint[], %(recipient_ids)s::bigint[],
                %(client_ids)s::text[], %(bodies)s::text[], %(timestamps)s::bigint[])
                WITH ORDINALITY AS t(sender_id, recipient_id, client_id, body, ts, ord)
        ORDER BY t.ord
        ON CONFLICT (sender_id, client_id) DO NOTHING
        RETURNING sender_id, recipient_id, client_id, seq
    ), touched AS (
        INSERT INTO conversations (user_id, peer_id, last_seq)
        SELECT side.user_id, side.peer_id, max(inserted.seq)
        FROM inserted CROSS JOIN LATERAL (VALUES
            (inserted.sender_id, inserted.recipient_id),
            (inserted.recipient_id, inserted.sender_id)) AS side(user_id, peer_id)
        GROUP BY side.user_id, side.peer_id
        ON CONFLICT (user_id, peer_id)
            DO UPDATE SET last_seq = GREATEST(conversations.last_seq, EXCLUDED.last_seq)
    )
    SELECT sender_id, client_id, seq FROM inserted
"""


class _Submit:
    """One submit() call waiting in the writer's queue."""

    __slots__ = ("future", "messages")

    def __init__(self, messages: list[NewMessage], future: asyncio.Future[list[Message]]) -> None:
        self.messages = messages
        self.future = future


class BatchWriter:
    """The writer task. ``on_commit``, if set, is called on the loop after each commit
    with the batch's message count and the transaction's duration in seconds."""

    def __init__(self, db: Database, on_commit: Callable[[int, float], None] | None) -> None:
        self._db = db
        self.on_commit = on_commit
        self.commits = 0  # message transactions committed by this node's writer
        self._pending: deque[_Submit] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._write_loop(), name="chatd-pg-writer")

    async def stop(self) -> None:
        """Finish every queued write, then end the task."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def submit(self, messages: Sequence[NewMessage]) -> list[Message]:
        """Queue messages for the writer; returns after the COMMIT that holds them."""
        if not messages:
            return []
        if self._task is None or self._closing:
            raise StoreError("the store is not open")
        future: asyncio.Future[list[Message]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Submit(list(messages), future))
        self._wakeup.set()
        # A cancelled caller cancels this future only, not the write: the message may
        # still commit (its outcome is then dropped: _commit and _fail skip a future
        # already done), and a retry with the same client id gets the original back.
        return await future

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._take_batch()
                await self._write_batch(batch)
            if self._closing:
                return

    def _take_batch(self) -> list[_Submit]:
        """Submits queued since the last commit, up to about MAX_BATCH messages."""
        batch: list[_Submit] = []
        count = 0
        while self._pending and (not batch or count + len(self._pending[0].messages) <= MAX_BATCH):
            submit = self._pending.popleft()
            batch.append(submit)
            count += len(submit.messages)
        return batch

    async def _write_batch(self, batch: list[_Submit]) -> None:
        """Commit the batch in one transaction and settle its futures.

        When the database refuses the batch for its content (a constraint, bad data)
        rather than for being unreachable, each submit is retried alone, so one bad
        submit fails only its own caller.
        """
        try:
            try:
                with unchecked():
                    await self._commit(batch)
            except psycopg.OperationalError as exc:
                if not ended_by_server(exc):
                    raise
                # Sent on a quiet connection whose backend the server had just ended:
                # never committed, so again on a checked one. (Had the batch committed
                # and only the read of its repeats failed, the retry finds every message
                # a repeat and reads the stored ones: the same answer.)
                await self._commit(batch)
        except psycopg.OperationalError as exc:  # unreachable: no retries one by one
            self._fail(batch, self._db.unavailable(exc))
        except psycopg.Error as exc:
            if len(batch) > 1:
                for submit in batch:
                    await self._write_batch([submit])
                return
            self._fail(batch, exc)
        except Exception as exc:  # every waiter must hear about it; the writer goes on
            self._fail(batch, exc)

    async def _commit(self, batch: list[_Submit]) -> None:
        news = [message for submit in batch for message in submit.messages]
        started = time.perf_counter()
        async with self._db.pool.connection() as conn:  # live: see pool.LIVE_RESERVED
            stored = await self._insert(conn, news)
        seconds = time.perf_counter() - started
        self.commits += 1
        self._db.answered()
        for submit in batch:
            if not submit.future.done():
                submit.future.set_result(
                    [stored[(m.sender_id, m.client_id)] for m in submit.messages]
                )
        if self.on_commit is not None:
            try:
                self.on_commit(len(news), seconds)
            except Exception:
                events.exception("store.postgres.on_commit_failed")

    @staticmethod
    def _fail(batch: list[_Submit], exc: Exception) -> None:
        if not isinstance(exc, StoreUnavailable):  # an outage is logged as one
            count = sum(len(submit.messages) for submit in batch)
            events.error("store.commit_failed", batch=count, error=str(exc))
        error = exc if isinstance(exc, StoreError) else StoreError(f"commit failed: {exc}")
        for submit in batch:
            if not submit.future.done():
                submit.future.set_exception(error)

    async def _insert(
        self, conn: psycopg.AsyncConnection[Any], news: list[NewMessage]
    ) -> dict[tuple[int, str], Message]:
        """Insert, committed; the stored message for each (sender_id, client_id).

        Sequence values are handed out at INSERT time, not at COMMIT, so two nodes
        inserting concurrently could commit seq 8 before seq 7 and a reader could see 8
        and then 7 appear below it. The contract says seq increases in commit order, so
        every message-inserting transaction first takes one transaction-level advisory
        lock (released at commit): inserts are serialized across nodes and seqs follow
        commit order. That is the price of the ordering; group commit keeps it cheap by
        taking the lock once per batch, not once per message, and :data:`INSERT_BATCH`
        by holding it for one round trip.

        Repeats of an earlier commit are read back after the commit, in a statement of
        their own, only when there are any.
        """
        if not conn.autocommit:  # the insert must be its own transaction: INSERT_BATCH
            raise StoreError("the message writer needs an autocommit connection")
        first: dict[tuple[int, str], NewMessage] = {}
        for new in news:  # a repeat inside the batch gets the first one's row
            first.setdefault((new.sender_id, new.client_id), new)
        uniques = list(first.values())
        cur = await conn.execute(
            INSERT_BATCH,
            {
                "lock": INSERT_LOCK,
                "schema": self._db.schema,
                "sender_ids": [m.sender_id for m in uniques],
                "recipient_ids": [m.recipient_id for m in uniques],
                "client_ids": [m.client_id for m in uniques],
                "bodies": [m.body for m in uniques],
                "timestamps": [m.ts for m in uniques],
            },
        )
        stored: dict[tuple[int, str], Message] = {}
        for sender_id, client_id, seq in await cur.fetchall():
            new = first[(sender_id, client_id)]
            stored[(sender_id, client_id)] = Message.trusted(
                id=new.client_id,
                seq=seq,
                sender=new.sender,
                recipient=new.recipient,
                body=new.body,
                ts=new.ts,
            )
        repeats = [key for key in first if key not in stored]
        if repeats:  # already stored by an earlier commit: hand back the original
            cur = await conn.execute(
                message_select(extra="m.sender_id, ")
                + """WHERE (m.sender_id, m.client_id) IN (
                    SELECT * FROM unnest(%s::bigint[], %s::text[]))""",
                ([key[0] for key in repeats], [key[1] for key in repeats]),
            )
            for row in await cur.fetchall():
                stored[(row[0], row[1])] = message_from_row(row[1:])
        return stored
