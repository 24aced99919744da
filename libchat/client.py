"""The client side of one connection: the mirror image of :mod:`libchat.server`.

Each HTTP call queues one request; requests go out one at a time, the next after the
previous response, and each response comes back as one ``HttpResponse`` with a typed
body (h11's side of that is :mod:`libchat._client_http`).
:meth:`ClientConnection.upgrade` switches the connection to WebSocket (``Upgraded``);
then :meth:`~ClientConnection.send` sends frames and the server's frames come out of
:meth:`~ClientConnection.receive_data` as the protocol classes.

Nothing here reads a clock: every call takes ``now``. After any call, drain
:meth:`ClientConnection.data_to_send` and re-arm one timer at
:meth:`ClientConnection.next_deadline`. Pings are answered; a server silent for
``idle_timeout`` is closed on (1000, ``"idle timeout"``).
"""

from __future__ import annotations

import base64
import logging
import random
from typing import Any, Final
from urllib.parse import quote, urlencode

import attrs
from wsproto.connection import ConnectionType

from libchat import limits, protocol
from libchat._client_http import RAW, HttpCalls, Switched
from libchat._engine import Engine
from libchat.events import ConnectionClosed, HttpResponse, Upgraded
from libchat.states import ConnState, LocalProtocolError, Outgoing, Role, Trigger

__all__ = ["ClientConfig", "ClientConnection", "ClientEvent", "LocalProtocolError"]

_log = logging.getLogger(__name__)

ClientEvent = HttpResponse | Upgraded | ConnectionClosed | protocol.ServerFrame

_HELLO: Final = Outgoing.HELLO  # enum members read once: attribute lookups cost per send
_FRAME: Final = Outgoing.FRAME


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


class ClientConnection(Engine[ClientEvent]):
    """One connection to a chat server, client side. Never raises for anything the
    server sends; raises :class:`LocalProtocolError` on a call the state forbids."""

    _ROLE = Role.CLIENT
    _WS_TYPE = ConnectionType.CLIENT
    __slots__ = ("_config", "_http", "_rng")

    def __init__(self, config: ClientConfig, rng: random.Random) -> None:
        super().__init__(
            max_frame_bytes=config.max_frame_bytes,
            close_timeout=config.close_timeout,
            fast_frames=config.fast_frames,
            now=0.0,
        )
        self._config = config
        self._rng = rng
        # the HTTP phase (libchat._client_http); None once the WebSocket is open
        self._http: HttpCalls | None = HttpCalls(
            host=config.host,
            user_agent=config.user_agent,
            max_response_bytes=config.max_response_bytes,
            out=self._out,
        )

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
        self._queue_call("GET", "/metrics", RAW)

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
        http = self._http
        if self._state is not ConnState.HTTP or http is None or http.upgrade_queued:
            raise LocalProtocolError(f"no HTTP requests in state {self._state.value}")
        http.queue(
            method,
            target,
            result,
            token=token,
            body=body,
            extra=extra,
            ws_key=ws_key,
            is_health=is_health,
        )
        self._send_next()

    def _send_next(self) -> None:
        assert self._http is not None
        if self._http.send_next():  # the upgrade request went out
            self._move(Trigger.UPGRADE)

    # --- input -------------------------------------------------------------------------

    def _receive_http(self, data: bytes, now: float) -> list[Any]:
        assert self._http is not None
        events: list[Any] = []
        self._http.receive(data)
        self._read_responses(events, now)
        return events

    def receive_eof(self, now: float) -> list[ClientEvent]:
        """The server closed its side: the connection is over (a response delimited by
        the close is completed first). Returns the ``ConnectionClosed`` event."""
        http = self._http
        if http is None or self._state is ConnState.CLOSED:
            return self._eof(now)
        events: list[ClientEvent] = []
        http.receive(b"")
        self._read_responses(events, now)
        if not self.is_closed:
            self._end(events, None, "connection closed by server", now)
        return events

    def _read_responses(self, events: list[Any], now: float) -> None:
        """Hand over each whole response, sending the next request after it; switch to
        the WebSocket on a good 101; end on a fault."""
        http = self._http
        assert http is not None
        while self._state is not ConnState.CLOSED:
            outcome = http.next_response()
            if outcome is None:
                return
            if isinstance(outcome, str):
                self._end(events, None, outcome, now)
            elif isinstance(outcome, Switched):
                self._switch(outcome.leftover, events, now)
                return
            else:
                events.append(outcome.response)
                if outcome.refused_upgrade:
                    self._move(Trigger.REFUSE)
                if outcome.keep_alive:
                    self._send_next()
                else:
                    self._end(events, None, "the server closed the HTTP connection", now)

    def _switch(self, leftover: bytes, events: list[Any], now: float) -> None:
        self._http = None
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
