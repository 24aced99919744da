"""The PostgreSQL store's face: :class:`PostgresStore`, the Store protocol on a schema.

It owns the parts and their lifecycle (open, migrate, close) and hands every query to
the group that holds it: :class:`Users`, :class:`Tokens`, :class:`LoginLimits`,
:class:`Messages`, :class:`SharedKeys`; message inserts to the :class:`BatchWriter`.
Connections and their time bounds are :mod:`chatd.store.postgres.pool`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from chatd.store.base import (
    LoginDecider,
    NewMessage,
    Queued,
    ReadResult,
    Retirement,
    SchemaMismatch,
    Stats,
    User,
)
from chatd.store.postgres.gather import Gathered, keyed
from chatd.store.postgres.keys import SharedKeys
from chatd.store.postgres.logins import LoginLimits
from chatd.store.postgres.marks import DeliveredMarks
from chatd.store.postgres.messages import Messages
from chatd.store.postgres.pool import Database
from chatd.store.postgres.schema import SCHEMA_VERSION, found_version, migrate
from chatd.store.postgres.tokens import Tokens
from chatd.store.postgres.users import Users
from chatd.store.postgres.writer import BatchWriter
from libchat.protocol import Message

__all__ = ["PostgresStore"]


class PostgresStore:
    """The :class:`~chatd.store.base.Store` on PostgreSQL.

    Args:
        dsn: a libpq connection string or URL.
        schema: the schema holding the tables (created by :meth:`migrate` when missing);
            default ``public``. Every connection sets its ``search_path`` to it.
        min_size, max_size: bounds of the connection pool.
        on_commit: called on the loop after each message commit with the batch's
            message count and the transaction's duration in seconds (for metrics).
    """

    schema_version: int = SCHEMA_VERSION

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 8,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.schema = schema or "public"
        self._db = Database(dsn, self.schema, min_size, max_size)
        self._writer = BatchWriter(self._db, on_commit)
        self._users = Users(self._db)
        self._tokens = Tokens(self._db)
        self._logins = LoginLimits(self._db)
        self._messages = Messages(self._db)
        self._marks = DeliveredMarks(self._messages.mark_delivered_many)
        self._peers = Gathered(keyed(self._messages.peers_of), "chatd-pg-peers")
        self._queued = Gathered(keyed(self._messages.queued_many), "chatd-pg-catch-ups")
        self._user_rows = Gathered(keyed(self._users.users_by_id), "chatd-pg-users")
        self._keys = SharedKeys(self._db)

    @property
    def application_name(self) -> str:
        """What this store's connections show in ``pg_stat_activity``."""
        return self._db.application_name

    def pool_stats(self) -> dict[str, int]:
        """The connection pool's counters (psycopg_pool ``get_stats()``), for metrics."""
        return self._db.pool.get_stats()

    @property
    def commits(self) -> int:
        """Message transactions committed by this node's writer."""
        return self._writer.commits

    @property
    def on_commit(self) -> Callable[[int, float], None] | None:
        return self._writer.on_commit

    @on_commit.setter
    def on_commit(self, hook: Callable[[int, float], None] | None) -> None:
        self._writer.on_commit = hook

    # --- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        """A new autocommit connection outside the pool, ``search_path`` set like the
        pooled ones (migrations, the data migration tool); the caller closes it."""
        return await self._db.connect()

    async def open(self) -> None:
        """Connect, migrate an empty schema, check the version, start the writer."""
        found = await found_version(self._db)
        if found is None:
            found = await self.migrate()
        if found != self.schema_version:
            raise SchemaMismatch(found, self.schema_version)
        await self._db.open()
        self._writer.start()

    async def close(self) -> None:
        """Finish every queued write, then close the pool."""
        await self._writer.stop()
        await self._db.close()

    async def migrate(self) -> int:
        """Create the schema and tables, or upgrade them; returns the version in place
        (nodes starting together on an empty schema take turns)."""
        return await migrate(self._db)

    async def continue_seqs(self) -> None:
        """Nothing to do: the sequence lives in the database (see the Store protocol)."""

    async def ping(self) -> None:
        await self._db.fetchone("SELECT 1")

    async def changed_elsewhere(self) -> bool:
        """Always False: the changes that matter announce themselves (a NOTIFY in their
        transaction, see :meth:`chatd.store.postgres.pool.Database.announced`)."""
        return False

    async def undelivered_total(self) -> int:
        return await self._messages.undelivered_total()

    async def stats(self) -> Stats:
        return await self._messages.stats()

    # --- token keys (chatd.store.postgres.keys) -------------------------------------

    async def shared_token_key(self, candidate: bytes) -> bytes:
        """The token signing key every node of this database uses: ``candidate`` if
        no node has stored one yet, else the stored one."""
        return await self._keys.shared_token_key(candidate)

    async def token_keyring(self) -> bytes | None:
        """The keyring document ``chatd key rotate`` stored, if any (chatd.auth.keys)."""
        return await self._keys.token_keyring()

    async def set_token_keyring(self, document: bytes, expected: bytes | None) -> bool:
        """Store the keyring document if the stored one is still ``expected``."""
        return await self._keys.set_token_keyring(document, expected)

    # --- users (chatd.store.postgres.users) -----------------------------------------------

    async def create_user(self, username: str, password_hash: str, now_ms: int) -> User | None:
        return await self._users.create_user(username, password_hash, now_ms)

    async def user_by_name(self, username: str) -> User | None:
        return await self._users.user_by_name(username)

    async def user_by_id(self, user_id: int) -> User | None:
        return await self._user_rows.ask(user_id)

    async def list_users(self) -> list[User]:
        return await self._users.list_users()

    async def search_users(self, prefix: str, exclude: str, limit: int) -> list[str]:
        return await self._users.search_users(prefix, exclude, limit)

    async def set_password(self, user_id: int, password_hash: str) -> User:
        return await self._users.set_password(user_id, password_hash)

    async def set_disabled(self, user_id: int, disabled: bool) -> User:
        return await self._users.set_disabled(user_id, disabled)

    async def users_changed_since(self, since_ms: int) -> list[User]:
        return await self._users.users_changed_since(since_ms)

    # --- tokens (chatd.store.postgres.tokens) ---------------------------------------------

    async def revoke_token(self, jti: str, user_id: int, expires_at: int) -> None:
        await self._tokens.revoke_token(jti, user_id, expires_at)

    async def revoked_since(self, since: float) -> list[tuple[str, int]]:
        return await self._tokens.revoked_since(since)

    async def retire_token(self, retirement: Retirement, user_id: int) -> bool:
        return await self._tokens.retire_token(retirement, user_id)

    async def retired_since(self, since: float) -> list[Retirement]:
        return await self._tokens.retired_since(since)

    async def advance_family(
        self, family: str, presented: str, new_head: str, user_id: int, expires_at: int
    ) -> bool:
        return await self._tokens.advance_family(family, presented, new_head, user_id, expires_at)

    async def family_head(self, family: str) -> str | None:
        return await self._tokens.family_head(family)

    async def revoke_family(self, family: str, user_id: int, expires_at: int) -> None:
        await self._tokens.revoke_family(family, user_id, expires_at)

    async def revoked_families_since(self, since: float) -> list[tuple[str, int]]:
        return await self._tokens.revoked_families_since(since)

    # --- login limits (chatd.store.postgres.logins) ---------------------------------------

    async def record_login_failure(self, ip: str, username: str, at: float) -> None:
        await self._logins.record_login_failure(ip, username, at)

    async def login_failures(self, ip: str, since: float) -> list[float]:
        return await self._logins.login_failures(ip, since)

    async def account_failures(self, username: str, since: float) -> int:
        return await self._logins.account_failures(username, since)

    async def recent_login_failures(self, since: float) -> list[tuple[str, str, float]]:
        return await self._logins.recent_login_failures(since)

    async def clear_login_failures(self, *, ip: str | None = None,
                                   username: str | None = None) -> int:
        return await self._logins.clear_login_failures(ip=ip, username=username)

    async def reserve_login_attempt(
        self, ip: str, username: str, since: float, decide: LoginDecider
    ) -> float | None:
        return await self._logins.reserve_login_attempt(ip, username, since, decide)

    async def release_login_attempt(self, ip: str, username: str, at: float) -> None:
        await self._logins.release_login_attempt(ip, username, at)

    # --- messages (chatd.store.postgres.messages) -----------------------------------------

    async def submit(self, messages: Sequence[NewMessage]) -> list[Message]:
        """Queue messages for the writer; returns after the COMMIT that holds them."""
        return await self._writer.submit(messages)

    async def mark_delivered(
        self, recipient_id: int, seqs: Sequence[int], now_ms: int
    ) -> list[Message]:
        # by way of this object's mark_delivered_many: a subclass's override counts
        return (await self.mark_delivered_many([(recipient_id, seqs)], now_ms))[0]

    async def mark_delivered_many(
        self, marks: Sequence[tuple[int, Sequence[int]]], now_ms: int
    ) -> list[list[Message]]:
        return await self._marks.mark(marks, now_ms)

    async def mark_read(self, reader_id: int, peer_id: int, up_to: int, now_ms: int) -> ReadResult:
        return await self._messages.mark_read(reader_id, peer_id, up_to, now_ms)

    async def messages_by_seq(self, seqs: Sequence[int]) -> list[Message]:
        return await self._messages.messages_by_seq(seqs)

    async def sent_message(self, sender_id: int, client_id: str) -> Message | None:
        return await self._messages.sent_message(sender_id, client_id)

    async def undelivered(self, recipient_id: int, after_seq: int, limit: int) -> list[Message]:
        return [queued.message for queued in await self.queued(recipient_id, after_seq, limit)]

    async def queued(self, recipient_id: int, after_seq: int, limit: int) -> list[Queued]:
        return list(await self._queued.ask((recipient_id, after_seq, limit)))

    async def count_failed_pushes(self, recipient_id: int, seqs: Sequence[int]) -> None:
        await self._messages.count_failed_pushes(recipient_id, seqs)

    async def history(
        self, user_id: int, peer_id: int, before: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        return await self._messages.history(user_id, peer_id, before, limit)

    async def conversations(self, user_id: int) -> list[tuple[str, Message, int]]:
        return await self._messages.conversations(user_id)

    async def peers(self, user_id: int) -> list[str]:
        return list(await self._peers.ask(user_id))  # a list of its own: callers may change it

    async def queue_depth(self, recipient_id: int) -> int:
        return await self._messages.queue_depth(recipient_id)
