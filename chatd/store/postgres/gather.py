"""Reads gathered into one statement per round trip.

When a thousand users connect to a node at once, each connection reads its user, its
peers and its undelivered messages: statements each, queued on the pool's connections
behind one another (issue 17). Calls
made while a statement is on the wire wait and go together in the next one, as the
message writer and the delivered marks do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from chatd.store.base import StoreUnavailable

__all__ = ["Gathered"]

K = TypeVar("K")
R = TypeVar("R")


class Gathered(Generic[K, R]):
    """Runs ``many`` (one statement for several keys) for the keys of every call made
    while the previous statement ran; each call gets its own key's answer. When a
    gathered statement fails for its content, each call runs alone, so one bad key
    fails only its caller; an unreachable database fails them all at once."""

    def __init__(self, many: Callable[[Sequence[K]], Awaitable[dict[K, R]]], name: str) -> None:
        self._many = many
        self._name = name
        self._waiting: list[tuple[K, asyncio.Future[R]]] = []
        self._drain: asyncio.Task[None] | None = None

    async def get(self, key: K) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((key, future))
        if self._drain is None:
            self._drain = loop.create_task(self._run_waiting(), name=self._name)
        # A cancelled caller cancels its future only, not the statement the others share.
        return await future

    async def _run_waiting(self) -> None:
        try:
            while self._waiting:
                asks, self._waiting = self._waiting, []
                await self._run(asks)
        finally:
            self._drain = None

    async def _run(self, asks: list[tuple[K, asyncio.Future[R]]]) -> None:
        try:
            answers = await self._many(list(dict.fromkeys(key for key, _ in asks)))
        except StoreUnavailable as exc:
            for _, future in asks:
                _settle(future, exc)
            return
        except Exception as exc:
            if len(asks) == 1:
                _settle(asks[0][1], exc)
                return
            for ask in asks:
                await self._run([ask])
            return
        for key, future in asks:
            _settle(future, answers[key])


def _settle(future: asyncio.Future[R], outcome: R | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
