"""The Store interface: everything chatd keeps, behind one async protocol.

Two implementations pass one contract suite (``tests/store/``): SQLite through apsw
(``chatd.store.sqlite``) and PostgreSQL through psycopg 3 (``chatd.store.postgres``).
Every method is a coroutine that never blocks the event loop; writes are batched by the
implementation (group commit) and a coroutine returns only once its write is durable.

Users are keyed by their lower-case username on the wire; ids stay inside the store and
the tokens. Messages leave the store as :class:`libchat.protocol.Message`, the wire
object, with ``from``/``to`` as usernames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence, Sized
from typing import Any, Protocol, TypeVar

import attrs

from libchat.protocol import Message

T = TypeVar("T")

# Given the times of the failed and in-flight logins from one IP and against one account
# (each list oldest first), when to count a new attempt, or None to refuse it.
LoginDecider = Callable[[list[float], list[float]], "float | None"]


class StoreError(Exception):
    """The store cannot do its work (database gone, disk full, corrupt file)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now, or did not answer within its bound; it may be
    back soon. The store logs the outage itself (once when it starts, once when it
    ends), so callers need not log each of these."""


class SchemaMismatch(StoreError):
    """The database's schema version is not the one this chatd knows."""

    def __init__(self, found: int, expected: int) -> None:
        hint = "run `chatd migrate`" if found < expected else "upgrade chatd"
        super().__init__(f"database schema is version {found}, this chatd needs {expected}: {hint}")
        self.found = found
        self.expected = expected


@attrs.frozen(kw_only=True)
class User:
    id: int
    username: str
    password_hash: str
    disabled: bool
    token_generation: int  # bumped by a password change or a disable: older tokens die
    created_at: int  # Unix ms


def failure_filter(
    ip: str | None, username: str | None, placeholder: str
) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause (and its arguments) of the login failures of ``ip`` and/or
    ``username``; the two stores share it (``placeholder``: their parameter marker)."""
    clauses: list[str] = []
    args: list[str] = []
    if ip is not None:
        clauses.append(f"ip = {placeholder}")
        args.append(ip)
    if username is not None:
        clauses.append(f"username = {placeholder}")
        args.append(username.lower())
    if not clauses:
        raise ValueError("give an address, a username or both")
    return " AND ".join(clauses), tuple(args)


def user_from_row(row: Sequence[Any]) -> User:
    """A User from the columns both stores select, in this order: id, username,
    password_hash, disabled, token_generation, created_at."""
    return User(
        id=row[0],
        username=row[1],
        password_hash=row[2],
        disabled=bool(row[3]),
        token_generation=row[4],
        created_at=row[5],
    )


def message_from_row(row: Sequence[Any]) -> Message:
    """A Message from the columns both stores select, in this order: client_id, seq,
    sender name, recipient name, body, ts, delivered_at, read_at."""
    return Message.trusted(
        id=row[0],
        seq=row[1],
        sender=row[2],
        recipient=row[3],
        body=row[4],
        ts=row[5],
        delivered_at=row[6],
        read_at=row[7],
    )


@attrs.frozen(kw_only=True)
class NewMessage:
    """A message as accepted from a sender, before the store gives it a seq."""

    sender_id: int
    sender: str
    recipient_id: int
    recipient: str
    client_id: str
    body: str
    ts: int  # Unix ms, the server's clock at acceptance


@attrs.frozen(kw_only=True)
class Queued:
    """An undelivered message, and how many of its pushes ended unconfirmed (their
    connection closed before the recipient said ``delivered``): the next push is
    attempt ``failed_pushes + 1``."""

    message: Message
    failed_pushes: int


@attrs.frozen(kw_only=True)
class ReadResult:
    up_to: int | None  # highest seq newly marked read; None when nothing changed
    newly_delivered: tuple[Message, ...]  # messages the read also marked delivered


@attrs.frozen(kw_only=True)
class Retirement:
    """A token retired by a rotating refresh: usable until ``grace_until``, after which
    any use of it is a reuse that revokes its whole family."""

    jti: str
    family: str  # the jti of the login's token; a token without ``fam`` is its own family
    expires_at: int  # Unix s: the token's own expiry; the record may go afterwards
    grace_until: float  # Unix s


@attrs.frozen(kw_only=True)
class Stats:
    users: int
    messages: int
    undelivered: int
    db_bytes: int


def split_like(flat: Sequence[T], parts: Iterable[Sized]) -> list[list[T]]:
    """``flat`` cut into consecutive pieces as long as each of ``parts``: the answers
    of several callers whose requests ran as one (a group's statement)."""
    pieces: list[list[T]] = []
    start = 0
    for part in parts:
        pieces.append(list(flat[start : start + len(part)]))
        start += len(part)
    return pieces


class Store(Protocol):
    schema_version: int  # the version this implementation writes and expects

    async def open(self) -> None:
        """Connect, check the schema (raising :class:`SchemaMismatch`), start workers."""

    async def close(self) -> None:
        """Finish every write already submitted, then release connections."""

    async def migrate(self) -> int:
        """Create or upgrade the schema; returns the version now in place."""

    async def continue_seqs(self) -> None:
        """For the server, after :meth:`open`: new seqs stay above every seq this
        database ever issued, even after its file was restored from an older backup
        (SQLite keeps a lease beside the file; PostgreSQL's sequence is the operator's,
        restored with the database)."""

    async def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers a trivial query."""

    async def changed_elsewhere(self) -> bool:
        """Whether another process committed to the database since the last call: a
        cheap look the server makes often, to see admin changes at once. SQLite asks
        its writer connection; PostgreSQL always says False, since its changes of
        users, tokens and keys announce themselves (``chatd.bus.StoreChanged``)."""

    # --- users and tokens ---
    async def create_user(self, username: str, password_hash: str, now_ms: int) -> User | None:
        """None when the username is taken."""

    async def user_by_name(self, username: str) -> User | None: ...

    async def user_by_id(self, user_id: int) -> User | None: ...

    async def list_users(self) -> list[User]: ...

    async def search_users(self, prefix: str, exclude: str, limit: int) -> list[str]:
        """Usernames starting with ``prefix`` (lower-case), sorted, without ``exclude``."""

    async def set_password(self, user_id: int, password_hash: str) -> User:
        """Store a new hash and bump the token generation."""

    async def set_disabled(self, user_id: int, disabled: bool) -> User:
        """Disable or enable; disabling bumps the token generation."""

    async def users_changed_since(self, since_ms: int) -> list[User]:
        """Users whose password, disabled flag or token generation changed at or after
        ``since_ms`` (Unix ms; a ``changed_at`` column kept by set_password/set_disabled).
        A running chatd polls this to close the connections of users changed by
        ``chatd user ...`` from another process."""

    async def revoke_token(self, jti: str, user_id: int, expires_at: int) -> None:
        """Revoke one token until ``expires_at`` (Unix s); idempotent."""

    async def revoked_since(self, since: float) -> list[tuple[str, int]]:
        """``(jti, expires_at)`` of revocations recorded at or after ``since`` (Unix s)
        that have not expired; ``since=0`` gives them all (to warm a cache)."""

    async def retire_token(self, retirement: Retirement, user_id: int) -> bool:
        """Record a rotating refresh of ``retirement.jti``; True when this call retired
        it, False when it was already retired (the caller treats that as a reuse)."""

    async def retired_since(self, since: float) -> list[Retirement]:
        """Retirements recorded at or after ``since`` (Unix s) whose tokens have not
        expired, oldest first; ``since=0`` gives them all (to warm a cache)."""

    async def advance_family(
        self, family: str, presented: str, new_head: str, user_id: int, expires_at: int
    ) -> bool:
        """A rotating refresh of token ``presented`` made ``new_head`` the newest token of
        ``family`` (kept until ``expires_at``). False when the family already has a newest
        token and it is not ``presented``: a refresh of an older token or of a fork, which
        the caller treats as a reuse. The first rotation of a family always succeeds."""

    async def family_head(self, family: str) -> str | None:
        """The newest token of ``family`` after its rotating refreshes (None: never
        rotated, or expired)."""

    async def revoke_family(self, family: str, user_id: int, expires_at: int) -> None:
        """Revoke every token of ``family`` until ``expires_at`` (Unix s); idempotent, a
        later expiry extends the record."""

    async def revoked_families_since(self, since: float) -> list[tuple[str, int]]:
        """``(family, expires_at)`` of family revocations recorded at or after ``since``
        that have not expired; ``since=0`` gives them all."""

    async def record_login_failure(self, ip: str, username: str, at: float) -> None: ...

    async def login_failures(self, ip: str, since: float) -> list[float]:
        """Times (Unix s) of failed logins from ``ip`` at or after ``since``, oldest first."""

    async def account_failures(self, username: str, since: float) -> int:
        """How many failed logins against ``username`` at or after ``since``."""

    async def recent_login_failures(self, since: float) -> list[tuple[str, str, float]]:
        """``(ip, username, at)`` of the failed and in-flight logins at or after
        ``since``, oldest first (``chatd limits show``)."""

    async def clear_login_failures(self, *, ip: str | None = None,
                                   username: str | None = None) -> int:
        """Forget the failed logins from ``ip`` and/or against ``username`` (at least one
        given); returns how many (``chatd limits clear``)."""

    async def reserve_login_attempt(
        self, ip: str, username: str, since: float, decide: LoginDecider
    ) -> float | None:
        """Atomically, across every node of the database: read the times (at or after
        ``since``) of the failed and in-flight logins from ``ip`` and against
        ``username``, ask ``decide`` when this attempt is to be counted (None: refused),
        and record it then as a failure. Returns that time, or None.

        The attempt counts as failed until :meth:`release_login_attempt` says otherwise,
        so logins that arrive together cannot all pass a limit checked before them."""

    async def release_login_attempt(self, ip: str, username: str, at: float) -> None:
        """Forget one attempt recorded by :meth:`reserve_login_attempt` (it succeeded)."""

    # --- messages ---
    async def submit(self, messages: Sequence[NewMessage]) -> list[Message]:
        """Store messages durably; returns, for each input in order, the stored message.
        A repeated (sender, client_id) returns the original, whatever the new content."""

    async def mark_delivered(
        self, recipient_id: int, seqs: Sequence[int], now_ms: int
    ) -> list[Message]:
        """Mark messages addressed to ``recipient_id`` delivered; returns those newly
        marked (others, and messages addressed to someone else, are ignored), in seq
        order."""

    async def mark_delivered_many(
        self, marks: Sequence[tuple[int, Sequence[int]]], now_ms: int
    ) -> list[list[Message]]:
        """``mark_delivered(recipient_id, seqs, now_ms)`` for every ``(recipient_id,
        seqs)`` of ``marks``, in one transaction; one list per entry, in order. When a
        recipient appears in several entries, a seq is returned by the first entry
        that marked it only."""

    async def mark_read(self, reader_id: int, peer_id: int, up_to: int, now_ms: int) -> ReadResult:
        """Mark every message from ``peer_id`` to ``reader_id`` with seq <= ``up_to`` read
        (and delivered). ``up_to`` beyond the conversation's last message is ignored."""

    async def messages_by_seq(self, seqs: Sequence[int]) -> list[Message]:
        """The messages with these seqs, in seq order (unknown seqs are left out); a
        node reads what another node's bus event points at."""

    async def sent_message(self, sender_id: int, client_id: str) -> Message | None:
        """The message ``sender_id`` already stored under ``client_id``, if any: a
        repeated send gets its original ack even when the repeat itself is refused."""

    async def undelivered(self, recipient_id: int, after_seq: int, limit: int) -> list[Message]:
        """Messages to ``recipient_id`` not yet delivered, seq > ``after_seq``, oldest first."""

    async def queued(self, recipient_id: int, after_seq: int, limit: int) -> list[Queued]:
        """:meth:`undelivered`, each with its count of failed pushes (a catch-up)."""

    async def count_failed_pushes(self, recipient_id: int, seqs: Sequence[int]) -> None:
        """One more push of each of these messages to ``recipient_id`` ended unconfirmed
        (delivered ones, and other recipients' messages, are left alone). Called only
        when a connection closes with such pushes: never on the way of a live push."""

    async def history(
        self, user_id: int, peer_id: int, before: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        """The ``limit`` messages just before ``before`` (default newest), oldest first,
        and whether older ones exist."""

    async def conversations(self, user_id: int) -> list[tuple[str, Message, int]]:
        """``(peer, last_message, unread)`` for every conversation, newest first."""

    async def peers(self, user_id: int) -> list[str]:
        """Usernames that share a conversation with ``user_id`` (for presence)."""

    async def queue_depth(self, recipient_id: int) -> int:
        """How many messages to ``recipient_id`` are undelivered."""

    async def undelivered_total(self) -> int:
        """How many messages are undelivered, to anyone: read from the index of the
        undelivered, never a scan of every message (the metrics ask every 15 s)."""

    async def stats(self) -> Stats:
        """Counts for ``chatd stats``: these scan whole tables, seconds on a big store."""
