"""An in-memory directory of users in front of the store.

Users are few and change rarely, while every send, hello and HTTP request needs one:
the directory keeps each user it has seen, and is told (or polls the store) when one
changes, so the hot path never waits on the database for them.
"""

from __future__ import annotations

from chatd.store import Store, User


class UserDirectory:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_name: dict[str, User] = {}
        self._by_id: dict[int, User] = {}

    def cached(self, username: str) -> User | None:
        return self._by_name.get(username)

    def cached_by_id(self, user_id: int) -> User | None:
        return self._by_id.get(user_id)

    async def by_name(self, username: str) -> User | None:
        user = self._by_name.get(username)
        if user is None:
            user = await self._store.user_by_name(username)
            if user is not None:
                self.remember(user)
        return user

    async def fresh(self, username: str) -> User | None:
        """The user as the store has it now, remembered: for a login, which must see a
        password or an account changed a moment ago by ``chatd user`` (the server hears
        of such changes within a fraction of a second, not at once)."""
        user = await self._store.user_by_name(username)
        if user is not None:
            self.remember(user)
        return user

    async def by_id(self, user_id: int) -> User | None:
        user = self._by_id.get(user_id)
        if user is None:
            user = await self._store.user_by_id(user_id)
            if user is not None:
                self.remember(user)
        return user

    def remember(self, user: User) -> None:
        self._by_name[user.username] = user
        self._by_id[user.id] = user
