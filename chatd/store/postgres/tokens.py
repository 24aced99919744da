"""The PostgreSQL store's queries of tokens: revocations, rotation retirements, families."""

from __future__ import annotations

import time

from chatd.store.base import Retirement
from chatd.store.postgres.pool import Database

__all__ = ["Tokens"]


class Tokens:
    """Revoked and retired tokens, and the head of each token family."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def revoke_token(self, jti: str, user_id: int, expires_at: int) -> None:
        await self._db.announced(
            """INSERT INTO revoked_tokens (jti, user_id, expires_at, revoked_at)
            VALUES (%s, %s, %s, %s) ON CONFLICT (jti) DO NOTHING""",
            (jti, user_id, expires_at, time.time()),
        )

    async def revoked_since(self, since: float) -> list[tuple[str, int]]:
        rows = await self._db.fetchall(
            """SELECT jti, expires_at FROM revoked_tokens
            WHERE revoked_at >= %s AND expires_at > %s ORDER BY revoked_at, jti""",
            (since, time.time()),
        )
        return [(row[0], row[1]) for row in rows]

    async def retire_token(self, retirement: Retirement, user_id: int) -> bool:
        r = retirement
        row = await self._db.fetchone(
            """INSERT INTO retired_tokens
            (jti, family, user_id, expires_at, grace_until, retired_at)
            VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (jti) DO NOTHING RETURNING jti""",
            (r.jti, r.family, user_id, r.expires_at, r.grace_until, time.time()),
        )
        return row is not None

    async def retired_since(self, since: float) -> list[Retirement]:
        rows = await self._db.fetchall(
            """SELECT jti, family, expires_at, grace_until FROM retired_tokens
            WHERE retired_at >= %s AND expires_at > %s ORDER BY retired_at, jti""",
            (since, time.time()),
        )
        return [
            Retirement(jti=row[0], family=row[1], expires_at=row[2], grace_until=row[3])
            for row in rows
        ]

    async def advance_family(
        self, family: str, presented: str, new_head: str, user_id: int, expires_at: int
    ) -> bool:
        row = await self._db.fetchone(
            """INSERT INTO token_families (family, head, user_id, expires_at)
            VALUES (%s, %s, %s, %s) ON CONFLICT (family) DO UPDATE
            SET head = EXCLUDED.head, expires_at = EXCLUDED.expires_at
            WHERE token_families.head = %s RETURNING family""",
            (family, new_head, user_id, expires_at, presented),
        )
        return row is not None

    async def family_head(self, family: str) -> str | None:
        row = await self._db.fetchone(
            "SELECT head FROM token_families WHERE family = %s AND expires_at > %s",
            (family, time.time()),
        )
        return None if row is None else str(row[0])

    async def revoke_family(self, family: str, user_id: int, expires_at: int) -> None:
        await self._db.announced(
            """INSERT INTO revoked_families (family, user_id, expires_at, revoked_at)
            VALUES (%s, %s, %s, %s) ON CONFLICT (family) DO UPDATE
            SET expires_at = EXCLUDED.expires_at, revoked_at = EXCLUDED.revoked_at
            WHERE EXCLUDED.expires_at > revoked_families.expires_at""",
            (family, user_id, expires_at, time.time()),
        )

    async def revoked_families_since(self, since: float) -> list[tuple[str, int]]:
        rows = await self._db.fetchall(
            """SELECT family, expires_at FROM revoked_families
            WHERE revoked_at >= %s AND expires_at > %s ORDER BY revoked_at, family""",
            (since, time.time()),
        )
        return [(row[0], row[1]) for row in rows]
