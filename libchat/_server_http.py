"""The HTTP/1.1 phase of a server connection, before any upgrade: h11 underneath.

:class:`RequestReader` reads one request at a time (head and body, within the size
limits) and turns it, through the router, into the event the host answers, or into a
:class:`~libchat.requests.Rejection` the engine answers itself; it writes responses and
the 101 that ends the phase. It keeps no connection state and reads no clock: the
server engine (:mod:`libchat.server`) decides what each outcome means for the
connection, and its timers.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qs

import h11
from wsproto.utilities import generate_accept_token

from libchat.events import HttpRequestEvent, UpgradeRequest
from libchat.requests import HttpRequest, Rejection, Router
from libchat.states import LocalProtocolError

__all__ = ["RequestReader"]

_NO_BODY_STATUSES: Final = frozenset({204, 304})
# The client's h11 states after which the engine answers and then closes: a refused
# upgrade proposal, a malformed request, a body left unread (413).
_MIGHT_SWITCH: Final = h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]  # not in __all__
_HANG_UP_AFTER: Final = frozenset({_MIGHT_SWITCH, h11.ERROR, h11.SEND_BODY})


class RequestReader:
    """Server-side HTTP/1.1 over one h11 connection. Output goes to ``out`` (the
    engine's buffer). One request is handed over at a time (``pending``); bytes of
    pipelined ones wait in h11's buffer, at most ``max_header_bytes + max_body_bytes``."""

    def __init__(
        self,
        *,
        router: Router,
        max_body_bytes: int,
        max_header_bytes: int,
        server_header: str,
        out: list[bytes],
    ) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self._router = router
        self._max_body = max_body_bytes
        self._max_header = max_header_bytes
        self._server_header = server_header.encode("latin-1")
        self._out = out
        # the request being read, then the one handed to the host
        self._head: h11.Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self.pending = False  # a request was handed over and awaits its answer
        self.ws_key = b""  # the Sec-WebSocket-Key of the upgrade request handed over
        # bytes a pipelining client may send while a request awaits its answer
        self._max_buffered = max_header_bytes + max_body_bytes
        self._buffered = 0
        # when the first byte of the request being read arrived; None between requests
        self.request_started: float | None = None

    @property
    def has_head(self) -> bool:
        """Whether the head of the request being read is in (h11 can answer it)."""
        return self._h11.their_state is h11.SEND_BODY

    def hold(self, data: bytes) -> bool:
        """Keep bytes that came while a request is pending; False when over the bound."""
        self._buffered += len(data)
        if self._buffered > self._max_buffered:
            return False
        self._h11.receive_data(data)
        return True

    def receive(self, data: bytes, now: float) -> None:
        """Feed bytes of the request being read (none is pending)."""
        if self.request_started is None:
            self.request_started = now
        self._h11.receive_data(data)

    def next_request(self, now: float) -> HttpRequestEvent | Rejection | None:
        """The next whole request as the router's event (now ``pending``), a
        ``Rejection`` to answer, or None until more bytes come."""
        h = self._h11
        max_body = self._max_body
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                return Rejection(400, "bad_request", f"malformed HTTP request: {exc}")
            kind = type(event)
            if kind is h11.Data:
                assert isinstance(event, h11.Data)
                self._body_size += len(event.data)
                if self._body_size > max_body:
                    return self._too_large()
                self._body.append(event.data)
            elif kind is h11.Request:
                assert isinstance(event, h11.Request)
                self._head = event
                self._body = []
                self._body_size = 0
                # h11 bounds only a head that is still incomplete; one that arrived
                # whole in a single read is measured here.
                if _head_size(event) > self._max_header:
                    message = f"the request head is over {self._max_header} bytes"
                    return Rejection(400, "bad_request", message)
                length = _content_length(event)
                if length is not None and length > max_body:
                    return self._too_large()
                if h.they_are_waiting_for_100_continue:
                    continue_ = h11.InformationalResponse(status_code=100, headers=[])
                    self._out.append(h.send(continue_) or b"")
            elif kind is h11.EndOfMessage:
                return self._route()
            else:  # NEED_DATA (PAUSED and ConnectionClosed cannot come: one at a time)
                if self.request_started is None and h.trailing_data[0]:
                    # after an answer: part of a pipelined request is already here (h11
                    # holds at most an unfinished head, so the copy is small)
                    self.request_started = now
                return None

    def _too_large(self) -> Rejection:
        return Rejection(413, "too_large", f"the body is over {self._max_body} bytes")

    def _route(self) -> HttpRequestEvent | Rejection:
        """The whole request, through the router."""
        head = self._head
        assert head is not None
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
                proposes_upgrade=self._h11.their_state is _MIGHT_SWITCH,
            )
            event = route.parser(request)
        except Rejection as rejection:
            return rejection
        if type(event) is UpgradeRequest:
            self.ws_key = request.header(b"sec-websocket-key") or b""
        self.pending = True
        self._buffered = 0
        return event

    def respond(
        self,
        status: int,
        body: bytes | None,
        content_type: str,
        extra: Sequence[tuple[str, str]],
        *,
        refusing_upgrade: bool,
    ) -> bool:
        """Send one whole response to the current request; True when the connection
        stays open for the next one. Raises :class:`LocalProtocolError` for a status
        or headers h11 refuses (nothing is sent then)."""
        h = self._h11
        head = self._head
        # After a refused upgrade, a malformed request or an unread body: hang up.
        must_close = refusing_upgrade or h.their_state in _HANG_UP_AFTER
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
        self.pending = False
        self._head = None
        self.request_started = None
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            return True
        return False

    def accept_upgrade(self) -> bytes:
        """Send the 101 for the pending upgrade; returns the bytes that came after the
        request (the WebSocket's first). The reader is done after this."""
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(self.ws_key)),
            (b"server", self._server_header),
        ]
        h = self._h11
        self._out.append(h.send(h11.InformationalResponse(status_code=101, headers=headers)) or b"")
        self.pending = False
        return h.trailing_data[0]


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
