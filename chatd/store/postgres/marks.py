"""Delivered marks gathered into one statement per round trip.

The hub records every connection's delivered marks of one loop turn in one call; at a
thousand messages a second that was a statement per turn with a delivered frame, the
node's most frequent one. Calls made while a statement is on the wire wait and go
together in the next (:class:`chatd.store.postgres.gather.Gathered`): one statement per
round trip, as the message writer does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from chatd.store.base import split_like
from chatd.store.postgres.gather import Gathered
from libchat.protocol import Message

__all__ = ["DeliveredMarks"]

Marks = Sequence[tuple[int, Sequence[int]]]  # (recipient id, seqs) per entry
MarkMany = Callable[[Marks, int], Awaitable[list[list[Message]]]]


class DeliveredMarks:
    """Runs ``mark_many`` (one statement) for the marks of every call made while the
    previous statement ran. Each caller gets its own entries' results; a seq marked by
    several entries goes to the earliest, as within one call. A call whose marks fail
    the statement fails alone; an unreachable database fails them all (Gathered)."""

    def __init__(self, mark_many: MarkMany) -> None:
        self._mark_many = mark_many
        self._gathered = Gathered(self._mark_together, "chatd-pg-marks")

    async def mark(self, marks: Marks, now_ms: int) -> list[list[Message]]:
        return await self._gathered.ask((marks, now_ms))

    async def _mark_together(self, asks: list[tuple[Marks, int]]) -> list[list[list[Message]]]:
        together = [mark for marks, _ in asks for mark in marks]
        results = await self._mark_many(together, max(now_ms for _, now_ms in asks))
        return split_like(results, [marks for marks, _ in asks])
