"""The HTTP/1.1 phase of a client connection, before any upgrade: h11 underneath.

:class:`HttpCalls` queues requests, sends them one at a time (the next after the
previous response), reads each response into an ``HttpResponse`` with a typed body, and
checks the 101 that ends the phase. It keeps no connection state: the client engine
(:mod:`libchat.client`) says what each outcome means for the connection.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Final

import attrs
import h11
from wsproto.utilities import generate_accept_token

from libchat import protocol
from libchat.events import HttpResponse
from libchat.states import LocalProtocolError

__all__ = ["RAW", "Answer", "HttpCalls", "Switched"]

# The engine's own logger: what it drops is logged under libchat.client.
_log = logging.getLogger("libchat.client")

RAW: Final = object()  # the response body is handed over as bytes (/metrics)


@attrs.frozen
class _Call:
    """One queued request and how to read its answer."""

    request: h11.Request
    body: bytes
    result: object  # the success body class, RAW, or None (no body expected)
    ws_key: bytes | None = None  # set for the upgrade request
    is_health: bool = False  # /healthz answers 503 with a Health body


@attrs.frozen
class Answer:
    """A whole response to the request in flight."""

    response: HttpResponse
    refused_upgrade: bool  # it answered the upgrade request (with another status than 101)
    keep_alive: bool  # the connection stays open for the next request


@attrs.frozen
class Switched:
    """A good 101 to the upgrade request: the WebSocket's first bytes follow."""

    leftover: bytes  # bytes that came after the 101


class HttpCalls:
    """Client-side HTTP/1.1 over one h11 connection; requests go to ``out`` (the
    engine's buffer)."""

    def __init__(
        self, *, host: str, user_agent: str, max_response_bytes: int, out: list[bytes]
    ) -> None:
        self._h11 = h11.Connection(h11.CLIENT)
        self._host = host
        self._user_agent = user_agent
        self._max_response = max_response_bytes
        self._out = out
        self._queue: deque[_Call] = deque()
        self._inflight: _Call | None = None
        self.upgrade_queued = False  # the upgrade request is queued or in flight
        # the response being read
        self._status = 0
        self._headers: tuple[tuple[str, str], ...] = ()
        self._body: list[bytes] = []
        self._body_size = 0

    def queue(
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
        """Queue one request (send it with :meth:`send_next`). ``result``: the body class
        of a success, ``RAW`` or None; ``ws_key`` marks the upgrade request."""
        headers = [("host", self._host), ("user-agent", self._user_agent)]
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
        if ws_key is not None:
            self.upgrade_queued = True

    def send_next(self) -> bool:
        """Send the next queued request unless one is in flight; True when that was the
        upgrade request."""
        if self._inflight is not None or not self._queue:
            return False
        h = self._h11
        call = self._inflight = self._queue.popleft()
        out = self._out
        out.append(h.send(call.request) or b"")
        if call.body:
            out.append(h.send(h11.Data(data=call.body)) or b"")
        out.append(h.send(h11.EndOfMessage()) or b"")
        return call.ws_key is not None

    def receive(self, data: bytes) -> None:
        """Feed bytes from the server; ``b""`` is the end of the stream."""
        self._h11.receive_data(data)

    def next_response(self) -> Answer | Switched | str | None:
        """The next whole response (``Answer``), the 101 (``Switched``), the reason the
        connection must end (``str``), or None until more bytes come."""
        h = self._h11
        limit = self._max_response
        while True:
            if self._inflight is None and h.their_state is h11.IDLE:
                return "response without a request" if h.trailing_data[0] else None
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                return f"malformed HTTP response: {exc}"
            if isinstance(event, h11.Data):
                self._body_size += len(event.data)
                if self._body_size > limit:
                    return "response body too large"
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
                return self._finish()
            elif isinstance(event, h11.InformationalResponse):
                if h.our_state is h11.SWITCHED_PROTOCOL:
                    return self._switch(event)
                # 100 Continue and friends: the real answer follows
            else:  # NEED_DATA, PAUSED; ConnectionClosed cannot come with a request out
                return None

    def _finish(self) -> Answer:
        h = self._h11
        call = self._inflight
        assert call is not None
        self._inflight = None
        raw = b"".join(self._body)
        self._body = []
        response = HttpResponse(
            status=self._status, body=self._decode(call, raw), headers=self._headers
        )
        refused_upgrade = call.ws_key is not None
        if refused_upgrade:
            self.upgrade_queued = False
        keep_alive = h.our_state is h11.DONE and h.their_state is h11.DONE
        if keep_alive:
            h.start_next_cycle()
        return Answer(response, refused_upgrade, keep_alive)

    def _decode(self, call: _Call, raw: bytes) -> Any:
        status = self._status
        if 200 <= status < 300:
            if call.result is None or not raw:
                return None
            if call.result is RAW:
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

    def _switch(self, response: h11.InformationalResponse) -> Switched | str:
        call = self._inflight
        assert call is not None and call.ws_key is not None
        headers: dict[bytes, bytes] = dict(response.headers)
        if headers.get(b"sec-websocket-accept") != generate_accept_token(call.ws_key):
            return "bad Sec-WebSocket-Accept in the 101 response"
        if headers.get(b"upgrade", b"").lower() != b"websocket":
            return "the 101 response does not upgrade to websocket"
        if b"sec-websocket-extensions" in headers or b"sec-websocket-protocol" in headers:
            return "the server chose an extension or subprotocol"
        self._inflight = None
        return Switched(self._h11.trailing_data[0])
