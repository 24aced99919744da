"""Per-user send limit: a token bucket (sustained rate, burst)."""

from __future__ import annotations

import math


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``. Time is passed in."""

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> int:
        """Take one token. Returns 0 when allowed, else the milliseconds to wait."""
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - self._tokens) / self._rate * 1000))
