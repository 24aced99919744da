"""Authentication: the token key file, argon2id passwords, JWTs, login limits, revocations.

Blocking work (argon2) runs in an executor handed in, never on the event loop. Time is
passed in (``now``, Unix seconds) so every rule here is testable with a fake clock. Nothing
in this module logs a password, a hash or a token.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import os
import re
import secrets
import stat
from collections.abc import Iterable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from chatd.files import make_private_dir
from libchat.protocol import normalize_username

__all__ = [
    "OWASP_FLOOR",
    "Claims",
    "FailureLog",
    "HashParams",
    "InvalidToken",
    "IssuedToken",
    "KeyFileError",
    "LoginLimiter",
    "Passwords",
    "RevocationCache",
    "Tokens",
    "load_or_create_key",
]

log = logging.getLogger(__name__)

KEY_FILE = "token.key"
KEY_BYTES = 32  # HS256 wants a key at least as long as its 256-bit output
ALGORITHM = "HS256"  # the only algorithm accepted: pinned against alg=none and key confusion
IAT_SKEW = 60.0  # seconds a token's iat may lie in the future (clocks of several nodes)
ACCOUNT_FREE_FAILURES = 3  # failed logins against one account answered without delay

# --- the key file ------------------------------------------------------------------------


class KeyFileError(Exception):
    """The token key file exists but cannot be used."""


async def signing_key(data_dir: Path, store: object) -> bytes:
    """The token key: the file in ``data_dir``, or, for a store shared by several nodes
    (PostgreSQL), the one kept in the database so that every node signs alike."""
    key = load_or_create_key(data_dir)
    shared = getattr(store, "shared_token_key", None)
    if shared is not None:
        key = await shared(key)
    return bytes(key)


def load_or_create_key(data_dir: Path) -> bytes:
    """The HS256 key in ``data_dir/token.key``: read it, or create it (mode 0600).

    Creation is atomic: the key is written and synced to a private temporary file that
    is then hard-linked into place, so a crash never leaves a short key file behind and,
    if two processes race, both end up with the one that was linked first.

    Raises:
        KeyFileError: the file has the wrong size.
    """
    make_private_dir(data_dir)
    path = data_dir / KEY_FILE
    if not path.exists():
        _create_key(path)
    return _read_key(path)


def _create_key(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return  # another process created it first: use theirs
        _fsync_dir(path.parent)
        log.info("created token key file %s", path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_key(path: Path) -> bytes:
    with path.open("rb") as src:
        mode = os.fstat(src.fileno()).st_mode
        key = src.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path} holds {len(key)} bytes, expected {KEY_BYTES}")
    if stat.S_IMODE(mode) & 0o077:
        log.warning(
            "token key file %s has mode %o: anyone who reads it can forge tokens; chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    return key


# --- passwords ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class HashParams:
    """argon2id cost parameters. The defaults are the OWASP minimum."""

    time_cost: int = 2
    memory_cost: int = 19456  # KiB, 19 MiB
    parallelism: int = 1
    hash_len: int = 32
    salt_len: int = 16

    def is_at_least(self, floor: HashParams) -> bool:
        return (
            self.time_cost >= floor.time_cost
            and self.memory_cost >= floor.memory_cost
            and self.parallelism >= floor.parallelism
            and self.hash_len >= floor.hash_len
            and self.salt_len >= floor.salt_len
        )


OWASP_FLOOR: Final = HashParams()


class Passwords:
    """argon2id hashing and verification, run in ``executor``.

    The constructor hashes a random password once (about 50 ms at the floor): that hash
    is what :meth:`verify` checks against when the user does not exist, so an unknown
    user costs the same as a wrong password. Build it at startup, before serving.
    """

    def __init__(self, executor: Executor, params: HashParams = OWASP_FLOOR) -> None:
        if not params.is_at_least(OWASP_FLOOR):
            raise ValueError(f"argon2 parameters below the OWASP floor: {params}")
        self.params = params
        self._executor = executor
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_cost,
            parallelism=params.parallelism,
            hash_len=params.hash_len,
            salt_len=params.salt_len,
            type=Type.ID,
        )
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches. ``None`` (no such user) is checked against
        the dummy hash, costs the same, and is always False."""
        target = self._dummy_hash if password_hash is None else password_hash
        loop = asyncio.get_running_loop()
        matches = await loop.run_in_executor(self._executor, self._check, target, password)
        return matches and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters (rehash it after a login)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _check(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            log.warning("a stored password hash is not a valid argon2 hash")
            return False


# --- tokens ------------------------------------------------------------------------------


class InvalidToken(Exception):
    """The token is not one this server issued, or it has expired. The message says
    why, for logs; clients only ever see ``unauthorized``."""


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


class Tokens:
    """HS256 JWTs: ``sub`` (user id as a string), ``jti``, ``iat``, ``exp``, ``gen``."""

    def __init__(self, key: bytes, ttl: int) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError(f"the token key must be at least {KEY_BYTES} bytes")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._key = key
        self.ttl = ttl
        # Tokens whose signature and claims checked out, with their claims: a client
        # reconnecting (or a storm of them) skips the HMAC and the JSON. The time checks
        # run on every use. Cleared when full: a cache, not a record.
        self._verified: dict[str, Claims] = {}

    def issue(self, user_id: int, generation: int, now: float) -> IssuedToken:
        issued_at = int(now)
        expires_at = issued_at + self.ttl
        jti = secrets.token_urlsafe(16)
        claims = {
            "sub": str(user_id),
            "jti": jti,
            "iat": issued_at,
            "exp": expires_at,
            "gen": generation,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        return IssuedToken(token=token, jti=jti, expires_at=expires_at, expires_in=self.ttl)

    def decode(self, token: str, now: float) -> Claims:
        """The claims of a valid, unexpired token. Revocation and the user's current
        generation are the caller's to check.

        Raises:
            InvalidToken: for anything else (signature, algorithm, expiry, claims, garbage).
        """
        claims = self._verified.get(token)
        if claims is None:
            try:
                payload = jwt.decode(
                    token, self._key, algorithms=[ALGORITHM], options=_DECODE_OPTIONS
                )
            except jwt.PyJWTError as exc:
                raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
            claims = _claims(payload)
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()
            self._verified[token] = claims
        if now >= claims.expires_at:
            raise InvalidToken("the token has expired")
        if claims.issued_at > now + IAT_SKEW:
            raise InvalidToken("the token was issued in the future")
        return claims


def _claims(payload: dict[str, Any]) -> Claims:
    sub, jti = payload["sub"], payload["jti"]
    numbers = [payload[name] for name in ("iat", "exp", "gen")]
    if not isinstance(sub, str) or _USER_ID_RE.fullmatch(sub) is None:
        raise InvalidToken("sub is not a user id")
    if not isinstance(jti, str) or not jti:
        raise InvalidToken("jti is not a non-empty string")
    if any(type(value) is not int for value in numbers):
        raise InvalidToken("iat, exp and gen must be integers")
    issued_at, expires_at, generation = numbers
    return Claims(
        user_id=int(sub),
        jti=jti,
        issued_at=issued_at,
        expires_at=expires_at,
        generation=generation,
    )


# --- login limits ------------------------------------------------------------------------


class FailureLog(Protocol):
    """Where failed logins are kept: the Store is one, so the counts are shared by
    every chatd node on the same database and survive restarts."""

    async def record_login_failure(self, ip: str, username: str, at: float) -> None: ...

    async def login_failures(self, ip: str, since: float) -> list[float]:
        """Times of failures from ``ip`` at or after ``since``, oldest first."""
        ...

    async def account_failures(self, username: str, since: float) -> int: ...


class LoginLimiter:
    """The contract's login limits.

    Per IP: after ``max_failures`` failed logins (those answered ``invalid_credentials``)
    within ``window`` seconds, sliding, every login from that IP is refused (429) until
    enough of them have left the window; a success does not reset anything.

    Per account: failed logins against one username, from any IP, within the window
    slow every login to that account down (first :data:`ACCOUNT_FREE_FAILURES` free, then
    ``account_base_delay`` doubling up to ``account_max_delay``), never locking it. The
    host waits :meth:`account_delay` before checking the password, whatever the outcome,
    so the wait itself tells an attacker nothing.
    """

    def __init__(
        self,
        failures: FailureLog,
        *,
        max_failures: int = 5,
        window: float = 900.0,
        account_base_delay: float = 0.5,
        account_max_delay: float = 8.0,
    ) -> None:
        if max_failures < 1 or window <= 0:
            raise ValueError("need max_failures >= 1 and window > 0")
        if account_base_delay < 0 or account_max_delay < account_base_delay:
            raise ValueError("need 0 <= account_base_delay <= account_max_delay")
        self._failures = failures
        self.max_failures = max_failures
        self.window = window
        self.account_base_delay = account_base_delay
        self.account_max_delay = account_max_delay

    async def retry_after(self, ip: str, now: float) -> int | None:
        """None when a login from ``ip`` may proceed, else the whole seconds to send
        in ``Retry-After``.

        A failure at ``t`` counts while ``now < t + window``. The answer is the time
        until the oldest counted failure leaves the window, rounded up (with more than
        ``max_failures`` counted, after concurrent logins, until enough have left).
        """
        since = now - self.window
        times = [t for t in await self._failures.login_failures(ip, since) if t > since]
        if len(times) < self.max_failures:
            return None
        times.sort()
        must_leave = times[len(times) - self.max_failures]
        return max(1, math.ceil(must_leave + self.window - now))

    async def record_failure(self, ip: str, username: str, now: float) -> None:
        """Count a login answered ``invalid_credentials``."""
        await self._failures.record_login_failure(ip, normalize_username(username), now)

    async def account_delay(self, username: str, now: float) -> float:
        """Seconds to wait before answering a login to ``username``."""
        count = await self._failures.account_failures(
            normalize_username(username), now - self.window
        )
        if count < ACCOUNT_FREE_FAILURES:
            return 0.0
        exponent = min(count - ACCOUNT_FREE_FAILURES, 64)
        return min(self.account_max_delay, self.account_base_delay * 2.0**exponent)


# --- revocations -------------------------------------------------------------------------


class RevocationCache:
    """Revoked token ids held until their tokens expire (then they die on their own).

    Filled from the store at startup (:meth:`load`) and kept current by the host on
    logout and on every revocation another node announces.
    """

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, jti: str, expires_at: float) -> None:
        if self._expiry.get(jti, -math.inf) >= expires_at:
            return
        self._expiry[jti] = expires_at
        heapq.heappush(self._heap, (expires_at, jti))

    def load(self, pairs: Iterable[tuple[str, float]]) -> None:
        for jti, expires_at in pairs:
            self.add(jti, expires_at)

    def is_revoked(self, jti: str, now: float) -> bool:
        self.prune(now)
        return jti in self._expiry

    def prune(self, now: float) -> None:
        """Forget revocations of tokens expired at ``now``."""
        while self._heap and self._heap[0][0] <= now:
            expires_at, jti = heapq.heappop(self._heap)
            if self._expiry.get(jti) == expires_at:
                del self._expiry[jti]
