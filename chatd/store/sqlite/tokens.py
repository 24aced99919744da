"""The SQLite store's queries of tokens: revocations, rotation retirements, families."""

from __future__ import annotations

import time

import apsw

from chatd.store.base import Retirement
from chatd.store.sqlite.db import rows, scalar
from chatd.store.sqlite.prune import Pruner
from chatd.store.sqlite.readers import ReadPool
from chatd.store.sqlite.writer import Writer

__all__ = ["Tokens"]


class Tokens:
    """Revoked and retired tokens, and the head of each token family."""

    def __init__(self, writer: Writer, reads: ReadPool, pruner: Pruner) -> None:
        self._write = writer.run
        self._read = reads.run
        self._pruner = pruner

    async def revoke_token(self, jti: str, user_id: int, expires_at: int) -> None:
        sql = (
            "INSERT INTO revoked_tokens (jti, user_id, expires_at, revoked_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (jti) DO NOTHING"
        )
        args = (jti, user_id, expires_at, time.time())

        def job(conn: apsw.Connection) -> None:
            conn.execute(sql, args)
            self._pruner.maybe_prune(conn, time.time())

        await self._write(job)

    async def revoked_since(self, since: float) -> list[tuple[str, int]]:
        sql = (
            "SELECT jti, expires_at FROM revoked_tokens WHERE revoked_at >= ? AND expires_at > ?"
            " ORDER BY revoked_at, jti"
        )
        found = await self._read(lambda conn: rows(conn, sql, (since, time.time())))
        return [(row[0], row[1]) for row in found]

    async def retire_token(self, retirement: Retirement, user_id: int) -> bool:
        sql = (
            "INSERT INTO retired_tokens (jti, family, user_id, expires_at, grace_until,"
            " retired_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING RETURNING jti"
        )
        r = retirement
        args = (r.jti, r.family, user_id, r.expires_at, r.grace_until, time.time())
        return bool(await self._write(lambda conn: rows(conn, sql, args)))

    async def retired_since(self, since: float) -> list[Retirement]:
        sql = (
            "SELECT jti, family, expires_at, grace_until FROM retired_tokens"
            " WHERE retired_at >= ? AND expires_at > ? ORDER BY retired_at, jti"
        )
        found = await self._read(lambda conn: rows(conn, sql, (since, time.time())))
        return [
            Retirement(jti=row[0], family=row[1], expires_at=row[2], grace_until=row[3])
            for row in found
        ]

    async def advance_family(
        self, family: str, presented: str, new_head: str, user_id: int, expires_at: int
    ) -> bool:
        sql = (
            "INSERT INTO token_families (family, head, user_id, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (family) DO UPDATE SET head = excluded.head,"
            " expires_at = excluded.expires_at WHERE token_families.head = ?"
            " RETURNING family"
        )
        args = (family, new_head, user_id, expires_at, presented)
        return bool(await self._write(lambda conn: rows(conn, sql, args)))

    async def family_head(self, family: str) -> str | None:
        sql = "SELECT head FROM token_families WHERE family = ? AND expires_at > ?"
        args = (family, time.time())
        head = await self._read(lambda conn: scalar(conn, sql, args))
        return None if head is None else str(head)

    async def revoke_family(self, family: str, user_id: int, expires_at: int) -> None:
        sql = (
            "INSERT INTO revoked_families (family, user_id, expires_at, revoked_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (family) DO UPDATE"
            " SET expires_at = excluded.expires_at, revoked_at = excluded.revoked_at"
            " WHERE excluded.expires_at > revoked_families.expires_at"
        )
        args = (family, user_id, expires_at, time.time())

        def job(conn: apsw.Connection) -> None:
            conn.execute(sql, args)

        await self._write(job)

    async def revoked_families_since(self, since: float) -> list[tuple[str, int]]:
        sql = (
            "SELECT family, expires_at FROM revoked_families"
            " WHERE revoked_at >= ? AND expires_at > ? ORDER BY revoked_at, family"
        )
        found = await self._read(lambda conn: rows(conn, sql, (since, time.time())))
        return [(row[0], row[1]) for row in found]
