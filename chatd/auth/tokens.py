"""JWTs (HS256) signed with the keyring: issuing them, checking them, reloading the keyring.

Time is passed in (``now``, Unix seconds) so every rule here is testable with a fake
clock. Nothing here logs a token.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import jwt

from chatd.auth.keyring import IAT_SKEW, Keyring
from chatd.observe.logs import EventLogger

__all__ = [
    "Claims",
    "InvalidToken",
    "IssuedToken",
    "KeyringLoader",
    "Tokens",
    "UnknownKey",
]

log = EventLogger(logging.getLogger(__name__))

ALGORITHM = "HS256"  # the only algorithm accepted: pinned against alg=none and key confusion
KEY_RELOAD_INTERVAL = 1.0  # seconds between keyring reloads caused by an unknown kid


class InvalidToken(Exception):
    """The token is not one this server issued, or it has expired. The message says
    why, for logs; clients only ever see ``unauthorized``."""


class UnknownKey(InvalidToken):
    """The token names a key (``kid``) this keyring does not hold: perhaps one added by
    ``chatd key rotate`` since the keyring was loaded (see :meth:`Tokens.reload`)."""


@attrs.frozen(kw_only=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: int  # Unix seconds
    expires_in: int  # seconds


@attrs.frozen(kw_only=True)
class Claims:
    user_id: int
    jti: str
    issued_at: int  # Unix seconds
    expires_at: int  # Unix seconds
    generation: int  # the user's token generation when it was issued
    # the jti of the login's token this one descends from (claim "fam"); itself by default
    family: str = attrs.field(
        default=attrs.Factory(lambda self: self.jti, takes_self=True)
    )


_REQUIRED: Final = ("sub", "jti", "iat", "exp", "gen")
VERIFIED_TOKENS_KEPT: Final = 20_000  # verified tokens remembered (about 8 MiB at most)
_USER_ID_RE: Final = re.compile(r"[0-9]{1,19}")
_DECODE_OPTIONS: Final[Any] = {
    "require": list(_REQUIRED),
    # PyJWT would read its own clock for these: they are checked below against `now`.
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
}
KeyringLoader = Callable[[], Awaitable[Keyring]]


class Tokens:
    """HS256 JWTs: ``sub`` (user id as a string), ``jti``, ``iat``, ``exp``, ``gen``, and
    ``fam`` for a refreshed token; the header's ``kid`` names the key that signed it.

    Args:
        keys: the keyring (or one key, as a legacy keyring).
        ttl: seconds a token lives.
        loader: reads the keyring again (the key file or the database); used by
            :meth:`reload`.
    """

    def __init__(self, keys: bytes | Keyring, ttl: int, *, loader: KeyringLoader | None = None):
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.keyring = keys if isinstance(keys, Keyring) else Keyring.from_legacy(keys)
        self.ttl = ttl
        self._loader = loader
        self._last_reload = -math.inf
        self._reloading: asyncio.Future[bool] | None = None
        # Tokens whose signature and claims checked out, with their claims: a client
        # reconnecting (or a storm of them) skips the HMAC and the JSON. The time checks
        # run on every use. Cleared when full, and when the keyring changes.
        self._verified: dict[str, Claims] = {}

    def issue(
        self, user_id: int, generation: int, now: float, *, family: str | None = None
    ) -> IssuedToken:
        """A new token; ``family`` is the family of the token it replaces (a refresh)."""
        issued_at = int(now)
        expires_at = issued_at + self.ttl
        jti = secrets.token_urlsafe(16)
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "jti": jti,
            "iat": issued_at,
            "exp": expires_at,
            "gen": generation,
        }
        if family is not None:
            claims["fam"] = family
        key = self.keyring.signing
        token = jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})
        return IssuedToken(token=token, jti=jti, expires_at=expires_at, expires_in=self.ttl)

    def decode(self, token: str, now: float) -> Claims:
        """The claims of a valid, unexpired token. Revocation and the user's current
        generation are the caller's to check.

        Raises:
            UnknownKey: the token names a key this keyring does not hold.
            InvalidToken: for anything else (signature, algorithm, expiry, claims, garbage).
        """
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify(token)
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()
            self._verified[token] = claims
        if now >= claims.expires_at:
            raise InvalidToken("the token has expired")
        if claims.issued_at > now + IAT_SKEW:
            raise InvalidToken("the token was issued in the future")
        return claims

    def _verify(self, token: str) -> Claims:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("kid is not a string")
        key = self.keyring.find(kid)
        if key is None:
            if kid is None:
                raise InvalidToken("a token without kid, and no legacy key")
            raise UnknownKey("the token's kid is not in the keyring")
        try:
            payload = jwt.decode(token, key.secret, algorithms=[ALGORITHM], options=_DECODE_OPTIONS)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
        return _claims(payload)

    def use(self, keyring: Keyring) -> bool:
        """Sign and verify with ``keyring`` from now on; True when it differs."""
        if keyring == self.keyring:
            return False
        self.keyring = keyring
        self._verified.clear()  # a pruned key's tokens must not stay verified
        return True

    async def reload(self, now: float, *, rate_limited: bool = True) -> bool:
        """Read the keyring again (at most once per :data:`KEY_RELOAD_INTERVAL` when
        ``rate_limited``: a token can name any kid, and each unknown one asks for a
        reload). A caller too soon after the last read waits for the next one allowed:
        a key rotated just after that read (the token it signed is on its way to this
        node) is in the next. Concurrent callers share one read. True when the keyring
        changed.

        Raises:
            KeyFileError: the keyring cannot be read; the current one stays in use.
        """
        if self._loader is None:
            return False
        if self._reloading is not None:
            return await asyncio.shield(self._reloading)
        if rate_limited and now - self._last_reload < KEY_RELOAD_INTERVAL:
            last = self._last_reload
            wait = min(last + KEY_RELOAD_INTERVAL - now, KEY_RELOAD_INTERVAL)  # clock set back
            await asyncio.sleep(wait)
            if self._reloading is not None:
                return await asyncio.shield(self._reloading)
            if self._last_reload != last:
                return False  # read by another caller since this one asked: current
            now += wait
        self._last_reload = now
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._reloading = future
        try:
            changed = self.use(await self._loader())
            future.set_result(changed)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            self._reloading = None
        if changed:
            log.info("keys.reloaded", keys=len(self.keyring.keys),
                     signing_kid=self.keyring.signing.kid)
        return changed


def _claims(payload: dict[str, Any]) -> Claims:
    sub, jti = payload["sub"], payload["jti"]
    numbers = [payload[name] for name in ("iat", "exp", "gen")]
    if not isinstance(sub, str) or _USER_ID_RE.fullmatch(sub) is None:
        raise InvalidToken("sub is not a user id")
    if not isinstance(jti, str) or not jti:
        raise InvalidToken("jti is not a non-empty string")
    if any(type(value) is not int for value in numbers):
        raise InvalidToken("iat, exp and gen must be integers")
    family = payload.get("fam", jti)
    if not isinstance(family, str) or not family:
        raise InvalidToken("fam is not a non-empty string")
    issued_at, expires_at, generation = numbers
    return Claims(
        user_id=int(sub),
        jti=jti,
        issued_at=issued_at,
        expires_at=expires_at,
        generation=generation,
        family=family,
    )
