"""The client side of one connection: the mirror image of :mod:`libchat.server`.

Each HTTP call queues one request; requests go out one at a time, the next after the
previous response, and each response comes back as one ``HttpResponse`` with a typed
body. :meth:`ClientConnection.upgrade` switches the connection to WebSocket
(``Upgraded``); then :meth:`~ClientConnection.send` sends frames and the server's
frames come out of :meth:`~ClientConnection.receive_data` as the protocol classes.

Nothing here reads a clock: every call takes ``now``. After any call, drain
:meth:`ClientConnection.data_to_send` and re-arm one timer at
:meth:`ClientConnection.next_deadline`. Pings are answered; a server silent for
``idle_timeout`` is closed on (1000, ``"idle timeout"``).
"""

from __future__ import annotations

import base64
import logging
import random
from collections import deque
from typing import Any, Final
from urllib.parse import quote, urlencode

import attrs
import h11
from wsproto.connection import ConnectionType
from wsproto.utilities import generate_accept_token

from libchat import limits, protocol
from libchat._engine import Engine
from libchat.events import ConnectionClosed, HttpResponse, Upgraded
from libchat.states import ConnState, LocalProtocolError, Outgoing, Role, Trigger

__all__ = ["ClientConfig", "ClientConnection", "ClientEvent", "LocalProtocolError"]

_log = logging.getLogger(__name__)

ClientEvent = HttpResponse | Upgraded | ConnectionClosed | protocol.ServerFrame

_HELLO: Final = Outgoing.HELLO  # enum members read once: attribute lookups cost per send
_FRAME: Final = Outgoing.FRAME
_RAW: Final = object()  # the response body is handed over as bytes (/metrics)


@attrs.frozen(kw_only=True)
class ClientConfig:
    host: str  # the Host header, e.g. "127.0.0.1:8765"
    max_frame_bytes: int = limits.MAX_FRAME_BYTES
    idle_timeout: float = limits.CLIENT_IDLE_TIMEOUT
    user_agent: str = "libchat/0.1"
    close_timeout: float = limits.CLOSE_TIMEOUT
    max_response_bytes: int = limits.MAX_RESPONSE_BYTES
    # Plain text frames read by libchat.frames; False: wsproto reads every frame (slower,
    # same events: the reference the fuzz tests compare with).
    fast_frames: bool = True


@attrs.frozen
class _Call:
    """One queued request and how to read its answer."""

    request: h11.Request
    body: bytes
    result: object  # the success body class, _RAW, or None (no body expected)
    ws_key: bytes | None = None  # set for the upgrade request
    is_health: bool = False  # /healthz answers 503 with a Health body


class ClientConnection(Engine[ClientEvent]):
    """One connection to a chat server, client side. Never raises for anything the
    server sends; raises :class:`LocalProtocolError` on a call the state forbids."""

    _ROLE = Role.CLIENT
    _WS_TYPE = ConnectionType.CLIENT

    def __init__(self, config: ClientConfig, rng: random.Random) -> None:
        super().__init__(
            max_frame_bytes=config.max_frame_bytes,
            close_timeout=config.close_timeout,
            fast_frames=config.fast_frames,
            now=0.0,
        )
        self._config = config
        self._rng = rng
        self._h11: h11.Connection | None = h11.Connection(h11.CLIENT)
        self._queue: deque[_Call] = deque()
        self._inflight: _Call | None = None
        self._upgrade_queued = False
        # the response being read
        self._status = 0
        self._headers: tuple[tuple[str, str], ...] = ()
        self._body: list[bytes] = []
        self._body_size = 0

    # --- HTTP calls ----------------------------------------------------------------------

    def register(self, credentials: protocol.Credentials, now: float) -> None:
        """``POST /v1/register``; answered with ``Registered``. Drain ``data_to_send()``."""
        self._queue_call(
            "POST", "/v1/register", protocol.Registered, body=protocol.encode_body(credentials)
        )

    def login(self, credentials: protocol.Credentials, now: float) -> None:
        """``POST /v1/login``; answered with ``TokenGrant``. Drain ``data_to_send()``."""
        self._queue_call(
            "POST", "/v1/login", protocol.TokenGrant, body=protocol.encode_body(credentials)
        )

    def logout(self, token: str, now: float) -> None:
        """``POST /v1/logout``; answered with 204 (body ``None``)."""
        self._queue_call("POST", "/v1/logout", None, token=token, body=b"")

    def refresh(self, token: str, now: float, *, rotate: bool = True) -> None:
        """``POST /v1/token/refresh``; answered with a new ``TokenGrant``.

        With ``rotate`` (the default; protocol 1.1) the server retires ``token`` after a
        short grace: switch to the new token at once, ``reauth`` live WebSockets with it,
        and never refresh the old one again (that revokes every token of the login).
        ``rotate=False`` keeps the 1.0 behaviour (the old token lives until it expires).
        A 1.0 server ignores the body. Drain ``data_to_send()``."""
        body = protocol.encode_body(protocol.RefreshOptions(rotate=True)) if rotate else b""
        self._queue_call("POST", "/v1/token/refresh", protocol.TokenGrant, token=token, body=body)

    def search_users(self, token: str, prefix: str, now: float) -> None:
        """``GET /v1/users?prefix=``; answered with ``UserList``."""
        target = "/v1/users?" + urlencode({"prefix": prefix})
        self._queue_call("GET", target, protocol.UserList, token=token)

    def conversations(self, token: str, now: float) -> None:
        """``GET /v1/conversations``; answered with ``ConversationList``."""
        self._queue_call("GET", "/v1/conversations", protocol.ConversationList, token=token)

    def history(
        self,
        token: str,
        peer: str,
        now: float,
        before: int | None = None,
        limit: int | None = None,
    ) -> None:
        """``GET /v1/conversations/<peer>/messages``; answered with ``MessagePage``."""
        query = {
            name: str(value)
            for name, value in (("before", before), ("limit", limit))
            if value is not None
        }
        target = f"/v1/conversations/{quote(peer, safe='')}/messages"
        if query:
            target += "?" + urlencode(query)
        self._queue_call("GET", target, protocol.MessagePage, token=token)

    def health(self, now: float) -> None:
        """``GET /healthz``; answered with ``Health`` (also with status 503)."""
        self._queue_call("GET", "/healthz", protocol.Health, is_health=True)

    def metrics(self, now: float) -> None:
        """``GET /metrics``; answered with the exposition text as ``bytes``."""
        self._queue_call("GET", "/metrics", _RAW)

    def upgrade(self, now: float, token: str | None = None, origin: str | None = None) -> None:
        """``GET /v1/ws`` with an RFC 6455 upgrade, queued after any pending request.
        101 gives ``Upgraded`` (send ``Hello`` next); another status gives an
        ``HttpResponse`` with the ``ErrorBody``. Drain ``data_to_send()`` afterwards."""
        key = base64.b64encode(self._rng.randbytes(16))
        headers = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", key.decode()),
            ("sec-websocket-version", "13"),
        ]
        if origin is not None:
            headers.append(("origin", origin))
        self._queue_call("GET", "/v1/ws", None, token=token, extra=headers, ws_key=key)
        self._upgrade_queued = True

    def _queue_call(
        self,
        method: str,
        target: str,
        result: object,
        *,
        token: str | None = None,
        body: bytes | None = None,
        extra: list[tuple[str, str]] | None = None,
        ws_key: bytes | None = None,
        is_health: bool = False,
    ) -> None:
        if self._state is not ConnState.HTTP or self._upgrade_queued:
            raise LocalProtocolError(f"no HTTP requests in state {self._state.value}")
        config = self._config
        headers = [("host", config.host), ("user-agent", config.user_agent)]
        if token is not None:
            headers.append(("authorization", f"Bearer {token}"))
        if body is not None:
            headers.append(("content-length", str(len(body))))
            if body:
                headers.append(("content-type", "application/json"))
        if extra:
            headers.extend(extra)
        try:
            request = h11.Request(method=method, target=target, headers=headers)
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(f"cannot build the request: {exc}") from None
        self._queue.append(_Call(request, body or b"", result, ws_key, is_health))
        self._send_next()

    def _send_next(self) -> None:
        h = self._h11
        if self._inflight is not None or not self._queue or h is None:
            return
        call = self._inflight = self._queue.popleft()
        out = self._out
        out.append(h.send(call.request) or b"")
        if call.body:
            out.append(h.send(h11.Data(data=call.body)) or b"")
        out.append(h.send(h11.EndOfMessage()) or b"")
        if call.ws_key is not None:
            self._move(Trigger.UPGRADE)

    # --- input -------------------------------------------------------------------------

    def _receive_http(self, data: bytes, now: float) -> list[Any]:
        assert self._h11 is not None
        events: list[Any] = []
        self._h11.receive_data(data)
        self._parse_http(events, now)
        return events

    def receive_eof(self, now: float) -> list[ClientEvent]:
        """The server closed its side: the connection is over (a response delimited by
        the close is completed first). Returns the ``ConnectionClosed`` event."""
        h = self._h11
        if h is None or self._state is ConnState.CLOSED:
            return self._eof(now)
        events: list[ClientEvent] = []
        h.receive_data(b"")
        self._parse_http(events, now)
        if not self.is_closed:
            self._end(events, None, "connection closed by server", now)
        return events

    def _parse_http(self, events: list[Any], now: float) -> None:
        h = self._h11
        assert h is not None
        limit = self._config.max_response_bytes
        while self._ws is None and self._state is not ConnState.CLOSED:
            if self._inflight is None and h.their_state is h11.IDLE:
                if h.trailing_data[0]:
                    self._end(events, None, "response without a request", now)
                return
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                self._end(events, None, f"malformed HTTP response: {exc}", now)
                return
            if isinstance(event, h11.Data):
                self._body_size += len(event.data)
                if self._body_size > limit:
                    self._end(events, None, "response body too large", now)
                    return
                self._body.append(event.data)
            elif isinstance(event, h11.Response):
                self._status = event.status_code
                self._headers = tuple(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in event.headers
                )
                self._body = []
                self._body_size = 0
            elif isinstance(event, h11.EndOfMessage):
                self._finish_response(events, now)
            elif isinstance(event, h11.InformationalResponse):
                if h.our_state is h11.SWITCHED_PROTOCOL:
                    self._switch(event, events, now)
                    return
                # 100 Continue and friends: the real answer follows
            else:  # NEED_DATA, PAUSED; ConnectionClosed cannot come with a request out
                return

    def _finish_response(self, events: list[Any], now: float) -> None:
        h = self._h11
        call = self._inflight
        assert h is not None and call is not None
        self._inflight = None
        raw = b"".join(self._body)
        self._body = []
        events.append(
            HttpResponse(status=self._status, body=self._decode(call, raw), headers=self._headers)
        )
        if call.ws_key is not None:
            self._upgrade_queued = False
            self._move(Trigger.REFUSE)
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            self._send_next()
        else:
            self._end(events, None, "the server closed the HTTP connection", now)

    def _decode(self, call: _Call, raw: bytes) -> Any:
        status = self._status
        if 200 <= status < 300:
            if call.result is None or not raw:
                return None
            if call.result is _RAW:
                return raw
            cls: Any = call.result
        elif call.is_health and status == 503:
            cls = protocol.Health  # "degraded": the contract sends the same body
        else:
            cls = protocol.ErrorBody
        try:
            return protocol.decode_response_body(raw, cls)
        except protocol.ProtocolViolation:
            _log.debug("undecodable body in a %d response", status)
            return None

    def _switch(self, response: h11.InformationalResponse, events: list[Any], now: float) -> None:
        h = self._h11
        call = self._inflight
        assert h is not None and call is not None and call.ws_key is not None
        headers: dict[bytes, bytes] = dict(response.headers)
        if headers.get(b"sec-websocket-accept") != generate_accept_token(call.ws_key):
            self._end(events, None, "bad Sec-WebSocket-Accept in the 101 response", now)
            return
        if headers.get(b"upgrade", b"").lower() != b"websocket":
            self._end(events, None, "the 101 response does not upgrade to websocket", now)
            return
        if b"sec-websocket-extensions" in headers or b"sec-websocket-protocol" in headers:
            self._end(events, None, "the server chose an extension or subprotocol", now)
            return
        leftover = h.trailing_data[0]
        self._h11 = None
        self._inflight = None
        self._move(Trigger.ACCEPT)
        self._start_ws(now)
        events.append(Upgraded())
        if leftover:
            events.extend(self._receive_ws(leftover))

    # --- WebSocket -------------------------------------------------------------------

    def _on_text(self, text: str, events: list[Any]) -> None:
        if self._state is ConnState.CLOSING:
            return
        try:
            frame = protocol.decode_server_frame(text)
        except protocol.ProtocolViolation as exc:
            _log.debug("dropped an undecodable server frame: %s", exc.message)
            return
        if type(frame) is protocol.Welcome and self._state is ConnState.AWAITING_WELCOME:
            self._move(Trigger.WELCOME)
        events.append(frame)

    def _on_binary(self, events: list[Any]) -> None:
        _log.debug("dropped a binary frame from the server")

    def _on_too_big(self, events: list[Any]) -> None:
        _log.debug("the server sent a message over %d bytes", self._max_frame)

    def send(self, frame: protocol.ClientFrame, now: float) -> None:
        """Send one frame, as :data:`libchat.states.SENDS` allows: ``Hello`` right after
        ``Upgraded``, the others once the welcome came. Dropped silently once the
        connection is closing. Drain ``data_to_send()`` afterwards."""
        kind = type(frame)
        is_hello = kind is protocol.Hello
        outgoing = _HELLO if is_hello else _FRAME
        if outgoing in self._sendable or self._may_send(outgoing, kind.__name__):
            self._send_text(protocol.encode_frame(frame))
            if is_hello:
                self._move(Trigger.HELLO)

    # --- timers ----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` should next be called, or ``None``."""
        state = self._state
        if state in self._live:
            return self._last_rx + self._config.idle_timeout
        if state is ConnState.CLOSING:
            return self._close_deadline
        if state is ConnState.CLOSED:
            return self._report_at
        return None

    def handle_timer(self, now: float) -> list[ClientEvent]:
        """Do what is due at ``now``. Drain ``data_to_send()`` afterwards."""
        state = self._state
        if state is ConnState.CLOSING:
            return self._closing_timer(now)
        if state is ConnState.CLOSED:
            return self._take_report()
        if state in self._live and now >= self._last_rx + self._config.idle_timeout:
            self._send_close(limits.CLOSE_NORMAL, "idle timeout", now)
        return []
