"""Now and then, drop login failures older than a day and expired token records."""

from __future__ import annotations

from typing import Final

import apsw

__all__ = ["LOGIN_FAILURE_TTL", "PRUNE_INTERVAL", "Pruner"]

LOGIN_FAILURE_TTL: Final = 24 * 3600.0  # seconds; the login limits look back far less
PRUNE_INTERVAL: Final = 3600.0  # seconds between prunes of old login failures and revocations


class Pruner:
    """Called by the writes that add such rows, in the writer thread only."""

    def __init__(self) -> None:
        self._last_prune = 0.0

    def maybe_prune(self, conn: apsw.Connection, now: float) -> None:
        """Prune in this transaction if the last prune is :data:`PRUNE_INTERVAL` ago."""
        if now - self._last_prune < PRUNE_INTERVAL:
            return
        self._last_prune = now
        conn.execute("DELETE FROM login_failures WHERE at < ?", (now - LOGIN_FAILURE_TTL,))
        for table in ("revoked_tokens", "retired_tokens", "revoked_families", "token_families"):
            conn.execute(f"DELETE FROM {table} WHERE expires_at < ?", (int(now) - 60,))
