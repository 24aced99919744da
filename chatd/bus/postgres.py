"""The bus over PostgreSQL LISTEN/NOTIFY: one listening and one publishing connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

import psycopg
from psycopg import sql

from chatd.bus.events import (
    BusEvent,
    NodeHere,
    NodeJoined,
    decode_payload,
    encode_piece,
    pack_pieces,
    piece_room,
    single_payload,
    split_event,
)
from chatd.observe.downtime import Downtime
from chatd.observe.logs import EventLogger

__all__ = ["PostgresBus"]

log = EventLogger(logging.getLogger(__name__))

RECONNECT_MIN: Final = 0.1  # seconds before the first listener reconnect attempt
RECONNECT_MAX: Final = 2.0  # cap of the doubling delay: back within 2 s of the database
CONNECT_TIMEOUT: Final = 5  # seconds for one connection attempt (libpq connect_timeout)
OTHERS_CHECK_INTERVAL: Final = 5.0  # seconds between looks for the other nodes' listeners
LISTENER_PREFIX: Final = "chatd-bus-listen-"  # application_name of every node's listener
# ... ended by this when the node reads packed payloads (many events in one notification)
READS_PACKED: Final = "+packed"

# The other nodes' listeners on this database (nodes of another schema count too: they
# only make this node publish what nobody on its channel hears), and how many of them
# cannot read packed payloads (older nodes).
_OTHER_LISTENERS: Final = (
    "SELECT count(*), count(*) FILTER (WHERE application_name NOT LIKE %s)"
    " FROM pg_stat_activity WHERE datname = current_database()"
    " AND application_name LIKE %s AND application_name <> %s"
)


class PostgresBus:
    """Events over PostgreSQL LISTEN/NOTIFY.

    One dedicated autocommit connection listens on ``channel``; a second one publishes
    with ``pg_notify``. Events this node published come back to its listener and are
    skipped by node id. When the listening connection drops, it is reopened with a
    growing delay and ``on_resync`` is called once listening again: events in the gap
    are lost, so the host re-scans what its local users may have missed. An outage is
    logged twice, however long: ``bus.listener_lost`` (with the reason) when it starts
    and ``bus.listener_restored`` (how long, how many attempts) when it ends; likewise
    ``bus.publisher_lost`` and ``bus.publisher_restored`` for publishing.

    A node alone publishes nothing. Every :data:`OTHERS_CHECK_INTERVAL` it counts the
    other nodes' listeners (``pg_stat_activity``); with none, and no :class:`NodeJoined`
    heard since the count began, ``others_listening`` turns False (``bus.alone``). A
    node publishes :class:`NodeJoined` each time it begins listening; a node alone that
    hears it publishes again at once and answers :class:`NodeHere`, on which the new
    node resyncs for the events published to nobody before it was heard
    (``bus.not_alone``). While its own listener is down a node cannot hear a join, so
    it publishes.

    A send packs its events into as few notifications as they fit (``packing``) once a
    look found that every other listener reads packed payloads (its name ends with
    :data:`READS_PACKED`) and no node joined since the look began; until then, and from
    the moment a join is heard until the next look, one event per notification, which
    nodes of every version read. A join asks for a look at once.

    Args:
        dsn: a libpq connection string or URL.
        channel: the NOTIFY channel; nodes of one cluster share it.
        node_id: this node's id in every payload (default: a random one).
        check_interval: seconds between looks for the other nodes' listeners.
    """

    def __init__(
        self,
        dsn: str,
        *,
        channel: str = "chat",
        node_id: str | None = None,
        check_interval: float = OTHERS_CHECK_INTERVAL,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self._piece_room = piece_room(self.node_id)  # an event's largest JSON
        self.check_interval = check_interval
        self.others_listening = True  # until a look finds nobody else
        self.packing = False  # every other listener reads packed payloads (see above)
        self.looks = 0  # looks for the other nodes' listeners done
        self._joins_heard = 0  # NodeJoined events heard: a look older than one is stale
        self.on_resync: Callable[[], None] | None = None  # given to start()
        # Counters for metrics (chatd_bus_*) and tests.
        self.reconnects = 0  # listener reconnects since start
        self.published = 0  # events sent (the pieces of split ones counted each)
        self.notifications = 0  # the notifications that carried them (fewer when packing)
        self.sends = 0  # statements that sent them (group publish: fewer under load)
        self.publish_failures = 0  # events lost: publishing failed twice
        self.received = 0  # events of the other nodes handled
        self.invalid = 0  # notifications that could not be decoded
        self.listening = False  # the listening connection is up
        self._handler: Callable[[BusEvent], None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None  # looks for the other nodes
        self._background: set[asyncio.Task[None]] = set()  # NodeHere answers, looks after joins
        self._publisher: psycopg.AsyncConnection[Any] | None = None
        self._publish_lock = asyncio.Lock()
        self._outbox: list[bytes] = []  # events' JSON for the next send (group publish)
        self._outbox_events = 0  # the published events they make up
        self._listener_down = Downtime(log, lost="bus.listener_lost",
                                       restored="bus.listener_restored", channel=channel)
        self._publisher_down = Downtime(log, lost="bus.publisher_lost",
                                        restored="bus.publisher_restored", channel=channel)

    @property
    def listener_name(self) -> str:
        """The listening connection's ``application_name`` (visible in pg_stat_activity)."""
        return f"{LISTENER_PREFIX}{self.node_id}"[: 63 - len(READS_PACKED)] + READS_PACKED

    async def start(
        self, handler: Callable[[BusEvent], None], on_resync: Callable[[], None] | None = None
    ) -> None:
        """Listen; returns once LISTEN is in place, so later publishes are heard.
        ``on_resync`` is called on the loop after each listener reconnect.

        Raises:
            psycopg.OperationalError: the first connection failed.
        """
        self._handler = handler
        self.on_resync = on_resync
        conn = await self._listen()
        self.listening = True
        self._listener = asyncio.create_task(self._listen_loop(conn), name="chatd-bus-listener")
        await self.publish(NodeJoined())
        self._watcher = asyncio.create_task(self._watch_others(), name="chatd-bus-others")

    async def publish(self, event: BusEvent) -> None:
        """Send ``event``; returns once it was sent (or given up on)."""
        await self.publish_many((event,))

    async def publish_many(self, events: Sequence[BusEvent]) -> None:
        """Send ``events`` in order; returns once they were sent (or given up on).

        Group publish: events published while a send is on the wire wait in the outbox
        and the next send takes them all, in order, so a node sends one statement (one
        round trip, one commit) per round trip's worth of events, not one per event:
        at a few thousand events a second the sends keep up instead of queueing.
        """
        for event in events:
            # as JSON now: the send wraps each piece alone, or packs them, as it finds
            pieces = [encode_piece(piece) for piece in split_event(event)]
            largest = max(len(piece) for piece in pieces)
            if largest > self._piece_room:  # too large for NOTIFY: only this event is lost
                self.publish_failures += 1
                log.error("bus.event_refused", kind=type(event).__name__,
                          error=f"bus event of {largest} bytes is over the NOTIFY limit")
                continue
            self._outbox.extend(pieces)
            self._outbox_events += 1
        async with self._publish_lock:
            if not self._outbox:
                return  # an earlier send carried these events with its own
            pieces, self._outbox = self._outbox, []
            taken, self._outbox_events = self._outbox_events, 0
            if self.packing:
                payloads = pack_pieces(pieces, self.node_id)
            else:
                payloads = [single_payload(piece, self.node_id) for piece in pieces]
            for attempt in (1, 2):  # a dropped publishing connection is reopened once
                try:
                    publisher = await self._publishing_connection()
                    for chunk in _distinct_runs(payloads):
                        await publisher.execute(
                            "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) WITH ORDINALITY"
                            " AS t(p, i) ORDER BY i",
                            (self.channel, chunk),
                        )
                        self.sends += 1
                    self._publisher_down.ok()
                    self.published += len(pieces)
                    self.notifications += len(payloads)
                    return
                except psycopg.Error as exc:
                    await self._drop_publisher()
                    if attempt == 2:
                        self.publish_failures += taken
                        self._publisher_down.failed(exc)

    async def close(self) -> None:
        for task in (self._watcher, self._listener, *self._background):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watcher = self._listener = None
        self._background.clear()
        self.listening = False
        async with self._publish_lock:
            await self._drop_publisher()

    # --- internals --------------------------------------------------------------------

    async def _connect(self, name: str) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self.dsn,
            autocommit=True,
            application_name=name[:63],
            connect_timeout=CONNECT_TIMEOUT,
        )

    async def _listen(self) -> psycopg.AsyncConnection[Any]:
        conn = await self._connect(self.listener_name)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _watch_others(self) -> None:
        while True:
            await self._look_once()
            await asyncio.sleep(self.check_interval)

    async def _look_once(self) -> None:
        try:
            await self._look_for_others()
        except Exception:  # a bug here must not stop the looks (nor publishing)
            log.exception("bus.look_failed")
            self.packing = False
            self._not_alone("look failed")

    async def _look_for_others(self) -> None:
        """Count the other nodes' listeners; none (and no join heard meanwhile, and our
        own listener up to hear the next one, and not deaf for a while since the count
        began) means nobody hears what we publish."""
        heard_before = (self._joins_heard, self.reconnects)
        async with self._publish_lock:
            try:
                publisher = await self._publishing_connection()
                cursor = await publisher.execute(
                    _OTHER_LISTENERS,
                    ("%" + READS_PACKED, LISTENER_PREFIX + "%", self.listener_name),
                )
                row = await cursor.fetchone()
            except psycopg.Error:
                await self._drop_publisher()
                return  # the next publish logs the outage; the state stays as it was
        self.looks += 1
        stale = self._joins_heard != heard_before[0]  # a node joined during the look
        self.packing = row is not None and row[1] == 0 and not stale
        if row is not None and row[0]:
            self._not_alone("listening")
        elif (self.others_listening and self.listening
              and (self._joins_heard, self.reconnects) == heard_before):
            self.others_listening = False
            log.info("bus.alone", channel=self.channel)

    def _not_alone(self, why: str) -> None:
        if not self.others_listening:
            self.others_listening = True
            log.info("bus.not_alone", channel=self.channel, reason=why)

    def _joined(self, node_id: str) -> None:
        """Another node began listening: publish again, one event per notification
        until a look says it reads packed payloads; if this node published nothing
        meanwhile, or packed payloads the newcomer may not read, tell it to resync."""
        self._joins_heard += 1
        was_packing, self.packing = self.packing, False
        self._in_background(self._look_once())
        if not self.others_listening or was_packing:
            self._not_alone("joined")
            self._in_background(self.publish(NodeHere(to=node_id)))

    def _in_background(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publishing_connection(self) -> psycopg.AsyncConnection[Any]:
        """The publishing connection, opened if needed (under the publish lock)."""
        if self._publisher is None:
            self._publisher = await self._connect(f"chatd-bus-notify-{self.node_id}")
        return self._publisher

    async def _drop_publisher(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None

    async def _listen_loop(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        delay = RECONNECT_MIN
        while True:
            try:
                if conn is None:
                    conn = await self._listen()
                    self.listening = True
                    self.reconnects += 1
                    delay = RECONNECT_MIN
                    self._listener_down.ok()
                    self._resync()
                    await self.publish(NodeJoined())
                async for notify in conn.notifies():
                    self._dispatch(notify.payload)
            except psycopg.Error as exc:
                self.listening = False
                self._not_alone("listener lost")  # a join now would go unheard
                self._listener_down.failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            finally:
                if conn is not None:
                    await conn.close()
                    conn = None

    def _dispatch(self, payload: str) -> None:
        try:
            node_id, events = decode_payload(payload, unless_from=self.node_id)
        except ValueError as exc:
            self.invalid += 1
            log.warning("bus.payload_ignored", error=str(exc))
            return
        if self._handler is None:
            return
        for event in events:
            self.received += 1
            if isinstance(event, NodeJoined):
                self._joined(node_id)
            elif isinstance(event, NodeHere):
                if event.to == self.node_id:
                    self._resync()
            else:
                try:
                    self._handler(event)
                except Exception:
                    log.exception("bus.handler_failed", kind=type(event).__name__)

    def _resync(self) -> None:
        if self.on_resync is None:
            return
        try:
            self.on_resync()
        except Exception:
            log.exception("bus.resync_failed")


def _distinct_runs(payloads: list[str]) -> list[list[str]]:
    """``payloads`` cut, in order, into runs without a repeated payload. PostgreSQL
    delivers identical payloads of one transaction once, which would lose an event such
    as the second "online" of online, offline, online; each run is a transaction."""
    runs: list[list[str]] = [[]]
    seen: set[str] = set()
    for payload in payloads:
        if payload in seen:
            runs.append([])
            seen.clear()
        runs[-1].append(payload)
        seen.add(payload)
    return runs
