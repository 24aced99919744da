"""What the server and client engines share once a WebSocket is open.

:class:`Engine` owns the output buffer, the state (moved only through
:func:`libchat.states.transition`), the wsproto connection, message reassembly with the
size limit checked as bytes arrive, ping/pong, the close handshake, and the one
``ConnectionClosed`` event each connection reports. Plain text frames take the fast path
of :mod:`libchat.frames`; what the host may send when is :mod:`libchat.states`' rulebook.
The roles add HTTP on top and say what a complete text message means
(:meth:`Engine._on_text`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, Generic, TypeVar

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from libchat.events import ConnectionClosed
from libchat.frames import FrameCutter
from libchat.limits import CLOSE_ABNORMAL, CLOSE_NORMAL, CLOSE_TOO_BIG
from libchat.states import (
    ENDING,
    LIVE,
    SENDS,
    ConnState,
    Outgoing,
    Role,
    Trigger,
    may_send,
    transition,
)

__all__ = ["Engine"]

_OPEN: Final = ConnState.OPEN
_CLOSED: Final = ConnState.CLOSED
_WS_OPEN: Final = ConnectionState.OPEN  # wsproto's open state, read once (hot path)
_NOTHING: Final[frozenset[Outgoing]] = frozenset()
EventT = TypeVar("EventT")


class Engine(Generic[EventT]):
    """The role-independent half of a connection engine (``EventT``: what it yields)."""

    _ROLE: ClassVar[Role]
    _WS_TYPE: ClassVar[ConnectionType]
    # one engine per socket: slots, not a dict (a server holds thousands)
    __slots__ = (
        "_close_deadline",
        "_close_timeout",
        "_cutter",
        "_fast_frames",
        "_has_cause",
        "_last_rx",
        "_live",
        "_max_frame",
        "_max_frame_chars",
        "_out",
        "_part_bytes",
        "_parts",
        "_report",
        "_report_at",
        "_sendable",
        "_sends",
        "_state",
        "_ws",
        "_ws_started",
        "close_code",
        "close_reason",
    )

    def __init__(
        self, *, max_frame_bytes: int, close_timeout: float, fast_frames: bool, now: float
    ) -> None:
        self._state = ConnState.HTTP
        # this role's rules (libchat.states): where close frames, pings and idle timers
        # apply; what may be sent per state, and in the current one (kept by _move)
        self._live = LIVE[self._ROLE]
        self._sends = SENDS[self._ROLE]
        self._sendable = self._sends.get(self._state, _NOTHING)
        self._out: list[bytes] = []
        # wsproto's connection, made at the first frame the fast path leaves to it (a
        # close, a fragment, a ping from the peer): until then its state would be OPEN.
        # About 1.7 KiB a connection that most chat connections never need.
        self._ws: Connection | None = None
        self._ws_started = False  # the WebSocket is open (or was): HTTP is over
        self._max_frame = max_frame_bytes
        # A text of at most this many characters cannot exceed the byte limit (UTF-8
        # takes at most 4 bytes per code point), so most messages skip the encode.
        self._max_frame_chars = max_frame_bytes // 4
        self._parts: list[str] | None = None  # text fragments of an unfinished message
        self._part_bytes = 0
        self._close_timeout = close_timeout
        self._close_deadline = 0.0
        self._last_rx = now  # time of the last inbound bytes: the idle clock
        self._has_cause = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._report: ConnectionClosed | None = None  # ended where no event list was
        self._report_at: float | None = None
        # plain text frames are read (and, by a server, written) by libchat.frames
        self._fast_frames = fast_frames
        self._cutter = FrameCutter(
            peer_masks=self._WS_TYPE is ConnectionType.SERVER,
            max_frame_bytes=max_frame_bytes,
            enabled=fast_frames,
        )

    # --- public, shared ------------------------------------------------------------

    @property
    def state(self) -> ConnState:
        return self._state

    @property
    def is_closed(self) -> bool:
        """True once the host should close the transport (after draining output)."""
        return self._state is ConnState.CLOSED

    def receive_data(self, data: bytes, now: float) -> list[EventT]:
        """Feed bytes read from the transport; returns the events they complete.
        Drain ``data_to_send()`` afterwards."""
        state = self._state
        if state is _OPEN:  # the hot path first
            self._last_rx = now
            return self._receive_ws(data)
        if state is _CLOSED:
            return self._take_report()
        self._last_rx = now
        if self._ws_started:
            return self._receive_ws(data)
        if not data:  # not an end of stream: that is receive_eof()
            return []
        return self._receive_http(data, now)

    def receive_eof(self, now: float) -> list[EventT]:
        """The peer closed its side (or the transport broke): the connection is over.
        Returns the ``ConnectionClosed`` event unless one was already reported."""
        return self._eof(now)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "", *, now: float) -> None:
        """Close: a WebSocket starts the close handshake (``ConnectionClosed`` comes when
        the peer answers or ``close_timeout`` passes); a connection without one ends at
        once (its ``ConnectionClosed`` comes from the next call that returns events, at
        ``next_deadline()`` at the latest); a closing one is left alone. Drain
        ``data_to_send()`` afterwards."""
        state = self._state
        if state in self._live:
            self._send_close(code, reason, now)
        elif state not in ENDING:  # no WebSocket yet: nothing to hand-shake
            self._end(None, None, reason or "closed by host", now)

    def data_to_send(self) -> bytes:
        """The bytes to write to the transport now; ``b""`` if there are none."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    # --- state and ending ------------------------------------------------------------

    def _move(self, trigger: Trigger) -> None:
        self._state = state = transition(self._ROLE, self._state, trigger)
        self._sendable = self._sends.get(state, _NOTHING)

    def _may_send(self, outgoing: Outgoing, what: str) -> bool:
        """Whether ``outgoing`` goes out now, by :func:`libchat.states.may_send`: True;
        False (dropped: the connection is ending); or :class:`LocalProtocolError` (``what``
        names the send). Per-frame sends first test ``outgoing in self._sendable`` (what
        this state allows, kept by :meth:`_move`), which answers the common case at once."""
        return may_send(self._ROLE, self._state, outgoing, what)

    def _set_cause(self, code: int | None, reason: str) -> None:
        if not self._has_cause:
            self._has_cause = True
            self.close_code = code
            self.close_reason = reason

    def _end(
        self,
        events: list[Any] | None,
        code: int | None,
        reason: str,
        now: float,
        trigger: Trigger = Trigger.END,
    ) -> None:
        """Move to CLOSED and report it: into ``events``, or, for calls that return no
        events, from the next call that does (``next_deadline()`` says when)."""
        self._set_cause(code, reason)
        self._move(trigger)
        self._parts = None
        closed = ConnectionClosed(code=self.close_code, reason=self.close_reason)
        if events is None:
            self._report = closed
            self._report_at = now
        else:
            events.append(closed)

    def _take_report(self) -> list[Any]:
        report = self._report
        if report is None:
            return []
        self._report = self._report_at = None
        return [report]

    def _eof(self, now: float) -> list[Any]:
        if self._state is ConnState.CLOSED:
            return self._take_report()
        events: list[Any] = []
        if not self._ws_started:
            self._end(events, None, "connection closed by peer", now)
        else:
            self._end(events, CLOSE_ABNORMAL, "connection lost", now)
        return events

    # --- WebSocket -------------------------------------------------------------------

    def _start_ws(self, now: float) -> None:
        self._ws_started = True
        self._last_rx = now

    def _wsproto(self) -> Connection:
        """wsproto's connection for this WebSocket, made at its first use."""
        ws = self._ws
        if ws is None:
            assert self._ws_started
            self._ws = ws = Connection(self._WS_TYPE)
        return ws

    def _ws_open(self) -> bool:
        """Whether wsproto's state is (or, not made yet, would be) OPEN."""
        ws = self._ws
        return ws is None or ws.state is _WS_OPEN

    def _send_text(self, text: str) -> None:
        self._out.append(self._wsproto().send(TextMessage(data=text)))

    def _send_close(self, code: int, reason: str, now: float) -> None:
        """Start the close handshake: our close frame goes out, the peer's is awaited
        for ``close_timeout`` seconds."""
        self._set_cause(code, reason)
        self._out.append(self._wsproto().send(CloseConnection(code=code, reason=reason)))
        self._move(Trigger.CLOSE)
        self._close_deadline = now + self._close_timeout

    def _closing_timer(self, now: float) -> list[Any]:
        events: list[Any] = []
        if now >= self._close_deadline:
            self._end(events, None, "", now)
        return events

    def _receive_ws(self, data: bytes) -> list[Any]:
        """Turn WebSocket bytes into events: plain text frames decoded by the cutter
        (:mod:`libchat.frames`, the hot path), every other frame by wsproto."""
        cutter = self._cutter
        if not cutter.cutting:
            return self._receive_wsproto(data)
        return cutter.cut(data, self._ws_open, self._on_text, self._receive_wsproto)

    def _receive_wsproto(self, data: bytes) -> list[Any]:
        """Feed bytes to wsproto and turn what it parsed into events."""
        events: list[Any] = []
        ws = self._wsproto()
        if not data or ws.state is ConnectionState.CLOSED:
            return events  # bytes after the close handshake mean nothing
        ws.receive_data(data)
        event: Any  # wsproto's Event base type names none of the fields used below
        for event in ws.events():
            kind = type(event)
            if kind is TextMessage:
                text: str = event.data
                if self._parts is None and event.message_finished:
                    if len(text) > self._max_frame_chars and self._too_big(
                        len(text.encode()), events
                    ):
                        continue
                    self._on_text(text, events)
                else:
                    self._on_part(text, event.message_finished, events)
            elif kind is Ping:
                if ws.state is ConnectionState.OPEN:
                    self._out.append(ws.send(event.response()))
            elif kind is CloseConnection:
                self._on_close(event, events)
            elif kind is BytesMessage:
                self._on_bytes(event, events)
            # Pong: nothing to do; the bytes already counted as activity.
        return events

    def _too_big(self, size: int, events: list[Any]) -> bool:
        """Close (1009) if a message has grown past the limit; say whether it did."""
        if size <= self._max_frame:
            return False
        self._parts = None
        self._part_bytes = 0
        if self._state in self._live:
            self._on_too_big(events)
            self._send_close(CLOSE_TOO_BIG, "message too big", self._last_rx)
        return True

    def _on_part(self, text: str, finished: bool, events: list[Any]) -> None:
        size = self._part_bytes + len(text.encode())
        if self._too_big(size, events):
            return
        parts = self._parts
        if parts is None:
            self._parts = parts = []
        parts.append(text)
        if finished:
            self._parts = None
            self._part_bytes = 0
            self._on_text("".join(parts), events)
        else:
            self._part_bytes = size

    def _on_bytes(self, event: BytesMessage, events: list[Any]) -> None:
        # Binary payloads are never kept; only their size is counted.
        size = self._part_bytes + len(event.data)
        if self._too_big(size, events):
            return
        if event.message_finished:
            self._part_bytes = 0
            if self._state in self._live:
                self._on_binary(events)
        else:
            self._part_bytes = size

    def _on_close(self, event: CloseConnection, events: list[Any]) -> None:
        ws = self._wsproto()
        reason = event.reason or ""
        now = self._last_rx
        if ws.state is ConnectionState.REMOTE_CLOSING:
            # The peer started the close handshake: answer it, and we are done.
            self._out.append(ws.send(event.response()))
            self._end(events, event.code, reason, now)
        elif ws.state is ConnectionState.CLOSED:
            # The peer answered our close frame.
            self._end(events, None, "", now)
        else:
            # wsproto could not parse the peer's bytes (its parser stops for good):
            # send the close code it chose, and do not wait for an answer.
            if ws.state is ConnectionState.OPEN:
                self._out.append(ws.send(CloseConnection(code=event.code, reason=reason)))
            self._end(events, event.code, reason, now)

    # --- what each role fills in -------------------------------------------------------

    def _receive_http(self, data: bytes, now: float) -> list[Any]:
        raise NotImplementedError  # pragma: no cover

    def _on_text(self, text: str, events: list[Any]) -> None:
        raise NotImplementedError  # pragma: no cover

    def _on_binary(self, events: list[Any]) -> None:
        raise NotImplementedError  # pragma: no cover

    def _on_too_big(self, events: list[Any]) -> None:
        raise NotImplementedError  # pragma: no cover
