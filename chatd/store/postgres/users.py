"""The PostgreSQL store's queries of user accounts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from chatd.store.base import StoreError, User, user_from_row
from chatd.store.postgres.columns import USER_COLUMNS
from chatd.store.postgres.pool import Database

__all__ = ["Users"]


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class Users:
    """Create, find, list and change users; changes are announced to every node."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_user(self, username: str, password_hash: str, now_ms: int) -> User | None:
        row = await self._db.fetchone(
            f"""INSERT INTO users (username, password_hash, created_at)
            VALUES (%s, %s, %s) ON CONFLICT (username) DO NOTHING
            RETURNING {USER_COLUMNS}""",
            (username.lower(), password_hash, now_ms),
        )
        return None if row is None else user_from_row(row)

    async def user_by_name(self, username: str) -> User | None:
        # live (pool.LIVE_RESERVED): mostly a send's recipient not cached yet
        row = await self._db.fetchone(
            f"SELECT {USER_COLUMNS} FROM users WHERE username = %s",
            (username.lower(),),
            live=True,
            read_only=True,
        )
        return None if row is None else user_from_row(row)

    async def users_by_id(self, user_ids: Sequence[int]) -> dict[int, User | None]:
        """Each user, None for an id nobody has, in one statement (see :class:`Gathered`):
        the sign-ins of users connecting at once."""
        rows = await self._db.fetchall(
            f"SELECT {USER_COLUMNS} FROM users WHERE id = ANY(%s)", (list(user_ids),),
            read_only=True,
        )
        users: dict[int, User | None] = dict.fromkeys(user_ids)
        for row in rows:
            user = user_from_row(row)
            users[user.id] = user
        return users

    async def list_users(self) -> list[User]:
        rows = await self._db.fetchall(f"SELECT {USER_COLUMNS} FROM users ORDER BY id")
        return [user_from_row(row) for row in rows]

    async def search_users(self, prefix: str, exclude: str, limit: int) -> list[str]:
        rows = await self._db.fetchall(
            """SELECT username FROM users
            WHERE username LIKE %s AND username <> %s
            ORDER BY username COLLATE "C" LIMIT %s""",
            (_like_prefix(prefix.lower()), exclude.lower(), limit),
        )
        return [row[0] for row in rows]

    async def _update_user(self, user_id: int, assignments: str, params: dict[str, Any]) -> User:
        row = await self._db.announced(
            f"""UPDATE users SET {assignments}, changed_at = %(now_ms)s
            WHERE id = %(id)s RETURNING {USER_COLUMNS}""",
            {**params, "id": user_id, "now_ms": int(time.time() * 1000)},
        )
        if row is None:
            raise StoreError(f"no user with id {user_id}")
        return user_from_row(row)

    async def set_password(self, user_id: int, password_hash: str) -> User:
        return await self._update_user(
            user_id,
            "password_hash = %(hash)s, token_generation = token_generation + 1",
            {"hash": password_hash},
        )

    async def set_disabled(self, user_id: int, disabled: bool) -> User:
        return await self._update_user(
            user_id,
            """disabled = %(disabled)s,
            token_generation = token_generation + CASE WHEN %(disabled)s THEN 1 ELSE 0 END""",
            {"disabled": disabled},
        )

    async def users_changed_since(self, since_ms: int) -> list[User]:
        rows = await self._db.fetchall(
            f"SELECT {USER_COLUMNS} FROM users WHERE changed_at >= %s ORDER BY id", (since_ms,)
        )
        return [user_from_row(row) for row in rows]
