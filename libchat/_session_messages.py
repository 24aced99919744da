"""The session's message side: the WebSocket and what flows over it.

It opens the WebSocket with the token the sign-in side gives it, says hello, and after
the welcome drives the outbox (sends resent until acked), sends read marks kept while
offline, drops repeated pushes by seq, confirms delivery, and reconnects with backoff
when the WebSocket drops. A WebSocket refused its token is handed back to the sign-in
side (``on_token_refused``), which signs in again or ends the session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from libchat import limits, protocol
from libchat._session_transports import Transport, Transports
from libchat._session_types import (
    Acked,
    Connected,
    Disconnected,
    SessionConfig,
    SessionEvent,
    error_code,
    retry_after,
)
from libchat.backoff import Backoff
from libchat.client import ClientEvent
from libchat.events import ConnectionClosed, HttpResponse, Upgraded
from libchat.outbox import Outbox, OutboxEntry

_log = logging.getLogger(__name__)


class Messages:
    """The WebSocket and the messages over it; see the module docstring.

    Args:
        config: the session's configuration.
        transports: the table the WebSocket's transport is opened in.
        outbox: the messages to send, and the seen seqs.
        backoff: the reconnect delays (shared with signing in again).
        emit: reports an event to the application.
        on_token_refused: the server refused the WebSocket's (current) token; returns
            True when the session signs in again, False when it has ended.
    """

    def __init__(
        self,
        config: SessionConfig,
        transports: Transports,
        outbox: Outbox,
        backoff: Backoff,
        emit: Callable[[SessionEvent], None],
        on_token_refused: Callable[[float], bool],
    ) -> None:
        self._config = config
        self._transports = transports
        self._outbox = outbox
        self._backoff = backoff
        self._emit = emit
        self._on_token_refused = on_token_refused
        self._token: str | None = None  # what a new WebSocket says hello with; None: no token
        self.username: str | None = None  # whom pushes are for (from the sign-in or welcome)
        self.retry_at: float | None = None  # the next attempt to open the WebSocket
        self._ws: Transport | None = None
        self._welcomed = False
        self._pending_reads: dict[str, int] = {}  # peer -> up_to, sent once connected

    @property
    def is_connected(self) -> bool:
        return self._welcomed

    # --- the sign-in side's calls ---------------------------------------------------------------

    def connect(self, token: str, now: float, *, username: str | None = None) -> None:
        """Signed in (or resumed): use ``token`` and open the WebSocket."""
        self._token = token
        if username is not None:
            self.username = username
        self._open(now)

    def reauth(self, token: str, now: float) -> None:
        """The token was refreshed: use the new one, and ``reauth`` a welcomed WebSocket."""
        self._token = token
        ws = self._ws
        if ws is not None and self._welcomed:
            self._send(protocol.Reauth(token=token), now)
            ws.token = token

    def leave(self, code: int, reason: str, now: float) -> None:
        """No token any more: close the WebSocket (it finishes its close handshake on its
        own) and stop reconnecting."""
        self._token = None
        self.retry_at = None
        ws = self._ws
        if ws is None:
            return
        self._detach(now)
        if ws.conn is None:
            self._transports.end(ws, now, None, reason)
        else:  # a WebSocket does the close handshake; anything earlier ends at once
            ws.conn.close(code, reason, now=now)
            self._transports.drain(ws, now)

    # --- connecting ---------------------------------------------------------------------------

    def reconnect(self, now: float) -> None:
        """Connect now if disconnected, starting the backoff over."""
        if self._token is not None and self._ws is None:
            self._backoff.reset()
            self._open(now)

    def reconnect_if_due(self, now: float) -> None:
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            self._open(now)

    def _open(self, now: float) -> None:
        if self._token is None or self._ws is not None:
            return
        self.retry_at = None
        self._ws = self._transports.open_websocket(self, self._token, now)

    def _detach(self, now: float) -> None:
        if self._welcomed:
            self._backoff.disconnected(now)
        self._ws = None
        self._welcomed = False
        self._outbox.on_disconnected()

    # --- the application's calls ---------------------------------------------------------------

    def send_message(self, to: str, body: str, now: float) -> OutboxEntry:
        entry = self._outbox.submit(to=to, body=body, now=now)
        self.send_due(now)
        return entry

    def mark_read(self, peer: str, up_to: int, now: float) -> None:
        frame = protocol.Read(peer=peer, up_to=up_to)
        if self._welcomed:
            self._send(frame, now)
        else:
            self._pending_reads[frame.peer] = max(up_to, self._pending_reads.get(frame.peer, 0))

    def confirm(self, seqs: Iterable[int], now: float) -> None:
        seqs = list(seqs)
        step = limits.MAX_SEQS_PER_DELIVERED
        for start in range(0, len(seqs), step):
            self._send(protocol.Delivered(seqs=seqs[start : start + step]), now)

    def typing(self, to: str, now: float) -> bool:
        if not self._welcomed:
            return False
        self._send(protocol.Typing(to=to), now)
        return True

    def send_due(self, now: float) -> None:
        """Send what the outbox has due (first sends, resends after a deferral)."""
        if self._welcomed:
            for frame in self._outbox.frames_due(now):
                self._send(frame, now)

    def _send(self, frame: protocol.ClientFrame, now: float) -> None:
        ws = self._ws
        if ws is None or ws.conn is None or not self._welcomed:
            return
        ws.conn.send(frame, now)
        self._transports.drain(ws, now)

    # --- what the WebSocket brings (the transport table calls these) -------------------------

    def on_events(self, ws: Transport, events: list[ClientEvent], now: float) -> None:
        confirm: list[int] = []
        for event in events:
            if not self._transports.is_live(ws):
                break
            confirm += self._on_event(ws, event, now)
        if ws is self._ws:
            self.confirm(confirm, now)
            self.send_due(now)

    def _on_event(self, ws: Transport, event: ClientEvent, now: float) -> list[int]:
        """Handle one event of the WebSocket; returns seqs to confirm."""
        if isinstance(event, protocol.Message):
            fresh = self._outbox.accept_push(event)
            if fresh:
                self._emit(event)
            if event.recipient == self.username and (not fresh or self._config.auto_confirm):
                return [event.seq]
        elif isinstance(event, protocol.Ack):
            entry = self._outbox.on_ack(event)
            if entry is not None:
                self._emit(Acked(entry=entry, ack=event))
        elif isinstance(event, protocol.Error):
            if not self._welcomed:  # refuses the hello: the close that follows says it
                _log.debug("hello refused: %s", event.code)
                return []
            outcome = self._outbox.on_error(event, now)
            self._emit(outcome if outcome is not None else event)
        elif isinstance(event, protocol.Welcome):
            self._welcome(ws, event, now)
        elif isinstance(event, Upgraded):
            assert ws.conn is not None and ws.token is not None
            ws.conn.send(protocol.Hello(protocol=self._config.hello_protocol, token=ws.token), now)
        elif isinstance(event, HttpResponse):
            self._transports.end(ws, now, None, f"upgrade refused: {error_code(event)}", event)
        elif isinstance(event, ConnectionClosed):
            self._transports.end(ws, now, event.code, event.reason)
        elif not isinstance(event, protocol.Reauthed):  # receipts, typing, presence
            self._emit(event)
        return []

    def _welcome(self, ws: Transport, welcome: protocol.Welcome, now: float) -> None:
        ws.deadline = None
        self._welcomed = True
        self.username = welcome.username
        self._backoff.connected(now)
        self._emit(
            Connected(
                username=welcome.username,
                user_id=welcome.user_id,
                protocol=welcome.protocol,
                server_time=welcome.server_time,
            )
        )
        if self._token is not None and ws.token != self._token:
            self._send(protocol.Reauth(token=self._token), now)  # refreshed during the hello
            ws.token = self._token
        reads, self._pending_reads = self._pending_reads, {}
        for peer, up_to in reads.items():
            self._send(protocol.Read(peer=peer, up_to=up_to), now)
        for frame in self._outbox.on_connected(now):
            self._send(frame, now)

    def on_end(
        self,
        ws: Transport,
        code: int | None,
        reason: str,
        refusal: HttpResponse | None,
        now: float,
    ) -> None:
        if ws is not self._ws:
            return  # one the session had left already
        self._detach(now)
        refused = code == limits.CLOSE_UNAUTHORIZED or (
            refusal is not None and refusal.status == 401
        )
        if refused and ws.token == self._token:
            if self._on_token_refused(now):  # signing in again
                self._emit(Disconnected(code=code, reason=reason, retry_at=now))
            return
        retry_at: float | None = None
        if code != limits.CLOSE_UNSUPPORTED_PROTOCOL:
            wait = 0.0 if refused else self._backoff.next_delay()  # refused: a newer token
            retry_at = now + max(wait, retry_after(refusal) or 0.0)
        self.retry_at = retry_at
        self._emit(Disconnected(code=code, reason=reason, retry_at=retry_at))
