"""The PostgreSQL store's connections: the pool, and queries bounded in time.

Every query but the writer's commits runs within :data:`OP_BOUND` seconds, waiting for
a connection included, or fails with :class:`StoreUnavailable`: every HTTP request is
answered within a bound while the database is away. The bound counts from when the work
began (a gathered statement's: its oldest call's, see :func:`began_at`), whatever it
queued behind. A query may wait longer only while the database answers the queries
ahead of it (load, not an outage), up to :data:`QUEUE_BOUND`. An outage is logged once
when it starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import select
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

import psycopg
from psycopg import pq, sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from chatd.bus import StoreChanged, channel_for, encode_event
from chatd.observe.downtime import Downtime
from chatd.observe.logs import EventLogger
from chatd.store.base import StoreError, StoreUnavailable

__all__ = [
    "OP_BOUND",
    "Database",
    "began_at",
    "ended_by_server",
    "events",
    "log",
    "unchecked",
    "worth_again",
]

# One logger for every module of the PostgreSQL store: its log lines name the store, as
# they did when it was one module.
log = logging.getLogger("chatd.store.postgres")
events = EventLogger(log)
# The pool logs a warning per failed connection attempt, a flood while the database is
# away; the store logs each outage itself, once when it starts and once when it ends.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

POOL_OPEN_TIMEOUT: Final = 10.0  # seconds to get the first connections at open()
POOL_TIMEOUT: Final = 5.0  # seconds to wait for a pooled connection before StoreError
# Seconds one query (or short transaction) may take, waiting for a connection included,
# before StoreUnavailable: every HTTP request is answered within a bound while the
# database is away. The writer's commits are bounded by their callers instead.
OP_BOUND: Final = 2.0
# Seconds the pool retries a lost connection (with a doubling delay) before it gives up
# and reconnects on the next demand instead: the pool's default, minutes of ever longer
# waits, kept it away for up to a minute after the database came back.
RECONNECT_TIMEOUT: Final = 2.0
# Pooled connections that queries off the live path may not take. The live path is
# the exchange between connected users: the message writer's commits, the delivered
# and read marks, the reads of messages other nodes announce, and users looked up by
# name (a send's recipient not cached yet: every one at first, after a restart). A
# burst of the others (a thousand users connecting at once: their tokens, catch-ups,
# peers) would queue in the pool, and a send or a push behind the whole queue (issue
# 17: acks 0.5-0.8 s late in the first second after 1,000 users connected to two nodes).
LIVE_RESERVED: Final = 2
# Seconds a query off the live path may wait for its turn while the database answers
# the queries ahead of it: that is load, not an outage (the catch-ups of a thousand
# users connecting at once queue for seconds; failing them after OP_BOUND closed their
# connections, and their clients came back into the same queue). With no answer for
# OP_BOUND it is an outage.
QUEUE_BOUND: Final = 10.0
# What the changes other nodes must see at once send, in their own transaction.
_CHANGED_PAYLOAD: Final = encode_event(StoreChanged(), node_id="store")
# SQLSTATE class of a session the server ended (administrator command, crash of another
# backend, shutdown): sent instead of the statement's result, which was never committed.
ENDED_BY_SERVER: Final = "57P"
# Checkouts in this context skip the pool's round-trip check for a quiet connection
# (see Database._check): the hot path's queries, which run again on a checked connection
# when the server turns out to have ended the session (see unchecked()).
_UNCHECKED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "chatd_pg_unchecked", default=False
)


# When the work a query serves began, if before the query itself (a gathered statement
# runs for calls that waited for the one before it): its bound counts from there.
_BEGAN: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "chatd_pg_began", default=None
)


class _RunAgain(Exception):
    """A quiet connection handed out unchecked ended under the work (see worth_again):
    run it again on a checked one."""


@contextlib.contextmanager
def unchecked() -> Iterator[None]:
    """Within this block, a quiet pooled connection is handed out without the check's
    round trip. The caller must run its work again on a checked one when it fails as
    :func:`worth_again` says (a connection that ended under it)."""
    token = _UNCHECKED.set(True)
    try:
        yield
    finally:
        _UNCHECKED.reset(token)


@contextlib.contextmanager
def began_at(moment: float) -> Iterator[None]:
    """Within this block, queries are bounded as work that began at ``moment`` (a
    ``time.monotonic()``): time spent queued before them counts against their bound."""
    token = _BEGAN.set(moment)
    try:
        yield
    finally:
        _BEGAN.reset(token)


def ended_by_server(exc: BaseException) -> bool:
    """psycopg's error for a session the server ended before the statement committed."""
    return isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith(ENDED_BY_SERVER)


def worth_again(exc: BaseException, *, idempotent: bool) -> bool:
    """Whether work that failed with ``exc`` on a connection handed out unchecked runs
    again on a checked one: the server ended the session (the statement never
    committed), or, for work that may run twice (``idempotent``: it changes nothing, or
    a second run finds what the first did), the connection was cut without a word. Not
    a pool timeout: that work never had a connection."""
    if ended_by_server(exc):
        return True
    return (idempotent and isinstance(exc, psycopg.OperationalError)
            and not isinstance(exc, PoolTimeout))


class Database:
    """The connections of one store to one schema: a pool, and connections of their own.

    ``min_size``, ``max_size``: bounds of the pool. Every connection sets its
    ``search_path`` to ``schema``. Queries off the live path share all but
    :data:`LIVE_RESERVED` of the pool's connections (see :meth:`connection`).
    """

    def __init__(self, dsn: str, schema: str, min_size: int, max_size: int) -> None:
        self.dsn = dsn
        self.schema = schema
        self.pool = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=POOL_TIMEOUT,
            reconnect_timeout=RECONNECT_TIMEOUT,
            check=self._check,  # a restarted server or killed backends: reconnect
            kwargs={"autocommit": True, "application_name": self.application_name},
            configure=self._configure,
            name=f"chatd-store-{self.schema}",
        )
        self.outage = Downtime(events, lost="store.unavailable", restored="store.restored")
        self._sweep: asyncio.Task[None] | None = None  # the pool's check after a dead one
        self._turns = _Turns(max(1, max_size - LIVE_RESERVED))

    @property
    def application_name(self) -> str:
        """What this store's connections show in ``pg_stat_activity``."""
        return f"chatd-store-{self.schema}"[:63]

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The pool's check of a connection it hands out. One found dead means the others
        probably died with it (a restart, terminated backends): the pool waits 1 s, 2 s,
        4 s... before each next try, so check every idle connection now, at once, and the
        next try finds a live one instead of the next dead one.

        Under :func:`unchecked`, a connection on which nothing arrived since its last
        query is handed out without a round trip (one per query on the hot path, issue
        17): a backend the server ends says so, or closes its socket, and either makes
        the socket readable. A backend ended a moment ago may not have said so yet; the
        statement sent to it then fails with SQLSTATE 57P0x, never committed, and the
        caller runs it again on a checked connection.
        """
        if _UNCHECKED.get() and _is_quiet(conn):
            return
        try:
            await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            self._sweep_soon()
            raise

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        """A new autocommit connection outside the pool, ``search_path`` set like the
        pooled ones (migrations, the data migration tool); the caller closes it."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, application_name=self.application_name
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        await self._configure(conn)
        return conn

    async def open(self) -> None:
        """Open the pool; returns once its first connections are up."""
        try:
            await self.pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT)
        except psycopg.Error as exc:  # PoolTimeout is an OperationalError
            await self.pool.close()
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        await self.pool.close()

    @contextlib.asynccontextmanager
    async def connection(
        self, bound: float | None = OP_BOUND, *, live: bool = False, read_only: bool = False
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection for one piece of work of at most ``bound`` seconds (None:
        as long as it takes, a pooled connection within POOL_TIMEOUT), counted from when
        the work began (see _Turns.left). Work off the live path (``live`` False) waits
        its turn for one of all but LIVE_RESERVED of them.

        psycopg's errors come out as StoreError; those of an unreachable database (and
        the bound running out) as StoreUnavailable, counted in the outage log lines.
        Under :func:`unchecked`, a connection that ended under the work raises _RunAgain
        instead when :func:`worth_again` (``read_only``: work that changes nothing).
        """
        began = _BEGAN.get()
        if began is None:
            began = time.monotonic()
        try:
            if not live:
                await self._turns.take(bound, began)
            try:
                async with (
                    asyncio.timeout(self._turns.left(bound, began)),
                    self.pool.connection() as conn,
                ):
                    yield conn
            finally:
                if not live:
                    self._turns.give_back()
        except TimeoutError as exc:
            raise self.unavailable(f"no answer within {bound} s") from exc
        except psycopg.OperationalError as exc:  # PoolTimeout is one
            if _UNCHECKED.get() and worth_again(exc, idempotent=read_only):
                self._sweep_soon()
                raise _RunAgain() from exc
            raise self.unavailable(exc) from exc
        except psycopg.Error as exc:
            raise StoreError(str(exc)) from exc
        self.answered()

    def answered(self) -> None:
        """A statement succeeded: the database is up (an outage ends, see Downtime), and
        queries waiting for their turn go on waiting (see _Turns)."""
        self._turns.answered = time.monotonic()
        self.outage.ok()

    def _sweep_soon(self) -> None:
        """Check every idle connection now: the server probably ended them together."""
        if self._sweep is None or self._sweep.done():
            self._sweep = asyncio.create_task(self.pool.check(), name="chatd-pg-sweep")

    def unavailable(self, error: Exception | str) -> StoreUnavailable:
        """The error for an unreachable database; counted in the outage log lines."""
        self.outage.failed(error)
        return StoreUnavailable(str(error))

    async def fetchall(
        self,
        query: str,
        params: Any = None,
        *,
        bound: float | None = OP_BOUND,
        live: bool = False,
        read_only: bool = False,
    ) -> list[tuple[Any, ...]]:
        """One statement's rows (see :meth:`_statement`; ``live`` and ``read_only`` as
        for :meth:`connection`)."""
        return await self._statement(query, params, bound, fetch=True, live=live,
                                     read_only=read_only)

    async def fetchone(
        self,
        query: str,
        params: Any = None,
        *,
        bound: float | None = OP_BOUND,
        live: bool = False,
        read_only: bool = False,
    ) -> tuple[Any, ...] | None:
        rows = await self.fetchall(query, params, bound=bound, live=live, read_only=read_only)
        return rows[0] if rows else None

    async def announced(self, query: str, params: Any = None) -> tuple[Any, ...] | None:
        """Run a change of users, tokens or keys that every node must see at once (a
        disabled user's connections close), with a NOTIFY on the nodes' bus channel
        (:class:`chatd.bus.StoreChanged`) in the same transaction; the first row."""
        async with self.connection() as conn, conn.transaction():
            cur = await conn.execute(query, params)
            row = await cur.fetchone() if cur.description is not None else None
            await conn.execute(
                "SELECT pg_notify(%s, %s)", (channel_for(self.schema), _CHANGED_PAYLOAD)
            )
            return row

    async def execute(self, query: str, params: Any = None) -> None:
        """One statement, as :meth:`fetchall` runs it."""
        await self._statement(query, params, OP_BOUND, fetch=False)

    async def _statement(
        self,
        query: str,
        params: Any,
        bound: float | None,
        *,
        fetch: bool,
        live: bool = False,
        read_only: bool = False,
    ) -> list[tuple[Any, ...]]:
        """One statement on a quiet connection, unchecked; again on a checked one when
        the server had ended the unchecked one (the statement never committed), or,
        for one that changes nothing, when the connection was cut under it."""
        try:
            with unchecked():
                return await self._statement_once(query, params, bound, fetch, live, read_only)
        except _RunAgain:
            return await self._statement_once(query, params, bound, fetch, live, read_only)

    async def _statement_once(
        self,
        query: str,
        params: Any,
        bound: float | None,
        fetch: bool,
        live: bool,
        read_only: bool,
    ) -> list[tuple[Any, ...]]:
        async with self.connection(bound, live=live, read_only=read_only) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if fetch else []


class _Turns:
    """Turns for the queries off the live path: ``slots`` at once, first come first
    served. Waiting behind other queries while the database answers them is load, not
    an outage: a waiter gives up (TimeoutError) once the database answered nothing for
    its ``bound`` seconds since its work began, or QUEUE_BOUND seconds after it began."""

    def __init__(self, slots: int) -> None:
        self._free = asyncio.Semaphore(slots)
        self.answered = time.monotonic()  # when the database last answered a query

    def left(self, bound: float | None, began: float) -> float | None:
        """The seconds work that began at ``began`` has left of its ``bound``: all of it
        when the database answered a query since (load, not an outage), else what is
        left since ``began``.

        Raises:
            TimeoutError: none is left.
        """
        if bound is None or self.answered > began:
            return bound
        left = began + bound - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    async def take(self, bound: float | None, began: float) -> None:
        free = self._free
        if bound is None or not free.locked():
            await free.acquire()
            return
        waiting = asyncio.ensure_future(free.acquire())  # keeps its place in the queue
        try:
            while True:
                now = time.monotonic()
                give_up = min(began + QUEUE_BOUND, max(began, self.answered) + bound)
                if now >= give_up:
                    raise TimeoutError
                done, _ = await asyncio.wait((waiting,), timeout=give_up - now)
                if done:
                    waiting.result()
                    return
        except BaseException:
            if not waiting.cancel() and not waiting.cancelled() and waiting.exception() is None:
                free.release()  # the turn came just as the wait ended
            raise

    def give_back(self) -> None:
        self._free.release()


def _is_quiet(conn: psycopg.AsyncConnection[Any]) -> bool:
    """True when an idle connection looks alive without asking the server: libpq sees
    it up and outside a transaction, and nothing (an error, a notice, end of file)
    waits on its socket."""
    pgconn = conn.pgconn
    if pgconn.status != pq.ConnStatus.OK or (
        pgconn.transaction_status != pq.TransactionStatus.IDLE
    ):
        return False
    if not hasattr(select, "poll"):  # Windows: no poll(); check with a round trip
        return False
    poller = select.poll()  # not select.select: a busy node's descriptors pass FD_SETSIZE
    poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)
