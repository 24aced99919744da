"""libchat: the sans-IO protocol engine of the chat system, and the client-side pieces
(outbox, reconnect policy) every client needs. No sockets, threads, clocks or globals."""

from libchat.limits import PROTOCOL_VERSION

__version__ = "0.1.0"
__all__ = ["PROTOCOL_VERSION", "__version__"]
