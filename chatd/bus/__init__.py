"""The signal between chatd nodes: "something happened that your connections may care about".

Each node hosts its own connections; the store is shared. After a commit, the node that
did the work publishes a small event (ids only, never bodies) and every other node pushes
what it means to its local connections, reading rows from the store when it needs them.
The bus is behind the small :class:`Bus` interface so NATS or Redis could replace
PostgreSQL's LISTEN/NOTIFY later.

Delivery is at most once: a node that misses events (its listener reconnected) is told to
resync through ``on_resync``, and the store stays the truth (undelivered messages are
pushed again on the recipient's next connection anyway). A node that nobody else listens
to publishes nothing (``others_listening``): a node alone on its database pays nothing
for the bus.

The events and their payload codec are in :mod:`chatd.bus.events`, the PostgreSQL
transport in :mod:`chatd.bus.postgres` (imported only where PostgreSQL is used: it loads
psycopg); this module holds the interface, the single-node bus, and the names callers
import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from chatd.bus.events import (
    MAX_PAYLOAD_BYTES,
    BusEvent,
    Delivered,
    FamilyRevoked,
    MessageStored,
    NodeHere,
    NodeJoined,
    PeersOnline,
    Presence,
    ReadUpTo,
    StoreChanged,
    TokenRetired,
    TokenRevoked,
    Typing,
    UserRevoked,
    decode_event,
    encode_event,
)

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Bus",
    "BusEvent",
    "Delivered",
    "FamilyRevoked",
    "LocalBus",
    "MessageStored",
    "NodeHere",
    "NodeJoined",
    "PeersOnline",
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


def channel_for(schema: str | None) -> str:
    """The NOTIFY channel of the nodes on ``schema``: channels are per database, and
    nodes on another schema of it must not hear these."""
    return "chat" if schema in (None, "public") else f"chat.{schema}"[:63]


class Bus(Protocol):
    # False while no other node listens: publishing would tell nobody (a node learns
    # of one joining before it could miss anything, see PostgresBus).
    others_listening: bool

    async def start(
        self, handler: Callable[[BusEvent], None], on_resync: Callable[[], None] | None = None
    ) -> None:
        """Begin calling ``handler`` on the loop for every event another node publishes,
        and ``on_resync`` whenever events may have been missed."""

    async def publish(self, event: BusEvent) -> None:
        """Tell the other nodes; never raises (a lost signal is healed by resync)."""

    async def publish_many(self, events: Sequence[BusEvent]) -> None:
        """:meth:`publish` for several events, in order, at the cost of one."""

    async def close(self) -> None: ...


class LocalBus:
    """The single-node bus: every connection is local, so there is nobody to tell."""

    others_listening = False

    async def start(
        self, handler: Callable[[BusEvent], None], on_resync: Callable[[], None] | None = None
    ) -> None:
        pass

    async def publish(self, event: BusEvent) -> None:
        pass

    async def publish_many(self, events: Sequence[BusEvent]) -> None:
        pass

    async def close(self) -> None:
        pass
