"""One ``asyncio.Protocol`` per socket around a libchat server engine: glue only.

Bytes go into the engine; its events go to the HTTP API or the hub; whatever the engine
wants to write leaves through one ``transport.write`` per connection per loop turn
(output is coalesced: many pushes in one turn become one write). The engine's single
deadline drives one timer per connection.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chatd.accounts import Identity
from chatd.admission import address_key
from chatd.observe.logs import EventLogger
from chatd.reply import Reply
from libchat import events as ev
from libchat import limits, protocol
from libchat.server import ServerConnection

if TYPE_CHECKING:
    from chatd.app import Server

import logging

log = EventLogger(logging.getLogger(__name__))

# Each HTTP request event, with the route template it is counted under in /metrics.
_ROUTES: dict[type, str] = {
    ev.RegisterRequest: "/v1/register",
    ev.LoginRequest: "/v1/login",
    ev.LogoutRequest: "/v1/logout",
    ev.RefreshRequest: "/v1/token/refresh",
    ev.UserSearchRequest: "/v1/users",
    ev.ConversationsRequest: "/v1/conversations",
    ev.HistoryRequest: "/v1/conversations/{peer}/messages",
    ev.HealthRequest: "/healthz",
    ev.MetricsRequest: "/metrics",
}
_HTTP_EVENTS = tuple(_ROUTES)
UPGRADE_ROUTE = "/v1/ws"
UNROUTED = "other"  # requests the engine refused before routing them (404, 400, 413...)
_ids = itertools.count(1)
# What a socket over a budget gets before it is closed: no request of its is read.
_REFUSAL_BODY = (
    b'{"error":{"code":"server_busy","message":"too many connections; try again later"}}'
)
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nServer: chatd\r\nRetry-After: 5\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    % len(_REFUSAL_BODY)
) + _REFUSAL_BODY
# A refused socket's request is read and dropped for this long before the socket is
# closed: closing with unread input would reset it, and the client might lose the 503.
REFUSED_LINGER = 1.0  # seconds


class ChatProtocol(asyncio.Protocol):
    """A socket's glue: it is also the hub's :class:`chatd.hub.Session`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.conn_id = next(_ids)
        self.peer_ip = ""
        self.peer_key = ""  # the address the per-address budgets count it under
        self.peer = ""
        self.upgrade_token: str | None = None
        self.identity: Identity | None = None
        self.is_websocket = False
        self.conn: ServerConnection
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_queued = False
        self._paused_since: float | None = None
        self._drained: asyncio.Event | None = None
        self._opened_at = 0.0
        self._closed = False
        self._refused = False  # over a budget: answered 503, never counted
        self._admitted = False  # counted by the server's Admission until _finish

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and peername:
            self.peer_ip = str(peername[0])
            self.peer = f"{peername[0]}:{peername[1]}"
        self.peer_key = address_key(self.peer_ip)
        refused = self.server.admission.accept(self.peer_ip, self.peer_key, self)
        if refused is not None:
            self._refuse(refused)
            return
        self._admitted = True
        now = self.loop.time()
        self._opened_at = now
        self.conn = ServerConnection(self.server.engine_config, self.server.rng, now)
        self.server.connections[self.conn_id] = self
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._handle(self.conn.receive_data(data, self.loop.time()))
        self.flush()

    def eof_received(self) -> bool | None:
        if self._refused:
            return None
        self._handle(self.conn.receive_eof(self.loop.time()))
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        if not self.conn.is_closed:
            self._handle(self.conn.receive_eof(self.loop.time()))
        self._finish()

    def pause_writing(self) -> None:
        self._paused_since = self.loop.time()
        self.server.paused[self.conn_id] = self

    def resume_writing(self) -> None:
        self._paused_since = None
        self.server.paused.pop(self.conn_id, None)
        if self._drained is not None:
            self._drained.set()
            self._drained = None

    def _refuse(self, budget: str) -> None:
        """Answer 503 without reading a request, and close soon (see REFUSED_LINGER)."""
        self._refused = True
        self.server.refused_connection(budget, self.peer_ip)
        transport = self.transport
        assert transport is not None
        transport.write(_REFUSAL)
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(REFUSED_LINGER, transport.close)

    # --- events -------------------------------------------------------------------------

    def _handle(self, events: Sequence[object]) -> None:
        frames: list[object] = []
        for event in events:
            if isinstance(event, _HTTP_EVENTS):
                self.server.spawn(self._answer(event))
            elif isinstance(event, ev.UpgradeRequest):
                self.server.admit_upgrade(functools.partial(self._start_upgrade, event))
            elif isinstance(event, ev.ConnectionClosed):
                self._closed_event(event)
            elif isinstance(event, ev.RequestRejected):
                self.server.metrics.errors_total.labels(code=event.code).inc()
                self._count_request(UNROUTED, event.status)
            elif isinstance(event, ev.FrameRejected):
                self.server.metrics.errors_total.labels(code=event.code).inc()
            else:
                frames.append(event)
        if frames:
            self.server.hub.receive(self, frames)

    async def _answer(self, request: object) -> None:
        reply = await self.server.api.handle(request, self.peer_ip)
        self._count_request(_ROUTES[type(request)], reply.status)
        self.respond(reply)

    def _count_request(self, route: str, status: int) -> None:
        self.server.metrics.http_requests_total.labels(route=route, status=str(status)).inc()

    def respond(self, reply: Reply) -> None:
        if self.conn.is_closed:
            return
        if reply.status >= 400 and isinstance(reply.body, protocol.ErrorBody):
            self.server.metrics.errors_total.labels(code=reply.body.error.code).inc()
        more = self.conn.respond(
            reply.status, reply.body, now=self.loop.time(), headers=reply.headers,
            content_type=reply.content_type,
        )
        self._handle(more)
        self.flush()

    def _start_upgrade(self, request: ev.UpgradeRequest) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.server.spawn(self._upgrade(request))

    async def _upgrade(self, request: ev.UpgradeRequest) -> None:
        reply = await self.server.api.check_upgrade(request, self.peer_ip)
        if reply is not None:
            self._count_request(UPGRADE_ROUTE, reply.status)
            self.respond(reply)
            return
        self._count_request(UPGRADE_ROUTE, 101)
        self.upgrade_token = request.token
        self.is_websocket = True
        self.server.websockets += 1
        self.server.metrics.connections.inc()
        log.info("connection.open", conn_id=self.conn_id, peer=self.peer)
        self._handle(self.conn.accept_upgrade(self.loop.time()))
        self.flush()

    def _closed_event(self, event: ev.ConnectionClosed) -> None:
        if self._closed:
            return
        self._closed = True
        if self.is_websocket:
            self.server.hub.disconnected(self)
            self.server.websockets -= 1
            self.server.metrics.connections.dec()
            user = self.identity.user.username if self.identity else None
            log.info(
                "connection.close", conn_id=self.conn_id, peer=self.peer, user=user,
                duration_s=round(self.loop.time() - self._opened_at, 3), close_code=event.code,
            )

    # --- the hub's Session interface ---------------------------------------------------

    def signed_in(self, identity: Identity) -> None:
        """The hub accepted this connection's hello: it leaves the anonymous budgets."""
        self.identity = identity
        if self._admitted:
            self.server.admission.signed_in(self.peer_key, self)

    def send_frame(self, frame: protocol.ServerFrame) -> None:
        self.conn.send(frame, self.loop.time())
        self._queue_flush()

    def send_text(self, text: str) -> None:
        self.conn.send_encoded(text, self.loop.time())
        self._queue_flush()

    def fail(self, code: str, close_code: int, message: str | None = None) -> None:
        self.server.metrics.errors_total.labels(code=code).inc()
        self.conn.fail(code, close_code, now=self.loop.time(), message=message)
        self._queue_flush()

    def close(self, code: int, reason: str = "") -> None:
        self.conn.close(code, reason, now=self.loop.time())
        self._queue_flush()

    async def drained(self) -> None:
        if self._flush_queued:
            # Output queued this loop turn is not in the transport yet, so the transport
            # cannot have paused for it: write it now, then look.
            self.flush()
        if self._paused_since is None or self.transport is None or self.transport.is_closing():
            return
        if self._drained is None:
            self._drained = asyncio.Event()
        await self._drained.wait()

    def _queue_flush(self) -> None:
        if not self._flush_queued:
            self._flush_queued = True
            self.server.queue_flush(self)

    def flush(self) -> None:
        """Write what the engine has for the socket, close it when the engine is done,
        and re-arm the timer."""
        self._flush_queued = False
        transport = self.transport
        if transport is None:
            return
        data = self.conn.data_to_send()
        if transport.is_closing():
            # Closed under us: the peer reset it (connection_lost follows in this loop
            # iteration) or we closed it. Nothing more can be written, and writing would
            # raise in the middle of another connection's turn.
            return
        if data:
            transport.write(data)
        if self.conn.is_closed:
            transport.close()
            self._finish()
            return
        self._arm_timer()

    # --- timers and teardown ---------------------------------------------------------

    def _arm_timer(self) -> None:
        deadline = self.conn.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            # A later deadline than the armed one is picked up when the timer fires.
            if deadline is not None and self._timer_at is not None and deadline > self._timer_at:
                return
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.loop.time()
        deadline = self.conn.next_deadline()
        if deadline is not None and deadline <= now:
            self._handle(self.conn.handle_timer(now))
        self.flush()

    def evict(self) -> None:
        """An anonymous socket making room for a newcomer from a less crowded address
        (see chatd.admission): closed at once, whatever it was doing."""
        self._admitted = False  # the budgets forgot it already
        self.server.metrics.connections_refused_total.labels(budget="evicted").inc()
        if self.transport is not None:
            self.transport.abort()

    def abort(self) -> None:
        """Drop a peer that cannot keep up (its messages stay stored for next time)."""
        log.warning("connection.slow_reader", conn_id=self.conn_id, peer=self.peer)
        if self.transport is not None:
            self.transport.abort()

    def paused_for(self, now: float) -> float:
        return 0.0 if self._paused_since is None else now - self._paused_since

    def _finish(self) -> None:
        if self._admitted:
            self._admitted = False
            self.server.admission.closed(self.peer_key, self, anonymous=self.identity is None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._closed:
            lost = ev.ConnectionClosed(code=limits.CLOSE_ABNORMAL, reason="connection lost")
            self._closed_event(lost)
        self.server.connections.pop(self.conn_id, None)
        self.server.paused.pop(self.conn_id, None)
        if self._drained is not None:
            self._drained.set()
            self._drained = None
