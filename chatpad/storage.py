"""chatpad's local SQLite database (apsw): the outbox, the seqs already shown, recent
history per conversation, the conversation list, and a full-text index (FTS5) of the
cached message bodies for searching offline.

One :class:`LocalStore` per thread that uses it; in chatpad that is the network thread
alone (it owns the outbox). Every write is its own transaction, so a message the user
wrote is on disk before :meth:`OutboxStorage.append` returns.
"""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import apsw
import attrs

from chatpad.files import PRIVATE_FILE, create_private_file, make_private_dir, tighten
from chatpad.items import STATUS_RANK, ChatItem, Hit, Summary
from libchat.outbox import SEEN_CAPACITY, OutboxEntry, SeenSeqs

__all__ = ["HISTORY_KEEP", "SEARCH_LIMIT", "LocalStore", "SqliteOutboxStorage", "match_query"]

log = logging.getLogger(__name__)

HISTORY_KEEP = 500  # messages cached per conversation: enough to read offline, small on disk
SCHEMA_VERSION = 2  # 2: messages_fts
SEARCH_LIMIT = 100  # results of one search: more than anyone reads through
SNIPPET_TOKENS = 14  # words of context a search result shows around the match
_MARK_ON, _MARK_OFF = "\x02", "\x03"  # around matches in snippet(); never typed in a chat

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL UNIQUE,
    recipient TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (seq INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS messages (
    sender TEXT NOT NULL,
    id TEXT NOT NULL,
    peer TEXT NOT NULL,
    seq INTEGER,
    body TEXT NOT NULL,
    ts INTEGER NOT NULL,
    status TEXT NOT NULL,
    mine INTEGER NOT NULL,
    PRIMARY KEY (sender, id)
);
CREATE INDEX IF NOT EXISTS messages_peer_seq ON messages (peer, seq);
CREATE TABLE IF NOT EXISTS conversations (
    peer TEXT PRIMARY KEY,
    preview TEXT NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    unread INTEGER NOT NULL,
    mine INTEGER NOT NULL
);
"""

# The bodies of ``messages``, indexed: an external-content FTS5 table (the text is stored
# once, in ``messages``) kept in step by triggers, so every write path (upsert, trim,
# claim) updates it in the same transaction. It is keyed by the rowid of ``messages``,
# which is stable because chatpad never runs VACUUM. ``remove_diacritics 2``: "cafe"
# finds "café".
_FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    body, content='messages', content_rowid='rowid',
    tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, new.body);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body)
    VALUES ('delete', old.rowid, old.body);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF body ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body)
    VALUES ('delete', old.rowid, old.body);
    INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, new.body);
END;
"""


class LocalStore:
    """The profile's database file. Not thread-safe: one instance per thread."""

    def __init__(self, path: Path) -> None:
        make_private_dir(path.parent)
        create_private_file(path)  # SQLite gives the WAL and SHM files the same mode
        for suffix in ("-wal", "-shm"):  # left open by an older chatpad
            tighten(path.with_name(path.name + suffix), PRIVATE_FILE)
        self.db = apsw.Connection(str(path))
        self.db.setbusytimeout(5000)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # the outbox must survive a power cut
        with self.db:
            self.db.execute(_SCHEMA)
            self._migrate(int(self.get("schema_version") or 0))
            self.set("schema_version", str(SCHEMA_VERSION))

    def _migrate(self, version: int) -> None:
        """Bring a database written by an older chatpad up to date (in the caller's
        transaction)."""
        if version < 2:  # the search index, built from what is already cached
            self.db.execute(_FTS_SCHEMA)
            self.db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
            if version:
                log.info("profile database: search index built (schema %d -> 2)", version)

    def close(self) -> None:
        self.db.close()

    # --- key/value ------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def claim(self, owner: str) -> None:
        """Make this database belong to ``owner`` (server and username); data of another
        account is wiped so it can never be sent or shown under the wrong name."""
        current = self.get("owner")
        if current == owner:
            return
        if current is not None:
            log.info("profile database changes account: local data cleared")
        with self.db:
            for table in ("outbox", "seen", "messages", "conversations"):
                self.db.execute(f"DELETE FROM {table}")
            self.db.execute("DELETE FROM kv WHERE key = 'seen_floor'")
            self.set("owner", owner)

    # --- messages -------------------------------------------------------------------

    def upsert(self, item: ChatItem) -> ChatItem:
        """Store a message, never moving a status backwards and keeping the time it was
        first stored with (for a message written here, when it was written, not when the
        server took it); return what is stored."""
        row = self.db.execute(
            "SELECT status, seq, ts FROM messages WHERE sender = ? AND id = ?",
            (item.sender, item.id),
        ).fetchone()
        if row is not None:
            old_status, old_seq, old_ts = str(row[0]), row[1], int(str(row[2]))
            refused = item.status == "failed" and old_status == "queued"  # never sent
            if (item.mine and not refused
                    and STATUS_RANK.get(old_status, 0) > STATUS_RANK.get(item.status, 0)):
                item = _evolve(item, status=old_status)
            if item.seq is None and old_seq is not None:
                item = _evolve(item, seq=int(old_seq))
            if item.ts != old_ts:
                item = _evolve(item, ts=old_ts)
        self.db.execute(
            "INSERT INTO messages (sender, id, peer, seq, body, ts, status, mine) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sender, id) DO UPDATE SET "
            "seq = excluded.seq, ts = excluded.ts, status = excluded.status",
            (item.sender, item.id, item.peer, item.seq, item.body, item.ts, item.status,
             int(item.mine)),
        )
        return item

    def find(self, sender: str, client_id: str) -> ChatItem | None:
        row = self.db.execute(
            "SELECT sender, id, peer, seq, body, ts, status, mine FROM messages "
            "WHERE sender = ? AND id = ?",
            (sender, client_id),
        ).fetchone()
        return None if row is None else _item(row)

    def mark_read_up_to(self, me: str, peer: str, up_to: int) -> list[ChatItem]:
        """My messages to ``peer`` with seq <= ``up_to`` become read; the changed ones."""
        rows = self.db.execute(
            "SELECT sender, id, peer, seq, body, ts, status, mine FROM messages "
            "WHERE sender = ? AND peer = ? AND seq IS NOT NULL AND seq <= ? "
            "AND status IN ('sent', 'delivered')",
            (me, peer, up_to),
        ).fetchall()
        changed = [_evolve(_item(row), status="read") for row in rows]
        with self.db:
            for item in changed:
                self.upsert(item)
        return changed

    def unread_after(self, me: str, peer: str, up_to: int) -> int:
        """How many stored messages from ``peer`` came after seq ``up_to``."""
        return int(self.db.execute(
            "SELECT COUNT(*) FROM messages WHERE peer = ? AND sender <> ? AND seq > ?",
            (peer, me, up_to)).fetchone()[0])

    def page(self, peer: str, before: int | None, limit: int) -> list[ChatItem]:
        """Up to ``limit`` stored messages before seq ``before``, oldest first; with no
        ``before`` the newest ones plus every queued message."""
        columns = "sender, id, peer, seq, body, ts, status, mine"
        if before is None:
            rows = self.db.execute(
                f"SELECT {columns} FROM messages WHERE peer = ? AND seq IS NOT NULL "
                "ORDER BY seq DESC LIMIT ?",
                (peer, limit),
            ).fetchall()
            queued = self.db.execute(
                f"SELECT {columns} FROM messages WHERE peer = ? AND seq IS NULL "
                "ORDER BY ts",
                (peer,),
            ).fetchall()
        else:
            rows = self.db.execute(
                f"SELECT {columns} FROM messages WHERE peer = ? AND seq < ? "
                "ORDER BY seq DESC LIMIT ?",
                (peer, before, limit),
            ).fetchall()
            queued = []
        return [_item(row) for row in reversed(rows)] + [_item(row) for row in queued]

    def trim(self, peer: str, keep: int = HISTORY_KEEP) -> None:
        """Forget all but the newest ``keep`` stored messages of a conversation."""
        self.db.execute(
            "DELETE FROM messages WHERE peer = ? AND seq IS NOT NULL AND seq < ("
            "SELECT seq FROM messages WHERE peer = ? AND seq IS NOT NULL "
            "ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (peer, peer, keep - 1),
        )

    def page_around(self, peer: str, seq: int, before: int) -> list[ChatItem]:
        """Every stored message from ``before`` messages older than seq ``seq`` up to the
        newest, oldest first, plus every queued one: a run with no gap to the newest page,
        so a search result can be shown in place (the cache is bounded: ``HISTORY_KEEP``)."""
        row = self.db.execute(
            "SELECT seq FROM messages WHERE peer = ? AND seq IS NOT NULL AND seq < ? "
            "ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (peer, seq, before - 1),
        ).fetchone()
        start = -1 if row is None else int(str(row[0]))  # None: fewer are older, take all
        rows = self.db.execute(
            "SELECT sender, id, peer, seq, body, ts, status, mine FROM messages "
            "WHERE peer = ? AND (seq >= ? OR seq IS NULL) ORDER BY seq IS NULL, seq, ts",
            (peer, start),
        ).fetchall()
        return [_item(row) for row in rows]

    def search(self, text: str, peer: str | None = None,
               limit: int = SEARCH_LIMIT) -> list[Hit]:
        """Cached messages whose body matches every word of ``text`` (the last word as a
        prefix), newest first; only ``peer``'s conversation when given. Any input is
        safe: it is never read as FTS5 query syntax (:func:`match_query`)."""
        query = match_query(text)
        if query is None:
            return []
        where = "messages_fts MATCH ?" + (" AND m.peer = ?" if peer is not None else "")
        args: tuple[object, ...] = (_MARK_ON, _MARK_OFF, "…", SNIPPET_TOKENS, query)
        if peer is not None:
            args += (peer,)
        try:
            rows = self.db.execute(
                "SELECT m.sender, m.id, m.peer, m.seq, m.body, m.ts, m.status, m.mine, "
                "snippet(messages_fts, 0, ?, ?, ?, ?) FROM messages_fts "
                "JOIN messages AS m ON m.rowid = messages_fts.rowid "
                f"WHERE {where} ORDER BY m.ts DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        except apsw.SQLError:  # match_query makes this unreachable; never fail a search
            log.exception("search failed")
            return []
        return [Hit(item=_item(row[:8]), snippet=_runs(str(row[8]))) for row in rows]

    # --- conversations --------------------------------------------------------------

    def put_summary(self, summary: Summary) -> None:
        self.db.execute(
            "INSERT INTO conversations (peer, preview, ts, seq, unread, mine) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (peer) DO UPDATE SET "
            "preview = excluded.preview, ts = excluded.ts, seq = excluded.seq, "
            "unread = excluded.unread, mine = excluded.mine",
            (summary.peer, summary.preview, summary.ts, summary.seq, summary.unread,
             int(summary.mine)),
        )

    def summary(self, peer: str) -> Summary | None:
        row = self.db.execute(_SUMMARY_SELECT + " WHERE c.peer = ?", (peer,)).fetchone()
        return None if row is None else _summary(row)

    def summaries(self) -> list[Summary]:
        """Most recent first (a queued message, with seq -1, sorts by its time)."""
        rows = self.db.execute(_SUMMARY_SELECT + " ORDER BY c.ts DESC").fetchall()
        return [_summary(row) for row in rows]


class SqliteOutboxStorage:
    """libchat's :class:`~libchat.outbox.OutboxStorage` in the profile's database."""

    def __init__(self, store: LocalStore, seen_capacity: int = SEEN_CAPACITY) -> None:
        self._db = store.db
        self._store = store
        floor = store.get("seen_floor")
        self._seen = SeenSeqs(seen_capacity, floor=int(floor) if floor is not None else -1)
        for (seq,) in self._db.execute("SELECT seq FROM seen ORDER BY seq"):
            self._seen.add(int(seq))

    def append(self, entry: OutboxEntry) -> None:
        self._db.execute(
            "INSERT INTO outbox (client_id, recipient, body, created_at, attempts) "
            "VALUES (?, ?, ?, ?, ?)",
            (entry.client_id, entry.to, entry.body, entry.created_at, entry.attempts),
        )

    def update(self, entry: OutboxEntry) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts = ? WHERE client_id = ?",
            (entry.attempts, entry.client_id),
        )

    def remove(self, client_id: str) -> None:
        self._db.execute("DELETE FROM outbox WHERE client_id = ?", (client_id,))

    def entries(self) -> list[OutboxEntry]:
        rows = self._db.execute(
            "SELECT client_id, recipient, body, created_at, attempts FROM outbox ORDER BY pos"
        ).fetchall()
        return [
            OutboxEntry(client_id=str(r[0]), to=str(r[1]), body=str(r[2]),
                        created_at=float(str(r[3])), attempts=int(str(r[4])))
            for r in rows
        ]

    def seen(self, seq: int) -> bool:
        return seq in self._seen

    def mark_seen(self, seq: int) -> None:
        if seq in self._seen:
            return
        floor = self._seen.floor
        self._seen.add(seq)
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO seen (seq) VALUES (?)", (seq,))
            if self._seen.floor != floor:
                self._db.execute("DELETE FROM seen WHERE seq <= ?", (self._seen.floor,))
                self._store.set("seen_floor", str(self._seen.floor))


def match_query(text: str) -> str | None:
    """The FTS5 query for what the user typed, or None when it has no word to look for.

    Each word becomes a quoted string (so ``"``, ``*``, ``AND``, ``NEAR(`` and ``col:`` are
    plain text); the last one is a prefix, as results follow the typing; words with no
    letter or digit (which the tokenizer drops, leaving an empty phrase) are left out.
    """
    words = [w for w in text.split() if any(_is_word_char(c) for c in w)]
    if not words:
        return None
    quoted = ['"' + w.replace('"', '""') + '"' for w in words]
    if not text[-1].isspace():
        quoted[-1] += "*"
    return " ".join(quoted)


def _is_word_char(char: str) -> bool:
    """What FTS5's unicode61 tokenizer keeps: letters, numbers, private-use characters."""
    return unicodedata.category(char)[0] in "LN" or unicodedata.category(char) == "Co"


def _runs(snippet: str) -> tuple[tuple[str, bool], ...]:
    """A marked snippet as (text, is_match) runs, whitespace folded to single spaces."""
    runs: list[tuple[str, bool]] = []
    text = " ".join(snippet.split())
    for n, part in enumerate(text.split(_MARK_ON)):
        inside, _, after = part.partition(_MARK_OFF) if n else ("", "", part)
        for chunk, is_match in ((inside, True), (after, False)):
            if chunk:
                runs.append((chunk.replace(_MARK_OFF, ""), is_match))
    return tuple(runs)


def _item(row: tuple[object, ...]) -> ChatItem:
    sender, client_id, peer, seq, body, ts, status, mine = row
    return ChatItem(
        sender=str(sender), id=str(client_id), peer=str(peer),
        seq=None if seq is None else int(str(seq)), body=str(body), ts=int(str(ts)),
        status=str(status), mine=bool(mine),
    )


# A row whose last message is mine and has no seq is queued, or refused for good: the
# message itself (the same time, mine, no seq) says which.
_SUMMARY_SELECT = (
    "SELECT c.peer, c.preview, c.ts, c.seq, c.unread, c.mine,"
    " c.seq < 0 AND c.mine AND EXISTS (SELECT 1 FROM messages m WHERE m.peer = c.peer"
    " AND m.seq IS NULL AND m.mine AND m.ts = c.ts AND m.status = 'failed')"
    " FROM conversations c"
)


def _summary(row: tuple[object, ...]) -> Summary:
    peer, preview, ts, seq, unread, mine, failed = row
    return Summary(peer=str(peer), preview=str(preview), ts=int(str(ts)), seq=int(str(seq)),
                   unread=int(str(unread)), mine=bool(mine), failed=bool(failed))


def _evolve(item: ChatItem, **changes: object) -> ChatItem:
    return attrs.evolve(item, **changes)  # type: ignore[arg-type]
