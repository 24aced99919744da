"""Many deadlines on one event-loop timer.

Every WebSocket has a deadline (its next ping, its idle or hello timeout) and every
authenticated one a token expiry. One ``loop.call_at`` each cost about 1.5 KiB per
connection (uvloop's ``TimerHandle`` and its libuv timer) and woke the loop once per
deadline; 10,000 idle connections held 15 MiB of timers and woke the loop about 330
times a second for their pings. :class:`Timers` keeps the deadlines in one heap
(about 0.2 KiB each) under a single loop timer, and runs every deadline that falls in
the same :data:`SLACK` window from one wake-up.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from typing import Any

from chatd.observe.logs import EventLogger

__all__ = ["SLACK", "Timer", "Timers"]

log = EventLogger(logging.getLogger(__name__))

# A deadline runs at most this late, so that the deadlines falling within one such window
# share one wake-up of the loop (10,000 connections' pings spread over 30 s: ~330 a
# second). Far below every timer the protocol names (the shortest is 5 s).
SLACK = 0.02  # seconds
# Cancelled timers kept before the heap may be rebuilt without them (when they are also
# half of it): a rebuild is O(n), so not for every few disconnects.
COMPACT_AT = 1024


class Timer:
    """One scheduled call; :meth:`cancel` it like an ``asyncio.TimerHandle``."""

    __slots__ = ("_args", "_callback", "_timers")

    def __init__(
        self, timers: Timers, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        self._timers: Timers | None = timers  # None once out of the heap
        self._callback: Callable[..., object] | None = callback
        self._args = args

    def cancel(self) -> None:
        if self._callback is not None:
            self._callback = None
            self._args = ()
            if self._timers is not None:
                self._timers._cancelled_one()

    def cancelled(self) -> bool:
        return self._callback is None


class Timers:
    """Deadlines on the loop's clock, run in order of their times, from one loop timer.

    A cancelled timer stays in the heap until its time comes or until cancelled ones
    are half the heap (then the heap is rebuilt without them): cancelling is O(1), and
    a token expiry a day away cancelled by a disconnect does not stay a day.
    """

    __slots__ = ("_armed", "_armed_at", "_cancelled", "_heap", "_loop", "_order")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # (when, order, timer): ``order`` breaks ties, so timers are never compared
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._armed: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self._cancelled = 0  # cancelled timers still in the heap

    def __len__(self) -> int:
        """Entries in the heap, cancelled ones included."""
        return len(self._heap)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Call ``callback(*args)`` at ``when`` (``loop.time()`` clock), at most
        :data:`SLACK` late."""
        timer = Timer(self, callback, args)
        heapq.heappush(self._heap, (when, next(self._order), timer))
        if self._armed is None or when + SLACK < self._armed_at:
            self._arm(when)
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        return self.call_at(self._loop.time() + delay, callback, *args)

    def close(self) -> None:
        """Forget every timer (shutdown)."""
        self._heap.clear()
        self._cancelled = 0
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        heap = self._heap
        if self._cancelled > COMPACT_AT and 2 * self._cancelled > len(heap):
            self._heap = [entry for entry in heap if entry[2]._callback is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _arm(self, when: float) -> None:
        if self._armed is not None:
            self._armed.cancel()
        # Every deadline up to SLACK later is run by the same wake-up.
        self._armed_at = when + SLACK
        self._armed = self._loop.call_at(self._armed_at, self._run)

    def _run(self) -> None:
        self._armed = None
        # What is due now (never early), taken out first: a timer a callback adds, even
        # for now, waits for the next wake-up (as loop.call_at's would for the next
        # iteration), so a callback that keeps re-adding itself cannot hold the loop.
        now = self._loop.time()
        heap = self._heap
        due: list[Timer] = []
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            timer._timers = None
            if timer._callback is None:
                self._cancelled -= 1
            else:
                due.append(timer)
        for timer in due:
            callback = timer._callback
            if callback is None:  # cancelled by a callback before it
                continue
            args = timer._args
            timer._callback = None
            timer._args = ()
            try:
                callback(*args)
            except Exception:  # a bug in one callback must not stop the others
                log.exception("timer.failed")
        heap = self._heap  # a callback's cancel may have rebuilt it
        while heap and heap[0][2]._callback is None:
            heapq.heappop(heap)[2]._timers = None  # cancelled: no wake-up for them
            self._cancelled -= 1
        if heap and (self._armed is None or heap[0][0] + SLACK < self._armed_at):
            self._arm(heap[0][0])
