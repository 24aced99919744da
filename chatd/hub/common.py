"""What every part of the hub shares: the collaborators (config, store, user directory,
metrics, clock), the roster of who is online, the hub's background jobs, and the way to
tell the other nodes (``publish``). Built once by the :class:`chatd.hub.Hub` facade and
handed to each part's constructor.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import attrs

from chatd.bus import BusEvent
from chatd.config import Config
from chatd.hub.online import Roster
from chatd.observe.logs import EventLogger
from chatd.observe.metrics import Metrics
from chatd.store import Store, StoreUnavailable
from chatd.users import UserDirectory

log = EventLogger(logging.getLogger(__name__))


def log_store_error(logger: EventLogger, op: str, **fields: Any) -> None:
    """Inside an ``except``: a ``store.error`` line with the traceback, except for an
    outage (:class:`StoreUnavailable`), which the store logs once when it starts and
    once when it ends rather than once per failed query."""
    if not isinstance(sys.exc_info()[1], StoreUnavailable):
        logger.exception("store.error", op=op, **fields)


class Tasks:
    """Background jobs started for connections: kept until done (so shutdown can wait
    for them), their failures logged."""

    __slots__ = ("_loop", "running")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.running: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._loop.create_task(coro)
        self.running.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.exception("hub.task_failed", exc_info=task.exception())


@attrs.frozen
class Common:
    """The parts' shared collaborators (one object, so constructors stay short)."""

    config: Config
    store: Store
    users: UserDirectory
    metrics: Metrics
    roster: Roster
    tasks: Tasks
    publish: Callable[[BusEvent], None]  # tell the other nodes (nothing when alone)
    clock: Callable[[], float]  # wall-clock seconds (timestamps, token expiry)
    loop: asyncio.AbstractEventLoop
