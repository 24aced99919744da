"""The PostgreSQL store's queries of messages: state changes (delivered, read, failed
pushes) and reads (catch-up, history, conversations). Inserts are the writer's
(:mod:`chatd.store.postgres.writer`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from chatd.store.base import Queued, ReadResult, Stats, message_from_row
from chatd.store.postgres.columns import message_select
from chatd.store.postgres.pool import Database
from libchat.protocol import Message

__all__ = ["Messages"]

NO_SEQ: Final = 2**63 - 1  # "before" when none is given: above every seq


def _pair(a: int, b: int) -> tuple[int, int]:
    """A conversation's key, as the ``messages_conversation`` index stores it."""
    return (min(a, b), max(a, b))


class Messages:
    """Every query of the ``messages`` and ``conversations`` tables but the insert."""

    def __init__(self, db: Database) -> None:
        self._db = db


    async def mark_delivered_many(
        self, marks: Sequence[tuple[int, Sequence[int]]], now_ms: int
    ) -> list[list[Message]]:
        wanted = [(recipient_id, sorted(set(seqs))) for recipient_id, seqs in marks]
        pairs = {(recipient_id, seq) for recipient_id, seqs in wanted for seq in seqs}
        if not pairs:
            return [[] for _ in wanted]
        rows = await self._db.fetchall(
            """WITH changed AS (
                UPDATE messages SET delivered_at = %s
                FROM unnest(%s::bigint[], %s::bigint[]) AS t(recipient_id, seq)
                WHERE messages.seq = t.seq AND messages.recipient_id = t.recipient_id
                    AND messages.delivered_at IS NULL
                RETURNING messages.*
            )"""
            + message_select("changed", extra="m.recipient_id, "),
            (now_ms, [pair[0] for pair in pairs], [pair[1] for pair in pairs]),
            live=True,
        )
        marked = {(row[0], row[2]): message_from_row(row[1:]) for row in rows}
        # each marked seq goes to the first entry that asked for it
        return [
            [marked.pop((recipient_id, seq)) for seq in seqs if (recipient_id, seq) in marked]
            for recipient_id, seqs in wanted
        ]

    async def mark_read(self, reader_id: int, peer_id: int, up_to: int, now_ms: int) -> ReadResult:
        low, high = _pair(reader_id, peer_id)
        # `target` locks the unread rows first so `was_delivered` is their state before
        # this statement; a read past the conversation's last message changes nothing.
        rows = await self._db.fetchall(
            """WITH target AS (
                SELECT seq, delivered_at IS NOT NULL AS was_delivered FROM messages
                WHERE recipient_id = %(reader)s AND sender_id = %(peer)s
                    AND seq <= %(up_to)s AND read_at IS NULL
                    AND %(up_to)s <= (
                        SELECT max(seq) FROM messages
                        WHERE LEAST(sender_id, recipient_id) = %(low)s
                            AND GREATEST(sender_id, recipient_id) = %(high)s)
                FOR UPDATE
            ), changed AS (
                UPDATE messages SET read_at = %(now)s,
                    delivered_at = COALESCE(messages.delivered_at, %(now)s)
                FROM target WHERE messages.seq = target.seq
                RETURNING messages.*, target.was_delivered
            )"""
            + message_select("changed", extra="m.was_delivered, ")
            + "ORDER BY m.seq",
            {
                "reader": reader_id,
                "peer": peer_id,
                "up_to": up_to,
                "now": now_ms,
                "low": low,
                "high": high,
            },
            live=True,
        )
        if not rows:
            return ReadResult(up_to=None, newly_delivered=())
        messages = [(message_from_row(row[1:]), row[0]) for row in rows]
        return ReadResult(
            up_to=messages[-1][0].seq,
            newly_delivered=tuple(m for m, was_delivered in messages if not was_delivered),
        )

    async def queued_many(
        self, asks: Sequence[tuple[int, int, int]]
    ) -> dict[tuple[int, int, int], list[Queued]]:
        """The undelivered messages of each (recipient id, after seq, limit), oldest first,
        in one statement (see :class:`Gathered`): the catch-ups of users connecting."""
        rows = await self._db.fetchall(
            """SELECT q.* FROM unnest(%s::bigint[], %s::bigint[], %s::int[])
                WITH ORDINALITY AS t(recipient_id, after_seq, lim, ord)
            CROSS JOIN LATERAL ("""
            + message_select(extra="t.ord, m.failed_pushes, ")
            + """WHERE m.recipient_id = t.recipient_id AND m.delivered_at IS NULL
                AND m.seq > t.after_seq
                ORDER BY m.seq LIMIT t.lim
            ) q
            ORDER BY q.ord, q.seq""",
            ([ask[0] for ask in asks], [ask[1] for ask in asks], [ask[2] for ask in asks]),
            read_only=True,
        )
        queued: dict[tuple[int, int, int], list[Queued]] = {ask: [] for ask in asks}
        for row in rows:
            queued[asks[row[0] - 1]].append(
                Queued(message=message_from_row(row[2:]), failed_pushes=row[1])
            )
        return queued

    async def count_failed_pushes(self, recipient_id: int, seqs: Sequence[int]) -> None:
        if seqs:
            await self._db.execute(
                """UPDATE messages SET failed_pushes = failed_pushes + 1
                WHERE seq = ANY(%s) AND recipient_id = %s AND delivered_at IS NULL""",
                (sorted(set(seqs)), recipient_id),
            )

    async def messages_by_seq(self, seqs: Sequence[int]) -> list[Message]:
        """The stored messages with these seqs, oldest first (for a node told by the bus)."""
        if not seqs:
            return []
        rows = await self._db.fetchall(
            message_select() + "WHERE m.seq = ANY(%s) ORDER BY m.seq",
            (list(seqs),),
            live=True,
            read_only=True,
        )
        return [message_from_row(row) for row in rows]

    async def sent_message(self, sender_id: int, client_id: str) -> Message | None:
        row = await self._db.fetchone(
            message_select() + "WHERE m.sender_id = %s AND m.client_id = %s",
            (sender_id, client_id),
        )
        return message_from_row(row) if row else None

    async def history(
        self, user_id: int, peer_id: int, before: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        low, high = _pair(user_id, peer_id)
        rows = await self._db.fetchall(
            message_select()
            + """WHERE LEAST(m.sender_id, m.recipient_id) = %s
                AND GREATEST(m.sender_id, m.recipient_id) = %s
                AND m.seq < %s
            ORDER BY LEAST(m.sender_id, m.recipient_id), GREATEST(m.sender_id, m.recipient_id),
                m.seq DESC
            LIMIT %s""",
            (low, high, NO_SEQ if before is None else before, limit + 1),
        )
        has_more = len(rows) > limit
        return [message_from_row(row) for row in reversed(rows[:limit])], has_more

    async def conversations(self, user_id: int) -> list[tuple[str, Message, int]]:
        rows = await self._db.fetchall(
            """SELECT p.username, (
                SELECT count(*) FROM messages x
                WHERE x.recipient_id = c.user_id AND x.sender_id = c.peer_id
                    AND x.read_at IS NULL),
                m.client_id, m.seq, s.username, r.username, m.body, m.ts,
                m.delivered_at, m.read_at
            FROM conversations c
            JOIN messages m ON m.seq = c.last_seq
            JOIN users p ON p.id = c.peer_id
            JOIN users s ON s.id = m.sender_id
            JOIN users r ON r.id = m.recipient_id
            WHERE c.user_id = %(u)s
            ORDER BY c.last_seq DESC""",
            {"u": user_id},
        )
        return [(row[0], message_from_row(row[2:]), int(row[1])) for row in rows]

    async def peers_of(self, user_ids: Sequence[int]) -> dict[int, list[str]]:
        """The peers of each user, in one statement (see :class:`Gathered`)."""
        rows = await self._db.fetchall(
            """SELECT c.user_id, u.username FROM conversations c JOIN users u ON u.id = c.peer_id
            WHERE c.user_id = ANY(%(u)s) AND c.peer_id <> c.user_id
            ORDER BY c.user_id, u.username COLLATE "C"
            """,
            {"u": list(user_ids)},
            read_only=True,
        )
        peers: dict[int, list[str]] = {user_id: [] for user_id in user_ids}
        for user_id, username in rows:
            peers[user_id].append(username)
        return peers

    async def queue_depth(self, recipient_id: int) -> int:
        row = await self._db.fetchone(
            "SELECT count(*) FROM messages WHERE recipient_id = %s AND delivered_at IS NULL",
            (recipient_id,),
        )
        return 0 if row is None else int(row[0])

    async def undelivered_total(self) -> int:
        row = await self._db.fetchone(
            "SELECT count(*) FROM messages WHERE delivered_at IS NULL", ()
        )
        return 0 if row is None else int(row[0])

    async def stats(self) -> Stats:
        row = await self._db.fetchone(
            """SELECT
                (SELECT count(*) FROM users),
                (SELECT count(*) FROM messages),
                (SELECT count(*) FROM messages WHERE delivered_at IS NULL),
                (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = %s AND c.relkind = 'r')""",
            (self._db.schema,),
            bound=None,  # counting a big table takes seconds; no request waits for it
        )
        assert row is not None
        return Stats(users=row[0], messages=row[1], undelivered=row[2], db_bytes=int(row[3]))
