"""The SQLite read pool: a few threads, each with its own read-only connection.

WAL lets reads proceed while the writer commits. Each thread takes the reads queued
meanwhile in one go and hands their results to the loop in one call (a connection storm
asks for three reads per client; a thread pool's future per read cost the loop more
than the queries).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

import apsw

from chatd.store.base import StoreError
from chatd.store.sqlite.db import as_store_error, connect
from chatd.store.sqlite.jobs import Job, Outcome, call_loop, join_all, settle, take_more

__all__ = ["MAX_READS_AT_ONCE", "ReadPool"]

T = TypeVar("T")

MAX_READS_AT_ONCE: Final = 64  # reads a reader thread takes from the queue in one go


class ReadPool:
    """``size`` reader threads on the database at ``path``."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._threads = [
            threading.Thread(target=self._main, name=f"chatd-sqlite-read-{n}", daemon=True)
            for n in range(self.size)
        ]
        for thread in self._threads:
            thread.start()

    async def run(self, fn: Callable[[apsw.Connection], T]) -> T:
        """``fn``'s result, run on a reader's connection."""
        if not self._threads or self._loop is None:
            raise StoreError("the sqlite store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(Job(fn, future))
        return await future

    async def stop(self) -> None:
        """Stop every thread after the reads already queued."""
        threads, self._threads = self._threads, []
        if threads:
            loop = asyncio.get_running_loop()
            for _ in threads:  # one stop marker each, behind the reads already queued
                self._queue.put(Job(None, loop.create_future()))
            await loop.run_in_executor(None, join_all, threads)

    def _main(self) -> None:
        """A reader thread: runs queued reads on its own connection, opened at the first."""
        assert self._loop is not None
        conn: apsw.Connection | None = None
        try:
            while True:
                jobs = [self._queue.get()]
                take_more(self._queue, jobs, MAX_READS_AT_ONCE)
                outcomes: list[Outcome] = []
                stop = False
                for job in jobs:
                    if job.fn is None:
                        stop = True
                        outcomes.append((job.future, None, None))
                        continue
                    try:
                        if conn is None:
                            conn = connect(self.path, create=False)
                            conn.execute("PRAGMA query_only = ON")
                        outcomes.append((job.future, job.fn(conn), None))
                    except Exception as exc:
                        outcomes.append((job.future, None, as_store_error(exc)))
                if outcomes:
                    call_loop(self._loop, settle, outcomes)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()
