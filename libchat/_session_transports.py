"""The session's transport table: which byte streams it asked its host for, the client
engine on each, and how each ends.

A transport is opened for one job: the WebSocket, or one HTTP call (closed once
answered). The table turns engine output into :class:`WriteTransport` and
:class:`CloseTransport` actions, and hands what each transport brings to whoever opened
it: an HTTP call's answer (or why there was none) to its ``on_answer``; a WebSocket's
events and its end to its :class:`WebSocketHandler`. It knows nothing about tokens or
messages.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

import attrs

from libchat._session_types import (
    CloseTransport,
    OpenTransport,
    SessionAction,
    SessionConfig,
    TransportKind,
    WriteTransport,
)
from libchat.client import ClientConfig, ClientConnection, ClientEvent
from libchat.events import ConnectionClosed, HttpResponse

Request = Callable[[ClientConnection, float], None]  # queues an HTTP request on the engine


class WebSocketHandler(Protocol):
    """Who gets what a WebSocket transport brings."""

    def on_events(self, ws: Transport, events: list[ClientEvent], now: float) -> None:
        """Events of one engine call (the table writes the engine's output afterwards)."""

    def on_end(
        self,
        ws: Transport,
        code: int | None,
        reason: str,
        refusal: HttpResponse | None,
        now: float,
    ) -> None:
        """The transport is gone: closed (``code``), broken, timed out, or its upgrade
        refused (``refusal``)."""


@attrs.frozen
class HttpCall:
    """One HTTP call: the request to queue once the transport is open, and who gets
    the answer: ``on_answer(transport, response, reason, now)``, where ``response`` is
    ``None`` when there was none (``reason`` says why)."""

    request: Request
    on_answer: Callable[[Transport, HttpResponse | None, str, float], None]


@attrs.define(eq=False)
class Transport:
    """One transport the session asked for, and the engine on it once it is open."""

    id: int
    deadline: float | None  # give up unless answered (HTTP) or welcomed (WebSocket)
    token: str | None  # the token it authenticates with
    http: HttpCall | None = None  # an HTTP call's transport
    websocket: WebSocketHandler | None = None  # the WebSocket's
    conn: ClientConnection | None = None
    host_closed: bool = False  # the host reported it closed: no CloseTransport


class Transports:
    """The transports of one session, by id; see the module docstring."""

    def __init__(self, config: SessionConfig, rng: random.Random) -> None:
        self._engine_config = ClientConfig(host=config.host, user_agent=config.user_agent)
        self._http_timeout = config.http_timeout
        self._connect_timeout = config.connect_timeout
        self._rng = rng
        self._table: dict[int, Transport] = {}
        self._next_id = 1
        self._actions: list[SessionAction] = []

    def take_actions(self) -> list[SessionAction]:
        """What the host must do now, in order; empties the list."""
        taken = self._actions[:]
        self._actions.clear()
        return taken

    @property
    def is_empty(self) -> bool:
        return not self._table

    def is_live(self, transport: Transport) -> bool:
        """Whether ``transport`` is still in the table (not ended)."""
        return transport.id in self._table

    def next_deadline(self) -> float | None:
        times: list[float] = []
        for transport in self._table.values():
            if transport.deadline is not None:
                times.append(transport.deadline)
            due = transport.conn.next_deadline() if transport.conn is not None else None
            if due is not None:
                times.append(due)
        return min(times) if times else None

    # --- opening ------------------------------------------------------------------------------

    def open_http(self, call: HttpCall, token: str | None, now: float) -> int:
        """Ask for a transport for one HTTP call; returns its id."""
        transport = Transport(
            id=self._next_id, deadline=now + self._http_timeout, token=token, http=call
        )
        self._add(transport)
        return transport.id

    def open_websocket(self, handler: WebSocketHandler, token: str, now: float) -> Transport:
        """Ask for a transport for a WebSocket that authenticates with ``token``."""
        transport = Transport(
            id=self._next_id,
            deadline=now + self._connect_timeout,
            token=token,
            websocket=handler,
        )
        self._add(transport)
        return transport

    def _add(self, transport: Transport) -> None:
        self._next_id += 1
        self._table[transport.id] = transport
        kind: TransportKind = "websocket" if transport.websocket is not None else "http"
        self._actions.append(OpenTransport(id=transport.id, kind=kind))

    # --- what the host reports ----------------------------------------------------------------

    def opened(self, transport_id: int, now: float) -> None:
        transport = self._table.get(transport_id)
        if transport is None or transport.conn is not None:
            return
        conn = transport.conn = ClientConnection(self._engine_config, self._rng)
        if transport.http is not None:
            transport.http.request(conn, now)
        else:
            conn.upgrade(now)
        self.drain(transport, now)

    def received(self, transport_id: int, data: bytes, now: float) -> None:
        transport = self._table.get(transport_id)
        if transport is None or transport.conn is None:
            return
        self._feed(transport, transport.conn.receive_data(data, now), now)

    def closed(self, transport_id: int, now: float, reason: str) -> None:
        transport = self._table.get(transport_id)
        if transport is None:
            return
        transport.host_closed = True
        if transport.conn is not None:
            self._feed(transport, transport.conn.receive_eof(now), now)
        if transport.id in self._table:
            self.end(transport, now, None, reason or "connection failed")

    def handle_timer(self, now: float) -> None:
        """Give up on transports past their deadline; fire the engines' timers."""
        for transport in list(self._table.values()):
            if transport.id not in self._table:
                continue  # ended by what an earlier one did
            if transport.deadline is not None and now >= transport.deadline:
                self.end(transport, now, None, "timed out")
                continue
            conn = transport.conn
            due = conn.next_deadline() if conn is not None else None
            if conn is not None and due is not None and now >= due:
                self._feed(transport, conn.handle_timer(now), now)

    # --- moving output, ending ------------------------------------------------------------------

    def _feed(self, transport: Transport, events: list[ClientEvent], now: float) -> None:
        """Hand what one engine call returned to the transport's owner, then write."""
        if transport.websocket is not None:
            transport.websocket.on_events(transport, events, now)
        else:
            for event in events:
                if transport.id not in self._table:
                    break
                if isinstance(event, HttpResponse):
                    self.end(transport, now, None, "answered", event)
                elif isinstance(event, ConnectionClosed):
                    self.end(transport, now, event.code, event.reason)
        self.drain(transport, now)

    def drain(self, transport: Transport, now: float) -> None:
        """Hand the engine's output to the host; end the transport if the engine did."""
        conn = transport.conn
        if conn is None or transport.id not in self._table:
            return
        data = conn.data_to_send()
        if data and not transport.host_closed:
            self._actions.append(WriteTransport(id=transport.id, data=data))
        if conn.is_closed:
            self.end(transport, now, conn.close_code, conn.close_reason)

    def end(
        self,
        transport: Transport,
        now: float,
        code: int | None,
        reason: str,
        response: HttpResponse | None = None,
    ) -> None:
        """The transport is over: tell the host (unless it told us), then its owner."""
        if self._table.pop(transport.id, None) is None:
            return
        conn = transport.conn
        if not transport.host_closed:
            data = conn.data_to_send() if conn is not None else b""
            if data:
                self._actions.append(WriteTransport(id=transport.id, data=data))
            self._actions.append(CloseTransport(id=transport.id))
        if transport.http is not None:
            answer = "" if response is not None else reason
            transport.http.on_answer(transport, response, answer, now)
        else:
            assert transport.websocket is not None
            transport.websocket.on_end(transport, code, reason, response, now)

    def end_http(self, reason: str, now: float) -> None:
        """End every HTTP call at once (their owners hear ``reason``)."""
        for transport in list(self._table.values()):
            if transport.http is not None:
                self.end(transport, now, None, reason)
