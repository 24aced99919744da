"""The server's bound on a write's wait while the SQLite writer finishes nothing.

A disk that stalls, or another process holding the database's write lock (a ``sqlite3``
shell left inside a transaction), stops the writer inside one transaction, and every
write queued behind it waits as long: a sign-up, a login, a logout held for as long as
the disk or the other process likes. PostgreSQL's queries are bounded
(:mod:`chatd.store.postgres.pool`); the server's SQLite store keeps the same promise
with :class:`StallWatch`: once the writer has finished nothing for :data:`STALL_BOUND`
seconds, every write waiting on it fails with :class:`StoreUnavailable` (HTTP 503
``server_busy`` with Retry-After, ``internal_error`` for a send). A writer that
finishes transactions is busy, not stalled, and its queue is left to it.

A write whose wait failed is not taken back: the writer runs it when it can, and its
late result is dropped (as for a PostgreSQL commit that lands after its bound). The
outage is logged once when it starts and once when it ends (``store.unavailable``,
``store.restored``). Admin commands do not use it: they wait for a lock as SQLite does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final

from chatd.observe.downtime import Downtime
from chatd.store.base import StoreUnavailable
from chatd.store.sqlite.db import log

__all__ = ["CHECK_INTERVAL", "STALL_BOUND", "StallWatch"]

STALL_BOUND: Final = 2.0  # seconds, as PostgreSQL's OP_BOUND
CHECK_INTERVAL: Final = 0.25  # seconds between two looks while writes wait


class StallWatch:
    """On the loop: the writes waiting on the writer, and when it last finished one."""

    def __init__(self, loop: asyncio.AbstractEventLoop, bound: float = STALL_BOUND) -> None:
        self._loop = loop
        self._bound = bound
        self._outage = Downtime(log, lost="store.unavailable", restored="store.restored")
        # (when it was queued, its future), oldest first
        self._waiting: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._finished_at = loop.time()
        self._timer: asyncio.TimerHandle | None = None

    def waits(self, future: asyncio.Future[Any]) -> None:
        """A write was queued; ``future`` is what its caller awaits."""
        now = self._loop.time()
        self._waiting.append((now, future))
        if self._timer is None:
            self._timer = self._loop.call_at(now + CHECK_INTERVAL, self._check)

    @property
    def stalled(self) -> bool:
        """Writes failed for want of an answer, and none has worked since."""
        return self._outage.down

    def finished(self, *, ok: bool) -> None:
        """The writer finished a transaction or a look outside one: its writes have
        their answers. Only ``ok`` (a commit, or a look while commits work) ends an
        outage: a writer whose transactions fail (a full disk, a lock it waited out)
        answers, so it is not stalled, but it is not working again either."""
        self._finished_at = self._loop.time()
        if ok:
            self._outage.ok()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        waiting = self._waiting
        while waiting and waiting[0][1].done():
            waiting.popleft()
        if not waiting:
            return
        now = self._loop.time()
        if now - max(waiting[0][0], self._finished_at) < self._bound:
            self._timer = self._loop.call_at(now + CHECK_INTERVAL, self._check)
            return
        self._outage.failed(f"the writer has finished nothing for {self._bound:g} s")
        for _, future in waiting:
            if not future.done():
                future.set_exception(StoreUnavailable(
                    f"the database did not answer within {self._bound:g} s"))
        waiting.clear()
