"""The signal between chatd nodes: "something happened that your connections may care about".

Each node hosts its own connections; the store is shared. After a commit, the node that
did the work publishes a small event (ids only, never bodies) and every other node pushes
what it means to its local connections, reading rows from the store when it needs them.
The bus is behind the small :class:`Bus` interface so NATS or Redis could replace
PostgreSQL's LISTEN/NOTIFY later.

Delivery is at most once: a node that misses events (its listener reconnected) is told to
resync through ``on_resync``, and the store stays the truth (undelivered messages are
pushed again on the recipient's next connection anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol

import attrs
import orjson
import psycopg
from psycopg import sql

from chatd.observe.downtime import Downtime
from chatd.observe.logs import EventLogger
from chatd.store.base import Retirement

__all__ = [
    "Bus",
    "BusEvent",
    "Delivered",
    "FamilyRevoked",
    "LocalBus",
    "MessageStored",
    "PostgresBus",
    "Presence",
    "ReadUpTo",
    "StoreChanged",
    "TokenRetired",
    "TokenRevoked",
    "Typing",
    "UserRevoked",
    "channel_for",
    "decode_event",
    "encode_event",
]

log = EventLogger(logging.getLogger(__name__))

MAX_PAYLOAD_BYTES: Final = 7900  # PostgreSQL refuses NOTIFY payloads of 8000 bytes or more
MAX_SEQS_PER_EVENT: Final = 300  # 300 seqs of up to 19 digits stay well under the payload cap
RECONNECT_MIN: Final = 0.1  # seconds before the first listener reconnect attempt
RECONNECT_MAX: Final = 2.0  # cap of the doubling delay: back within 2 s of the database
CONNECT_TIMEOUT: Final = 5  # seconds for one connection attempt (libpq connect_timeout)


# --- events ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class MessageStored:
    """A message was committed: push it to the recipient and the sender's other devices."""

    recipient: str
    seq: int
    sender: str


def _seq_tuple(value: Any) -> tuple[int, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Delivered:
    """The recipient confirmed these seqs: send ``sender`` its delivered receipts."""

    sender: str
    seqs: tuple[int, ...] = attrs.field(converter=_seq_tuple)


@attrs.frozen(kw_only=True)
class ReadUpTo:
    """``reader`` read ``peer``'s messages up to ``up_to``: send ``peer`` a read receipt."""

    reader: str
    peer: str
    up_to: int
    ts: int


@attrs.frozen(kw_only=True)
class Typing:
    sender: str
    to: str


@attrs.frozen(kw_only=True)
class Presence:
    """``user`` came online (first connection anywhere) or went offline (last one)."""

    user: str
    online: bool


@attrs.frozen(kw_only=True)
class TokenRevoked:
    """A logout: close the connections that authenticated with token ``jti``."""

    jti: str
    expires_at: int  # Unix s: the revocation cache may forget it afterwards


@attrs.frozen(kw_only=True)
class TokenRetired:
    """A rotating refresh: token ``jti`` closes its connections when its grace ends."""

    jti: str
    family: str
    expires_at: int
    grace_until: float

    @classmethod
    def of(cls, retirement: Retirement) -> TokenRetired:
        return cls(jti=retirement.jti, family=retirement.family,
                   expires_at=retirement.expires_at, grace_until=retirement.grace_until)

    def retirement(self) -> Retirement:
        return Retirement(jti=self.jti, family=self.family, expires_at=self.expires_at,
                          grace_until=self.grace_until)


@attrs.frozen(kw_only=True)
class FamilyRevoked:
    """A retired token was reused: close every connection of the tokens of ``family``."""

    family: str
    expires_at: int


@attrs.frozen(kw_only=True)
class UserRevoked:
    """Password change or disable: close ``username``'s connections with older tokens."""

    username: str
    generation: int


@attrs.frozen(kw_only=True)
class StoreChanged:
    """Another process (``chatd user ...``, another node) committed a user change, a
    token revocation or a new keyring: look at the store now instead of at the next
    poll. Sent by the PostgreSQL store in the transaction of the change itself."""


BusEvent = (
    MessageStored
    | Delivered
    | ReadUpTo
    | Typing
    | Presence
    | TokenRevoked
    | TokenRetired
    | FamilyRevoked
    | UserRevoked
    | StoreChanged
)

# One short tag per event type, on the wire as "k"; the publishing node travels as "n".
_TAGS: Final[dict[type[Any], str]] = {
    MessageStored: "m",
    Delivered: "d",
    ReadUpTo: "r",
    Typing: "t",
    Presence: "p",
    TokenRevoked: "x",
    TokenRetired: "y",
    FamilyRevoked: "f",
    UserRevoked: "u",
    StoreChanged: "c",
}
_CLASSES: Final[dict[str, type[Any]]] = {tag: cls for cls, tag in _TAGS.items()}


def channel_for(schema: str | None) -> str:
    """The NOTIFY channel of the nodes on ``schema``: channels are per database, and
    nodes on another schema of it must not hear these."""
    return "chat" if schema in (None, "public") else f"chat.{schema}"[:63]


def encode_event(event: BusEvent, node_id: str) -> str:
    """The NOTIFY payload for ``event``: compact JSON with the type tag and the node id.

    Raises:
        ValueError: the payload would be too large for NOTIFY (split it first).
    """
    fields = attrs.asdict(event)
    payload = orjson.dumps({"k": _TAGS[type(event)], "n": node_id, **fields}).decode()
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"bus payload of {len(payload)} characters is over the NOTIFY limit")
    return payload


def decode_event(payload: str | bytes) -> tuple[str, BusEvent]:
    """``(node_id, event)`` from a payload made by :func:`encode_event`.

    Raises:
        ValueError: the payload is not one of ours.
    """
    try:
        data = orjson.loads(payload)
        fields = dict(data)
        cls = _CLASSES[fields.pop("k")]
        node_id = fields.pop("n")
        event: BusEvent = cls(**fields)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a bus event: {exc}") from exc
    if not isinstance(node_id, str):
        raise ValueError("not a bus event: the node id is not a string")
    return node_id, event


def _split(event: BusEvent) -> Iterator[BusEvent]:
    """The event cut into pieces that each fit one NOTIFY (only Delivered can grow)."""
    if isinstance(event, Delivered) and len(event.seqs) > MAX_SEQS_PER_EVENT:
        for start in range(0, len(event.seqs), MAX_SEQS_PER_EVENT):
            yield Delivered(
                sender=event.sender, seqs=event.seqs[start : start + MAX_SEQS_PER_EVENT]
            )
    else:
        yield event


# --- the interface and its implementations ------------------------------------------


class Bus(Protocol):
    async def start(
        self, handler: Callable[[BusEvent], None], on_resync: Callable[[], None] | None = None
    ) -> None:
        """Begin calling ``handler`` on the loop for every event another node publishes,
        and ``on_resync`` whenever events may have been missed."""

    async def publish(self, event: BusEvent) -> None:
        """Tell the other nodes; never raises (a lost signal is healed by resync)."""

    async def close(self) -> None: ...


class LocalBus:
    """The single-node bus: every connection is local, so there is nobody to tell."""

    async def start(
        self, handler: Callable[[BusEvent], None], on_resync: Callable[[], None] | None = None
    ) -> None:
        pass

    async def publish(self, event: BusEvent) -> None:
        pass

    async def close(self) -> None:
        pass


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

    Args:
        dsn: a libpq connection string or URL.
        channel: the NOTIFY channel; nodes of one cluster share it.
        node_id: this node's id in every payload (default: a random one).
    """

    def __init__(
        self,
        dsn: str,
        *,
        channel: str = "chat",
        node_id: str | None = None,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self.on_resync: Callable[[], None] | None = None  # given to start()
        self.reconnects = 0  # listener reconnects since start, for metrics and tests
        self._handler: Callable[[BusEvent], None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._publisher: psycopg.AsyncConnection[Any] | None = None
        self._publish_lock = asyncio.Lock()
        self._listener_down = Downtime(log, lost="bus.listener_lost",
                                       restored="bus.listener_restored", channel=channel)
        self._publisher_down = Downtime(log, lost="bus.publisher_lost",
                                        restored="bus.publisher_restored", channel=channel)

    @property
    def listener_name(self) -> str:
        """The listening connection's ``application_name`` (visible in pg_stat_activity)."""
        return f"chatd-bus-listen-{self.node_id}"[:63]

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
        self._listener = asyncio.create_task(self._listen_loop(conn), name="chatd-bus-listener")

    async def publish(self, event: BusEvent) -> None:
        payloads = [encode_event(piece, self.node_id) for piece in _split(event)]
        async with self._publish_lock:
            for attempt in (1, 2):  # a dropped publishing connection is reopened once
                try:
                    if self._publisher is None:
                        self._publisher = await self._connect(f"chatd-bus-notify-{self.node_id}")
                    await self._publisher.execute(
                        "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) WITH ORDINALITY"
                        " AS t(p, i) ORDER BY i",
                        (self.channel, payloads),
                    )
                    self._publisher_down.ok()
                    return
                except psycopg.Error as exc:
                    await self._drop_publisher()
                    if attempt == 2:
                        self._publisher_down.failed(exc)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
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
                    self.reconnects += 1
                    delay = RECONNECT_MIN
                    self._listener_down.ok()
                    self._resync()
                async for notify in conn.notifies():
                    self._dispatch(notify.payload)
            except psycopg.Error as exc:
                self._listener_down.failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            finally:
                if conn is not None:
                    await conn.close()
                    conn = None

    def _dispatch(self, payload: str) -> None:
        try:
            node_id, event = decode_event(payload)
        except ValueError as exc:
            log.warning("bus.payload_ignored", error=str(exc))
            return
        if node_id == self.node_id or self._handler is None:
            return
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
