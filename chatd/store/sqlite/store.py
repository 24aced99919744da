"""The SQLite store's face: :class:`SqliteStore`, the Store protocol on one file.

It owns the parts and their lifecycle (open, close, migrate, ping, backup, the seq
lease) and hands every query to the group that holds it: :class:`Users`,
:class:`Tokens`, :class:`LoginLimits`, :class:`Messages`. How writes are committed is
:mod:`chatd.store.sqlite.writer`'s job; how reads run, :mod:`chatd.store.sqlite.readers`'.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import apsw

from chatd.store.base import (
    LoginDecider,
    NewMessage,
    Queued,
    ReadResult,
    Retirement,
    Stats,
    StoreError,
    StoreUnavailable,
    User,
)
from chatd.store.seqlease import SeqLease
from chatd.store.sqlite.backup import backup
from chatd.store.sqlite.db import last_seq, log, scalar, set_last_seq
from chatd.store.sqlite.logins import LoginLimits
from chatd.store.sqlite.messages import Messages
from chatd.store.sqlite.prune import Pruner
from chatd.store.sqlite.readers import ReadPool
from chatd.store.sqlite.schema import SCHEMA_VERSION, apply_migrations, check_schema, migrate_file
from chatd.store.sqlite.tokens import Tokens
from chatd.store.sqlite.users import Users
from chatd.store.sqlite.writer import COMMIT_INTERVAL, Writer
from libchat.protocol import Message

__all__ = ["SqliteStore"]


class SqliteStore:
    """The :class:`~chatd.store.base.Store` on one SQLite file.

    ``sync`` is ``"full"`` (every commit survives a power cut) or ``"normal"`` (a power
    cut may lose the last commits, never corrupt). ``readers`` sizes the read pool.
    ``commit_interval``: under load, seconds from the start of one transaction to the
    next at least (group commit, see :class:`~chatd.store.sqlite.writer.CommitPacer`).

    Counters for metrics: ``commits`` and ``last_batch_size`` (messages inserted by the
    last transaction, as the PostgreSQL store counts); ``on_commit(batch_size, seconds)``,
    if given, is called on the event loop after each commit. ``stall_bound``: seconds
    after which writes waiting on a writer that finishes nothing fail with
    StoreUnavailable (the server's, :mod:`chatd.store.sqlite.stall`); ``None`` waits.
    """

    schema_version: int = SCHEMA_VERSION

    def __init__(
        self,
        path: str | Path,
        *,
        sync: str = "full",
        readers: int = 2,
        commit_interval: float = COMMIT_INTERVAL,
        on_commit: Callable[[int, float], None] | None = None,
        stall_bound: float | None = None,
    ) -> None:
        if sync not in ("full", "normal"):
            raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
        if readers < 1:
            raise ValueError("readers must be at least 1")
        self.path = Path(path)
        self.sync = sync
        self.readers = readers
        self.commit_interval = commit_interval
        self._writer = Writer(self.path, sync, commit_interval, on_commit, stall_bound)
        self._reads = ReadPool(self.path, readers)
        pruner = Pruner()
        self._users = Users(self._writer, self._reads)
        self._tokens = Tokens(self._writer, self._reads, pruner)
        self._logins = LoginLimits(self._writer, self._reads, pruner)
        self._messages = Messages(self._writer, self._reads)

    @property
    def commits(self) -> int:
        return self._writer.commits

    @property
    def last_batch_size(self) -> int:
        return self._writer.last_batch_size

    @property
    def write_failure(self) -> str | None:
        """Why the last transaction failed, while no later one has committed."""
        return self._writer.write_failure

    @property
    def on_commit(self) -> Callable[[int, float], None] | None:
        return self._writer.on_commit

    @on_commit.setter
    def on_commit(self, hook: Callable[[int, float], None] | None) -> None:
        self._writer.on_commit = hook

    # --- lifecycle ------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer.running:
            raise StoreError("store is already open")
        await self._writer.start()
        try:
            await self._writer.run(check_schema)
        except BaseException:
            await self._writer.stop()
            raise
        self._reads.start(asyncio.get_running_loop())
        log.info("store.sqlite.open", path=self.path, sync=self.sync)

    async def continue_seqs(self) -> None:
        """From now on keep ``<database>.seqs`` ahead of every seq committed, and if this
        database's seqs are below it (the file was restored from an older backup), make
        new seqs continue above it. The server calls it; admin commands do not."""

        def job(conn: apsw.Connection) -> None:
            lease = SeqLease(self.path)
            last = last_seq(conn)
            if lease.value > last:
                set_last_seq(conn, lease.value)
                log.warning(
                    "store.sqlite.seqs_ahead", seq=lease.value, database_seq=last,
                    lease=lease.path, hint="the lease is ahead of the database: was it"
                    " restored from a backup? New seqs continue above the lease",
                )
            else:
                lease.write(last)
            self._writer.lease = lease

        await self._writer.run(job)

    async def close(self) -> None:
        if not self._writer.running:
            return
        lease = self._writer.lease
        if lease is not None and not self._writer.closing:
            # the exact last seq: a clean restart leaves no gap
            try:
                await self._writer.run(lambda conn: lease.write(last_seq(conn)))
            except StoreUnavailable as exc:  # a stalled writer: an outage, logged as one
                log.warning("store.sqlite.seq_record_failed", error=str(exc))
            except (StoreError, OSError):
                log.exception("store.sqlite.seq_record_failed")
        await self._writer.stop()
        await self._reads.stop()
        log.info("store.sqlite.closed", path=self.path, commits=self.commits)

    async def migrate(self) -> int:
        if self._writer.running:
            return await self._writer.run(apply_migrations)
        return await asyncio.to_thread(migrate_file, self.path, self.sync)

    async def ping(self) -> None:
        if not self._writer.alive:
            raise StoreError("the sqlite writer is not running")
        failure = self._writer.write_failure
        if failure is not None:
            raise StoreError(f"writes are failing: {failure}")
        if self._writer.stalled:
            raise StoreUnavailable("the writer has finished nothing within its bound")
        await self._reads.run(lambda conn: scalar(conn, "SELECT 1"))

    async def changed_elsewhere(self) -> bool:
        """Asked of the writer's connection: this server's own writes never count."""
        return await self._writer.changed_elsewhere()

    async def backup(self, dest_path: str | Path) -> None:
        """Write a consistent copy of the live database to ``dest_path`` (replaced)."""
        await asyncio.to_thread(backup, self.path, Path(dest_path))

    async def undelivered_total(self) -> int:
        sql = "SELECT count(*) FROM messages WHERE delivered_at IS NULL"
        return int(await self._reads.run(lambda conn: scalar(conn, sql)))

    async def stats(self) -> Stats:
        return await self._reads.run(self._stats)

    def _stats(self, conn: apsw.Connection) -> Stats:
        users = scalar(conn, "SELECT count(*) FROM users")
        messages = scalar(conn, "SELECT count(*) FROM messages")
        undelivered = scalar(conn, "SELECT count(*) FROM messages WHERE delivered_at IS NULL")
        pages = scalar(conn, "PRAGMA page_count") * scalar(conn, "PRAGMA page_size")
        try:
            wal = os.path.getsize(f"{self.path}-wal")
        except OSError:
            wal = 0
        return Stats(users=users, messages=messages, undelivered=undelivered, db_bytes=pages + wal)

    # --- users (chatd.store.sqlite.users) -----------------------------------------------

    async def create_user(self, username: str, password_hash: str, now_ms: int) -> User | None:
        return await self._users.create_user(username, password_hash, now_ms)

    async def user_by_name(self, username: str) -> User | None:
        return await self._users.user_by_name(username)

    async def user_by_id(self, user_id: int) -> User | None:
        return await self._users.user_by_id(user_id)

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

    # --- tokens (chatd.store.sqlite.tokens) ---------------------------------------------

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

    # --- login limits (chatd.store.sqlite.logins) ---------------------------------------

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

    # --- messages (chatd.store.sqlite.messages) -----------------------------------------

    async def submit(self, messages: Sequence[NewMessage]) -> list[Message]:
        return await self._messages.submit(messages)

    async def mark_delivered(
        self, recipient_id: int, seqs: Sequence[int], now_ms: int
    ) -> list[Message]:
        # by way of this object's mark_delivered_many: a subclass's override counts
        return (await self.mark_delivered_many([(recipient_id, seqs)], now_ms))[0]

    async def mark_delivered_many(
        self, marks: Sequence[tuple[int, Sequence[int]]], now_ms: int
    ) -> list[list[Message]]:
        return await self._messages.mark_delivered_many(marks, now_ms)

    async def mark_read(self, reader_id: int, peer_id: int, up_to: int, now_ms: int) -> ReadResult:
        return await self._messages.mark_read(reader_id, peer_id, up_to, now_ms)

    async def messages_by_seq(self, seqs: Sequence[int]) -> list[Message]:
        return await self._messages.messages_by_seq(seqs)

    async def sent_message(self, sender_id: int, client_id: str) -> Message | None:
        return await self._messages.sent_message(sender_id, client_id)

    async def undelivered(self, recipient_id: int, after_seq: int, limit: int) -> list[Message]:
        return [queued.message for queued in await self.queued(recipient_id, after_seq, limit)]

    async def queued(self, recipient_id: int, after_seq: int, limit: int) -> list[Queued]:
        return await self._messages.queued(recipient_id, after_seq, limit)

    async def count_failed_pushes(self, recipient_id: int, seqs: Sequence[int]) -> None:
        await self._messages.count_failed_pushes(recipient_id, seqs)

    async def history(
        self, user_id: int, peer_id: int, before: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        return await self._messages.history(user_id, peer_id, before, limit)

    async def conversations(self, user_id: int) -> list[tuple[str, Message, int]]:
        return await self._messages.conversations(user_id)

    async def peers(self, user_id: int) -> list[str]:
        return await self._messages.peers(user_id)

    async def queue_depth(self, recipient_id: int) -> int:
        return await self._messages.queue_depth(recipient_id)
