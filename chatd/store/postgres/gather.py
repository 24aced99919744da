"""Calls gathered into one statement per round trip.

The message writer commits every submit queued since its last commit in one statement,
and the other calls a burst of work makes one by one go the same way: the delivered
marks of every loop turn, and the reads each connecting user makes (its row, its peers,
its undelivered messages: a thousand users connecting at once made a statement each,
queued on the pool's connections behind one another, issue 17). Calls made while a
statement is on the wire wait and go together in the next one; a call never shares a
statement that began before it was made, so it sees every change committed before it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from chatd.store.base import StoreUnavailable
from chatd.store.postgres.pool import began_at

__all__ = ["Gathered", "keyed"]

A = TypeVar("A")
R = TypeVar("R")


# A call waiting for its statement: its ask, its caller's future, when it was made.
_Call = tuple[A, "asyncio.Future[R]", float]


class Gathered(Generic[A, R]):
    """Runs ``many`` (one statement) for the asks of every call made while the previous
    statement ran (up to ``limit`` by ``size``, if given); ``many`` answers each ask, in
    order. When a gathered statement fails for its content, each call runs alone, so one
    bad ask fails only its caller; an unreachable database (``many`` raises
    StoreUnavailable) fails them all at once."""

    def __init__(
        self,
        many: Callable[[list[A]], Awaitable[list[R]]],
        name: str,
        *,
        limit: int | None = None,
        size: Callable[[A], int] = lambda ask: 1,
    ) -> None:
        self._many = many
        self._name = name
        self._limit = limit  # the most a statement takes, by size (one ask, whatever size)
        self._size = size
        self._waiting: list[_Call[A, R]] = []
        self._drain: asyncio.Task[None] | None = None

    async def ask(self, ask: A) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((ask, future, time.monotonic()))
        if self._drain is None:
            self._drain = loop.create_task(self._run_waiting(), name=self._name)
        # A cancelled caller cancels its future only, not the statement the others
        # share (_settle skips a future already done).
        return await future

    async def idle(self) -> None:
        """Return once every call made so far is answered (a cancelled wait leaves the
        statements running)."""
        while self._drain is not None:
            await asyncio.shield(self._drain)

    async def _run_waiting(self) -> None:
        try:
            while self._waiting:
                await self._run(self._take())
        finally:
            self._drain = None

    def _take(self) -> list[_Call[A, R]]:
        """The calls waiting, in order, or the first of them that fit the limit."""
        taken = len(self._waiting)
        if self._limit is not None:
            total = 0
            for index, (ask, _, _) in enumerate(self._waiting):
                total += self._size(ask)
                if index and total > self._limit:
                    taken = index
                    break
        waiting, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return waiting

    async def _run(self, waiting: list[_Call[A, R]]) -> None:
        # The statement is bounded as work that began with its oldest call, which may
        # have waited for the statement before (see pool.began_at).
        try:
            with began_at(min(made for _, _, made in waiting)):
                answers = await self._many([ask for ask, _, _ in waiting])
        except StoreUnavailable as exc:
            for _, future, _ in waiting:
                _settle(future, exc)
            return
        except Exception as exc:
            if len(waiting) == 1:
                _settle(waiting[0][1], exc)
                return
            for one in waiting:
                await self._run([one])
            return
        for (_, future, _), answer in zip(waiting, answers, strict=True):
            _settle(future, answer)


def keyed(
    many: Callable[[list[A]], Awaitable[dict[A, R]]],
) -> Callable[[list[A]], Awaitable[list[R]]]:
    """``many`` for :class:`Gathered` from a read that answers each distinct key once
    (two connections of one user asking together read its row once)."""

    async def each(asks: list[A]) -> list[R]:
        answers = await many(list(dict.fromkeys(asks)))
        return [answers[ask] for ask in asks]

    return each


def _settle(future: asyncio.Future[R], outcome: R | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

