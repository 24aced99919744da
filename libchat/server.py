"""The server side of one connection: bytes in, events and bytes out.

HTTP/1.1 goes through h11 (read and written by :mod:`libchat._server_http`; what each
request means for the connection is decided here): each request becomes one typed event
(``LoginRequest``, ``UpgradeRequest``...) that the host answers with
:meth:`ServerConnection.respond` (or :meth:`~ServerConnection.accept_upgrade`); faults
the engine can judge alone (unknown path, wrong method, oversize or malformed request,
missing bearer token, bad query) it answers itself and reports as ``RequestRejected``.
Which paths exist, and the parser of each, is the router's to say
(``ServerConfig.router``, see :mod:`libchat.requests`). After the upgrade, wsproto
parses frames and the client's JSON frames come out as the protocol classes.

Nothing here reads a clock: every call takes ``now`` (seconds, any epoch, the same
clock every time). After any call, drain :meth:`ServerConnection.data_to_send` and
re-arm one timer at :meth:`ServerConnection.next_deadline`.

Timers: on HTTP, a request must arrive whole (head and body) within ``request_timeout``
of its first byte, however the bytes trickle in (a slowloris peer): one whose head is in
gets 408 ``request_timeout`` and the connection closes, one whose head is not is dropped
(h11 cannot answer a request it has not parsed); a connection waiting for its next (or
first) request is dropped after ``keepalive_timeout``. No HTTP timer runs while the host
answers a request. On the WebSocket: a ping every ``ping_interval``; close 4003 when no
hello arrived within ``hello_timeout``; close 1000 with reason ``"idle timeout"`` when
no byte arrived for ``idle_timeout``; after our close frame, the peer's is awaited for
``close_timeout``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any, Final

import attrs
from wsproto.connection import ConnectionType
from wsproto.events import Ping

from libchat import limits, protocol
from libchat._engine import Engine
from libchat._server_http import RequestReader
from libchat.events import (
    ConnectionClosed,
    FrameRejected,
    HttpRequestEvent,
    RequestRejected,
    SendRefused,
    UpgradeRequest,
)
from libchat.frames import text_frame
from libchat.requests import CONTRACT_ROUTER, Rejection, Router
from libchat.states import ConnState, LocalProtocolError, Outgoing, Role, Trigger

# A send refused for its body is handed to the host, which answers it: with the original
# ack when the id was used before (the contract acks a repeat whatever its body).
_HOST_ANSWERS = frozenset({"too_long", "empty_body"})

__all__ = [
    "LocalProtocolError",
    "ServerConfig",
    "ServerConnection",
    "ServerEvent",
]

ServerEvent = (
    HttpRequestEvent | RequestRejected | FrameRejected | ConnectionClosed | protocol.ClientFrame
)

_OPEN: Final = ConnState.OPEN
# The frames the rulebook (libchat.states.SENDS) names; every other one is a plain FRAME.
# (Enum members are read once here: class attribute lookups cost on the hot path.)
_WELCOME: Final = Outgoing.WELCOME
_FRAME: Final = Outgoing.FRAME
_OUTGOING: Final[dict[type, Outgoing]] = {
    protocol.Welcome: _WELCOME,
    protocol.Error: Outgoing.ERROR,
}
_VERSION_RE: Final = re.compile(r"([0-9]{1,9})(\.[0-9]{1,9})*")
_PING: Final = Ping(payload=b"")
_PING_FRAME: Final = b"\x89\x00"  # _PING as a server writes it: FIN, opcode 9, unmasked, empty


@attrs.frozen(kw_only=True)
class ServerConfig:
    """The server engine's settings. ``router`` says which paths exist and how each
    request becomes an event; the default, :data:`libchat.requests.CONTRACT_ROUTER`,
    serves the contract's paths (``protocol/PROTOCOL.md`` section 5)."""

    router: Router = CONTRACT_ROUTER
    max_body_bytes: int = limits.MAX_BODY_BYTES
    max_frame_bytes: int = limits.MAX_FRAME_BYTES
    max_header_bytes: int = limits.MAX_HEADER_BYTES
    hello_timeout: float = limits.HELLO_TIMEOUT
    request_timeout: float = limits.REQUEST_TIMEOUT
    keepalive_timeout: float = limits.KEEPALIVE_TIMEOUT
    ping_interval: float = limits.PING_INTERVAL
    idle_timeout: float = limits.IDLE_TIMEOUT
    close_timeout: float = limits.CLOSE_TIMEOUT
    server_header: str = "chatd"
    # Plain text frames read and written by libchat.frames; False: wsproto does every
    # frame (slower, same bytes and events: the reference the fuzz tests compare with).
    fast_frames: bool = True


class ServerConnection(Engine[ServerEvent]):
    """One client connection, server side. Never raises for anything the peer sends;
    raises :class:`LocalProtocolError` when the host calls a method in a state that
    does not allow it."""

    _ROLE = Role.SERVER
    _WS_TYPE = ConnectionType.SERVER
    __slots__ = ("_config", "_hello_deadline", "_http", "_next_ping", "_rng")

    def __init__(self, config: ServerConfig, rng: random.Random, now: float) -> None:
        super().__init__(
            max_frame_bytes=config.max_frame_bytes,
            close_timeout=config.close_timeout,
            fast_frames=config.fast_frames,
            now=now,
        )
        self._config = config
        self._rng = rng  # the server engine draws nothing random today
        # the HTTP phase (libchat._server_http); None once the WebSocket is open
        self._http: RequestReader | None = RequestReader(
            router=config.router,
            max_body_bytes=config.max_body_bytes,
            max_header_bytes=config.max_header_bytes,
            server_header=config.server_header,
            out=self._out,
        )
        self._hello_deadline = 0.0
        self._next_ping = 0.0

    # --- input: receive_data() and receive_eof() are the base class's -------------------

    # --- HTTP ----------------------------------------------------------------------------

    def _receive_http(self, data: bytes, now: float) -> list[Any]:
        http = self._http
        assert http is not None
        events: list[Any] = []
        if http.pending:
            # One request at a time: later ones wait in the reader, within bounds.
            if not http.hold(data):
                self._end(events, None, "too much pipelined data", now)
            return events
        http.receive(data, now)
        self._read_request(events, now)
        return events

    def _read_request(self, events: list[Any], now: float) -> None:
        """Hand the next whole request to the host, or answer it if the engine can."""
        http = self._http
        assert http is not None
        found = http.next_request(now)
        if found is None:
            return
        if isinstance(found, Rejection):
            self._reject(events, found, now)
            return
        if type(found) is UpgradeRequest:
            self._move(Trigger.UPGRADE)
        events.append(found)

    def _reject(self, events: list[Any], rejection: Rejection, now: float) -> None:
        """Answer the current request with an error the engine chose itself."""
        events.append(RequestRejected(status=rejection.status, code=rejection.code))
        body = protocol.encode_body(protocol.ErrorBody.of(rejection.code, rejection.message))
        self._write_response(
            rejection.status, body, "application/json", rejection.headers, events, now
        )

    def _write_response(
        self,
        status: int,
        body: bytes | None,
        content_type: str,
        extra: Sequence[tuple[str, str]],
        events: list[Any],
        now: float,
    ) -> None:
        """Send one whole response, then either read the next request or end."""
        http = self._http
        assert http is not None
        upgrading = self._state is ConnState.UPGRADING
        keep_alive = http.respond(status, body, content_type, extra, refusing_upgrade=upgrading)
        self._last_rx = now  # the keep-alive clock restarts with each answer
        if upgrading:
            self._end(events, None, "upgrade refused", now, Trigger.REFUSE)
        elif keep_alive:
            self._read_request(events, now)
        else:
            self._end(events, None, "HTTP connection closed", now)

    def respond(
        self,
        status: int,
        body: object | bytes | None = None,
        *,
        now: float,
        headers: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> list[ServerEvent]:
        """Answer the request the engine handed over. ``body`` is a protocol body class
        (sent as JSON), raw bytes (sent as ``content_type``) or ``None`` (no body).

        The connection stays open for the next request unless the client asked to
        close or this refuses an upgrade; the events of pipelined requests already
        received come back now (with ``ConnectionClosed`` if the connection ended).
        Ignored once the connection is closed. Drain ``data_to_send()`` afterwards.
        """
        if self._state is ConnState.CLOSED:
            return self._take_report()
        if self._http is None or not self._http.pending:
            raise LocalProtocolError("respond() without an HTTP request to answer")
        raw = body if body is None or isinstance(body, bytes) else protocol.encode_body(body)
        events: list[ServerEvent] = []
        self._write_response(status, raw, content_type, headers, events, now)
        return events

    def respond_error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        now: float,
        headers: Sequence[tuple[str, str]] = (),
    ) -> list[ServerEvent]:
        """``respond()`` with the contract's error body ``{"error": {code, message}}``."""
        return self.respond(status, protocol.ErrorBody.of(code, message), now=now, headers=headers)

    def accept_upgrade(self, now: float) -> list[ServerEvent]:
        """Answer the pending ``UpgradeRequest`` with 101: the WebSocket is open and the
        hello timer runs. Returns the events of bytes that came after the request
        (e.g. a pipelined hello). Drain ``data_to_send()`` afterwards."""
        if self._state is not ConnState.UPGRADING:
            raise LocalProtocolError("accept_upgrade() without a pending upgrade request")
        assert self._http is not None
        leftover = self._http.accept_upgrade()
        self._http = None
        self._move(Trigger.ACCEPT)
        self._start_ws(now)
        self._hello_deadline = now + self._config.hello_timeout
        self._next_ping = now + self._config.ping_interval
        if leftover:
            return self._receive_ws(leftover)
        return []

    # --- WebSocket frames in -----------------------------------------------------------

    def _on_text(self, text: str, events: list[Any]) -> None:
        state = self._state
        if state is _OPEN or state is ConnState.AUTHENTICATING:
            try:
                frame = protocol.decode_client_frame(text)
            except protocol.ProtocolViolation as exc:
                if exc.ref is not None and exc.code in _HOST_ANSWERS:
                    # a send with a usable id: the host answers, since a repeat of an id
                    # already stored gets its original ack whatever its body
                    events.append(SendRefused(id=exc.ref, code=exc.code, message=exc.message))
                else:
                    self._frame_error(events, exc.code, exc.message, exc.ref)
                return
            if type(frame) is protocol.Hello:
                self._frame_error(events, "invalid_frame", "hello was already received", None)
            else:
                events.append(frame)
        elif state is ConnState.AWAITING_HELLO:
            self._before_hello(text, events)
        # CLOSING: the peer's last words are ignored.

    def _before_hello(self, text: str, events: list[Any]) -> None:
        now = self._last_rx
        try:
            frame = protocol.decode_client_frame(text)
        except protocol.ProtocolViolation as exc:
            if protocol.peek_type(text) in (None, protocol.Hello.TYPE):
                # not a frame at all, or a malformed hello: say so and keep waiting
                self._frame_error(events, exc.code, exc.message, exc.ref)
            else:  # a frame of another type (known or not) before hello
                self._refuse_before_hello(events, now)
            return
        if type(frame) is not protocol.Hello:
            self._refuse_before_hello(events, now)
            return
        match = _VERSION_RE.fullmatch(frame.protocol)
        if match is None or int(match[1]) != limits.PROTOCOL_MAJOR:
            message = f"protocol {frame.protocol[:20]!r} is not supported; this server speaks 1.x"
            self._frame_error(events, "unsupported_protocol", message, None)
            self._send_close(limits.CLOSE_UNSUPPORTED_PROTOCOL, "unsupported protocol", now)
            return
        self._move(Trigger.HELLO)
        events.append(frame)

    def _refuse_before_hello(self, events: list[Any], now: float) -> None:
        self._frame_error(events, "hello_required", "the first frame must be hello", None)
        self._send_close(limits.CLOSE_POLICY, "hello required", now)

    def _frame_error(self, events: list[Any], code: str, message: str, ref: str | None) -> None:
        events.append(FrameRejected(code=code, ref=ref))
        self._send_text(protocol.encode_frame(protocol.Error(code=code, message=message, ref=ref)))

    def _on_binary(self, events: list[Any]) -> None:
        self._frame_error(events, "invalid_frame", "frames must be text (JSON)", None)

    def _on_too_big(self, events: list[Any]) -> None:
        events.append(FrameRejected(code="too_large"))

    # --- frames out --------------------------------------------------------------------

    def _send_text(self, text: str) -> None:
        """One text frame, built by :func:`libchat.frames.text_frame` instead of by
        wsproto while the WebSocket is open (on every ack, push and receipt: wsproto's
        general path costs several times as much). Outside the open state wsproto still
        decides (it refuses data after a close)."""
        if self._fast_frames and self._ws_open():
            self._out.append(text_frame(text.encode()))
        else:
            super()._send_text(text)

    def send(self, frame: protocol.ServerFrame, now: float) -> None:
        """Send one frame, as :data:`libchat.states.SENDS` allows: ``Welcome`` (or an
        ``Error``) answers the hello and opens the connection; other frames need it open.
        Dropped silently once the connection is closing. Drain ``data_to_send()``
        afterwards."""
        kind = type(frame)
        outgoing = _OUTGOING.get(kind, _FRAME)
        if outgoing in self._sendable or self._may_send(outgoing, kind.__name__):
            self._send_text(protocol.encode_frame(frame))
            if outgoing is _WELCOME:
                self._move(Trigger.WELCOME)

    def send_encoded(self, text: str, now: float) -> None:
        """``send()`` for a frame already encoded with ``protocol.encode_frame`` (one
        push encoded once, sent to many connections). Needs an open connection."""
        if _FRAME in self._sendable or self._may_send(_FRAME, "an encoded frame"):
            self._send_text(text)

    def fail(self, code: str, close_code: int, *, now: float, message: str | None = None) -> None:
        """Send an error frame with ``code``, then close with ``close_code`` (e.g.
        ``unauthorized`` and 4001): wherever a close frame may go out. Drain
        ``data_to_send()`` afterwards."""
        if self._may_send(Outgoing.CLOSE, "a close (fail())"):
            self._send_text(protocol.encode_frame(protocol.Error(code=code, message=message)))
            self._send_close(close_code, code, now)

    # --- timers ----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` should next be called, or ``None``."""
        state = self._state
        config = self._config
        if state is _OPEN or state is ConnState.AUTHENTICATING:
            return min(self._next_ping, self._last_rx + config.idle_timeout)
        if state is ConnState.AWAITING_HELLO:
            return min(self._hello_deadline, self._next_ping, self._last_rx + config.idle_timeout)
        if state is ConnState.CLOSING:
            return self._close_deadline
        http = self._http
        if state is ConnState.HTTP and http is not None and not http.pending:
            started = http.request_started
            if started is not None:
                return started + config.request_timeout
            return self._last_rx + config.keepalive_timeout
        if state is ConnState.CLOSED:
            return self._report_at
        return None  # UPGRADING, or HTTP with a request the host is answering

    def handle_timer(self, now: float) -> list[ServerEvent]:
        """Do what is due at ``now``: ping, time out, give up on a close. Drain
        ``data_to_send()`` afterwards."""
        state = self._state
        config = self._config
        if state is ConnState.CLOSING:
            return self._closing_timer(now)
        if state in self._live:
            if state is ConnState.AWAITING_HELLO and now >= self._hello_deadline:
                self._send_close(limits.CLOSE_HELLO_TIMEOUT, "hello timeout", now)
            elif now >= self._last_rx + config.idle_timeout:
                self._send_close(limits.CLOSE_NORMAL, "idle timeout", now)
            elif now >= self._next_ping:
                if self._fast_frames and self._ws_open():
                    self._out.append(_PING_FRAME)  # what wsproto writes, without making it
                else:
                    self._out.append(self._wsproto().send(_PING))
                self._next_ping = now + config.ping_interval
            return []
        events: list[ServerEvent] = []
        if state is ConnState.CLOSED:
            return self._take_report()
        http = self._http
        if state is ConnState.HTTP and http is not None and not http.pending:
            started = http.request_started
            if started is None:
                if now >= self._last_rx + config.keepalive_timeout:
                    self._end(events, None, "keep-alive timeout", now)
            elif now >= started + config.request_timeout:
                self._request_timed_out(events, now)
        return events

    def _request_timed_out(self, events: list[ServerEvent], now: float) -> None:
        """A request not whole within ``request_timeout``: 408 when its head is in (h11
        can answer only a parsed request), then close; a bare close otherwise."""
        http = self._http
        assert http is not None
        self._set_cause(None, "request timeout")
        if http.has_head:
            timeout = self._config.request_timeout
            message = f"the request did not arrive whole within {timeout:g} s"
            self._reject(events, Rejection(408, "request_timeout", message), now)
        else:
            self._end(events, None, "request timeout", now)
