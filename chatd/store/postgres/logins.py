"""The PostgreSQL store's login limits: failed logins, and attempts still being checked."""

from __future__ import annotations

from typing import Final

from chatd.store.base import LoginDecider, failure_filter
from chatd.store.postgres.pool import Database

__all__ = ["LoginLimits"]

_LOGIN_LOCK: Final = 0x6C6F67696E  # advisory lock key ("login") of login reservations
_IP_ATTEMPTS: Final = "SELECT at FROM login_failures WHERE ip = %s AND at >= %s ORDER BY at"
_ACCOUNT_ATTEMPTS: Final = (
    "SELECT at FROM login_failures WHERE username = %s AND at >= %s ORDER BY at"
)
LOGIN_FAILURE_TTL: Final = 24 * 3600.0  # seconds; the login limits look back far less
PRUNE_INTERVAL: Final = 3600.0  # seconds between prunes of old login failures and revocations


class LoginLimits:
    """Record, count, clear, reserve and release login attempts; now and then, prune."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._last_prune = 0.0  # Unix s of this node's last prune

    async def record_login_failure(self, ip: str, username: str, at: float) -> None:
        await self._db.execute(
            "INSERT INTO login_failures (ip, username, at) VALUES (%s, %s, %s)",
            (ip, username.lower(), at),
        )
        await self._maybe_prune(at)

    async def _maybe_prune(self, now: float) -> None:
        """Now and then drop login failures older than a day and expired revocations."""
        if now - self._last_prune < PRUNE_INTERVAL:
            return
        self._last_prune = now
        await self._db.execute(
            "DELETE FROM login_failures WHERE at < %s", (now - LOGIN_FAILURE_TTL,)
        )
        for table in ("revoked_tokens", "retired_tokens", "revoked_families", "token_families"):
            await self._db.execute(f"DELETE FROM {table} WHERE expires_at < %s", (int(now) - 60,))

    async def login_failures(self, ip: str, since: float) -> list[float]:
        rows = await self._db.fetchall(
            "SELECT at FROM login_failures WHERE ip = %s AND at >= %s ORDER BY at", (ip, since)
        )
        return [row[0] for row in rows]

    async def account_failures(self, username: str, since: float) -> int:
        row = await self._db.fetchone(
            "SELECT count(*) FROM login_failures WHERE username = %s AND at >= %s",
            (username.lower(), since),
        )
        return 0 if row is None else int(row[0])

    async def recent_login_failures(self, since: float) -> list[tuple[str, str, float]]:
        rows = await self._db.fetchall(
            "SELECT ip, username, at FROM login_failures WHERE at >= %s ORDER BY at", (since,)
        )
        return [(row[0], row[1], row[2]) for row in rows]

    async def clear_login_failures(self, *, ip: str | None = None,
                                   username: str | None = None) -> int:
        where, args = failure_filter(ip, username, "%s")
        async with self._db.connection() as conn:
            cur = await conn.execute(f"DELETE FROM login_failures WHERE {where}", args)
            return cur.rowcount

    async def reserve_login_attempt(
        self, ip: str, username: str, since: float, decide: LoginDecider
    ) -> float | None:
        name = username.lower()
        async with self._db.connection() as conn, conn.transaction():
            # One lock for every node's reservations: the look and the insert of one
            # attempt never interleave with another's. Each holds it for a few ms.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOGIN_LOCK,))
            cur = await conn.execute(_IP_ATTEMPTS, (ip, since))
            ip_times = [row[0] for row in await cur.fetchall()]
            cur = await conn.execute(_ACCOUNT_ATTEMPTS, (name, since))
            account_times = [row[0] for row in await cur.fetchall()]
            at = decide(ip_times, account_times)
            if at is not None:
                await conn.execute(
                    "INSERT INTO login_failures (ip, username, at) VALUES (%s, %s, %s)",
                    (ip, name, at),
                )
        if at is not None:
            await self._maybe_prune(at)
        return at

    async def release_login_attempt(self, ip: str, username: str, at: float) -> None:
        # Rows of one attempt are alike: forgetting any one of them forgets that attempt.
        await self._db.execute(
            """DELETE FROM login_failures WHERE ctid IN (SELECT ctid FROM login_failures
            WHERE ip = %s AND username = %s AND at = %s LIMIT 1)""",
            (ip, username.lower(), at),
        )
