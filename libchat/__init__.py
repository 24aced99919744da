"""libchat: the chat system's protocol library, for clients, bots and servers.

Three layers, each usable alone (``docs/embedding.md`` walks through them):

* **The session** (:class:`Session`): a whole client, sans-IO. Sign-in, token refresh,
  the WebSocket with hello and catch-up, the outbox with resends and backoff, dropping
  repeated pushes, delivery confirmations, reconnects. Events and ``now`` in; transport
  actions (:class:`OpenTransport`, :class:`WriteTransport`, :class:`CloseTransport`) and
  application events (:class:`Connected`, :class:`Message`, :class:`Acked`...) out.
* **The engines** (:class:`ClientConnection`, :class:`ServerConnection`): one
  connection's HTTP and WebSocket protocol, sans-IO: bytes in, events out. A server
  engine's :class:`Router` says which paths exist; :mod:`libchat.requests` holds the
  parsers of the contract's requests (:class:`HttpRequest` in, an event or a
  :class:`Rejection` out).
* **The protocol types** (:class:`Message`, :class:`Send`, :class:`TokenGrant`...):
  frozen, validated when built; the same class is sent and received. Fields are named
  as on the wire except where the wire's name is a Python keyword: ``Message.sender``
  and ``Message.recipient`` travel as ``from`` and ``to``, ``PeerTyping.sender`` as
  ``from``.

Everything above does no I/O and reads no clock: it runs under any event loop or none.
The one exception is :class:`AsyncClient` (module :mod:`libchat.aio`), a small asyncio
host that runs a session over TCP or TLS. Every name here is imported from its module
when first used, so ``import libchat`` never loads asyncio, sockets or ssl, and a server
that uses only the engines and the protocol types never loads the client side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # what the names below are, for type checkers; imported on first use
    from libchat.aio import AsyncClient
    from libchat.backoff import Backoff
    from libchat.client import ClientConfig, ClientConnection, ClientEvent
    from libchat.events import ConnectionClosed, HttpResponse, Upgraded
    from libchat.limits import PROTOCOL_VERSION
    from libchat.outbox import (
        MemoryOutboxStorage,
        Outbox,
        OutboxEntry,
        OutboxStorage,
        SendDeferred,
        SendFailed,
    )
    from libchat.protocol import (
        Ack,
        ClientFrame,
        Conversation,
        ConversationList,
        Credentials,
        Delivered,
        DeliveredReceipt,
        Error,
        ErrorBody,
        Hello,
        Message,
        MessagePage,
        PeerTyping,
        Presence,
        ProtocolViolation,
        Read,
        ReadReceipt,
        Reauth,
        Reauthed,
        Send,
        ServerFrame,
        TokenGrant,
        Typing,
        UserEntry,
        UserList,
        Welcome,
    )
    from libchat.requests import HttpRequest, Rejection, Route, Router
    from libchat.server import ServerConfig, ServerConnection
    from libchat.session import (
        Acked,
        CallResult,
        CloseTransport,
        Connected,
        Disconnected,
        OpenTransport,
        Session,
        SessionAction,
        SessionConfig,
        SessionEvent,
        SessionState,
        SignedIn,
        SignedOut,
        SignInFailed,
        TokenRefreshed,
        WriteTransport,
    )
    from libchat.states import LocalProtocolError

__version__ = "0.1.0"
_HOMES: Final[dict[str, str]] = {  # each public name's module
    "Ack": "libchat.protocol",
    "Acked": "libchat.session",
    "AsyncClient": "libchat.aio",
    "Backoff": "libchat.backoff",
    "CallResult": "libchat.session",
    "ClientConfig": "libchat.client",
    "ClientConnection": "libchat.client",
    "ClientEvent": "libchat.client",
    "ClientFrame": "libchat.protocol",
    "CloseTransport": "libchat.session",
    "Connected": "libchat.session",
    "ConnectionClosed": "libchat.events",
    "Conversation": "libchat.protocol",
    "ConversationList": "libchat.protocol",
    "Credentials": "libchat.protocol",
    "Delivered": "libchat.protocol",
    "DeliveredReceipt": "libchat.protocol",
    "Disconnected": "libchat.session",
    "Error": "libchat.protocol",
    "ErrorBody": "libchat.protocol",
    "Hello": "libchat.protocol",
    "HttpRequest": "libchat.requests",
    "HttpResponse": "libchat.events",
    "LocalProtocolError": "libchat.states",
    "MemoryOutboxStorage": "libchat.outbox",
    "Message": "libchat.protocol",
    "MessagePage": "libchat.protocol",
    "OpenTransport": "libchat.session",
    "Outbox": "libchat.outbox",
    "OutboxEntry": "libchat.outbox",
    "OutboxStorage": "libchat.outbox",
    "PROTOCOL_VERSION": "libchat.limits",
    "PeerTyping": "libchat.protocol",
    "Presence": "libchat.protocol",
    "ProtocolViolation": "libchat.protocol",
    "Read": "libchat.protocol",
    "ReadReceipt": "libchat.protocol",
    "Reauth": "libchat.protocol",
    "Reauthed": "libchat.protocol",
    "Rejection": "libchat.requests",
    "Route": "libchat.requests",
    "Router": "libchat.requests",
    "Send": "libchat.protocol",
    "SendDeferred": "libchat.outbox",
    "SendFailed": "libchat.outbox",
    "ServerConfig": "libchat.server",
    "ServerConnection": "libchat.server",
    "ServerFrame": "libchat.protocol",
    "Session": "libchat.session",
    "SessionAction": "libchat.session",
    "SessionConfig": "libchat.session",
    "SessionEvent": "libchat.session",
    "SessionState": "libchat.session",
    "SignInFailed": "libchat.session",
    "SignedIn": "libchat.session",
    "SignedOut": "libchat.session",
    "TokenGrant": "libchat.protocol",
    "TokenRefreshed": "libchat.session",
    "Typing": "libchat.protocol",
    "Upgraded": "libchat.events",
    "UserEntry": "libchat.protocol",
    "UserList": "libchat.protocol",
    "Welcome": "libchat.protocol",
    "WriteTransport": "libchat.session",
}
__all__ = [
    "PROTOCOL_VERSION",
    "Ack",
    "Acked",
    "AsyncClient",
    "Backoff",
    "CallResult",
    "ClientConfig",
    "ClientConnection",
    "ClientEvent",
    "ClientFrame",
    "CloseTransport",
    "Connected",
    "ConnectionClosed",
    "Conversation",
    "ConversationList",
    "Credentials",
    "Delivered",
    "DeliveredReceipt",
    "Disconnected",
    "Error",
    "ErrorBody",
    "Hello",
    "HttpRequest",
    "HttpResponse",
    "LocalProtocolError",
    "MemoryOutboxStorage",
    "Message",
    "MessagePage",
    "OpenTransport",
    "Outbox",
    "OutboxEntry",
    "OutboxStorage",
    "PeerTyping",
    "Presence",
    "ProtocolViolation",
    "Read",
    "ReadReceipt",
    "Reauth",
    "Reauthed",
    "Rejection",
    "Route",
    "Router",
    "Send",
    "SendDeferred",
    "SendFailed",
    "ServerConfig",
    "ServerConnection",
    "ServerFrame",
    "Session",
    "SessionAction",
    "SessionConfig",
    "SessionEvent",
    "SessionState",
    "SignInFailed",
    "SignedIn",
    "SignedOut",
    "TokenGrant",
    "TokenRefreshed",
    "Typing",
    "Upgraded",
    "UserEntry",
    "UserList",
    "Welcome",
    "WriteTransport",
    "__version__",
]


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use: ``import libchat`` costs
    nothing until then, and a server that uses the engines never loads the client side
    (nor :mod:`libchat.aio`'s asyncio and ssl)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'libchat' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next lookup finds it without this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
