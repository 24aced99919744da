"""The SQLite store's queries of messages: the insert (the hot path), state changes
(delivered, read, failed pushes) and reads (catch-up, history, conversations)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import apsw
import orjson

from chatd.store.base import NewMessage, Queued, ReadResult, message_from_row, split_like
from chatd.store.sqlite.db import last_seq, rows, scalar
from chatd.store.sqlite.readers import ReadPool
from chatd.store.sqlite.writer import Writer
from libchat.protocol import Message

__all__ = ["Messages"]

_NO_SEQ: Final = 2**63 - 1  # "before" when none is given: above every seq


def _message_columns(table: str) -> str:
    """The columns ``message_from_row`` reads, for ``SELECT``s and ``RETURNING`` clauses."""
    return (
        f"{table}.client_id, {table}.seq,"
        f" (SELECT username FROM users WHERE users.id = {table}.sender_id),"
        f" (SELECT username FROM users WHERE users.id = {table}.recipient_id),"
        f" {table}.body, {table}.ts, {table}.delivered_at, {table}.read_at"
    )


_MESSAGE_COLUMNS: Final = _message_columns("messages")
_M_COLUMNS: Final = _message_columns("m")

# The hot path runs a whole batch in a few statements: the batch goes in as one JSON
# array and its results come back as one JSON array. apsw releases the GIL around every
# step of a statement, and the writer thread then waits for the event loop to let go of
# it again: a statement and a row per message cost more in those waits than in SQLite.
_INSERT_MESSAGES: Final = (
    "INSERT INTO messages (sender_id, recipient_id, pair_lo, pair_hi, client_id, body, ts)"
    " SELECT value ->> 0, value ->> 1, min(value ->> 0, value ->> 1),"
    " max(value ->> 0, value ->> 1), value ->> 2, value ->> 3, value ->> 4"
    " FROM json_each(?) WHERE true ORDER BY key"
    " ON CONFLICT (sender_id, client_id) DO NOTHING"
)
_INSERTED_SINCE: Final = (
    "SELECT json_group_array(json_array(seq, sender_id, client_id, ts))"
    " FROM messages WHERE seq > ?"
)
_EXISTING_MESSAGE: Final = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE sender_id = ? AND client_id = ?"
)
_UPSERT_CONVERSATIONS: Final = (
    "INSERT INTO conversations (user_id, peer_id, last_seq)"
    " SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true"
    " ON CONFLICT (user_id, peer_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)"
)
# (recipient id, seq) pairs in; the undelivered among them out, as message rows
_UNDELIVERED: Final = (
    "SELECT json_group_array(json_array(m.client_id, m.seq,"
    " (SELECT username FROM users WHERE users.id = m.sender_id),"
    " (SELECT username FROM users WHERE users.id = m.recipient_id),"
    " m.body, m.ts, m.delivered_at, m.read_at, m.recipient_id))"
    " FROM json_each(?) j JOIN messages m ON m.seq = j.value ->> 1"
    " WHERE m.recipient_id = j.value ->> 0 AND m.delivered_at IS NULL"
)
# (seq, delivered_at) pairs in
_MARK_DELIVERED: Final = (
    "UPDATE messages SET delivered_at = j.value ->> 1 FROM json_each(?) AS j"
    " WHERE messages.seq = j.value ->> 0"
)


def _insert_messages(conn: apsw.Connection, batch: Sequence[NewMessage]) -> list[Message]:
    before = last_seq(conn)
    conn.execute(
        _INSERT_MESSAGES,
        (orjson.dumps([
            (new.sender_id, new.recipient_id, new.client_id, new.body, new.ts) for new in batch
        ]),),
    )
    inserted = {
        (sender_id, client_id): (seq, ts)
        for seq, sender_id, client_id, ts in orjson.loads(scalar(conn, _INSERTED_SINCE, (before,)))
    }
    stored: list[Message] = []
    fresh: dict[tuple[int, str], Message] = {}  # inserted by this batch, by (sender, id)
    last: dict[tuple[int, int], int] = {}  # (user, peer) -> newest seq, for conversations
    for new in batch:
        key = (new.sender_id, new.client_id)
        found = inserted.pop(key, None)
        if found is None:  # a repeat: answer with the original, whatever the new content
            original = fresh.get(key)
            if original is None:
                row = rows(conn, _EXISTING_MESSAGE, key)[0]
                original = message_from_row(row)
            stored.append(original)
            continue
        seq, ts = found
        message = Message.trusted(
            id=new.client_id, seq=seq, sender=new.sender, recipient=new.recipient,
            body=new.body, ts=ts,
        )
        stored.append(message)
        fresh[key] = message
        last[(new.sender_id, new.recipient_id)] = seq
        last[(new.recipient_id, new.sender_id)] = seq
    if last:
        conn.execute(
            _UPSERT_CONVERSATIONS, (orjson.dumps([(u, p, s) for (u, p), s in last.items()]),)
        )
    return stored


def _insert_batches(
    conn: apsw.Connection, batches: list[Sequence[NewMessage]]
) -> list[list[Message]]:
    """Several submits' messages inserted as one batch; each submit's stored messages."""
    return split_like(_insert_messages(conn, [new for batch in batches for new in batch]),
                      batches)


_Marks = Sequence[tuple[int, Sequence[int]]]  # (recipient id, seqs) entries


def _mark_delivered(
    conn: apsw.Connection, asks: list[tuple[_Marks, int]]
) -> list[list[list[Message]]]:
    """Several ``mark_delivered_many`` calls (their marks and their time) in two
    statements; for each call, the messages each of its entries marked."""
    pairs = [(recipient_id, seq) for marks, _ in asks for recipient_id, seqs in marks
             for seq in seqs]
    found = orjson.loads(scalar(conn, _UNDELIVERED, (orjson.dumps(pairs),)))
    undelivered = {(row[8], row[1]): row for row in found}
    updates: list[tuple[int, int]] = []  # (seq, delivered_at)
    answers: list[list[list[Message]]] = []
    for marks, now_ms in asks:
        answer: list[list[Message]] = []
        for recipient_id, seqs in marks:
            # A seq asked for twice is marked once, for the first entry that asked for it.
            marked = [row for seq in seqs
                      if (row := undelivered.pop((recipient_id, seq), None)) is not None]
            updates.extend((row[1], now_ms) for row in marked)
            answer.append([message_from_row((*row[:6], now_ms, row[7])) for row in marked])
        answers.append(answer)
    if updates:
        conn.execute(_MARK_DELIVERED, (orjson.dumps(updates),))
    return answers


class Messages:
    """Every query of the ``messages`` and ``conversations`` tables."""

    def __init__(self, writer: Writer, reads: ReadPool) -> None:
        self._write = writer.run
        self._write_merged = writer.run_merged
        self._read = reads.run

    async def submit(self, messages: Sequence[NewMessage]) -> list[Message]:
        if not messages:
            return []
        batch = tuple(messages)
        stored: list[Message] = await self._write_merged(
            _insert_batches, batch, messages=len(batch)
        )
        return stored

    async def mark_delivered_many(
        self, marks: Sequence[tuple[int, Sequence[int]]], now_ms: int
    ) -> list[list[Message]]:
        wanted = [(recipient_id, sorted(set(seqs))) for recipient_id, seqs in marks]
        if not any(seqs for _, seqs in wanted):
            return [[] for _ in wanted]

        marked: list[list[Message]] = await self._write_merged(_mark_delivered, (wanted, now_ms))
        return marked

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
            last = scalar(conn, last_sql, (lo, hi))
            if last is None or up_to > last:  # beyond the conversation: ignored
                return ReadResult(up_to=None, newly_delivered=())
            delivered = sorted(
                (message_from_row(row) for row in rows(conn, deliver_sql, args)),
                key=lambda m: m.seq,
            )
            read = [row[0] for row in rows(conn, read_sql, args)]
            marked = [m.seq for m in delivered] + read
            return ReadResult(
                up_to=max(marked) if marked else None, newly_delivered=tuple(delivered)
            )

        return await self._write(job)

    async def queued(self, recipient_id: int, after_seq: int, limit: int) -> list[Queued]:
        sql = (
            f"SELECT {_MESSAGE_COLUMNS}, messages.failed_pushes FROM messages"
            " WHERE recipient_id = ? AND delivered_at IS NULL AND seq > ? ORDER BY seq LIMIT ?"
        )
        args = (recipient_id, after_seq, limit)
        found = await self._read(lambda conn: rows(conn, sql, args))
        return [Queued(message=message_from_row(row), failed_pushes=row[8]) for row in found]

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
            return [message_from_row(row) for seq in wanted for row in rows(conn, sql, (seq,))]

        return await self._read(read)

    async def sent_message(self, sender_id: int, client_id: str) -> Message | None:
        args = (sender_id, client_id)
        found = await self._read(lambda conn: rows(conn, _EXISTING_MESSAGE, args))
        return message_from_row(found[0]) if found else None

    async def history(
        self, user_id: int, peer_id: int, before: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        lo, hi = sorted((user_id, peer_id))
        sql = (
            f"SELECT {_MESSAGE_COLUMNS} FROM messages"
            " WHERE pair_lo = ? AND pair_hi = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
        )
        args = (lo, hi, _NO_SEQ if before is None else before, limit + 1)
        found = await self._read(lambda conn: rows(conn, sql, args))
        page = [message_from_row(row) for row in found[:limit]]
        page.reverse()
        return page, len(found) > limit

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
        found = await self._read(lambda conn: rows(conn, sql, (user_id,)))
        return [(row[0], message_from_row(row[1:9]), row[9]) for row in found]

    async def peers(self, user_id: int) -> list[str]:
        sql = (
            "SELECT u.username FROM conversations c JOIN users u ON u.id = c.peer_id"
            " WHERE c.user_id = ? AND c.peer_id != c.user_id ORDER BY u.username"
        )
        return [row[0] for row in await self._read(lambda conn: rows(conn, sql, (user_id,)))]

    async def queue_depth(self, recipient_id: int) -> int:
        sql = "SELECT count(*) FROM messages WHERE recipient_id = ? AND delivered_at IS NULL"
        return int(await self._read(lambda conn: scalar(conn, sql, (recipient_id,))))
