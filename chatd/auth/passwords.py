"""argon2id password hashing and verification, run in an executor handed in (never on the
event loop), with a bounded queue. Nothing here logs a password or a hash."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Final, TypeVar

import attrs
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from chatd.observe.logs import EventLogger

__all__ = ["MAX_HASHES_QUEUED", "OWASP_FLOOR", "HashParams", "Passwords", "PasswordsBusy"]

log = EventLogger(logging.getLogger(__name__))
T = TypeVar("T")

# Hashes and verifications queued for the argon2 threads at most (each ~20-50 ms on one
# core): past it, 503. 16 keeps a login's wait for a thread under half a second.
MAX_HASHES_QUEUED = 16


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
            log.warning("password.hash_invalid",
                        hint="a stored password hash is not a valid argon2 hash")
            return False
