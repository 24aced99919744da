"""Token buckets (sustained rate, burst): one, or one per key (client address, user)."""

from __future__ import annotations

import math
from collections.abc import Hashable


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``. Time is passed in."""

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def is_full(self, now: float) -> bool:
        """True when the bucket would hold ``burst`` tokens at ``now`` (nobody used it)."""
        return self._tokens + (now - self._updated) * self._rate >= self._burst

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


class KeyedBuckets:
    """A token bucket per key, all with one rate and burst. Memory stays bounded: past
    ``max_keys`` buckets, those that have refilled (idle keys) are dropped, and if none
    has, the oldest half (a flood of keys cannot grow it without end)."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("need rate > 0 and burst >= 1")
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: dict[Hashable, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, now: float) -> int:
        """Take one token from ``key``'s bucket: 0 when allowed, else milliseconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._prune(now)
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, now)
        return bucket.take(now)

    def _prune(self, now: float) -> None:
        full = [key for key, bucket in self._buckets.items() if bucket.is_full(now)]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:
            for key in list(self._buckets)[: len(self._buckets) // 2]:
                del self._buckets[key]
