"""Delivered marks gathered into one statement per round trip.

The hub records every connection's delivered marks of one loop turn in one call; at a
thousand messages a second that was a statement per turn with a delivered frame, the
node's most frequent one. Calls made while a statement is on the wire wait and go
together in the next: one statement per round trip, as the message writer does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from chatd.store.base import StoreUnavailable, split_like
from libchat.protocol import Message

__all__ = ["DeliveredMarks"]

Marks = Sequence[tuple[int, Sequence[int]]]  # (recipient id, seqs) per entry
MarkMany = Callable[[Marks, int], Awaitable[list[list[Message]]]]


class _Ask:
    """One caller's marks, waiting for their statement."""

    __slots__ = ("future", "marks", "now_ms")

    def __init__(self, marks: Marks, now_ms: int, future: asyncio.Future[list[list[Message]]]):
        self.marks = marks
        self.now_ms = now_ms
        self.future = future


class DeliveredMarks:
    """Runs ``mark_many`` (one statement) for the marks of every call made while the
    previous statement ran. Each caller gets its own entries' results; a seq marked by
    several entries goes to the earliest, as within one call. When a gathered
    statement fails for its content, each call runs alone, so one bad call fails only
    itself; an unreachable database fails them all at once."""

    def __init__(self, mark_many: MarkMany) -> None:
        self._mark_many = mark_many
        self._waiting: list[_Ask] = []
        self._drain: asyncio.Task[None] | None = None

    async def mark(self, marks: Marks, now_ms: int) -> list[list[Message]]:
        loop = asyncio.get_running_loop()
        ask = _Ask(marks, now_ms, loop.create_future())
        self._waiting.append(ask)
        if self._drain is None:
            self._drain = loop.create_task(self._run_waiting(), name="chatd-pg-marks")
        # A cancelled caller cancels its future only, not the statement the others
        # share (_settle skips a future already done).
        return await ask.future

    async def _run_waiting(self) -> None:
        try:
            while self._waiting:
                asks, self._waiting = self._waiting, []
                await self._run(asks)
        finally:
            self._drain = None

    async def _run(self, asks: list[_Ask]) -> None:
        marks = [mark for ask in asks for mark in ask.marks]
        try:
            results = await self._mark_many(marks, max(ask.now_ms for ask in asks))
        except StoreUnavailable as exc:
            for ask in asks:
                _settle(ask, exc)
            return
        except Exception as exc:
            if len(asks) == 1:
                _settle(asks[0], exc)
                return
            for ask in asks:
                await self._run([ask])
            return
        for ask, answer in zip(asks, split_like(results, [ask.marks for ask in asks]),
                               strict=True):
            _settle(ask, answer)


def _settle(ask: _Ask, outcome: list[list[Message]] | Exception) -> None:
    if ask.future.done():
        return
    if isinstance(outcome, Exception):
        ask.future.set_exception(outcome)
    else:
        ask.future.set_result(outcome)
