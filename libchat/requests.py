"""HTTP requests as the server engine sees them, and the contract's parsers of them.

The server engine (:class:`libchat.server.ServerConnection`) reads each request with h11
and asks its router (``ServerConfig.router``) which route the path names. A
:class:`Router` maps path templates to a :class:`Route`: the one method the path takes
and the parser that turns an :class:`HttpRequest` into a typed request event
(``LoginRequest``, ``HistoryRequest``...). The engine answers 404 for a path no route
matches and 405 (with ``Allow``) for another method; a parser that finds the request
faulty raises :class:`Rejection`, which the engine answers with the contract's error
body. Whatever path a router gives it, an ``UpgradeRequest`` starts the WebSocket
upgrade.

The parsers here are the wire contract's (``protocol/PROTOCOL.md`` section 5): its bodies,
queries, bearer tokens and the WebSocket opening handshake. Which paths exist is the
host's decision; :data:`CONTRACT_ROUTER` maps the contract's own paths and is the
engine's default::

    router = Router({
        "/v1/login": Route(method=b"POST", parser=requests.login),
        "/v1/conversations/{peer}/messages": Route(method=b"GET", parser=requests.history),
        "/v1/ws": Route(method=b"GET", parser=requests.websocket_upgrade),
    })
    config = ServerConfig(router=router)
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final
from urllib.parse import unquote

import attrs

from libchat import limits, protocol
from libchat.events import (
    ConversationsRequest,
    HealthRequest,
    HistoryRequest,
    HttpRequestEvent,
    LoginRequest,
    LogoutRequest,
    MetricsRequest,
    RefreshRequest,
    RegisterRequest,
    UpgradeRequest,
    UserSearchRequest,
)

__all__ = [
    "CONTRACT_ROUTER",
    "HttpRequest",
    "Parser",
    "Rejection",
    "Route",
    "Router",
    "conversations",
    "health",
    "history",
    "login",
    "logout",
    "metrics",
    "refresh",
    "register",
    "users",
    "websocket_upgrade",
]

_BEARER_RE: Final = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9._~+/-]+=*) *")
_INT_RE: Final = re.compile(r"[0-9]{1,19}")  # and at most limits.MAX_WIRE_INT


class Rejection(Exception):
    """Raised by a parser: the engine answers the request with this status and the
    contract's error body ``{"error": {"code": code, "message": message}}``, plus
    ``headers``, and reports it to the host as ``RequestRejected``."""

    def __init__(
        self, status: int, code: str, message: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


@attrs.frozen(kw_only=True)
class HttpRequest:
    """One whole HTTP request (head and body) on a path its router matched.

    Header names are lower-case bytes, as h11 gives them; ``params`` holds the
    percent-decoded ``{name}`` segments of the route's path template.
    """

    method: bytes
    path: str
    params: Mapping[str, str]
    query: dict[str, list[str]]
    headers: dict[bytes, list[bytes]]
    body: bytes
    proposes_upgrade: bool  # h11 saw "Connection: upgrade" with an Upgrade header

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        values = self.headers.get(name)
        return values[0] if values else None

    def token(self) -> str:
        """The bearer token; 401 when it is missing or malformed."""
        token = self.optional_token()
        if token is None:
            raise Rejection(401, "unauthorized", "an Authorization: Bearer token is required")
        return token

    def optional_token(self) -> str | None:
        """The bearer token, ``None`` without an Authorization header; 401 when the header
        is malformed or repeated."""
        values = self.headers.get(b"authorization")
        if values is None:
            return None
        match = _BEARER_RE.fullmatch(values[0]) if len(values) == 1 else None
        if match is None:
            raise Rejection(401, "unauthorized", "malformed Authorization header")
        return match[1].decode("ascii")

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or ``None``."""
        values = self.query.get(name)
        return values[0] if values else None

    def int_param(self, name: str) -> int | None:
        """Query parameter ``name`` as a wire integer; 400 ``invalid_query`` when it is
        not a plain decimal of at most 19 digits and at most ``MAX_WIRE_INT``."""
        value = self.param(name)
        if value is None:
            return None
        if _INT_RE.fullmatch(value) is None or int(value) > limits.MAX_WIRE_INT:
            raise Rejection(
                400, "invalid_query", f"{name} must be an integer 0..{limits.MAX_WIRE_INT}"
            )
        return int(value)


# --- the contract's requests (protocol/PROTOCOL.md section 5) -------------------------


def register(request: HttpRequest) -> RegisterRequest:
    """``POST /v1/register``: a credentials body."""
    return RegisterRequest(credentials=_credentials(request))


def login(request: HttpRequest) -> LoginRequest:
    """``POST /v1/login``: a credentials body."""
    return LoginRequest(credentials=_credentials(request))


def _credentials(request: HttpRequest) -> protocol.Credentials:
    try:
        return protocol.decode_body(request.body, protocol.Credentials)
    except protocol.ProtocolViolation as exc:
        raise Rejection(400, exc.code, exc.message) from None


def logout(request: HttpRequest) -> LogoutRequest:
    """``POST /v1/logout`` (auth)."""
    return LogoutRequest(token=request.token())


def refresh(request: HttpRequest) -> RefreshRequest:
    """``POST /v1/token/refresh`` (auth). No body (or only whitespace): a 1.0 refresh.
    Otherwise a JSON object whose optional ``rotate`` is a boolean (unknown fields
    ignored); else 400 ``invalid_body``."""
    token = request.token()
    if not request.body.strip():
        return RefreshRequest(token=token)
    try:
        options = protocol.decode_body(request.body, protocol.RefreshOptions)
    except protocol.ProtocolViolation as exc:
        raise Rejection(400, exc.code, exc.message) from None
    return RefreshRequest(token=token, rotate=options.rotate)


def users(request: HttpRequest) -> UserSearchRequest:
    """``GET /v1/users?prefix=<text>`` (auth); an empty prefix is 400 ``invalid_query``."""
    token = request.token()
    prefix = request.param("prefix")
    if not prefix:
        raise Rejection(400, "invalid_query", "prefix must have at least one character")
    return UserSearchRequest(token=token, prefix=prefix)


def conversations(request: HttpRequest) -> ConversationsRequest:
    """``GET /v1/conversations`` (auth)."""
    return ConversationsRequest(token=request.token())


def history(request: HttpRequest) -> HistoryRequest:
    """``GET /v1/conversations/{peer}/messages?before=<seq>&limit=<n>`` (auth). Its
    template must have a ``{peer}`` segment (the user name, compared lower-case)."""
    token = request.token()
    peer = request.params["peer"].lower()
    limit = request.int_param("limit")
    if limit is None:
        limit = limits.DEFAULT_HISTORY_LIMIT
    elif not 1 <= limit <= limits.MAX_HISTORY_LIMIT:
        raise Rejection(
            400, "invalid_query", f"limit must be between 1 and {limits.MAX_HISTORY_LIMIT}"
        )
    return HistoryRequest(token=token, peer=peer, before=request.int_param("before"), limit=limit)


def health(_request: HttpRequest) -> HealthRequest:
    """``GET /healthz``."""
    return HealthRequest()


def metrics(_request: HttpRequest) -> MetricsRequest:
    """``GET /metrics`` (the body, Prometheus text, is the host's own)."""
    return MetricsRequest()


def websocket_upgrade(request: HttpRequest) -> UpgradeRequest:
    """``GET /v1/ws``: check a WebSocket upgrade (RFC 6455 section 4.2.1): 400 when it is
    not one or its key is bad, 426 for another protocol version, 401 for a malformed
    bearer token."""
    upgrade = request.header(b"upgrade") or b""
    if not request.proposes_upgrade or b"websocket" not in [
        p.strip() for p in upgrade.lower().split(b",")
    ]:
        raise Rejection(400, "bad_request", "not a WebSocket upgrade request")
    if request.header(b"sec-websocket-version") != b"13":
        raise Rejection(
            426,
            "unsupported_version",
            "only WebSocket version 13 is supported",
            (("Sec-WebSocket-Version", "13"),),
        )
    key = request.header(b"sec-websocket-key") or b""
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid = False
    if not valid:
        raise Rejection(400, "bad_request", "missing or malformed Sec-WebSocket-Key")
    origin = request.header(b"origin")
    return UpgradeRequest(
        token=request.optional_token(),
        origin=None if origin is None else origin.decode("latin-1"),
    )


# --- routing ----------------------------------------------------------------------------

Parser = Callable[[HttpRequest], HttpRequestEvent]
"""Turns a request into its event, or raises :class:`Rejection`."""


@attrs.frozen(kw_only=True)
class Route:
    """What a path takes: one ``method`` (e.g. ``b"GET"``) and the ``parser`` of its
    requests."""

    method: bytes
    parser: Parser


_NO_PARAMS: Final[Mapping[str, str]] = MappingProxyType({})


class Router:
    """Which paths exist: path template -> :class:`Route`.

    A template is a literal path (``/v1/login``) or has whole segments written
    ``{name}`` (``/v1/conversations/{peer}/messages``) that match any non-empty segment;
    the parser finds it, percent-decoded, in ``HttpRequest.params[name]``. A literal
    path wins over a template; templates are tried in the order given.
    """

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = MappingProxyType(dict(routes))
        self._literal: dict[str, Route] = {}
        self._templates: list[tuple[re.Pattern[str], Route]] = []
        for template, route in routes.items():
            pattern = _compile(template)
            if pattern is None:
                self._literal[template] = route
            else:
                self._templates.append((pattern, route))

    @property
    def routes(self) -> Mapping[str, Route]:
        """Every template with its route (read-only), e.g. to build a router with more."""
        return self._routes

    def match(self, path: str) -> tuple[Route, Mapping[str, str]] | None:
        """The route of ``path`` (without its query) and its path parameters, or
        ``None`` when no template matches."""
        route = self._literal.get(path)
        if route is not None:
            return route, _NO_PARAMS
        for pattern, route in self._templates:
            found = pattern.fullmatch(path)
            if found is not None:
                return route, {name: unquote(value) for name, value in found.groupdict().items()}
        return None


def _compile(template: str) -> re.Pattern[str] | None:
    """The pattern of a template with ``{name}`` segments; ``None`` for a literal path."""
    if not template.startswith("/"):
        raise ValueError(f"a path template starts with '/': {template!r}")
    parts: list[str] = []
    names: set[str] = set()
    for segment in template.split("/"):
        name = segment[1:-1]
        if segment.startswith("{") and segment.endswith("}") and name.isidentifier():
            if name in names:
                raise ValueError(f"parameter {name!r} named twice: {template!r}")
            names.add(name)
            parts.append(f"(?P<{name}>[^/]+)")
        elif "{" in segment or "}" in segment:
            raise ValueError(f"a parameter is a whole segment {{name}}: {template!r}")
        else:
            parts.append(re.escape(segment))
    return re.compile("/".join(parts)) if names else None


CONTRACT_ROUTER: Final = Router(
    {
        "/v1/register": Route(method=b"POST", parser=register),
        "/v1/login": Route(method=b"POST", parser=login),
        "/v1/logout": Route(method=b"POST", parser=logout),
        "/v1/token/refresh": Route(method=b"POST", parser=refresh),
        "/v1/users": Route(method=b"GET", parser=users),
        "/v1/conversations": Route(method=b"GET", parser=conversations),
        "/v1/conversations/{peer}/messages": Route(method=b"GET", parser=history),
        "/healthz": Route(method=b"GET", parser=health),
        "/metrics": Route(method=b"GET", parser=metrics),
        "/v1/ws": Route(method=b"GET", parser=websocket_upgrade),
    }
)
"""The paths of ``protocol/PROTOCOL.md`` section 5, each with its parser: the server
engine's default router."""
