"""The SQLite store's queries of user accounts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

import apsw

from chatd.store.base import StoreError, User, user_from_row
from chatd.store.sqlite.db import rows
from chatd.store.sqlite.readers import ReadPool
from chatd.store.sqlite.writer import Writer

__all__ = ["USER_COLUMNS", "Users"]

USER_COLUMNS: Final = "id, username, password_hash, disabled, token_generation, created_at"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _one_user(conn: apsw.Connection, sql: str, args: Sequence[Any]) -> User:
    found = rows(conn, sql, args)
    if not found:
        raise StoreError(f"no user with id {args[-1]}")
    return user_from_row(found[0])


class Users:
    """Create, find, list and change users."""

    def __init__(self, writer: Writer, reads: ReadPool) -> None:
        self._write = writer.run
        self._read = reads.run

    async def create_user(self, username: str, password_hash: str, now_ms: int) -> User | None:
        sql = (
            "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)"
            f" ON CONFLICT (username) DO NOTHING RETURNING {USER_COLUMNS}"
        )
        args = (username.lower(), password_hash, now_ms)

        def job(conn: apsw.Connection) -> User | None:
            found = rows(conn, sql, args)
            return user_from_row(found[0]) if found else None

        return await self._write(job)

    async def user_by_name(self, username: str) -> User | None:
        sql = f"SELECT {USER_COLUMNS} FROM users WHERE username = ?"
        found = await self._read(lambda conn: rows(conn, sql, (username.lower(),)))
        return user_from_row(found[0]) if found else None

    async def user_by_id(self, user_id: int) -> User | None:
        sql = f"SELECT {USER_COLUMNS} FROM users WHERE id = ?"
        found = await self._read(lambda conn: rows(conn, sql, (user_id,)))
        return user_from_row(found[0]) if found else None

    async def list_users(self) -> list[User]:
        sql = f"SELECT {USER_COLUMNS} FROM users ORDER BY id"
        return [user_from_row(row) for row in await self._read(lambda conn: rows(conn, sql))]

    async def search_users(self, prefix: str, exclude: str, limit: int) -> list[str]:
        prefix = prefix.lower()
        sql = (
            "SELECT username FROM users WHERE username >= ? AND username < ? AND username != ?"
            " ORDER BY username LIMIT ?"
        )
        args = (prefix, prefix + "\U0010ffff", exclude.lower(), limit)
        return [row[0] for row in await self._read(lambda conn: rows(conn, sql, args))]

    async def set_password(self, user_id: int, password_hash: str) -> User:
        sql = (
            "UPDATE users SET password_hash = ?, token_generation = token_generation + 1,"
            f" changed_at = ? WHERE id = ? RETURNING {USER_COLUMNS}"
        )
        args = (password_hash, _now_ms(), user_id)
        return await self._write(lambda conn: _one_user(conn, sql, args))

    async def set_disabled(self, user_id: int, disabled: bool) -> User:
        sql = (
            "UPDATE users SET disabled = ?, token_generation = token_generation + ?,"
            f" changed_at = ? WHERE id = ? RETURNING {USER_COLUMNS}"
        )
        args = (int(disabled), int(disabled), _now_ms(), user_id)
        return await self._write(lambda conn: _one_user(conn, sql, args))

    async def users_changed_since(self, since_ms: int) -> list[User]:
        sql = f"SELECT {USER_COLUMNS} FROM users WHERE changed_at >= ? ORDER BY id"
        found = await self._read(lambda conn: rows(conn, sql, (since_ms,)))
        return [user_from_row(row) for row in found]
