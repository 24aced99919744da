"""What this node knows of tokens that died before their expiry (logout, rotating refresh,
a reused refresh token), each held only until the tokens concerned expire."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from typing import Generic, TypeVar

from chatd.auth.tokens import Claims
from chatd.store.base import Retirement

__all__ = ["RevocationCache"]

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
