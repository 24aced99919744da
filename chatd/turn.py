"""The loop turn: work gathered while the event loop handles one round of socket reads
and done once at the end of it.

A read can produce many sends, delivered marks and writes; the turn collects them from
every connection and hands each kind over as one batch: the sends of a whole turn go to
the store in one submit, and a connection that got ten pushes in a turn writes once.
The batches run in the order they were made (the hub's sends before its delivered
marks, so a turn keeps each connection's frame order; the connections' output last).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from chatd.observe.logs import EventLogger

T = TypeVar("T")

log = EventLogger(logging.getLogger(__name__))


class TurnBatch(Generic[T]):
    """Items added during one loop turn, handed to ``handle`` once at its end."""

    __slots__ = ("_handle", "_items", "_turn")

    def __init__(self, turn: LoopTurn, handle: Callable[[list[T]], None]) -> None:
        self._turn = turn
        self._handle = handle
        self._items: list[T] = []

    def add(self, item: T) -> None:
        self._items.append(item)
        self._turn.due()

    def _run(self) -> None:
        if self._items:
            items, self._items = self._items, []
            self._handle(items)


class LoopTurn:
    """The one owner of end-of-turn work: make a :class:`TurnBatch` per kind of work."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._batches: list[TurnBatch[object]] = []
        self._scheduled = False

    def batch(self, handle: Callable[[list[T]], None]) -> TurnBatch[T]:
        batch: TurnBatch[T] = TurnBatch(self, handle)
        self._batches.append(batch)  # type: ignore[arg-type]
        return batch

    @property
    def pending(self) -> bool:
        """Work is waiting for the end of this turn."""
        return self._scheduled

    def due(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._end)

    def _end(self) -> None:
        self._scheduled = False  # work added by a handler waits for the next turn's end
        for batch in self._batches:
            try:
                batch._run()
            except Exception:  # a bug in one kind of work must not keep the others
                log.exception("turn.batch_failed")
