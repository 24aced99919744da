"""Authentication: the token keys, argon2id passwords, JWTs, login limits, revocations.

Blocking work (argon2) runs in an executor handed in, never on the event loop. Time is
passed in (``now``, Unix seconds) so every rule here is testable with a fake clock. Nothing
in this module logs a password, a hash or a token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import heapq
import logging
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Final, Generic, NamedTuple, Protocol, TypeVar

import attrs
import jwt
import orjson
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from chatd.files import fsync_dir, make_private_dir
from chatd.store import LoginDecider
from chatd.store.base import Retirement
from libchat.protocol import normalize_username

__all__ = [
    "OWASP_FLOOR",
    "Claims",
    "FailureLog",
    "HashParams",
    "InvalidToken",
    "IssuedToken",
    "KeyFileError",
    "Keyring",
    "LoginAdmission",
    "LoginLimiter",
    "LoginTicket",
    "Passwords",
    "PasswordsBusy",
    "RevocationCache",
    "SigningKey",
    "Tokens",
    "UnknownKey",
    "load_or_create_key",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY_FILE = "token.key"
KEY_BYTES = 32  # HS256 wants a key at least as long as its 256-bit output
ALGORITHM = "HS256"  # the only algorithm accepted: pinned against alg=none and key confusion
IAT_SKEW = 60.0  # seconds a token's iat may lie in the future (clocks of several nodes)
LOGIN_MAX_FAILURES = 5  # failed logins per address in a window: the contract's limit
LOGIN_WINDOW = 900.0  # seconds, sliding: the contract's 15 minutes
ACCOUNT_FREE_FAILURES = 3  # failed logins against one account answered without delay
# Hashes and verifications queued for the argon2 threads at most (each ~20-50 ms on one
# core): past it, 503. 16 keeps a login's wait for a thread under half a second.
MAX_HASHES_QUEUED = 16
# Longest wait in an account's line of logins: past it, 429 (a client gives up before long).
ACCOUNT_MAX_WAIT = 20.0
KEY_RELOAD_INTERVAL = 1.0  # seconds between keyring reloads caused by an unknown kid

# --- the key file ------------------------------------------------------------------------


class KeyFileError(Exception):
    """The token key file exists but cannot be used."""


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
        create_key_file(path)
    return _read_key(path)


def create_key_file(path: Path) -> None:
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
        fsync_dir(path.parent)
        log.info("created token key file %s", path)
    finally:
        tmp.unlink(missing_ok=True)


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


# --- the keyring -------------------------------------------------------------------------

KEYRING_FORMAT: Final = 1  # the "chatd_keyring" version of the JSON keyring document
MAX_KEYS: Final = 32  # keys in one keyring: each rotation adds one, pruning drops old ones


def key_id(secret: bytes) -> str:
    """A key's ``kid``: derived from the secret (so a legacy key file gets the same kid on
    every node), and telling nothing about it."""
    digest = hashlib.sha256(b"chatd token key id\x00" + secret).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode("ascii")


@attrs.frozen(kw_only=True)
class SigningKey:
    """One HS256 key of the keyring."""

    secret: bytes = attrs.field(repr=False)
    created_at: int  # Unix s; 0 for a key that came from a legacy key file
    retired_at: int | None = None  # Unix s when a newer key took over signing
    legacy: bool = False  # verifies tokens without a kid (issued before keyrings existed)

    def __attrs_post_init__(self) -> None:
        if len(self.secret) < KEY_BYTES:
            raise ValueError(f"a token key must be at least {KEY_BYTES} bytes")

    @property
    def kid(self) -> str:
        return key_id(self.secret)


@attrs.frozen
class Keyring:
    """The token keys, oldest first: the last one signs, every one verifies.

    Stored either as a legacy key file (exactly :data:`KEY_BYTES` raw bytes: one key,
    which also verifies tokens without a kid) or as a JSON document, see :meth:`encode`.
    """

    keys: tuple[SigningKey, ...]

    def __attrs_post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a keyring needs at least one key")
        if len({key.kid for key in self.keys}) != len(self.keys):
            raise ValueError("a keyring holds the same key twice")

    @classmethod
    def from_legacy(cls, secret: bytes) -> Keyring:
        return cls((SigningKey(secret=secret, created_at=0, legacy=True),))

    @property
    def signing(self) -> SigningKey:
        return self.keys[-1]

    def find(self, kid: str | None) -> SigningKey | None:
        """The key for a token's ``kid`` header; None for a kid not in the ring. A token
        without a kid is checked with the legacy key, if the ring still has one."""
        for key in self.keys:
            if (key.legacy and kid is None) or (kid is not None and key.kid == kid):
                return key
        return None

    def rotated(self, secret: bytes, now: float, keep: float) -> tuple[Keyring, list[SigningKey]]:
        """A keyring where ``secret`` signs and the current key is retired, without the
        keys retired more than ``keep`` seconds (the longest token lifetime) ago, and
        the keys pruned.

        Raises:
            ValueError: ``secret`` is already in the ring, or too short.
        """
        stamp = int(now)
        kept: list[SigningKey] = []
        pruned: list[SigningKey] = []
        for key in self.keys:
            if key.retired_at is None:
                key = attrs.evolve(key, retired_at=stamp)
            if key.retired_at is not None and key.retired_at + keep + IAT_SKEW < now:
                pruned.append(key)
            else:
                kept.append(key)
        kept.append(SigningKey(secret=secret, created_at=stamp))
        if len(kept) > MAX_KEYS:
            raise ValueError(f"more than {MAX_KEYS} keys would be kept: rotate less often")
        return Keyring(tuple(kept)), pruned

    def encode(self) -> bytes:
        """The JSON keyring document (secrets in base64url)."""
        return orjson.dumps(
            {
                "chatd_keyring": KEYRING_FORMAT,
                "keys": [
                    {
                        "kid": key.kid,
                        "secret": base64.urlsafe_b64encode(key.secret).decode("ascii"),
                        "created_at": key.created_at,
                        "retired_at": key.retired_at,
                        "legacy": key.legacy,
                    }
                    for key in self.keys
                ],
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def decode(cls, data: bytes) -> Keyring:
        """A keyring from a legacy key file's bytes or a JSON keyring document.

        Raises:
            KeyFileError: neither.
        """
        if len(data) == KEY_BYTES:
            return cls.from_legacy(bytes(data))
        try:
            document = orjson.loads(data)
            if document["chatd_keyring"] != KEYRING_FORMAT:
                raise KeyFileError(f"unknown keyring format {document['chatd_keyring']!r}")
            keys = tuple(_signing_key(entry) for entry in document["keys"])
            return cls(keys)
        except KeyFileError:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise KeyFileError(
                f"neither a {KEY_BYTES}-byte key nor a keyring document ({type(exc).__name__})"
            ) from None


def _signing_key(entry: dict[str, Any]) -> SigningKey:
    retired_at = entry["retired_at"]
    key = SigningKey(
        secret=base64.urlsafe_b64decode(entry["secret"].encode("ascii")),
        created_at=_whole(entry["created_at"]),
        retired_at=None if retired_at is None else _whole(retired_at),
        legacy=entry.get("legacy", False) is True,
    )
    if entry["kid"] != key.kid:
        raise ValueError("a kid does not match its secret")
    return key


def _whole(value: object) -> int:
    if type(value) is not int:
        raise TypeError("times are whole Unix seconds")
    return value


# --- passwords ---------------------------------------------------------------------------


class PasswordsBusy(Exception):
    """The password-hashing queue is full: answer 503 and let the client retry."""


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

    def __init__(
        self,
        executor: Executor,
        params: HashParams = OWASP_FLOOR,
        *,
        max_queued: int = MAX_HASHES_QUEUED,
    ) -> None:
        if not params.is_at_least(OWASP_FLOOR):
            raise ValueError(f"argon2 parameters below the OWASP floor: {params}")
        self.params = params
        self._executor = executor
        self._max_queued = max_queued
        self._queued = 0  # hashes and verifications submitted and not yet finished
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_cost,
            parallelism=params.parallelism,
            hash_len=params.hash_len,
            salt_len=params.salt_len,
            type=Type.ID,
        )
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    @property
    def is_busy(self) -> bool:
        """True when the queue is full: a new hash or verification would raise."""
        return self._queued >= self._max_queued

    async def hash(self, password: str) -> str:
        """Raises :class:`PasswordsBusy` when the queue is full."""
        return await self._run(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches. ``None`` (no such user) is checked against
        the dummy hash, costs the same, and is always False. Raises
        :class:`PasswordsBusy` when the queue is full."""
        target = self._dummy_hash if password_hash is None else password_hash
        matches = await self._run(self._check, target, password)
        return matches and password_hash is not None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._queued >= self._max_queued:
            raise PasswordsBusy
        self._queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self._queued -= 1

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
        reload). Concurrent callers share one read. True when the keyring changed.

        Raises:
            KeyFileError: the keyring cannot be read; the current one stays in use.
        """
        if self._loader is None:
            return False
        if self._reloading is not None:
            return await asyncio.shield(self._reloading)
        if rate_limited and now - self._last_reload < KEY_RELOAD_INTERVAL:
            return False
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
            log.info("token keyring reloaded: %d keys, signing with %s",
                     len(self.keyring.keys), self.keyring.signing.kid)
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


# --- login limits ------------------------------------------------------------------------


class FailureLog(Protocol):
    """Where failed and in-flight logins are kept: the Store is one, so the counts are
    shared by every chatd node on the same database and survive restarts."""

    async def reserve_login_attempt(
        self, ip: str, username: str, since: float, decide: LoginDecider
    ) -> float | None: ...

    async def release_login_attempt(self, ip: str, username: str, at: float) -> None: ...


@attrs.frozen
class LoginTicket:
    """A login attempt, counted as failed until :meth:`LoginLimiter.release` (it
    succeeded, or was never checked)."""

    ip: str
    username: str
    at: float  # when the password may be checked: now, or later in the account's line


@attrs.frozen
class LoginAdmission:
    """What the limiter says of a login: go ahead (``ticket``), or 429 (``retry_after``)."""

    ticket: LoginTicket | None
    retry_after: int = 0  # whole seconds, when refused


class _Verdict(NamedTuple):
    at: float | None  # admitted: when to check the password
    retry_after: int = 0  # refused: whole seconds for Retry-After
    wait: bool = False  # neither yet: this node's own attempts in flight decide


class LoginLimiter:
    """The contract's login limits, counted before the password is checked.

    Per IP: at most ``max_failures`` failed logins (those answered ``invalid_credentials``)
    within ``window`` seconds, sliding; past that every login from that IP is refused (429)
    until enough of them have left the window; a success does not reset anything. An
    attempt counts as a failure from the moment it is admitted until it is released, so
    logins that arrive together cannot all pass: however many there are, at most
    ``max_failures`` are ever checked. One that would be refused only because of this
    node's own attempts in flight waits for their outcome instead, so honest logins sent
    together are served one after another rather than refused.

    Per account: failed logins against one username, from any IP, within the window slow
    every login to that account down (first :data:`ACCOUNT_FREE_FAILURES` free, then
    ``account_base_delay`` doubling up to ``account_max_delay``), never locking it. The
    attempts of one account wait in line: each is admitted once the one before it has its
    outcome, and then waits its own delay, so concurrent attempts pay one after another
    (across nodes, an attempt in flight elsewhere counts as a failure, and the delays stack
    from its time). An attempt that would wait more than ``account_max_wait`` in all is
    refused (429) instead. The host waits until ``ticket.at`` before checking the
    password, whatever the outcome, so the wait tells an attacker nothing.

    Call :meth:`release` when the password checked out (or was never checked), and
    :meth:`failed` when it did not: either ends the attempt's turn.
    """

    def __init__(
        self,
        failures: FailureLog,
        *,
        max_failures: int = LOGIN_MAX_FAILURES,
        window: float = LOGIN_WINDOW,
        account_base_delay: float = 0.5,
        account_max_delay: float = 8.0,
        account_max_wait: float = ACCOUNT_MAX_WAIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_failures < 1 or window <= 0:
            raise ValueError("need max_failures >= 1 and window > 0")
        if account_base_delay < 0 or account_max_delay < account_base_delay:
            raise ValueError("need 0 <= account_base_delay <= account_max_delay")
        if account_max_wait < account_max_delay:
            raise ValueError("need account_max_wait >= account_max_delay")
        self._failures = failures
        self.max_failures = max_failures
        self.window = window
        self.account_base_delay = account_base_delay
        self.account_max_delay = account_max_delay
        self.account_max_wait = account_max_wait
        self._clock = clock
        # this node's attempts in flight, by IP key and by account
        self._ips: dict[str, int] = {}
        self._accounts: dict[str, int] = {}
        self._settled = asyncio.Event()  # set (and replaced) whenever an attempt ends

    async def admit(self, ip: str, username: str) -> LoginAdmission:
        """Count a login from ``ip`` (a key from :func:`chatd.admission.address_key`) to
        ``username``, or refuse it; may wait for this node's attempts in flight. Atomic
        across nodes: see the store."""
        name = normalize_username(username)
        started = self._clock()
        deadline = started + self.account_max_wait
        waiting_for_ip = False
        while True:
            # this account's turn, and (after a wait verdict) the IP's attempts all ended
            if self._accounts.get(name, 0) == 0 and not (waiting_for_ip and ip in self._ips):
                verdict = await self._reserve(ip, name, started)
                if verdict.at is not None:
                    return LoginAdmission(ticket=LoginTicket(ip=ip, username=name, at=verdict.at))
                if not verdict.wait:
                    return LoginAdmission(ticket=None, retry_after=verdict.retry_after)
                waiting_for_ip = True
            if not await self._await_settled(deadline):
                return LoginAdmission(ticket=None, retry_after=1)  # a line too long: soon

    async def release(self, ticket: LoginTicket) -> None:
        """The attempt succeeded (or its password was never checked): it is no failure."""
        try:
            await self._failures.release_login_attempt(ticket.ip, ticket.username, ticket.at)
        finally:
            self._end(ticket.ip, ticket.username)

    def failed(self, ticket: LoginTicket) -> None:
        """The attempt's password was wrong: its record stays, as the failure."""
        self._end(ticket.ip, ticket.username)

    async def _reserve(self, ip: str, name: str, started: float) -> _Verdict:
        """Reserve an attempt in the store, holding this node's place in the account's line
        and the IP's count meanwhile (no other attempt can slip in between)."""
        now = self._clock()
        own = self._ips.get(ip, 0)
        verdict = _Verdict(at=None)

        def decide(ip_times: list[float], account_times: list[float]) -> float | None:
            nonlocal verdict
            verdict = self.decide(
                ip_times, account_times, now, own_in_flight=own, started=started
            )
            return verdict.at

        self._start(ip, name)
        try:
            await self._failures.reserve_login_attempt(ip, name, now - self.window, decide)
        except BaseException:
            self._end(ip, name)
            raise
        if verdict.at is None:
            self._end(ip, name)
        return verdict

    def decide(
        self, ip_times: list[float], account_times: list[float], now: float,
        *, own_in_flight: int = 0, started: float | None = None,
    ) -> _Verdict:
        """Admit an attempt at ``at``, refuse it, or have it wait. The lists are the times of
        the failed and in-flight attempts from the IP and against the account, at or after
        the window's start; ``own_in_flight`` of the IP's are this node's, still running;
        ``started`` is when the attempt arrived (its wait in line counts too).

        A failure at ``t`` counts while ``now < t + window``. ``retry_after`` is the time
        until the oldest counted failure leaves the window, rounded up (with more than
        ``max_failures`` counted, until enough have left).
        """
        since = now - self.window
        times = sorted(t for t in ip_times if t > since)
        if len(times) >= self.max_failures:
            if len(times) - own_in_flight < self.max_failures:
                return _Verdict(at=None, wait=True)  # their outcome decides
            must_leave = times[len(times) - self.max_failures]
            return _Verdict(at=None, retry_after=max(1, math.ceil(must_leave + self.window - now)))
        account = [t for t in account_times if t > since]
        delay = self.account_delay(len(account))
        if delay == 0:
            return _Verdict(at=now)
        at = max(now, *account) + delay
        wait = at - (now if started is None else started)
        if wait > self.account_max_wait:
            return _Verdict(at=None, retry_after=max(1, math.ceil(wait - self.account_max_wait)))
        return _Verdict(at=at)

    def account_delay(self, count: int) -> float:
        """Seconds one attempt waits after ``count`` failed or in-flight ones."""
        if count < ACCOUNT_FREE_FAILURES:
            return 0.0
        exponent = min(count - ACCOUNT_FREE_FAILURES, 64)
        return min(self.account_max_delay, self.account_base_delay * 2.0**exponent)

    def _start(self, ip: str, name: str) -> None:
        self._ips[ip] = self._ips.get(ip, 0) + 1
        self._accounts[name] = self._accounts.get(name, 0) + 1

    def _end(self, ip: str, name: str) -> None:
        for counts, key in ((self._ips, ip), (self._accounts, name)):
            left = counts[key] - 1
            if left:
                counts[key] = left
            else:
                del counts[key]
        self._settled.set()
        self._settled = asyncio.Event()

    async def _await_settled(self, deadline: float) -> bool:
        """Wait until some attempt of this node ends; False once ``deadline`` passed."""
        left = deadline - self._clock()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(self._settled.wait(), left)
        except TimeoutError:
            return False
        return True


# --- revocations -------------------------------------------------------------------------


V = TypeVar("V")


class _Expiring(Generic[V]):
    """A map whose entries go once their ``expires_at`` has passed; a later expiry for the
    same key replaces the entry, an earlier one changes nothing."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, V]] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: str, expires_at: float, value: V) -> bool:
        """True when this changed the map."""
        current = self._entries.get(key)
        if current is not None and current[0] >= expires_at:
            return False
        self._entries[key] = (expires_at, value)
        heapq.heappush(self._heap, (expires_at, key))
        return True

    def get(self, key: str, now: float) -> V | None:
        self.prune(now)
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def prune(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires_at, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is not None and entry[0] == expires_at:
                del self._entries[key]


class RevocationCache:
    """What this node knows of tokens that died before their expiry, each held until the
    tokens concerned expire (then they die on their own):

    - revoked token ids (logout);
    - retired token ids (a rotating refresh), usable until their grace ends;
    - revoked families (a retired token was reused: every token of its login dies).

    Filled from the store at startup and kept current by the host on every local change
    and on every change another node announces (bus) or the store shows (poll).
    """

    def __init__(self) -> None:
        self._tokens: _Expiring[bool] = _Expiring()
        self._families: _Expiring[bool] = _Expiring()
        self._retired: _Expiring[Retirement] = _Expiring()

    def __len__(self) -> int:
        """Revoked token ids held."""
        return len(self._tokens)

    def add(self, jti: str, expires_at: float) -> None:
        self._tokens.put(jti, expires_at, True)

    def load(self, pairs: Iterable[tuple[str, float]]) -> None:
        for jti, expires_at in pairs:
            self.add(jti, expires_at)

    def is_revoked(self, jti: str, now: float) -> bool:
        return self._tokens.get(jti, now) is not None

    def prune(self, now: float) -> None:
        """Forget what concerns tokens expired at ``now``."""
        self._tokens.prune(now)
        self._families.prune(now)
        self._retired.prune(now)

    def revoke_family(self, family: str, expires_at: float) -> bool:
        """True when this is news (not already revoked until then or later)."""
        return self._families.put(family, expires_at, True)

    def is_family_revoked(self, family: str, now: float) -> bool:
        return self._families.get(family, now) is not None

    def retire(self, retirement: Retirement) -> bool:
        """True when this is news."""
        if self._retired.get(retirement.jti, -math.inf) is not None:
            return False
        return self._retired.put(retirement.jti, retirement.expires_at, retirement)

    def retirement(self, jti: str, now: float) -> Retirement | None:
        return self._retired.get(jti, now)

    def usable_until(self, claims: Claims, now: float) -> float:
        """When a connection authenticated with ``claims`` must close: the token's
        expiry, or the end of its grace once a rotating refresh retired it."""
        retirement = self.retirement(claims.jti, now)
        if retirement is None:
            return claims.expires_at
        return min(float(claims.expires_at), retirement.grace_until)
