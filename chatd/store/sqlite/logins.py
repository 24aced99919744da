"""The SQLite store's login limits: failed logins, and attempts still being checked."""

from __future__ import annotations

from typing import Final

import apsw

from chatd.store.base import LoginDecider, failure_filter
from chatd.store.sqlite.db import rows, scalar
from chatd.store.sqlite.prune import Pruner
from chatd.store.sqlite.readers import ReadPool
from chatd.store.sqlite.writer import Writer

__all__ = ["LoginLimits"]

_IP_ATTEMPTS: Final = "SELECT at FROM login_failures WHERE ip = ? AND at >= ? ORDER BY at"
_ACCOUNT_ATTEMPTS: Final = (
    "SELECT at FROM login_failures WHERE username = ? AND at >= ? ORDER BY at"
)
_INSERT_ATTEMPT: Final = "INSERT INTO login_failures (ip, username, at) VALUES (?, ?, ?)"
# Rows of one attempt are alike: forgetting any one of them is forgetting that attempt.
_DELETE_ATTEMPT: Final = (
    "DELETE FROM login_failures WHERE rowid IN (SELECT rowid FROM login_failures"
    " WHERE ip = ? AND username = ? AND at = ? LIMIT 1)"
)


class LoginLimits:
    """Record, count, clear, reserve and release login attempts."""

    def __init__(self, writer: Writer, reads: ReadPool, pruner: Pruner) -> None:
        self._write = writer.run
        self._read = reads.run
        self._pruner = pruner

    async def record_login_failure(self, ip: str, username: str, at: float) -> None:
        sql = "INSERT INTO login_failures (ip, username, at) VALUES (?, ?, ?)"

        def job(conn: apsw.Connection) -> None:
            conn.execute(sql, (ip, username.lower(), at))
            self._pruner.maybe_prune(conn, at)

        await self._write(job)

    async def login_failures(self, ip: str, since: float) -> list[float]:
        sql = "SELECT at FROM login_failures WHERE ip = ? AND at >= ? ORDER BY at"
        return [row[0] for row in await self._read(lambda conn: rows(conn, sql, (ip, since)))]

    async def account_failures(self, username: str, since: float) -> int:
        sql = "SELECT count(*) FROM login_failures WHERE username = ? AND at >= ?"
        args = (username.lower(), since)
        return int(await self._read(lambda conn: scalar(conn, sql, args)))

    async def recent_login_failures(self, since: float) -> list[tuple[str, str, float]]:
        sql = "SELECT ip, username, at FROM login_failures WHERE at >= ? ORDER BY at"
        found = await self._read(lambda conn: rows(conn, sql, (since,)))
        return [(row[0], row[1], row[2]) for row in found]

    async def clear_login_failures(self, *, ip: str | None = None,
                                   username: str | None = None) -> int:
        where, args = failure_filter(ip, username, "?")

        def job(conn: apsw.Connection) -> int:
            conn.execute(f"DELETE FROM login_failures WHERE {where}", args)
            return int(conn.changes())

        return await self._write(job)

    async def reserve_login_attempt(
        self, ip: str, username: str, since: float, decide: LoginDecider
    ) -> float | None:
        name = username.lower()

        def job(conn: apsw.Connection) -> float | None:
            # The one writer runs jobs one at a time: nothing comes between the look and
            # the insert.
            ip_times = [row[0] for row in rows(conn, _IP_ATTEMPTS, (ip, since))]
            account_times = [row[0] for row in rows(conn, _ACCOUNT_ATTEMPTS, (name, since))]
            at = decide(ip_times, account_times)
            if at is not None:
                conn.execute(_INSERT_ATTEMPT, (ip, name, at))
                self._pruner.maybe_prune(conn, at)
            return at

        return await self._write(job)

    async def release_login_attempt(self, ip: str, username: str, at: float) -> None:
        args = (ip, username.lower(), at)

        def job(conn: apsw.Connection) -> None:
            conn.execute(_DELETE_ATTEMPT, args)

        await self._write(job)
