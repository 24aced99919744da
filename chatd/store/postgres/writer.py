"""The PostgreSQL store's message writer: group commit.

Every submit queued since the last commit goes into one transaction, one statement
(INSERT_BATCH); the submitters are answered only after it committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import psycopg

from chatd.store.base import NewMessage, StoreError, message_from_row
from chatd.store.postgres.columns import message_select
from chatd.store.postgres.gather import Gathered
from chatd.store.postgres.pool import Database, events, unchecked, worth_again
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


class BatchWriter:
    """The message writer: every submit queued since the last commit goes in the next
    (:class:`Gathered`, up to MAX_BATCH messages). ``on_commit``, if set, is called on
    the loop after each commit with the batch's message count and the transaction's
    duration in seconds."""

    def __init__(self, db: Database, on_commit: Callable[[int, float], None] | None) -> None:
        self._db = db
        self.on_commit = on_commit
        self.commits = 0  # message transactions committed by this node's writer
        self._open = False
        self._gathered: Gathered[list[NewMessage], list[Message]] = Gathered(
            self._commit, "chatd-pg-writer", limit=MAX_BATCH, size=len
        )

    def start(self) -> None:
        self._open = True

    async def stop(self) -> None:
        """Refuse new submits, and return once every queued one is committed."""
        self._open = False
        await self._gathered.idle()

    async def submit(self, messages: Sequence[NewMessage]) -> list[Message]:
        """Queue messages for the writer; returns after the COMMIT that holds them.

        A cancelled caller stops waiting, not the write: the message may still commit,
        and a retry with the same client id gets the original back.
        """
        if not messages:
            return []
        if not self._open:
            raise StoreError("the store is not open")
        return await self._gathered.ask(list(messages))

    async def _commit(self, submits: list[list[NewMessage]]) -> list[list[Message]]:
        """Commit the submits' messages in one transaction; each submit's stored messages.

        A database refusing the batch for its content (a constraint, bad data) raises
        StoreError, and Gathered retries each submit alone, so one bad submit fails only
        its own caller; an unreachable one raises StoreUnavailable, for them all.
        """
        news = [message for submit in submits for message in submit]
        started = time.perf_counter()
        try:
            try:
                with unchecked():
                    stored = await self._insert_on_pool(news)
            except psycopg.OperationalError as exc:
                if not worth_again(exc, idempotent=True):
                    raise
                # The connection ended under the insert: its backend ended by the server
                # (never committed), or the connection cut without a word (committed or
                # not). Either way again, on a checked connection: a batch that did
                # commit comes back as repeats, and the stored messages are read back:
                # the same answer.
                stored = await self._insert_on_pool(news)
        except psycopg.OperationalError as exc:
            raise self._db.unavailable(exc) from exc
        except psycopg.Error as exc:
            if len(submits) == 1:  # the one that fails alone, logged
                events.error("store.commit_failed", batch=len(news), error=str(exc))
            raise StoreError(f"commit failed: {exc}") from exc
        seconds = time.perf_counter() - started
        self.commits += 1
        self._db.answered()
        if self.on_commit is not None:
            try:
                self.on_commit(len(news), seconds)
            except Exception:
                events.exception("store.postgres.on_commit_failed")
        return [[stored[(m.sender_id, m.client_id)] for m in submit] for submit in submits]

    async def _insert_on_pool(self, news: list[NewMessage]) -> dict[tuple[int, str], Message]:
        async with self._db.pool.connection() as conn:  # live: see pool.LIVE_RESERVED
            return await self._insert(conn, news)

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
