"""Who is online on which connection, and what their tokens allow.

:class:`Sessions` keeps the roster and enforces token deaths on it: each connection
closes (4001) when its token expires, and at once when the token is revoked (logout,
password change, disabled user, a reused token's family); a rotating refresh moves the
close to the end of the grace. It is the :class:`chatd.accounts.TokenNews` listener, so
it is made before :class:`chatd.accounts.Accounts`, and needs nothing of it.

:class:`SignIn` turns a hello into a connection on the roster (welcome) and handles
``reauth``; it checks tokens through :class:`~chatd.accounts.Accounts`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from chatd import bus as busmod
from chatd.accounts import Accounts, Identity, Unauthorized
from chatd.auth import Claims, RevocationCache
from chatd.hub.common import Common
from chatd.hub.online import Online, Roster, Session
from chatd.observe.logs import EventLogger
from chatd.observe.metrics import Metrics
from chatd.store import Retirement, StoreError, User
from chatd.timers import Timers
from chatd.users import UserDirectory
from libchat import limits, protocol
from libchat.protocol import Error, Hello, Reauth, Reauthed, Welcome

log = EventLogger(logging.getLogger(__name__))

# Seconds a hello waits for the store to check its token before the connection is told
# to come back later: the contract's "every request is answered within a bound".
CHECK_BOUND = 2.0


class Sessions:
    """The roster of connections online here, and their tokens' lifetimes."""

    def __init__(
        self,
        revocations: RevocationCache,
        users: UserDirectory,
        metrics: Metrics,
        publish: Callable[[busmod.BusEvent], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.roster = Roster()
        self.revocations = revocations
        self._users = users
        self._metrics = metrics
        self._publish = publish
        self._clock = clock
        # every connection's token expiry, on one loop timer (see chatd.timers)
        self._expiries = Timers(asyncio.get_running_loop())

    def add(self, session: Session, identity: Identity) -> tuple[Online, bool]:
        """Put a welcomed connection on the roster: (its record, whether it is its
        user's first connection here)."""
        online = Online(session, identity.user, identity.claims.jti)
        first_device = self.roster.add(online)
        self._arm_expiry(online, identity.claims)
        self._metrics.users_online.set(len(self.roster.by_user))
        return online, first_device

    def remove(self, conn_id: int) -> tuple[Online | None, bool]:
        """Take a closed connection off the roster: (its record or None, whether it was
        its user's last connection here)."""
        online, last_device = self.roster.remove(conn_id)
        if online is not None:
            if online.expiry is not None:
                online.expiry.cancel()
            self._metrics.users_online.set(len(self.roster.by_user))
        return online, last_device

    def reauthed(self, online: Online, identity: Identity) -> None:
        """A connection moved to a newer token of its user."""
        self.roster.change_jti(online, identity.claims.jti)
        online.session.identity = identity
        self._arm_expiry(online, identity.claims)

    # --- lifetimes --------------------------------------------------------------------

    def _arm_expiry(self, online: Online, claims: Claims) -> None:
        if online.expiry is not None:
            online.expiry.cancel()
        now = self._clock()
        delay = max(0.0, self.revocations.usable_until(claims, now) - now)
        online.expiry = self._expiries.call_later(delay, self._expire, online)

    def _expire(self, online: Online) -> None:
        online.expiry = None
        online.session.fail("unauthorized", limits.CLOSE_UNAUTHORIZED, "token expired")

    def revoke_token(self, jti: str) -> None:
        """Close every connection that authenticated with this token (logout)."""
        for online in list(self.roster.by_jti.get(jti, ())):
            online.session.fail("unauthorized", limits.CLOSE_UNAUTHORIZED, "token revoked")

    def revoke_user(self, user: User) -> None:
        """Close every connection of a user whose tokens died (password, disable)."""
        self._users.remember(user)
        for online in list(self.roster.by_user.get(user.username, ())):
            claims = online.session.identity.claims if online.session.identity else None
            if user.disabled or claims is None or claims.generation != user.token_generation:
                online.session.fail("unauthorized", limits.CLOSE_UNAUTHORIZED, "token revoked")

    def retire_token(self, retirement: Retirement) -> None:
        """A rotating refresh retired this token: its connections that do not ``reauth``
        with a newer token close (4001) when the grace ends."""
        for online in self.roster.by_jti.get(retirement.jti, ()):
            identity = online.session.identity
            if identity is not None:
                self._arm_expiry(online, identity.claims)

    def revoke_family(self, family: str) -> None:
        """Close every connection whose token belongs to ``family`` (a reused token)."""
        for online in list(self.roster.by_session.values()):
            identity = online.session.identity
            if identity is not None and identity.claims.family == family:
                online.session.fail("unauthorized", limits.CLOSE_UNAUTHORIZED, "token revoked")

    # --- chatd.accounts.TokenNews: deaths decided here, enforced and told to the others

    def revoked(self, jti: str, expires_at: int) -> None:
        self.revoke_token(jti)
        self._publish(busmod.TokenRevoked(jti=jti, expires_at=expires_at))

    def retired(self, retirement: Retirement) -> None:
        self.retire_token(retirement)
        self._publish(busmod.TokenRetired.of(retirement))

    def family_revoked(self, family: str, expires_at: int) -> None:
        self.revoke_family(family)
        self._publish(busmod.FamilyRevoked(family=family, expires_at=expires_at))


class SignIn:
    """Hellos (token check, then welcome, or a refusal and a close) and reauths.

    A hello whose token cannot be checked from memory waits for the store; the frames
    that arrive meanwhile are kept in order (``pending``) and handed to ``receive`` once
    the connection is welcomed. ``welcomed`` starts its catch-up.
    """

    def __init__(
        self,
        common: Common,
        accounts: Accounts,
        sessions: Sessions,
        *,
        welcomed: Callable[[Online, bool], None],
        receive: Callable[[Session, list[object]], None],
    ) -> None:
        self._max_connections = common.config.max_connections_per_user
        self._metrics = common.metrics
        self._spawn = common.tasks.spawn
        self._clock = common.clock
        self._roster = common.roster
        self._accounts = accounts
        self._sessions = sessions
        self._welcomed = welcomed
        self._receive = receive
        self.pending: dict[int, list[object]] = {}  # frames that came while a hello was checked

    def forget(self, conn_id: int) -> None:
        """The connection closed: drop the frames it had waiting."""
        self.pending.pop(conn_id, None)

    def hello(self, session: Session, hello: Hello, rest: list[object]) -> None:
        token = hello.token or session.upgrade_token
        if token is None or (
            hello.token and session.upgrade_token and hello.token != session.upgrade_token
            and not self._same_user(hello.token, session.upgrade_token)
        ):
            self._refuse_hello(session, "no valid token")
            return
        try:
            identity = self._accounts.check_cached(token)
        except Unauthorized:
            self._refuse_hello(session, "invalid or expired token")
            return
        version = protocol.negotiated_version(hello.protocol)
        if identity is not None:
            if self._welcome(session, identity, version) and rest:
                self._receive(session, rest)
            return
        self.pending[session.conn_id] = list(rest)
        self._spawn(self._hello_slow(session, token, version))

    def _refuse_hello(self, session: Session, message: str) -> None:
        self._metrics.refusals.record(log, "token.refused", key=session.peer_ip,
                                      level=logging.INFO, ip=session.peer_ip,
                                      conn_id=session.conn_id, op="hello")
        session.fail("unauthorized", limits.CLOSE_UNAUTHORIZED, message)

    def _same_user(self, first: str, second: str) -> bool:
        try:
            one = self._accounts.check_cached(first)
            two = self._accounts.check_cached(second)
        except Unauthorized:
            return False
        return one is not None and two is not None and one.user.id == two.user.id

    async def _hello_slow(self, session: Session, token: str, version: str) -> None:
        try:
            identity = await asyncio.wait_for(self._accounts.authenticate(token), CHECK_BOUND)
        except Unauthorized:
            self.pending.pop(session.conn_id, None)
            self._refuse_hello(session, "invalid or expired token")
            return
        except (TimeoutError, StoreError):
            # the store cannot tell who this is now: say so, and to come back later
            self.pending.pop(session.conn_id, None)
            session.fail("internal_error", limits.CLOSE_TRY_AGAIN_LATER,
                         "the server cannot check tokens right now; reconnect later")
            return
        rest = self.pending.pop(session.conn_id, None)
        if rest is None:  # the connection closed while its token was checked
            return
        if self._welcome(session, identity, version) and rest:
            self._receive(session, rest)

    def _welcome(self, session: Session, identity: Identity, version: str) -> bool:
        """Welcome a session whose token checked out, in the negotiated protocol
        ``version``; False when the user already has as many connections as allowed
        (the new one is refused, 4004)."""
        user = identity.user
        if len(self._roster.by_user.get(user.username, ())) >= self._max_connections:
            self._metrics.refusals.record(log, "connection.too_many", key=session.peer_ip,
                                          ip=session.peer_ip, user=user.username)
            session.fail(
                "too_many_connections", limits.CLOSE_TOO_MANY_CONNECTIONS,
                f"at most {self._max_connections} connections per user",
            )
            return False
        session.signed_in(identity)
        session.send_frame(
            Welcome(user_id=user.id, username=user.username, protocol=version,
                    server_time=int(self._clock() * 1000))
        )
        online, first_device = self._sessions.add(session, identity)
        self._welcomed(online, first_device)
        return True

    # --- reauth -----------------------------------------------------------------------

    def reauth(self, online: Online, frame: Reauth) -> None:
        try:
            identity = self._accounts.check_cached(frame.token)
        except Unauthorized:
            self._refuse_reauth(online)
            return
        if identity is None:  # a key not loaded yet, or a reuse to record: the slow path
            self._spawn(self._reauth_slow(online, frame.token))
            return
        self._reauthed(online, identity)

    async def _reauth_slow(self, online: Online, token: str) -> None:
        try:
            identity = await self._accounts.authenticate(token)
        except Unauthorized:
            self._refuse_reauth(online)
            return
        if self._roster.is_current(online):
            self._reauthed(online, identity)

    def _refuse_reauth(self, online: Online) -> None:
        session = online.session
        self._metrics.refusals.record(log, "token.refused", key=session.peer_ip,
                                      level=logging.INFO, ip=session.peer_ip,
                                      conn_id=session.conn_id, op="reauth")
        session.send_frame(
            Error(code="unauthorized", message="reauth needs a valid token of this user")
        )

    def _reauthed(self, online: Online, identity: Identity) -> None:
        if identity.user.id != online.user.id:
            self._refuse_reauth(online)
            return
        self._sessions.reauthed(online, identity)
        expires_in = max(0, int(identity.claims.expires_at - self._clock()))
        online.session.send_frame(Reauthed(expires_in=expires_in))
