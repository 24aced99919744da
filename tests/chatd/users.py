"""Signed-in users for scenario tests: ``async with pair(server, kind) as (alice, bob)``.

A :class:`User` is registered, logged in and (unless asked otherwise) connected through
hello; it sends and receives like its connection, so a scenario reads as the contract:
``await send(alice, bob.name)``, ``await bob.recv("message")``. Every connection opened
through a :class:`Users` (a user's own, another device, a bare socket) is closed when the
``async with`` ends, however it ends; closing one the test already closed is harmless.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from tests.chatd.clients import (
    TIMEOUT,
    Frame,
    Peer,
    anew_user,
    libchat_connect,
    login,
    ws_connect,
)
from tests.chatd.server import ChatdProcess

KINDS = ("websockets", "libchat")  # the two clients a scenario can run with
P = TypeVar("P", bound=Peer)


class User:
    """One signed-in user and their current connection (the first device)."""

    def __init__(self, users: Users, name: str, token: str) -> None:
        self.users = users
        self.name = name
        self.token = token
        self._peer: Peer | None = None

    def __repr__(self) -> str:
        return f"User({self.name!r})"

    @property
    def peer(self) -> Peer:
        assert self._peer is not None, f"{self.name} has not connected"
        return self._peer

    async def connect(self) -> User:
        """Open this user's connection (through hello and welcome) with its token; a
        connection it had before is closed first."""
        if self._peer is not None:
            await self._peer.close()
        self._peer = await self.users.connect(self.token)
        return self

    async def device(self, token: str | None = None) -> Peer:
        """Another connection of this user (another device), with ``token`` or its own."""
        return await self.users.connect(token or self.token)

    def login(self) -> str:
        """A new token from a fresh login: another family of tokens."""
        return login(self.users.server, self.name)

    # --- the connection's side: a User is a Peer -----------------------------------------

    @property
    def frames(self) -> list[Frame]:
        return self.peer.frames

    @property
    def close_code(self) -> int | None:
        return self.peer.close_code

    async def send(self, frame: Frame) -> None:
        await self.peer.send(frame)

    async def recv(self, kind: str | tuple[str, ...], timeout: float = TIMEOUT,
                   where: Callable[[Frame], bool] | None = None) -> Frame:
        return await self.peer.recv(kind, timeout, where)

    async def wait_closed(self, timeout: float = TIMEOUT) -> int | None:
        return await self.peer.wait_closed(timeout)

    async def close(self) -> None:
        await self.peer.close()

    def untaken(self, kind: str | None = None) -> list[Frame]:
        return self.peer.untaken(kind)


class Users:
    """Makes users on one server and keeps every connection opened for them."""

    def __init__(self, server: ChatdProcess, kind: str) -> None:
        assert kind in KINDS, kind
        self.server = server
        self.kind = kind
        self._opened: list[Peer] = []

    async def new(self, *, online: bool = True) -> User:
        """A fresh user, logged in; connected too unless ``online`` is False."""
        user = User(self, *await anew_user(self.server))
        return await user.connect() if online else user

    async def connect(self, token: str | None = None, *, kind: str | None = None,
                      **options: Any) -> Peer:
        """A connection with this test's client (or ``kind``'s), closed at the end:
        through hello with ``token``, or (``hello=False``) only upgraded. ``options`` go
        to the client's connect function."""
        if (kind or self.kind) == "libchat":
            peer: Peer = await libchat_connect(self.server, token, **options)
        else:
            peer = await ws_connect(self.server, token, **options)
        return self.track(peer)

    def track(self, peer: P) -> P:
        """Close ``peer`` at the end with the others."""
        self._opened.append(peer)
        return peer

    async def close_all(self) -> None:
        """Close every connection, newest first; the first failure is raised after all
        were tried."""
        failure: BaseException | None = None
        for peer in reversed(self._opened):
            try:
                await peer.close()
            except Exception as exc:
                failure = failure or exc
        self._opened.clear()
        if failure is not None:
            raise failure


@contextlib.asynccontextmanager
async def users(server: ChatdProcess, kind: str = "websockets") -> AsyncIterator[Users]:
    """A :class:`Users` whose connections are all closed when the block ends. When the
    block failed, its error is the one reported, not a failing close."""
    made = Users(server, kind)
    try:
        yield made
    except BaseException:
        with contextlib.suppress(Exception):
            await made.close_all()
        raise
    await made.close_all()


@contextlib.asynccontextmanager
async def pair(server: ChatdProcess, kind: str = "websockets",
               ) -> AsyncIterator[tuple[User, User]]:
    """alice and bob: two fresh users, each signed in and connected with ``kind``'s
    client, alice first; every connection of the block closed at its end."""
    async with users(server, kind) as made:
        alice = await made.new()
        bob = await made.new()
        yield alice, bob
