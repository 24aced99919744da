"""Reconnect delays: exponential backoff with full jitter, retrying forever.

``delay = rng.uniform(0, min(cap, base * 2**attempt))`` (the "full jitter" of the AWS
architecture blog): many clients cut off by one server restart spread their reconnects
over the whole window instead of arriving in waves. A connection that stayed up for
``reset_after`` seconds proves the server is fine, so the next outage starts again from
short delays; a connection that drops at once keeps the delays growing.

Time is passed in; randomness comes from the injected ``random.Random``::

    backoff = Backoff(rng=random.Random())
    wait = backoff.next_delay()      # before each connection attempt after a failure
    backoff.connected(now=t)         # the connection is up (welcome received)
    backoff.disconnected(now=t2)     # it is gone; resets the count if it lasted
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]

MAX_EXPONENT = 1000  # 2.0**1000 is still a finite float; past it the ceiling is `cap` anyway


class Backoff:
    """Reconnect delays for one client.

    Args:
        rng: source of the jitter; seed it for deterministic tests.
        base: ceiling of the first delay, in seconds.
        cap: largest delay ever returned, in seconds.
        reset_after: a connection up at least this long resets the attempt count.
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        base: float = 0.5,
        cap: float = 60.0,
        reset_after: float = 30.0,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        if reset_after < 0:
            raise ValueError("reset_after must not be negative")
        self.base = base
        self.cap = cap
        self.reset_after = reset_after
        self._rng = rng
        self._attempt = 0
        self._up_since: float | None = None

    @property
    def attempt(self) -> int:
        """Delays handed out since the last reset."""
        return self._attempt

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        exponent = min(self._attempt, MAX_EXPONENT)
        return min(self.cap, self.base * 2.0**exponent)

    def next_delay(self) -> float:
        """The time to wait before the next attempt; counts one attempt."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self._attempt += 1
        return delay

    def connected(self, now: float) -> None:
        """The connection is up; the attempt count stays until it has lasted."""
        self._up_since = now

    def disconnected(self, now: float) -> None:
        """The connection is gone; if it was up for ``reset_after``, start over."""
        if self._up_since is not None and now - self._up_since >= self.reset_after:
            self._attempt = 0
        self._up_since = None

    def reset(self) -> None:
        """Start over from the shortest delays (e.g. the user pressed "reconnect")."""
        self._attempt = 0
        self._up_since = None
