"""The server side of one connection: bytes in, events and bytes out.

HTTP/1.1 goes through h11: each request becomes one typed event (``LoginRequest``,
``UpgradeRequest``...) that the host answers with :meth:`ServerConnection.respond` (or
:meth:`~ServerConnection.accept_upgrade`); faults the engine can judge alone (unknown
path, wrong method, oversize or malformed request, missing bearer token, bad query) it
answers itself and reports as ``RequestRejected``. Which paths exist, and the parser of
each, is the router's to say (``ServerConfig.router``, see :mod:`libchat.requests`).
After the upgrade, wsproto parses frames and the client's JSON frames come out as the
protocol classes.

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
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qs

import attrs
import h11
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import Ping
from wsproto.utilities import generate_accept_token

from libchat import limits, protocol
from libchat._engine import Engine
from libchat.events import (
    ConnectionClosed,
    FrameRejected,
    HttpRequestEvent,
    RequestRejected,
    SendRefused,
    UpgradeRequest,
)
from libchat.frames import text_frame
from libchat.requests import CONTRACT_ROUTER, HttpRequest, Rejection, Router
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
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_PING: Final = Ping(payload=b"")
# The client's h11 states after which the engine answers and then closes: a refused
# upgrade proposal, a malformed request, a body left unread (413).
_MIGHT_SWITCH: Final = h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]  # not in __all__
_HANG_UP_AFTER: Final = frozenset({_MIGHT_SWITCH, h11.ERROR, h11.SEND_BODY})
_WS_OPEN: Final = ConnectionState.OPEN  # wsproto's open state, read once (hot path)


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

    def __init__(self, config: ServerConfig, rng: random.Random, now: float) -> None:
        super().__init__(
            max_frame_bytes=config.max_frame_bytes,
            close_timeout=config.close_timeout,
            fast_frames=config.fast_frames,
            now=now,
        )
        self._config = config
        self._router = config.router
        self._rng = rng  # the server engine draws nothing random today
        self._h11: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=config.max_header_bytes
        )
        self._server_header = config.server_header.encode("latin-1")
        # the HTTP request being read, then the one handed to the host
        self._head: h11.Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._pending = False  # a request was handed to the host and awaits its answer
        self._ws_key = b""
        # bytes a pipelining client may send while a request awaits its answer
        self._max_buffered = config.max_header_bytes + config.max_body_bytes
        self._buffered = 0
        # when the first byte of the request being read arrived; None between requests
        self._request_started: float | None = None
        self._hello_deadline = 0.0
        self._next_ping = 0.0

    # --- input: receive_data() and receive_eof() are the base class's -------------------

    # --- HTTP ----------------------------------------------------------------------------

    def _receive_http(self, data: bytes, now: float) -> list[Any]:
        h = self._h11
        assert h is not None
        events: list[Any] = []
        if self._pending:
            # One request at a time: keep later ones in h11's buffer, within bounds.
            self._buffered += len(data)
            if self._buffered > self._max_buffered:
                self._end(events, None, "too much pipelined data", now)
            else:
                h.receive_data(data)
            return events
        if self._request_started is None:
            self._request_started = now
        h.receive_data(data)
        self._parse_http(events, now)
        return events

    def _parse_http(self, events: list[Any], now: float) -> None:
        h = self._h11
        assert h is not None
        max_body = self._config.max_body_bytes
        while self._state is ConnState.HTTP and not self._pending:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                self._reject(events, 400, "bad_request", f"malformed HTTP request: {exc}", now)
                return
            kind = type(event)
            if kind is h11.Data:
                assert isinstance(event, h11.Data)
                self._body_size += len(event.data)
                if self._body_size > max_body:
                    self._reject_too_large(events, now)
                    return
                self._body.append(event.data)
            elif kind is h11.Request:
                assert isinstance(event, h11.Request)
                self._head = event
                self._body = []
                self._body_size = 0
                # h11 bounds only a head that is still incomplete; one that arrived
                # whole in a single read is measured here.
                if _head_size(event) > self._config.max_header_bytes:
                    message = f"the request head is over {self._config.max_header_bytes} bytes"
                    self._reject(events, 400, "bad_request", message, now)
                    return
                length = _content_length(event)
                if length is not None and length > max_body:
                    self._reject_too_large(events, now)
                    return
                if h.they_are_waiting_for_100_continue:
                    continue_ = h11.InformationalResponse(status_code=100, headers=[])
                    self._out.append(h.send(continue_) or b"")
            elif kind is h11.EndOfMessage:
                self._dispatch(events, now)
            else:  # NEED_DATA (PAUSED and ConnectionClosed cannot come: see the loop guard)
                if self._request_started is None and h.trailing_data[0]:
                    # after an answer: part of a pipelined request is already here (h11
                    # holds at most an unfinished head, so the copy is small)
                    self._request_started = now
                return

    def _reject_too_large(self, events: list[Any], now: float) -> None:
        message = f"the body is over {self._config.max_body_bytes} bytes"
        self._reject(events, 413, "too_large", message, now)

    def _dispatch(self, events: list[Any], now: float) -> None:
        h = self._h11
        head = self._head
        assert h is not None and head is not None
        target = head.target.decode("ascii")
        path, _, query = target.partition("?")
        body = b"".join(self._body)
        self._body = []
        try:
            found = self._router.match(path)
            if found is None:
                raise Rejection(404, "not_found", f"no such path: {path[:100]}")
            route, params = found
            method = route.method
            if head.method != method:
                raise Rejection(
                    405,
                    "method_not_allowed",
                    f"{path} takes {method.decode()}",
                    (("Allow", method.decode()),),
                )
            request = HttpRequest(
                method=head.method,
                path=path,
                params=params,
                query=parse_qs(query, keep_blank_values=True),
                headers=_header_lists(head.headers),
                body=body,
                proposes_upgrade=h.their_state is _MIGHT_SWITCH,
            )
            event = route.parser(request)
        except Rejection as rejection:
            self._reject(
                events, rejection.status, rejection.code, rejection.message, now, rejection.headers
            )
            return
        if type(event) is UpgradeRequest:
            self._ws_key = request.header(b"sec-websocket-key") or b""
            self._move(Trigger.UPGRADE)
        self._pending = True
        self._buffered = 0
        events.append(event)

    def _reject(
        self,
        events: list[Any],
        status: int,
        code: str,
        message: str,
        now: float,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Answer the current request with an error the engine chose itself."""
        events.append(RequestRejected(status=status, code=code))
        body = protocol.encode_body(protocol.ErrorBody.of(code, message))
        self._write_response(status, body, "application/json", headers, events, now)

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
        h = self._h11
        assert h is not None
        head = self._head
        upgrading = self._state is ConnState.UPGRADING
        # After a refused upgrade, a malformed request or an unread body: hang up.
        must_close = upgrading or h.their_state in _HANG_UP_AFTER
        headers: list[tuple[bytes, bytes]] = [(b"server", self._server_header)]
        if body is not None:
            headers.append((b"content-type", content_type.encode("latin-1")))
            headers.append((b"content-length", str(len(body)).encode()))
        elif status not in _NO_BODY_STATUSES:
            headers.append((b"content-length", b"0"))
        if must_close:
            headers.append((b"connection", b"close"))
        headers.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in extra)
        try:
            response = h11.Response(status_code=status, headers=headers, reason=_phrase(status))
        except h11.LocalProtocolError as exc:  # the host's status or headers
            raise LocalProtocolError(f"cannot send this response: {exc}") from None
        out = self._out
        out.append(h.send(response) or b"")
        if body and (head is None or head.method != b"HEAD"):  # HEAD: the headers only
            out.append(h.send(h11.Data(data=body)) or b"")
        out.append(h.send(h11.EndOfMessage()) or b"")
        self._pending = False
        self._head = None
        self._last_rx = now  # the keep-alive clock restarts with each answer
        self._request_started = None
        if upgrading:
            self._end(events, None, "upgrade refused", now, Trigger.REFUSE)
        elif h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            self._parse_http(events, now)
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
        if not self._pending:
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
        h = self._h11
        assert h is not None
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(self._ws_key)),
            (b"server", self._server_header),
        ]
        self._out.append(h.send(h11.InformationalResponse(status_code=101, headers=headers)) or b"")
        leftover = h.trailing_data[0]
        self._h11 = None
        self._pending = False
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
        ws = self._ws
        assert ws is not None
        if ws.state is not _WS_OPEN or not self._fast_frames:
            super()._send_text(text)
            return
        self._out.append(text_frame(text.encode()))

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
        if state is ConnState.HTTP and not self._pending:
            started = self._request_started
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
                assert self._ws is not None
                self._out.append(self._ws.send(_PING))
                self._next_ping = now + config.ping_interval
            return []
        events: list[ServerEvent] = []
        if state is ConnState.CLOSED:
            return self._take_report()
        if state is ConnState.HTTP and not self._pending:
            started = self._request_started
            if started is None:
                if now >= self._last_rx + config.keepalive_timeout:
                    self._end(events, None, "keep-alive timeout", now)
            elif now >= started + config.request_timeout:
                self._request_timed_out(events, now)
        return events

    def _request_timed_out(self, events: list[ServerEvent], now: float) -> None:
        """A request not whole within ``request_timeout``: 408 when h11 has its head (it
        can answer only a parsed request), then close; a bare close otherwise."""
        h = self._h11
        assert h is not None
        self._set_cause(None, "request timeout")
        if h.their_state is h11.SEND_BODY:
            timeout = self._config.request_timeout
            message = f"the request did not arrive whole within {timeout:g} s"
            self._reject(events, 408, "request_timeout", message, now)
        else:
            self._end(events, None, "request timeout", now)


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _header_lists(headers: Any) -> dict[bytes, list[bytes]]:
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        found.setdefault(name, []).append(value)
    return found


def _head_size(request: h11.Request) -> int:
    """About the size of a request head on the wire."""
    size = len(request.method) + len(request.target) + 12
    for name, value in request.headers:
        size += len(name) + len(value) + 4
    return size


def _content_length(request: h11.Request) -> int | None:
    """The declared body length of a request (h11 has validated the header), or None
    for a chunked or bodiless request."""
    length = None
    for name, value in request.headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            length = int(value)
    return length
