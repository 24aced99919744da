"""The login limits: failed logins per address, and a line with growing delays per account.

Counted in the store (a :class:`FailureLog`) before the password is checked, so every
node on the same database shares them. Time comes from the clock handed in.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

import attrs

from chatd.store import LoginDecider
from libchat.protocol import normalize_username

__all__ = [
    "ACCOUNT_FREE_FAILURES",
    "ACCOUNT_MAX_WAIT",
    "LOGIN_MAX_FAILURES",
    "LOGIN_WINDOW",
    "FailureLog",
    "LoginAdmission",
    "LoginLimiter",
    "LoginTicket",
]

LOGIN_MAX_FAILURES = 5  # failed logins per address in a window: the contract's limit
LOGIN_WINDOW = 900.0  # seconds, sliding: the contract's 15 minutes
ACCOUNT_FREE_FAILURES = 3  # failed logins against one account answered without delay
# Longest wait in an account's line of logins: past it, 429 (a client gives up before long).
ACCOUNT_MAX_WAIT = 20.0


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
