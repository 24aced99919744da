"""What an error event says about the request it happened in: the route, the
connection, the peer's network and the user, when known.

Each socket's glue (:class:`chatd.net.ChatProtocol`) owns one :class:`RequestContext`
and makes it current while its input is handled; tasks started meanwhile (an HTTP
answer, a hub job) inherit it, as asyncio copies the context into each task. An HTTP
answer works on a copy that also names its route, and records the user once the token
is checked. :meth:`chatd.observe.logs.EventLogger.exception` adds the current one to
the line (and so to the error tracker's event)::

    {"event": "http.handler_failed", "exc_type": "KeyError", "exc_message": "'x'",
     "traceback": "Traceback ...", "route": "GET /v1/conversations", "conn_id": 17,
     "peer": "203.0.113.0/24", "user_id": 42, ...}

Never a body, a password, a token, or the peer's whole address: an error event may
leave the machine (``--sentry-dsn``), so the peer is cut to its network
(:func:`truncate_address`).
"""

from __future__ import annotations

import contextvars
import ipaddress
from typing import Final

__all__ = ["CURRENT", "RequestContext", "current_fields", "set_user", "truncate_address"]

IPV4_PREFIX: Final = 24  # the peer's network, not the peer: a /24 holds 256 addresses
IPV6_PREFIX: Final = 48  # a site: several /64s, so not one household's


class RequestContext:
    """Where an error happened. Mutable: the user is known once a hello or a token
    check succeeds. Owned by one connection (or one HTTP answer's copy).

    Args:
        conn_id: the connection's id, as ``connection.open`` logs it.
        peer_ip: the client's address; only its network (:func:`truncate_address`) is
            ever written, worked out when an error needs it.
        route: ``"GET /v1/conversations"``: the request, or a WebSocket's upgrade.
        user_id: the signed-in user, once known.
    """

    __slots__ = ("conn_id", "peer_ip", "route", "user_id")

    def __init__(
        self, conn_id: int, peer_ip: str, route: str | None = None,
        user_id: int | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.peer_ip = peer_ip
        self.route = route
        self.user_id = user_id

    def with_route(self, route: str) -> RequestContext:
        """A copy for one request on this connection."""
        return RequestContext(self.conn_id, self.peer_ip, route, self.user_id)

    def fields(self) -> dict[str, object]:
        """The log fields: ``conn_id``, ``peer`` (the network) and, when known,
        ``route`` and ``user_id``."""
        fields: dict[str, object] = {
            "conn_id": self.conn_id, "peer": truncate_address(self.peer_ip),
        }
        if self.route is not None:
            fields["route"] = self.route
        if self.user_id is not None:
            fields["user_id"] = self.user_id
        return fields


CURRENT: Final[contextvars.ContextVar[RequestContext | None]] = contextvars.ContextVar(
    "chatd_request_context", default=None
)


def current_fields() -> dict[str, object]:
    """The current request's fields, or none outside a request."""
    context = CURRENT.get()
    return {} if context is None else context.fields()


def set_user(user_id: int) -> None:
    """The current request is by this user (its token checked out)."""
    context = CURRENT.get()
    if context is not None:
        context.user_id = user_id


def truncate_address(ip: str) -> str:
    """The peer's network, not the peer: ``203.0.113.7`` -> ``203.0.113.0/24``,
    ``2001:db8:1:2::9`` -> ``2001:db8:1::/48``; ``""`` for what is not an address
    (a Unix socket)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
