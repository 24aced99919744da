"""Events the engines hand to their hosts, besides the protocol frames themselves.

A server engine yields, from ``receive_data``:

* one typed request event per HTTP request (``RegisterRequest`` ... ``UpgradeRequest``),
  already validated: the host answers it with ``respond()`` (or, for an upgrade,
  ``accept_upgrade()``);
* after the upgrade, the client's frames as the protocol classes themselves
  (``Hello``, ``Send``, ``Delivered``, ``Read``, ``Typing``, ``Reauth``);
* ``FrameRejected`` / ``RequestRejected`` when the engine itself answered a peer fault
  (for logs and metrics; nothing to do);
* ``ConnectionClosed`` once, when the connection is over.

A client engine yields ``HttpResponse``, ``Upgraded``, the server's frames as protocol
classes, and ``ConnectionClosed``.
"""

from __future__ import annotations

from typing import Any

import attrs

from libchat.protocol import Credentials

# --- server side: HTTP requests -------------------------------------------------------


@attrs.frozen(kw_only=True)
class RegisterRequest:
    """``POST /v1/register`` with a body of the right shape (not yet checked against the
    username and password rules: the host answers ``invalid_username`` / ``weak_password``)."""

    credentials: Credentials


@attrs.frozen(kw_only=True)
class LoginRequest:
    credentials: Credentials


@attrs.frozen(kw_only=True)
class LogoutRequest:
    token: str


@attrs.frozen(kw_only=True)
class RefreshRequest:
    token: str
    rotate: bool = False  # the body asked to retire ``token`` (protocol 1.1)


@attrs.frozen(kw_only=True)
class UserSearchRequest:
    token: str
    prefix: str


@attrs.frozen(kw_only=True)
class ConversationsRequest:
    token: str


@attrs.frozen(kw_only=True)
class HistoryRequest:
    token: str
    peer: str
    before: int | None
    limit: int


@attrs.frozen(kw_only=True)
class HealthRequest:
    pass


@attrs.frozen(kw_only=True)
class MetricsRequest:
    pass


@attrs.frozen(kw_only=True)
class UpgradeRequest:
    """A well-formed WebSocket upgrade on ``GET /v1/ws``. The host accepts it with
    ``accept_upgrade()`` or refuses it with ``respond()`` (401, 403, 503)."""

    token: str | None  # from ``Authorization: Bearer``, if the client sent one
    origin: str | None


HttpRequestEvent = (
    RegisterRequest
    | LoginRequest
    | LogoutRequest
    | RefreshRequest
    | UserSearchRequest
    | ConversationsRequest
    | HistoryRequest
    | HealthRequest
    | MetricsRequest
    | UpgradeRequest
)


@attrs.frozen(kw_only=True)
class RequestRejected:
    """The engine answered an HTTP request itself with an error (404, 405, 413, 400...)."""

    status: int
    code: str


@attrs.frozen(kw_only=True)
class FrameRejected:
    """The engine answered a bad frame itself with an error frame (and maybe a close)."""

    code: str
    ref: str | None = None


@attrs.frozen(kw_only=True)
class SendRefused:
    """A ``send`` whose body breaks the rules (``too_long``, ``empty_body``). The engine
    sends nothing: the host answers, with the original ack if ``id`` was already used
    (a repeat is acked whatever its body), else with the error ``code``."""

    id: str
    code: str
    message: str


@attrs.frozen(kw_only=True)
class ConnectionClosed:
    """The connection is over: the host closes the transport after draining output.

    ``code`` is the WebSocket close code when there was a WebSocket, else ``None``.
    """

    code: int | None
    reason: str = ""


# --- client side ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class HttpResponse:
    """A response to the client's request. ``body`` is the typed success body (e.g.
    ``TokenGrant``), an ``ErrorBody`` for an error status, or ``None`` (204)."""

    status: int
    body: Any
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


@attrs.frozen(kw_only=True)
class Upgraded:
    """The server answered 101: the WebSocket is open; send ``Hello`` next."""
