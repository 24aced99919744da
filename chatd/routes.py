"""Which HTTP paths chatd serves, and the label each is counted under in /metrics.

libchat does the HTTP: h11, 404 and 405, size limits, the upgrade, and the parsers that
turn the contract's requests into typed events (:mod:`libchat.requests`). This table
decides which paths exist. Each row is one path: its template (also its
``chatd_http_requests_total{route=...}`` label: templates, never raw paths, keep the
label set small), the one method it takes, the parser of its requests, and the event that
parser yields (how a request is counted under its row once it is answered).

``GET /v1/ws`` yields ``UpgradeRequest``: the engine starts the WebSocket handshake
for it, and chatd.net answers it through the hub's upgrade checks, not the HTTP API.
"""

from __future__ import annotations

from typing import Final

from libchat import events as ev
from libchat.requests import (
    Parser,
    Route,
    Router,
    conversations,
    health,
    history,
    login,
    logout,
    metrics,
    refresh,
    register,
    users,
    websocket_upgrade,
)

# fmt: off
#   path template                        method   parser              event
TABLE: Final[tuple[tuple[str, bytes, Parser, type[ev.HttpRequestEvent]], ...]] = (
    ("/v1/register",                      b"POST", register,          ev.RegisterRequest),
    ("/v1/login",                         b"POST", login,             ev.LoginRequest),
    ("/v1/logout",                        b"POST", logout,            ev.LogoutRequest),
    ("/v1/token/refresh",                 b"POST", refresh,           ev.RefreshRequest),
    ("/v1/users",                         b"GET",  users,             ev.UserSearchRequest),
    ("/v1/conversations",                 b"GET",  conversations,     ev.ConversationsRequest),
    ("/v1/conversations/{peer}/messages", b"GET",  history,           ev.HistoryRequest),
    ("/v1/ws",                            b"GET",  websocket_upgrade, ev.UpgradeRequest),
    ("/healthz",                          b"GET",  health,            ev.HealthRequest),
    ("/metrics",                          b"GET",  metrics,           ev.MetricsRequest),
)
# fmt: on

ROUTER: Final = Router(
    {path: Route(method=method, parser=parser) for path, method, parser, _ in TABLE}
)
"""The router chatd's engines use (``ServerConfig.router``)."""

LABELS: Final[dict[type, str]] = {event: path for path, _, _, event in TABLE}
"""Request event type -> the route label it is counted under."""

UNROUTED: Final = "other"
"""The label of requests the engine refused before routing them (404, 400, 413...)."""
