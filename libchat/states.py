"""Connection states of both engines: the one rulebook for how they change and what the
host may send in each.

Both roles share one enum. A connection starts in ``HTTP`` (exchanging plain requests),
goes through ``UPGRADING`` (the upgrade request is out, its answer awaited) to the
WebSocket states, and ends in ``CLOSED``. Read this module top to bottom:

- :data:`SENDS`: per role and WebSocket state, what the host may send;
- :data:`LIVE` (derived from it): where a close frame may still go out, so the close
  handshake, pings and idle timers apply; :data:`ENDING`: where sends are dropped;
  :func:`may_send` applies the three;
- :data:`TRANSITIONS`: the whole state machine. The engines change state only through
  :func:`transition`, which consults it, and ``protocol/PROTOCOL.md`` draws its state
  diagram from it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

__all__ = [
    "ENDING",
    "LIVE",
    "SENDS",
    "TRANSITIONS",
    "ConnState",
    "LocalProtocolError",
    "Outgoing",
    "Role",
    "Trigger",
    "may_send",
    "transition",
]


class LocalProtocolError(Exception):
    """The host used an engine wrongly: e.g. ``send()`` before the WebSocket is open,
    or ``respond()`` with no request to answer. Peer faults never raise this."""


class _Fast(enum.Enum):
    """An enum whose members hash by identity, as they compare: at C speed, where
    ``Enum`` hashes the name in Python (felt on the engines' hot path, which looks states
    up in the tables below on every send and read)."""

    __hash__ = object.__hash__


class Role(_Fast):
    SERVER = "server"
    CLIENT = "client"


class ConnState(_Fast):
    HTTP = "http"  # plain HTTP/1.1 requests and responses, keep-alive
    UPGRADING = "upgrading"  # server: upgrade handed to the host; client: upgrade sent
    AWAITING_HELLO = "awaiting_hello"  # WebSocket open, no hello yet
    AUTHENTICATING = "authenticating"  # server: hello handed to the host
    AWAITING_WELCOME = "awaiting_welcome"  # client: hello sent, welcome awaited
    OPEN = "open"  # welcomed: chat frames flow both ways
    CLOSING = "closing"  # our close frame is out, the peer's awaited
    CLOSED = "closed"  # over: the host drains output and closes the transport


class Trigger(_Fast):
    UPGRADE = "upgrade"  # server: an upgrade request parsed; client: upgrade request sent
    ACCEPT = "accept"  # the 101 went out (server) or came in (client)
    REFUSE = "refuse"  # the upgrade was answered with an error status
    HELLO = "hello"  # server: a good hello arrived; client: hello sent
    WELCOME = "welcome"  # server: welcome sent; client: welcome received
    CLOSE = "close"  # we sent a close frame and wait for the peer's
    END = "end"  # the connection is over (close handshake done, EOF, timeout, fatal)


class Outgoing(_Fast):
    """What the host asks an engine to send, as far as the rulebook tells them apart."""

    HELLO = "hello"  # client: the first frame on a new WebSocket
    WELCOME = "welcome"  # server: the answer to a good hello
    ERROR = "error"  # server: an error frame (also the answer to a bad hello)
    FRAME = "frame"  # any other chat frame: send, ack, message, receipts, presence...
    CLOSE = "close"  # a close frame (``fail()``: an error frame, then the close)


# What the host may send, per role and state. A state not listed allows nothing: before
# the upgrade there is no WebSocket (HTTP has its own calls), and in ENDING states a send
# is dropped silently. Anything else is the host's mistake (LocalProtocolError).
SENDS: Final[Mapping[Role, Mapping[ConnState, frozenset[Outgoing]]]] = {
    Role.SERVER: {
        ConnState.AWAITING_HELLO: frozenset({Outgoing.CLOSE}),
        ConnState.AUTHENTICATING: frozenset({Outgoing.WELCOME, Outgoing.ERROR, Outgoing.CLOSE}),
        ConnState.OPEN: frozenset({Outgoing.FRAME, Outgoing.ERROR, Outgoing.CLOSE}),
    },
    Role.CLIENT: {
        ConnState.AWAITING_HELLO: frozenset({Outgoing.HELLO, Outgoing.CLOSE}),
        ConnState.AWAITING_WELCOME: frozenset({Outgoing.CLOSE}),
        ConnState.OPEN: frozenset({Outgoing.FRAME, Outgoing.CLOSE}),
    },
}

# Per role, the live states: the WebSocket is open and our close frame is not out yet,
# which is where a close frame may be sent. Pings and idle timers run here, and closing
# starts the close handshake (before the WebSocket, closing just ends the connection).
LIVE: Final[Mapping[Role, frozenset[ConnState]]] = {
    role: frozenset(state for state, sends in by_state.items() if Outgoing.CLOSE in sends)
    for role, by_state in SENDS.items()
}

# Our close frame is out, or the connection is over: whatever the host still sends is
# dropped silently (its peer is going away, which is a race, not a mistake).
ENDING: Final = frozenset({ConnState.CLOSING, ConnState.CLOSED})


_NOTHING: Final[frozenset[Outgoing]] = frozenset()


def may_send(role: Role, state: ConnState, outgoing: Outgoing, what: str) -> bool:
    """Whether ``outgoing`` goes out in ``state``: True when :data:`SENDS` allows it,
    False when the connection is ENDING (the send is dropped); otherwise raises
    :class:`LocalProtocolError` (``what`` names the refused send in its message)."""
    if outgoing in SENDS[role].get(state, _NOTHING):
        return True
    if state in ENDING:
        return False
    raise LocalProtocolError(f"cannot send {what} in state {state.value}")


# The state machine. Sending hello or welcome (SENDS) and receiving them move the
# handshake on; close and end edges exist exactly where LIVE says a close may go out.
_S, _C = Role.SERVER, Role.CLIENT


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
    for role in Role:
        for state in LIVE[role]:
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
