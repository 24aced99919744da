"""Connection states of both engines, and the one table that says how they change.

Both roles share one enum. A connection starts in ``HTTP`` (exchanging plain requests),
goes through ``UPGRADING`` (the upgrade request is out, its answer awaited) to the
WebSocket states, and ends in ``CLOSED``. :data:`TRANSITIONS` is the whole state machine:
the engines change state only through :func:`transition`, which consults it, and
``protocol/PROTOCOL.md`` draws its state diagram from it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

__all__ = [
    "TRANSITIONS",
    "ConnState",
    "LocalProtocolError",
    "Role",
    "Trigger",
    "transition",
]


class LocalProtocolError(Exception):
    """The host used an engine wrongly: e.g. ``send()`` before the WebSocket is open,
    or ``respond()`` with no request to answer. Peer faults never raise this."""


class Role(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


class ConnState(enum.Enum):
    HTTP = "http"  # plain HTTP/1.1 requests and responses, keep-alive
    UPGRADING = "upgrading"  # server: upgrade handed to the host; client: upgrade sent
    AWAITING_HELLO = "awaiting_hello"  # WebSocket open, no hello yet
    AUTHENTICATING = "authenticating"  # server: hello handed to the host
    AWAITING_WELCOME = "awaiting_welcome"  # client: hello sent, welcome awaited
    OPEN = "open"  # welcomed: chat frames flow both ways
    CLOSING = "closing"  # our close frame is out, the peer's awaited
    CLOSED = "closed"  # over: the host drains output and closes the transport


class Trigger(enum.Enum):
    UPGRADE = "upgrade"  # server: an upgrade request parsed; client: upgrade request sent
    ACCEPT = "accept"  # the 101 went out (server) or came in (client)
    REFUSE = "refuse"  # the upgrade was answered with an error status
    HELLO = "hello"  # server: a good hello arrived; client: hello sent
    WELCOME = "welcome"  # server: welcome sent; client: welcome received
    CLOSE = "close"  # we sent a close frame and wait for the peer's
    END = "end"  # the connection is over (close handshake done, EOF, timeout, fatal)


_S, _C = Role.SERVER, Role.CLIENT
_WS_LIVE: Final = (ConnState.AWAITING_HELLO, ConnState.AUTHENTICATING, ConnState.OPEN)
_CLIENT_WS_LIVE: Final = (ConnState.AWAITING_HELLO, ConnState.AWAITING_WELCOME, ConnState.OPEN)


def _build() -> dict[tuple[Role, ConnState, Trigger], ConnState]:
    table: dict[tuple[Role, ConnState, Trigger], ConnState] = {
        (_S, ConnState.HTTP, Trigger.UPGRADE): ConnState.UPGRADING,
        (_S, ConnState.UPGRADING, Trigger.ACCEPT): ConnState.AWAITING_HELLO,
        (_S, ConnState.UPGRADING, Trigger.REFUSE): ConnState.CLOSED,  # refused: hang up
        (_S, ConnState.AWAITING_HELLO, Trigger.HELLO): ConnState.AUTHENTICATING,
        (_S, ConnState.AUTHENTICATING, Trigger.WELCOME): ConnState.OPEN,
        (_C, ConnState.HTTP, Trigger.UPGRADE): ConnState.UPGRADING,
        (_C, ConnState.UPGRADING, Trigger.ACCEPT): ConnState.AWAITING_HELLO,
        (_C, ConnState.UPGRADING, Trigger.REFUSE): ConnState.HTTP,  # plain response
        (_C, ConnState.AWAITING_HELLO, Trigger.HELLO): ConnState.AWAITING_WELCOME,
        (_C, ConnState.AWAITING_WELCOME, Trigger.WELCOME): ConnState.OPEN,
    }
    for role, live in ((_S, _WS_LIVE), (_C, _CLIENT_WS_LIVE)):
        for state in live:
            table[role, state, Trigger.CLOSE] = ConnState.CLOSING
            table[role, state, Trigger.END] = ConnState.CLOSED
        for state in (ConnState.HTTP, ConnState.UPGRADING, ConnState.CLOSING):
            table[role, state, Trigger.END] = ConnState.CLOSED
    return table


TRANSITIONS: Final[Mapping[tuple[Role, ConnState, Trigger], ConnState]] = _build()


def transition(role: Role, state: ConnState, trigger: Trigger) -> ConnState:
    """The state ``trigger`` leads to from ``state``; raises :class:`LocalProtocolError`
    when the table has no such edge."""
    try:
        return TRANSITIONS[role, state, trigger]
    except KeyError:
        raise LocalProtocolError(
            f"{role.value}: {trigger.value!r} is not allowed in state {state.value!r}"
        ) from None
