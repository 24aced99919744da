"""Who is online on this node: the hub's view of a WebSocket (:class:`Session`), its
per-connection state (:class:`Online`), and the indexes every part of the hub reads
(:class:`Roster`). Only :class:`chatd.hub.sessions.Sessions` changes the roster.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Final, Protocol

from chatd.accounts import Identity
from chatd.ratelimit import TokenBucket
from chatd.store import User
from chatd.timers import Timer
from libchat import protocol

MAX_TRACKED_PUSHES = 10_000  # unconfirmed seqs remembered per connection
_NO_SEQS: Final[frozenset[int]] = frozenset()


class Session(Protocol):
    """One WebSocket connection as the hub sees it."""

    conn_id: int
    peer_ip: str
    upgrade_token: str | None  # the token of the upgrade's Authorization header, if any
    identity: Identity | None  # set by the hub once the hello is accepted

    def signed_in(self, identity: Identity) -> None:
        """Its hello was accepted: set ``identity`` (it is no longer anonymous)."""

    def send_frame(self, frame: protocol.ServerFrame) -> None: ...

    def send_text(self, text: str) -> None: ...

    def fail(self, code: str, close_code: int, message: str | None = None) -> None: ...

    async def drained(self) -> None:
        """Return once the socket can take more output (backpressure)."""


class Online:
    """Hub-side state of one authenticated session.

    What only some connections need is made at its first use and dropped when empty
    again (an idle connection carries none of it: 10,000 of them saved 3 MiB).
    """

    __slots__ = (
        "_unconfirmed", "catching_up", "deferred", "expiry", "jti", "presence_sent",
        "read_bucket", "session", "typing_bucket", "user",
    )

    def __init__(self, session: Session, user: User, jti: str) -> None:
        self.session = session
        self.user = user
        self.jti = jti
        self.catching_up = True
        # live pushes held back during catch-up: (seq, frame, addressed to this user)
        self.deferred: list[tuple[int, str, bool]] | None = None
        self.expiry: Timer | None = None
        # the last presence told, per peer: at most one entry per conversation peer
        self.presence_sent: dict[str, bool] | None = None
        # seqs pushed to this connection as the recipient and not yet confirmed: a
        # repeated send pushes again only where its first push never went
        self._unconfirmed: set[int] | None = None
        # per-connection limits on typing and read frames, made at the first of each
        self.typing_bucket: TokenBucket | None = None
        self.read_bucket: TokenBucket | None = None

    @property
    def unconfirmed(self) -> AbstractSet[int]:
        """The seqs pushed to this connection and not confirmed yet."""
        return self._unconfirmed or _NO_SEQS

    def pushed(self, seq: int) -> None:
        unconfirmed = self._unconfirmed
        if unconfirmed is None:
            self._unconfirmed = unconfirmed = set()
        elif len(unconfirmed) >= MAX_TRACKED_PUSHES:
            unconfirmed.clear()  # forget, at worst a later repeat is pushed again
        unconfirmed.add(seq)

    def confirmed(self, seqs: Iterable[int]) -> None:
        """Its user confirmed ``seqs`` (on this connection or another)."""
        unconfirmed = self._unconfirmed
        if unconfirmed is not None:
            unconfirmed.difference_update(seqs)
            if not unconfirmed:
                self._unconfirmed = None  # a set keeps its grown table: let it go

    def push(self, seq: int, text: str, *, to_me: bool) -> bool:
        """Write a push now (True), or hold it back until the catch-up is done (False)."""
        if self.catching_up:
            if self.deferred is None:
                self.deferred = []
            self.deferred.append((seq, text, to_me))
            return False
        self.session.send_text(text)
        return True


class Roster:
    """The connections online here, by connection id, by username and by token id.

    A key is present only while it has connections (a user's last disconnect removes
    it), so the indexes hold what is online and nothing more. The parts keep references
    to these dicts and read them on their hot paths; only ``Sessions`` writes them.
    """

    __slots__ = ("by_jti", "by_session", "by_user")

    def __init__(self) -> None:
        self.by_session: dict[int, Online] = {}
        self.by_user: dict[str, list[Online]] = {}
        self.by_jti: dict[str, list[Online]] = {}

    def add(self, online: Online) -> bool:
        """Index a new connection; True when it is its user's first one here."""
        self.by_session[online.session.conn_id] = online
        first_device = online.user.username not in self.by_user
        self.by_user.setdefault(online.user.username, []).append(online)
        self.by_jti.setdefault(online.jti, []).append(online)
        return first_device

    def remove(self, conn_id: int) -> tuple[Online | None, bool]:
        """Forget a connection: (its record or None, whether it was its user's last)."""
        online = self.by_session.pop(conn_id, None)
        if online is None:
            return None, False
        _remove(self.by_jti, online.jti, online)
        return online, _remove(self.by_user, online.user.username, online)

    def change_jti(self, online: Online, jti: str) -> None:
        """A ``reauth`` moved a connection to a newer token."""
        _remove(self.by_jti, online.jti, online)
        online.jti = jti
        self.by_jti.setdefault(jti, []).append(online)

    def is_current(self, online: Online) -> bool:
        """Whether ``online`` is still the connection's record (it has not closed)."""
        return self.by_session.get(online.session.conn_id) is online


def _remove(index: dict[str, list[Online]], key: str, online: Online) -> bool:
    """Remove ``online`` from ``index[key]``; True when that emptied the key."""
    entries = index.get(key)
    if entries is None:
        return False
    if online in entries:
        entries.remove(online)
    if not entries:
        del index[key]
        return True
    return False
