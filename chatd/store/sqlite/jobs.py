"""Work handed to the store's threads, and its results handed back to the event loop.

A :class:`Job` carries a function of a connection and the future its caller awaits. The
threads (the writer, the readers) run jobs in groups and settle each group's futures in
one call on the loop: a wake-up of the loop per result cost more than the queries.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

import apsw

from chatd.store.sqlite.db import log

__all__ = ["Job", "Merge", "Outcome", "call_loop", "join_all", "settle", "take_more"]


Merge = Callable[[apsw.Connection, list[Any]], list[Any]]
"""Runs the payloads of several jobs at once: one result per payload, in order."""


class Job:
    """One unit of work for a thread; ``fn`` is None for the stop marker.

    A job with a ``merge`` function may run together with the other jobs of the same
    function in a transaction: ``merge(conn, payloads)`` instead of one ``fn`` each
    (``fn`` runs its payload alone).
    """

    __slots__ = ("bare", "fn", "future", "merge", "messages", "payload")

    def __init__(
        self,
        fn: Callable[[apsw.Connection], Any] | None,
        future: asyncio.Future[Any],
        messages: int = 0,
        *,
        bare: bool = False,
        merge: Merge | None = None,
        payload: Any = None,
    ) -> None:
        self.fn = fn
        self.future = future
        self.messages = messages  # messages it inserts, for the batch-size metric
        self.bare = bare  # a look at the connection outside any transaction
        self.merge = merge
        self.payload = payload


Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def take_more(jobs_queue: queue.SimpleQueue[Job], jobs: list[Job], limit: int) -> None:
    """Add the jobs already queued to ``jobs`` without waiting: up to ``limit`` in all,
    and never past a stop marker (those behind one are for other threads)."""
    while len(jobs) < limit and jobs[-1].fn is not None:
        try:
            jobs.append(jobs_queue.get_nowait())
        except queue.Empty:
            return


def settle(outcomes: list[Outcome]) -> None:
    """On the loop: hand each waiting caller its result or its error."""
    for future, result, error in outcomes:
        if future.done():  # the awaiting task was cancelled; the write happened anyway
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def call_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """From a store thread: have the loop call ``fn(*args)``."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        log.warning("store.sqlite.results_dropped", hint="the event loop is closed")


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()
