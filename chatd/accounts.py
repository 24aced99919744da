"""Accounts and tokens: registration, login (with its rate limits), logout, refresh, and
the one check every authenticated request and WebSocket goes through."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Container
from typing import Final, Protocol

import attrs

from chatd.admission import address_key
from chatd.auth import (
    Claims,
    InvalidToken,
    IssuedToken,
    KeyFileError,
    LoginLimiter,
    LoginTicket,
    Passwords,
    PasswordsBusy,
    RevocationCache,
    Tokens,
    UnknownKey,
)
from chatd.observe.logs import EventLogger
from chatd.observe.metrics import Metrics
from chatd.ratelimit import KeyedBuckets
from chatd.reply import UNAUTHORIZED, Reply
from chatd.store import Retirement, Store, StoreError, StoreUnavailable, User
from chatd.users import UserDirectory
from libchat import limits
from libchat.protocol import (
    Credentials,
    Registered,
    TokenGrant,
    is_valid_username,
    normalize_username,
)

log = EventLogger(logging.getLogger(__name__))

# Per client address (an IPv6 /64), trusted addresses aside; the failed-login limit is
# the LoginLimiter's and applies to every address.
REGISTER_BURST: Final = 5  # accounts one address may make at once...
REGISTER_RATE: Final = 5 / 3600  # ...then five an hour: people sign up once
LOGIN_BURST: Final = 20  # logins (right or wrong) one address may start at once...
LOGIN_RATE: Final = 1 / 3  # ...then one every 3 s: people log in now and then
BUSY_RETRY_AFTER: Final = 1  # seconds: the argon2 queue drains within about that

PASSWORDS_BUSY: Final = Reply.error(
    503, "server_busy", "the server is busy checking passwords; try again shortly",
    Retry_After=str(BUSY_RETRY_AFTER),
)
REGISTRATION_CLOSED: Final = Reply.error(
    403, "registration_closed", "this server does not take new accounts here"
)


DEFAULT_REFRESH_GRACE = 60.0  # seconds a token retired by a rotating refresh stays usable


class Unauthorized(Exception):
    """A token that is missing, malformed, expired, revoked or of a changed user."""


class _Undecided(Exception):
    """Only the async path can judge this token: its key may have been added since the
    keyring was loaded, or it is a retired token used after its grace (a reuse, whose
    family must be revoked in the store)."""

    def __init__(self, claims: Claims | None = None, retirement: Retirement | None = None):
        super().__init__()
        self.claims = claims
        self.retirement = retirement


class TokenNews(Protocol):
    """Told of each token that dies here before its expiry, to close the connections
    it holds and tell the other nodes (:class:`chatd.hub.sessions.Sessions`). Made
    before :class:`Accounts`, which is handed it: no back-edge set after construction."""

    def revoked(self, jti: str, expires_at: int) -> None:
        """A logout revoked the token ``jti``."""

    def retired(self, retirement: Retirement) -> None:
        """A rotating refresh retired a token: usable until its grace ends."""

    def family_revoked(self, family: str, expires_at: int) -> None:
        """A reused token revoked its whole family."""


@attrs.frozen
class Identity:
    user: User
    claims: Claims


class Accounts:
    def __init__(
        self,
        store: Store,
        users: UserDirectory,
        passwords: Passwords,
        tokens: Tokens,
        limiter: LoginLimiter,
        revocations: RevocationCache,
        metrics: Metrics,
        *,
        news: TokenNews,
        trusted: Container[str] = (),
        registration_open: bool = True,
        clock: Callable[[], float] = time.time,
        refresh_grace: float = DEFAULT_REFRESH_GRACE,
    ) -> None:
        self._store = store
        self._trusted = trusted
        self._registration_open = registration_open
        self._registrations = KeyedBuckets(REGISTER_RATE, REGISTER_BURST)
        self._logins = KeyedBuckets(LOGIN_RATE, LOGIN_BURST)
        self._users = users
        self._passwords = passwords
        self._tokens = tokens
        self._limiter = limiter
        self.revocations = revocations
        self._metrics = metrics
        self._clock = clock
        self.refresh_grace = refresh_grace
        self._news = news

    # --- the check -------------------------------------------------------------------

    def _claims(self, token: str, now: float) -> Claims:
        """The claims of a live token. Raises Unauthorized, or _Undecided."""
        try:
            claims = self._tokens.decode(token, now)
        except UnknownKey:
            raise _Undecided from None
        except InvalidToken:
            raise Unauthorized from None
        revocations = self.revocations
        if revocations.is_revoked(claims.jti, now) or revocations.is_family_revoked(
            claims.family, now
        ):
            raise Unauthorized
        retirement = revocations.retirement(claims.jti, now)
        if retirement is not None and now >= retirement.grace_until:
            raise _Undecided(claims, retirement)
        return claims

    def check_cached(self, token: str) -> Identity | None:
        """Validate without touching the store when the user is in the directory.
        Raises Unauthorized; returns None when only :meth:`authenticate` can tell (the
        user must be fetched, the keyring reloaded, or a reuse recorded)."""
        try:
            claims = self._claims(token, self._clock())
        except _Undecided:
            return None
        return self._match(claims, self._users.cached_by_id(claims.user_id))

    async def authenticate(self, token: str) -> Identity:
        """Raises Unauthorized for a bad, expired or revoked token or a changed user."""
        now = self._clock()
        try:
            claims = self._claims(token, now)
        except _Undecided as undecided:
            claims = await self._decide(token, undecided, now)
        user = self._users.cached_by_id(claims.user_id) or await self._users.by_id(claims.user_id)
        identity = self._match(claims, user)
        if identity is None:
            raise Unauthorized
        return identity

    async def _decide(self, token: str, undecided: _Undecided, now: float) -> Claims:
        if undecided.claims is not None and undecided.retirement is not None:
            await self._revoke_family(undecided.claims, now, "used after its grace")
            raise Unauthorized
        try:
            await self._tokens.reload(now)
        except StoreUnavailable:
            raise  # a key we cannot read now: ask again later, not "unauthorized"
        except (KeyFileError, StoreError) as exc:
            log.error("keys.reload_failed", error=str(exc))
        try:
            return self._claims(token, now)
        except _Undecided:
            raise Unauthorized from None

    async def reload_keys(self) -> None:
        """Read the keyring again (the periodic poll: picks up ``chatd key rotate``)."""
        try:
            await self._tokens.reload(self._clock(), rate_limited=False)
        except StoreUnavailable:
            pass  # the store logs an outage once; the next poll reads again
        except (KeyFileError, StoreError) as exc:
            log.error("keys.reload_failed", error=str(exc))

    @staticmethod
    def _match(claims: Claims, user: User | None) -> Identity | None:
        if user is None:
            return None
        if user.disabled or user.token_generation != claims.generation:
            raise Unauthorized
        return Identity(user, claims)

    # --- endpoints -------------------------------------------------------------------

    async def register(self, credentials: Credentials, ip: str = "") -> Reply:
        if not self._registration_open:
            return REGISTRATION_CLOSED
        username = normalize_username(credentials.username)
        if not is_valid_username(username):
            return Reply.error(
                400, "invalid_username", "usernames are 3 to 32 of a-z 0-9 _ . -"
            )
        if not limits.MIN_PASSWORD_CHARS <= len(credentials.password) <= limits.MAX_PASSWORD_CHARS:
            return Reply.error(
                400,
                "weak_password",
                f"passwords are {limits.MIN_PASSWORD_CHARS} to {limits.MAX_PASSWORD_CHARS}"
                " characters",
            )
        throttled = self._throttle(self._registrations, ip)
        if throttled is not None:
            self._metrics.refusals.record(log, "register.rate_limited", key=ip, ip=ip)
            return Reply.error(
                429, "rate_limited", "too many new accounts from your address; try again later",
                Retry_After=str(throttled),
            )
        if await self._users.by_name(username) is not None:
            return Reply.error(409, "username_taken", "that username is taken")
        try:
            password_hash = await self._passwords.hash(credentials.password)
        except PasswordsBusy:
            return PASSWORDS_BUSY
        user = await self._store.create_user(username, password_hash, int(self._clock() * 1000))
        if user is None:
            return Reply.error(409, "username_taken", "that username is taken")
        self._users.remember(user)
        log.info("register.ok", user=username, user_id=user.id)
        return Reply(201, Registered(user_id=user.id, username=user.username))

    async def login(self, credentials: Credentials, ip: str) -> Reply:
        """Every limit is counted before the password is checked, so logins that arrive
        together cannot pass one together: see :class:`chatd.auth.LoginLimiter`."""
        username = normalize_username(credentials.username)
        retry_after = self._throttle(self._logins, ip)
        if retry_after is None:
            if self._passwords.is_busy:
                return PASSWORDS_BUSY
            admission = await self._limiter.admit(address_key(ip), username)
            ticket, retry_after = admission.ticket, admission.retry_after
        else:
            ticket = None
        if ticket is None:
            self._metrics.logins_total.labels(result="rate_limited").inc()
            self._metrics.refusals.record(log, "login.rate_limited", key=ip, ip=ip, user=username)
            return Reply.error(
                429, "rate_limited", "too many logins; try again later",
                Retry_After=str(retry_after),
            )
        try:
            user = await self._verified_user(credentials, username, ticket)
        except PasswordsBusy:
            await self._limiter.release(ticket)  # never checked: no failure
            return PASSWORDS_BUSY
        except BaseException:
            await self._limiter.release(ticket)  # a store fault, or shutdown: the same
            raise
        if user is None:  # the ticket stays: it is the failure on record
            self._limiter.failed(ticket)
            self._metrics.logins_total.labels(result="failed").inc()
            self._metrics.refusals.record(log, "login.failed", key=ip, level=logging.INFO,
                                          ip=ip, user=username)
            return Reply.error(401, "invalid_credentials", "wrong username or password")
        await self._limiter.release(ticket)
        self._metrics.logins_total.labels(result="ok").inc()
        log.info("login.ok", ip=ip, user=username, user_id=user.id)
        return Reply(200, self._grant(user))

    async def _verified_user(
        self, credentials: Credentials, username: str, ticket: LoginTicket
    ) -> User | None:
        """The user, when the password is right and the account enabled; checked once
        the ticket's time comes (the account's line: see LoginLimiter)."""
        wait = ticket.at - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        user = await self._users.fresh(username) if is_valid_username(username) else None
        stored_hash = user.password_hash if user is not None else None
        ok = await self._passwords.verify(stored_hash, credentials.password)
        if not ok or user is None or user.disabled:
            return None
        return user

    def _throttle(self, buckets: KeyedBuckets, ip: str) -> int | None:
        """None when ``ip`` may go on (trusted addresses always may), else the whole
        seconds to send in ``Retry-After``."""
        if not ip or ip in self._trusted:
            return None
        wait_ms = buckets.take(address_key(ip), self._clock())
        return None if wait_ms == 0 else max(1, math.ceil(wait_ms / 1000))

    async def logout(self, token: str) -> Reply:
        try:
            identity = await self.authenticate(token)
        except Unauthorized:
            return UNAUTHORIZED
        claims = identity.claims
        await self._store.revoke_token(claims.jti, claims.user_id, int(claims.expires_at))
        self.revocations.add(claims.jti, claims.expires_at)
        self._news.revoked(claims.jti, int(claims.expires_at))
        log.info("logout.ok", user=identity.user.username, jti=claims.jti)
        return Reply(204)

    async def refresh(self, token: str, *, rotate: bool = False) -> Reply:
        """A new token of the same family. With ``rotate`` the presented token is retired:
        usable for :attr:`refresh_grace` seconds more, then refused, and the new token
        becomes the family's head. Refreshing a retired token, or, once a family has
        rotated, any token but its head (a fork made by a refresh without rotate), is a
        reuse (a stolen copy, or the thief's): the whole family is revoked."""
        try:
            identity = await self.authenticate(token)
        except Unauthorized:
            return UNAUTHORIZED
        claims, user = identity.claims, identity.user
        now = self._clock()
        retired = self.revocations.retirement(claims.jti, now)
        if retired is not None:
            await self._revoke_family(claims, now, "refreshed again")
            return UNAUTHORIZED
        issued = self._tokens.issue(user.id, user.token_generation, now, family=claims.family)
        if rotate:
            # the family's row outlives its head by a lifetime: forks made from the head
            # (refreshes without rotate) expire before it
            head_until = issued.expires_at + self._tokens.ttl
            retirement = Retirement(
                jti=claims.jti,
                family=claims.family,
                expires_at=claims.expires_at,
                grace_until=now + self.refresh_grace,
            )
            if not (
                await self._store.advance_family(
                    claims.family, claims.jti, issued.jti, user.id, head_until
                )
                and await self._store.retire_token(retirement, user.id)
            ):
                await self._revoke_family(claims, now, "not the newest token of its family")
                return UNAUTHORIZED
            self.revocations.retire(retirement)
            self._news.retired(retirement)
        else:
            head = await self._store.family_head(claims.family)
            if head is not None and head != claims.jti:
                await self._revoke_family(claims, now, "not the newest token of its family")
                return UNAUTHORIZED
        log.info("token.refresh", user=user.username, user_id=user.id, jti=claims.jti,
                 rotate=rotate)
        return Reply(200, self._grant_of(issued, user))

    async def _revoke_family(self, claims: Claims, now: float, why: str) -> None:
        """A token was reused: every token of its family dies, here at once and on the
        other nodes through the store and the bus. The revocation lasts until every
        token the family can hold has expired (a head's forks live up to a lifetime
        more)."""
        expires_at = int(max(now, claims.expires_at) + 2 * self._tokens.ttl)
        if self.revocations.revoke_family(claims.family, expires_at):
            self._news.family_revoked(claims.family, expires_at)
        log.warning("token.reuse", user_id=claims.user_id, jti=claims.jti,
                    family=claims.family, why=why)
        await self._store.revoke_family(claims.family, claims.user_id, expires_at)

    def _grant(self, user: User) -> TokenGrant:
        issued = self._tokens.issue(user.id, user.token_generation, self._clock())
        return self._grant_of(issued, user)

    @staticmethod
    def _grant_of(issued: IssuedToken, user: User) -> TokenGrant:
        return TokenGrant(
            token=issued.token,
            expires_in=issued.expires_in,
            user_id=user.id,
            username=user.username,
        )
