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
host that runs a session over TCP or TLS; it is imported only when first used, so
``import libchat`` never loads asyncio, sockets or ssl.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from libchat.aio import AsyncClient

__version__ = "0.1.0"
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
    """Import :mod:`libchat.aio` (asyncio, ssl) only when :class:`AsyncClient` is used."""
    if name == "AsyncClient":
        from libchat.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'libchat' has no attribute {name!r}")
