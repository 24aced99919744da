"""One ``asyncio.Protocol`` per socket around a libchat server engine: glue only.

Bytes go into the engine; its events go to the HTTP API or the hub; whatever the engine
wants to write leaves through one ``transport.write`` per connection per loop turn
(output is coalesced: many pushes in one turn become one write). The engine's single
deadline is one entry of the process's timer heap (:mod:`chatd.timers`).
:class:`Connections` holds every socket of the process and what their glue shares.

Why one module of ~450 lines: both classes are the socket glue, and each needs the
other (a protocol reports to the registry, the registry makes and flushes protocols);
apart, they would import each other in a circle.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import random
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from chatd import routes
from chatd.accounts import Identity
from chatd.admission import Admission, address_key
from chatd.http import HttpApi
from chatd.hub import Hub
from chatd.observe.context import CURRENT, RequestContext
from chatd.observe.logs import EventLogger
from chatd.observe.metrics import Metrics
from chatd.reply import Reply
from chatd.timers import Timer, Timers
from chatd.turn import LoopTurn
from libchat import events as ev
from libchat import limits, protocol
from libchat.server import ServerConfig, ServerConnection

log = EventLogger(logging.getLogger(__name__))

# The request events the HTTP API answers (an upgrade goes through the hub's checks).
_HTTP_EVENTS = tuple(kind for kind in routes.LABELS if kind is not ev.UpgradeRequest)
UPGRADE_ROUTE = routes.LABELS[ev.UpgradeRequest]
# How an error event names the request it happened in: "POST /v1/login".
_ROUTE_NAMES: dict[type, str] = {
    event: f"{method.decode()} {path}" for path, method, _, event in routes.TABLE
}
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
# WebSocket upgrades started per loop turn. A reconnect storm queues the rest for the
# next turns instead of running thousands of handshakes (upgrade, hello, catch-up) in
# one turn while live traffic waits behind them.
UPGRADES_PER_TURN = 32
# Bytes of output a connection may have waiting in its transport. A reader that stopped
# reading is dropped by the slow-reader timeout; one that many users write to could pile
# up far more than this before then (10 MB in 1.5 s was seen), so past this it is
# dropped at once. What it missed stays stored and comes with its next connection's
# catch-up, which waits for the socket to drain and so never comes near this.
OUTPUT_CAP = 8 << 20


class Connections:
    """Every socket of this process, and what their glue shares: where frames and
    requests go (the hub, the HTTP API), the socket budgets, the metrics, the one write
    per connection at the end of a loop turn, and the pacing of WebSocket upgrades.

    Args:
        spawn: runs a connection's coroutine (an HTTP answer, an upgrade) as a task the
            server cancels at shutdown.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, turn: LoopTurn, hub: Hub, api: HttpApi,
        admission: Admission, metrics: Metrics,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self.loop = loop
        self.hub = hub
        self.api = api
        self.admission = admission
        self.metrics = metrics
        self.spawn = spawn
        self.engine_config = ServerConfig(router=routes.ROUTER)
        # One generator for every engine: seeding one per connection from os.urandom cost
        # ~8% of the loop while 10,000 clients connected (the server engine draws nothing).
        self.rng = random.Random()
        # every connection's engine deadline, on one loop timer (see chatd.timers)
        self.timers = Timers(loop)
        self.open: dict[int, ChatProtocol] = {}
        self.paused: dict[int, ChatProtocol] = {}  # whose transport stopped taking output
        self.websockets = 0  # open WebSockets: a count, not a scan
        self._flushes = turn.batch(self._flush)
        self._upgrades: collections.deque[Callable[[], None]] = collections.deque()
        self._upgrades_scheduled = False

    def new_protocol(self) -> ChatProtocol:
        """The protocol factory for ``loop.create_server``."""
        return ChatProtocol(self)

    def queue_flush(self, proto: ChatProtocol) -> None:
        """Write a connection's output once at the end of this loop turn."""
        self._flushes.add(proto)

    def _flush(self, dirty: list[ChatProtocol]) -> None:
        for proto in dirty:
            if proto.flush_pending:
                try:
                    proto.flush()
                except Exception:  # a bug: it must cost that connection, never the others
                    log.exception("connection.flush_failed", context=proto.context)
                    if proto.transport is not None:
                        proto.transport.abort()

    def admit_upgrade(self, start: Callable[[], None]) -> None:
        """Call ``start`` (a connection's upgrade) in this loop turn or, once
        :data:`UPGRADES_PER_TURN` have started in it, in a later one."""
        self._upgrades.append(start)
        if not self._upgrades_scheduled:
            self._upgrades_scheduled = True
            self.loop.call_soon(self._start_upgrades)

    def _start_upgrades(self) -> None:
        self._upgrades_scheduled = False
        upgrades = self._upgrades
        for _ in range(min(UPGRADES_PER_TURN, len(upgrades))):
            upgrades.popleft()()
        if upgrades:  # the rest after the socket reads that came in meanwhile
            self._upgrades_scheduled = True
            self.loop.call_soon(self._start_upgrades)

    def refused(self, budget: str, ip: str) -> None:
        """A socket was over ``budget`` (see chatd.admission) and got 503."""
        self.metrics.connections_refused_total.labels(budget=budget).inc()
        self.metrics.refusals.record(log, "connection.refused", key=ip, ip=ip, budget=budget)

    def abort_slow_readers(self, now: float, timeout: float) -> None:
        """Drop every connection whose output has been stuck longer than ``timeout``."""
        for proto in list(self.paused.values()):
            if proto.paused_for(now) > timeout:
                proto.abort()

    def close_all(self, code: int, reason: str) -> None:
        """Close every WebSocket with ``code`` and drop every plain HTTP connection."""
        for proto in list(self.open.values()):
            if proto.is_websocket:
                proto.close(code, reason)
            elif proto.transport is not None:
                proto.transport.close()

    def abort_all(self) -> None:
        for proto in list(self.open.values()):
            if proto.transport is not None:
                proto.transport.abort()


class ChatProtocol(asyncio.Protocol):
    """A socket's glue: it is also the hub's :class:`chatd.hub.Session`."""

    # one per socket: slots, not a dict (about 150 bytes a connection less)
    __slots__ = (
        "_admitted", "_cause", "_closed", "_drained", "_opened_at", "_paused_since",
        "_refused", "_timer", "_timer_at", "conn", "conn_id", "connections", "context",
        "flush_pending",
        "identity", "is_websocket", "loop", "peer", "peer_ip", "peer_key", "transport",
        "upgrade_token",
    )

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self.loop = connections.loop
        self.conn_id = next(_ids)
        self.peer_ip = ""
        self.peer_key = ""  # the address the per-address budgets count it under
        self.peer = ""
        self.upgrade_token: str | None = None
        self.identity: Identity | None = None
        self.is_websocket = False
        self.conn: ServerConnection
        self.transport: asyncio.Transport | None = None
        self._timer: Timer | None = None
        self._timer_at: float | None = None
        self.flush_pending = False
        self._paused_since: float | None = None
        self._drained: asyncio.Event | None = None
        self._opened_at = 0.0
        self._closed = False
        self._cause: str | None = None  # why it ended, when the close event cannot say
        self._refused = False  # over a budget: answered 503, never counted
        self._admitted = False  # counted by the server's Admission until _finish
        self.context = RequestContext(self.conn_id, "")  # what its error events say

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and peername:
            self.peer_ip = str(peername[0])
            self.peer = f"{peername[0]}:{peername[1]}"
        self.peer_key = address_key(self.peer_ip)
        self.context.peer_ip = self.peer_ip
        refused = self.connections.admission.accept(self.peer_ip, self.peer_key, self)
        if refused is not None:
            self._refuse(refused)
            return
        self._admitted = True
        now = self.loop.time()
        self._opened_at = now
        self.conn = ServerConnection(self.connections.engine_config, self.connections.rng, now)
        self.connections.open[self.conn_id] = self
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        # Current while the input is handled, and in every task it starts.
        token = CURRENT.set(self.context)
        try:
            self._handle(self.conn.receive_data(data, self.loop.time()))
            self.flush()
        finally:
            CURRENT.reset(token)

    def eof_received(self) -> bool | None:
        if self._refused:
            return None
        token = CURRENT.set(self.context)
        try:
            self._handle(self.conn.receive_eof(self.loop.time()))
            self.flush()
        finally:
            CURRENT.reset(token)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        if exc is not None and self._cause is None:
            self._cause = "reset" if isinstance(exc, ConnectionResetError) else type(exc).__name__
        token = CURRENT.set(self.context)
        try:
            if not self.conn.is_closed:
                self._handle(self.conn.receive_eof(self.loop.time()))
            self._finish()
        finally:
            CURRENT.reset(token)

    def pause_writing(self) -> None:
        self._paused_since = self.loop.time()
        self.connections.paused[self.conn_id] = self

    def resume_writing(self) -> None:
        self._paused_since = None
        self.connections.paused.pop(self.conn_id, None)
        if self._drained is not None:
            self._drained.set()
            self._drained = None

    def _refuse(self, budget: str) -> None:
        """Answer 503 without reading a request, and close soon (see REFUSED_LINGER)."""
        self._refused = True
        self.connections.refused(budget, self.peer_ip)
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
                self.connections.spawn(self._answer(event))
            elif isinstance(event, ev.UpgradeRequest):
                self.connections.admit_upgrade(functools.partial(self._start_upgrade, event))
            elif isinstance(event, ev.ConnectionClosed):
                self._closed_event(event)
            elif isinstance(event, ev.RequestRejected):
                self.connections.metrics.errors_total.labels(code=event.code).inc()
                self._count_request(routes.UNROUTED, event.status)
            elif isinstance(event, ev.FrameRejected):
                self.connections.metrics.errors_total.labels(code=event.code).inc()
            else:
                frames.append(event)
        if frames:
            self.connections.hub.receive(self, frames)

    async def _answer(self, request: object) -> None:
        CURRENT.set(self.context.with_route(_ROUTE_NAMES[type(request)]))  # this task's own
        reply = await self.connections.api.handle(request, self.peer_ip)
        self._count_request(routes.LABELS[type(request)], reply.status)
        self.respond(reply)

    def _count_request(self, route: str, status: int) -> None:
        self.connections.metrics.http_requests_total.labels(route=route, status=str(status)).inc()

    def respond(self, reply: Reply) -> None:
        if self.conn.is_closed:
            return
        if reply.status >= 400 and isinstance(reply.body, protocol.ErrorBody):
            self.connections.metrics.errors_total.labels(code=reply.body.error.code).inc()
        more = self.conn.respond(
            reply.status, reply.body, now=self.loop.time(), headers=reply.headers,
            content_type=reply.content_type,
        )
        self._handle(more)
        self.flush()

    def _start_upgrade(self, request: ev.UpgradeRequest) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.connections.spawn(self._upgrade(request))

    async def _upgrade(self, request: ev.UpgradeRequest) -> None:
        self.context.route = _ROUTE_NAMES[ev.UpgradeRequest]  # a WebSocket's, from now on
        CURRENT.set(self.context)
        reply = await self.connections.api.check_upgrade(request, self.peer_ip)
        if reply is not None:
            if isinstance(reply.body, protocol.ErrorBody):
                reason = reply.body.error.code
                self.connections.metrics.upgrades_refused_total.labels(reason).inc()
            self._count_request(UPGRADE_ROUTE, reply.status)
            self.respond(reply)
            return
        self._count_request(UPGRADE_ROUTE, 101)
        self.upgrade_token = request.token
        self.is_websocket = True
        self.connections.websockets += 1
        self.connections.metrics.connections.inc()
        log.info("connection.open", conn_id=self.conn_id, peer=self.peer)
        self._handle(self.conn.accept_upgrade(self.loop.time()))
        self.flush()

    def _closed_event(self, event: ev.ConnectionClosed) -> None:
        if self._closed:
            return
        self._closed = True
        if self.is_websocket:
            cause = self._cause or " ".join(
                str(part) for part in ("closed", event.code, event.reason) if part)
            self.connections.hub.disconnected(self, cause)
            self.connections.websockets -= 1
            self.connections.metrics.connections.dec()
            user = self.identity.user.username if self.identity else None
            log.info(
                "connection.close", conn_id=self.conn_id, peer=self.peer, user=user,
                duration_s=round(self.loop.time() - self._opened_at, 3), close_code=event.code,
            )

    # --- the hub's Session interface ---------------------------------------------------

    def signed_in(self, identity: Identity) -> None:
        """The hub accepted this connection's hello: it leaves the anonymous budgets."""
        self.identity = identity
        self.context.user_id = identity.user.id
        if self._admitted:
            self.connections.admission.signed_in(self.peer_key, self)

    def send_frame(self, frame: protocol.ServerFrame) -> None:
        self.conn.send(frame, self.loop.time())
        self._queue_flush()

    def send_text(self, text: str) -> None:
        self.conn.send_encoded(text, self.loop.time())
        self._queue_flush()

    def fail(self, code: str, close_code: int, message: str | None = None) -> None:
        self.connections.metrics.errors_total.labels(code=code).inc()
        self.conn.fail(code, close_code, now=self.loop.time(), message=message)
        self._queue_flush()

    def close(self, code: int, reason: str = "") -> None:
        self.conn.close(code, reason, now=self.loop.time())
        self._queue_flush()

    async def drained(self) -> None:
        if self.flush_pending:
            # Output queued this loop turn is not in the transport yet, so the transport
            # cannot have paused for it: write it now, then look.
            self.flush()
        if self._paused_since is None or self.transport is None or self.transport.is_closing():
            return
        if self._drained is None:
            self._drained = asyncio.Event()
        await self._drained.wait()

    def _queue_flush(self) -> None:
        if not self.flush_pending:
            self.flush_pending = True
            self.connections.queue_flush(self)

    def flush(self) -> None:
        """Write what the engine has for the socket, close it when the engine is done,
        and re-arm the timer."""
        self.flush_pending = False
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
            if self._paused_since is not None and (
                transport.get_write_buffer_size() > OUTPUT_CAP
            ):
                self.abort(f"over {OUTPUT_CAP >> 20} MiB unsent")
                return
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
            self._timer = self.connections.timers.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.loop.time()
        deadline = self.conn.next_deadline()
        token = CURRENT.set(self.context)
        try:
            if deadline is not None and deadline <= now:
                self._handle(self.conn.handle_timer(now))
            self.flush()
        finally:
            CURRENT.reset(token)

    def evict(self) -> None:
        """An anonymous socket making room for a newcomer from a less crowded address
        (see chatd.admission): closed at once, whatever it was doing."""
        self._admitted = False  # the budgets forgot it already
        self.connections.metrics.connections_refused_total.labels(budget="evicted").inc()
        if self.transport is not None:
            self.transport.abort()

    def abort(self, why: str = "paused too long") -> None:
        """Drop a peer that cannot keep up (its messages stay stored for next time)."""
        log.warning("connection.slow_reader", conn_id=self.conn_id, peer=self.peer, why=why)
        self._cause = "slow reader aborted"
        if self.transport is not None:
            self.transport.abort()

    def paused_for(self, now: float) -> float:
        return 0.0 if self._paused_since is None else now - self._paused_since

    def _finish(self) -> None:
        if self._admitted:
            self._admitted = False
            self.connections.admission.closed(self.peer_key, self, anonymous=self.identity is None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._closed:
            lost = ev.ConnectionClosed(code=limits.CLOSE_ABNORMAL, reason="connection lost")
            self._closed_event(lost)
        self.connections.open.pop(self.conn_id, None)
        self.connections.paused.pop(self.conn_id, None)
        if self._drained is not None:
            self._drained.set()
            self._drained = None
