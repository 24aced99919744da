"""The SQLite writer: one thread, the only write connection, group commit.

Every write (messages, receipts, users, revocations, login failures) becomes a job on one
queue. The writer thread takes every job queued since its last commit, runs them in one
``BEGIN IMMEDIATE`` ... ``COMMIT`` (a SAVEPOINT per job only when one of them failed, so
one failing job does not sink the others), then wakes the event loop once for the whole
batch. Jobs made with :meth:`Writer.run_merged` (the sends, the delivered marks) run as
one call per kind: one set of statements for every loop turn the transaction gathered.
A coroutine that wrote therefore returns only after the commit that holds its write.
"""

from __future__ import annotations

import asyncio
import errno
import math
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import apsw

from chatd.observe.logs import Trusted
from chatd.store.base import StoreError
from chatd.store.seqlease import SeqLease
from chatd.store.sqlite.db import as_store_error, connect_writer, last_seq, log, scalar
from chatd.store.sqlite.jobs import Job, Merge, Outcome, call_loop, settle, take_more
from chatd.store.sqlite.stall import StallWatch

__all__ = ["COMMIT_INTERVAL", "MAX_BATCH_JOBS", "CommitPacer", "Writer"]

T = TypeVar("T")

MAX_BATCH_JOBS: Final = 1000  # one transaction's size bound: caps the first job's wait
# Group commit: under load a transaction starts at most this long after the previous one
# started, so each gathers everything queued meanwhile. Every commit costs WAL frames (two
# writes a page), a wake-up of the event loop and the settling of its futures: at 2,000
# msg/s, 5 ms cut the server's CPU per message by a quarter for 3 ms more median latency
# (bench/RESULTS.md). At low load the pause would gather nothing: see CommitPacer.
COMMIT_INTERVAL: Final = 0.005  # seconds


class CommitPacer:
    """When the next transaction may start: at once, unless writes come fast enough that
    pausing until ``interval`` after the previous start gathers at least ``GATHER`` of
    them. At 20 msg/s a write would otherwise often wait out most of the 5 ms behind the
    previous exchange's commit for no gain; at 2,000 msg/s every commit gathers dozens.

    The rate is the writes of the last ``WINDOW`` seconds or so (an exponentially
    decaying count), so a burst after a quiet spell commits its first write at once and
    paces the rest. Used by the writer thread only; the clock is passed in.
    """

    GATHER: Final = 1.0  # writes a pause must be expected to gather to be worth it
    WINDOW: Final = 0.1  # seconds: the decay time of the write rate

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last_start = -math.inf
        self._recent = 0.0  # writes, decayed by WINDOW since they started their commit

    @property
    def rate(self) -> float:
        """Writes per second, recently."""
        return self._recent / self.WINDOW

    def wait(self, now: float) -> float:
        """Seconds to pause before starting a transaction at ``now``."""
        if self.rate * self.interval < self.GATHER:
            return 0.0
        return max(0.0, self._last_start + self.interval - now)

    def started(self, now: float, jobs: int) -> None:
        """A transaction of ``jobs`` writes started at ``now``."""
        if self._last_start > -math.inf:
            self._recent *= math.exp(-(now - self._last_start) / self.WINDOW)
        self._recent += jobs
        self._last_start = now


class _JobFailed(Exception):
    """A job of a group run without savepoints failed; the group was rolled back."""


def _merged(jobs: list[Job]) -> list[list[Job]]:
    """The jobs in the order they run: those of one merge function together, at the
    place of the first of them; every other job alone, in its place. (Moving a later
    send or delivered mark ahead of an earlier job of another kind changes nothing: a
    send's rows are new, and a delivered mark names a message committed before.)"""
    groups: list[list[Job]] = []
    by_merge: dict[Merge, list[Job]] = {}
    for job in jobs:
        if job.merge is None:
            groups.append([job])
        elif (group := by_merge.get(job.merge)) is not None:
            group.append(job)
        else:
            by_merge[job.merge] = group = [job]
            groups.append(group)
    return groups


def _run_isolated(conn: apsw.Connection, jobs: list[Job]) -> list[Outcome]:
    """Run each job alone in a savepoint: a failing one is undone alone, and its error
    is its outcome."""
    outcomes: list[Outcome] = []
    for job in jobs:
        assert job.fn is not None
        conn.execute("SAVEPOINT job")
        try:
            result = job.fn(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            outcomes.append((job.future, None, as_store_error(exc)))
        else:
            conn.execute("RELEASE job")
            outcomes.append((job.future, result, None))
    return outcomes


def _run_merged(conn: apsw.Connection, jobs: list[Job]) -> list[Outcome]:
    """Run the jobs, those of one merge function in one call (see :func:`_merged`);
    their outcomes in the jobs' order, so the loop settles them as they were queued."""
    results: dict[int, object] = {}
    for group in _merged(jobs):
        merge = group[0].merge
        if merge is None:
            assert group[0].fn is not None
            results[id(group[0])] = group[0].fn(conn)
            continue
        merged = merge(conn, [job.payload for job in group])
        for job, result in zip(group, merged, strict=True):
            results[id(job)] = result
    return [(job.future, results[id(job)], None) for job in jobs]


def _is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is SQLite's SQLITE_FULL or an ENOSPC."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, apsw.FullError) or getattr(cause, "errno", None) == errno.ENOSPC:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _release_wal(conn: apsw.Connection) -> None:
    """The disk is full: copy the WAL into the database and truncate it to nothing, so
    the space it held (up to the checkpoint interval's 40 MiB) is free for the next
    commits at once, instead of being refilled by a WAL that only ever grows until a
    checkpoint. Fails while there is no room to grow the database: then the next failed
    commit tries again."""
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except apsw.Error as exc:
        log.warning("store.sqlite.checkpoint_failed", error=Trusted(str(exc)),
                    hint="cannot checkpoint the WAL while the disk is full")


class Writer:
    """The writer thread and its job queue.

    Counters for metrics: ``commits`` and ``last_batch_size`` (messages inserted by the
    last transaction); ``on_commit(batch_size, seconds)``, if set, is called on the event
    loop after each commit. ``write_failure``: why the last transaction failed, while no
    later one has committed (the store's ping() then fails too, so /healthz says 503
    instead of "ok" while every write fails). ``lease``, once set (by a job), is kept
    ahead of every seq committed. ``stall_bound``: fail the waits of writes after that
    many seconds in which the writer finished nothing (the server's; see
    :mod:`chatd.store.sqlite.stall`); ``None``: wait as long as it takes.
    """

    def __init__(
        self,
        path: Path,
        sync: str,
        commit_interval: float,
        on_commit: Callable[[int, float], None] | None,
        stall_bound: float | None = None,
    ) -> None:
        self.path = path
        self.sync = sync
        self.commit_interval = commit_interval
        self.on_commit = on_commit
        self.commits = 0
        self.last_batch_size = 0
        self.write_failure: str | None = None
        self.lease: SeqLease | None = None  # writer thread only
        self.data_version = 0  # the connection's last PRAGMA data_version; writer thread only
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stall_bound = stall_bound
        self._watch: StallWatch | None = None  # the loop's, while running with a bound

    @property
    def running(self) -> bool:
        """Started and not yet stopped."""
        return self._thread is not None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stalled(self) -> bool:
        """Writes failed for want of an answer within the stall bound, and none has
        committed since (see :mod:`chatd.store.sqlite.stall`)."""
        return self._watch is not None and self._watch.stalled

    async def start(self) -> None:
        """Start the thread; returns once its connection is open (or raises why not)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.closing = False
        if self._stall_bound is not None:
            self._watch = StallWatch(loop, self._stall_bound)
        ready: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name="chatd-sqlite-writer", daemon=True
        )
        self._thread.start()
        try:
            await ready
        except BaseException:
            self._thread.join()
            self._thread = None
            raise

    async def run(
        self,
        fn: Callable[[apsw.Connection], T],
        *,
        messages: int = 0,
        bare: bool = False,
        merge: Merge | None = None,
        payload: Any = None,
    ) -> T:
        """Run ``fn`` in the next transaction (``bare``: outside any, alone); its result
        once that transaction committed. ``messages``: how many it inserts. ``merge``
        and ``payload``: see :meth:`run_merged`."""
        if self._thread is None or self.closing or self._loop is None:
            raise StoreError("the sqlite store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(Job(fn, future, messages, bare=bare, merge=merge, payload=payload))
        if self._watch is not None:
            self._watch.waits(future)
        return await future

    async def run_merged(self, merge: Merge, payload: Any, *, messages: int = 0) -> Any:
        """``merge(conn, [payload])[0]``, run in the next transaction together with the
        other payloads of ``merge`` queued for it: one call, so one set of statements,
        for all of them. apsw lets go of the GIL around every statement step and the
        writer then waits for the event loop to hand it back: the sends and the
        delivered marks of every loop turn a commit gathers cost one set of such waits
        instead of one set per turn."""

        def alone(conn: apsw.Connection) -> Any:  # when it runs on its own
            return merge(conn, [payload])[0]

        return await self.run(alone, messages=messages, merge=merge, payload=payload)

    async def stop(self) -> None:
        """Queue the stop marker behind every write already queued; wait for the thread."""
        thread, loop = self._thread, self._loop
        assert thread is not None and loop is not None
        self.closing = True
        stopped: asyncio.Future[None] = loop.create_future()
        self._queue.put(Job(None, stopped))
        await stopped
        thread.join()
        self._thread = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    async def changed_elsewhere(self) -> bool:
        """Whether another connection committed since the last look: the connection's
        ``PRAGMA data_version`` moves only then, never for this writer's own commits."""

        def look(conn: apsw.Connection) -> bool:
            version = int(scalar(conn, "PRAGMA data_version"))
            changed, self.data_version = version != self.data_version, version
            return changed

        return await self.run(look, bare=True)

    # --- in the thread ----------------------------------------------------------------

    def _call_loop(self, fn: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        call_loop(self._loop, fn, *args)

    def _connect(self) -> apsw.Connection:
        conn = connect_writer(self.path, self.sync)
        try:
            self.data_version = int(scalar(conn, "PRAGMA data_version"))
        except BaseException:
            conn.close()
            raise
        return conn

    def _main(self, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except Exception as exc:
            error = as_store_error(exc)
            self._call_loop(settle, [(ready, None, error)])
            return
        self._call_loop(settle, [(ready, None, None)])
        stop: list[Job] = []
        pacer = CommitPacer(self.commit_interval)
        try:
            while not stop:
                jobs = [self._queue.get()]
                if jobs[0].bare:  # alone: no transaction, and no wait for a group
                    self._run_bare(conn, jobs)
                    continue
                wait = pacer.wait(time.monotonic())
                if wait > 0:
                    time.sleep(wait)  # let the others of this group join the commit
                start = time.monotonic()
                take_more(self._queue, jobs, MAX_BATCH_JOBS)
                pacer.started(start, len(jobs))
                stop = [job for job in jobs if job.fn is None]
                self._run_bare(conn, [job for job in jobs if job.bare])
                work = [job for job in jobs if job.fn is not None and not job.bare]
                if work:
                    self._run_batch(conn, work)
        finally:
            conn.close()  # before waking stop(): its join() must not wait on this
        self._call_loop(settle, [(job.future, None, None) for job in stop])

    def _run_bare(self, conn: apsw.Connection, jobs: list[Job]) -> None:
        """Run looks at the writer's connection outside any transaction."""
        outcomes: list[Outcome] = []
        for job in jobs:
            assert job.fn is not None
            try:
                outcomes.append((job.future, job.fn(conn), None))
            except Exception as exc:
                outcomes.append((job.future, None, as_store_error(exc)))
        if outcomes:
            # a look says nothing of writes: only while commits work does it end an outage
            ok = self.write_failure is None and all(error is None for _, _, error in outcomes)
            self._call_loop(self._settle, outcomes, ok)

    def _run_batch(self, conn: apsw.Connection, jobs: list[Job]) -> None:
        started = time.perf_counter()
        try:
            try:
                outcomes = self._transaction(conn, jobs, isolated=False)
            except _JobFailed:
                # Undone as a whole: run them again, each in a savepoint of its own, so
                # only the failing job fails.
                outcomes = self._transaction(conn, jobs, isolated=True)
        except Exception as exc:
            if self.write_failure is None:  # one line per outage, not one per commit
                log.error("store.sqlite.commit_failed", writes_lost=len(jobs),
                          error=Trusted(str(exc)))
            if not conn.get_autocommit():
                try:
                    conn.execute("ROLLBACK")
                except apsw.Error:
                    log.exception("store.sqlite.rollback_failed")
            if _is_disk_full(exc):
                _release_wal(conn)
            self.write_failure = f"{type(exc).__name__}: {exc}"
            outcomes = [(job.future, None, StoreError(f"commit failed: {exc}")) for job in jobs]
            committed = False
        else:
            committed = True
            self.commits += 1
            if self.write_failure is not None:
                log.warning("store.sqlite.commit_restored", after=Trusted(self.write_failure))
                self.write_failure = None
        self.last_batch_size = sum(job.messages for job in jobs)
        seconds = time.perf_counter() - started
        self._call_loop(self._finish_batch, outcomes, self.last_batch_size, seconds, committed)

    def _transaction(
        self, conn: apsw.Connection, jobs: list[Job], *, isolated: bool
    ) -> list[Outcome]:
        """Run the jobs in one transaction and commit it. Not ``isolated``: a failing
        job rolls everything back and raises :class:`_JobFailed` (savepoints around each
        job cost a fifth of the writer's time at 4,000 msg/s with 10,000 users; failures
        are rare). ``isolated``: each job runs in a savepoint, a failing one is undone
        alone and its error becomes its outcome. Jobs only touch the database, so they
        can run twice."""
        conn.execute("BEGIN IMMEDIATE")
        if isolated:
            outcomes = _run_isolated(conn, jobs)
        else:
            try:
                outcomes = _run_merged(conn, jobs)
            except Exception as exc:
                conn.execute("ROLLBACK")
                raise _JobFailed from exc
        if self.lease is not None and any(job.messages for job in jobs):
            self.lease.cover(last_seq(conn))  # before the commit: an OSError undoes it
        conn.execute("COMMIT")
        return outcomes

    def _settle(self, outcomes: list[Outcome], ok: bool) -> None:
        """On the loop: hand the writes their outcomes, and tell the watch."""
        settle(outcomes)
        if self._watch is not None:
            self._watch.finished(ok=ok)

    def _finish_batch(
        self, outcomes: list[Outcome], batch_size: int, seconds: float, committed: bool
    ) -> None:
        """On the loop: wake every writer of the batch, then report to metrics."""
        self._settle(outcomes, committed)
        if self.on_commit is not None:
            try:
                self.on_commit(batch_size, seconds)
            except Exception:
                log.exception("store.sqlite.on_commit_failed")
