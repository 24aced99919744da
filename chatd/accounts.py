"""Accounts and tokens: registration, login (with its rate limits), logout, refresh, and
the one check every authenticated request and WebSocket goes through."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import attrs

from chatd.auth import Claims, InvalidToken, LoginLimiter, Passwords, RevocationCache, Tokens
from chatd.observe.logs import EventLogger
from chatd.observe.metrics import Metrics
from chatd.reply import UNAUTHORIZED, Reply
from chatd.store import Store, User
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


class Unauthorized(Exception):
    """A token that is missing, malformed, expired, revoked or of a changed user."""


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._users = users
        self._passwords = passwords
        self._tokens = tokens
        self._limiter = limiter
        self.revocations = revocations
        self._metrics = metrics
        self._clock = clock
        # Told of each logout (jti, expires_at): the hub closes that token's connections.
        self.on_revoked: Callable[[str, int], None] = lambda jti, expires_at: None

    # --- the check -------------------------------------------------------------------

    def _claims(self, token: str) -> Claims:
        now = self._clock()
        try:
            claims = self._tokens.decode(token, now)
        except InvalidToken:
            raise Unauthorized from None
        if self.revocations.is_revoked(claims.jti, now):
            raise Unauthorized
        return claims

    def check_cached(self, token: str) -> Identity | None:
        """Validate without touching the store when the user is in the directory.
        Raises Unauthorized; returns None when the user must be fetched first."""
        claims = self._claims(token)
        return self._match(claims, self._users.cached_by_id(claims.user_id))

    async def authenticate(self, token: str) -> Identity:
        """Raises Unauthorized for a bad, expired or revoked token or a changed user."""
        claims = self._claims(token)
        user = self._users.cached_by_id(claims.user_id) or await self._users.by_id(claims.user_id)
        identity = self._match(claims, user)
        if identity is None:
            raise Unauthorized
        return identity

    @staticmethod
    def _match(claims: Claims, user: User | None) -> Identity | None:
        if user is None:
            return None
        if user.disabled or user.token_generation != claims.generation:
            raise Unauthorized
        return Identity(user, claims)

    # --- endpoints -------------------------------------------------------------------

    async def register(self, credentials: Credentials) -> Reply:
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
        if await self._users.by_name(username) is not None:
            return Reply.error(409, "username_taken", "that username is taken")
        password_hash = await self._passwords.hash(credentials.password)
        user = await self._store.create_user(username, password_hash, int(self._clock() * 1000))
        if user is None:
            return Reply.error(409, "username_taken", "that username is taken")
        self._users.remember(user)
        log.info("register", user=username, user_id=user.id)
        return Reply(201, Registered(user_id=user.id, username=user.username))

    async def login(self, credentials: Credentials, ip: str) -> Reply:
        now = self._clock()
        username = normalize_username(credentials.username)
        retry_after = await self._limiter.retry_after(ip, now)
        if retry_after is not None:
            self._metrics.logins_total.labels(result="rate_limited").inc()
            self._metrics.refusals.record(log, "login.rate_limited", key=ip, ip=ip, user=username)
            return Reply.error(
                429, "rate_limited", "too many failed logins; try again later",
                Retry_After=str(retry_after),
            )
        delay = await self._limiter.account_delay(username, now)
        if delay > 0:
            await asyncio.sleep(delay)
        user = await self._users.by_name(username) if is_valid_username(username) else None
        stored_hash = user.password_hash if user is not None else None
        ok = await self._passwords.verify(stored_hash, credentials.password)
        if not ok or user is None or user.disabled:
            await self._limiter.record_failure(ip, username, self._clock())
            self._metrics.logins_total.labels(result="failed").inc()
            self._metrics.refusals.record(log, "login.failed", key=ip, level=logging.INFO, ip=ip,
                                          user=username)
            return Reply.error(401, "invalid_credentials", "wrong username or password")
        self._metrics.logins_total.labels(result="ok").inc()
        log.info("login.ok", ip=ip, user=username, user_id=user.id)
        return Reply(200, self._grant(user))

    async def logout(self, token: str) -> Reply:
        try:
            identity = await self.authenticate(token)
        except Unauthorized:
            return UNAUTHORIZED
        claims = identity.claims
        await self._store.revoke_token(claims.jti, claims.user_id, int(claims.expires_at))
        self.revocations.add(claims.jti, claims.expires_at)
        self.on_revoked(claims.jti, int(claims.expires_at))
        log.info("logout", user=identity.user.username, jti=claims.jti)
        return Reply(204)

    async def refresh(self, token: str) -> Reply:
        try:
            identity = await self.authenticate(token)
        except Unauthorized:
            return UNAUTHORIZED
        return Reply(200, self._grant(identity.user))

    def _grant(self, user: User) -> TokenGrant:
        issued = self._tokens.issue(user.id, user.token_generation, self._clock())
        return TokenGrant(
            token=issued.token,
            expires_in=issued.expires_in,
            user_id=user.id,
            username=user.username,
        )
