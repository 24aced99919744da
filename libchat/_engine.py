"""What the server and client engines share once a WebSocket is open.

:class:`Engine` owns the output buffer, the state (moved only through
:func:`libchat.states.transition`), the wsproto connection, message reassembly with the
size limit checked as bytes arrive, ping/pong, the close handshake, and the one
``ConnectionClosed`` event each connection reports. The roles add HTTP on top and say
what a complete text message means (:meth:`Engine._on_text`).
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Final, Generic, TypeVar

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from libchat.events import ConnectionClosed
from libchat.states import ConnState, Role, Trigger, transition

__all__ = ["WS_LIVE", "Engine", "text_frame"]

# States in which the WebSocket is open and we have not sent a close frame.
WS_LIVE = frozenset(
    {
        ConnState.AWAITING_HELLO,
        ConnState.AUTHENTICATING,
        ConnState.AWAITING_WELCOME,
        ConnState.OPEN,
    }
)
CLOSE_ABNORMAL = 1006  # RFC 6455: the transport ended without a close frame
_FIN: Final = 0x80  # first header byte: the last frame of a message
_OPCODE: Final = 0x0F  # first header byte: the opcode (0: continuation)
_FIN_TEXT: Final = _FIN | 0x1  # a whole text message in one frame, no extension bits
_HEADER_16: Final = struct.Struct("!BBH")  # payloads of 126 to 65,535 bytes
_HEADER_64: Final = struct.Struct("!BBQ")  # larger payloads
_OPEN: Final = ConnState.OPEN
_CLOSED: Final = ConnState.CLOSED
EventT = TypeVar("EventT")


def text_frame(payload: bytes) -> bytes:
    """One unmasked FIN text frame without extension bits (RFC 6455 5.2): what a server
    sends; a client's frames must be masked, so wsproto builds those."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 65_536:
        return _HEADER_16.pack(_FIN_TEXT, 126, size) + payload
    return _HEADER_64.pack(_FIN_TEXT, 127, size) + payload


def _unmask(payload: bytes, key: bytes) -> bytes:
    """XOR the payload with the repeated 4-byte masking key (RFC 6455 5.3), as integers."""
    size = len(payload)
    if not size:
        return payload
    mask = (key * (size // 4 + 1))[:size]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")
    return value.to_bytes(size, "little")


class Engine(Generic[EventT]):
    """The role-independent half of a connection engine (``EventT``: what it yields)."""

    _ROLE: ClassVar[Role]
    _WS_TYPE: ClassVar[ConnectionType]

    def __init__(self, *, max_frame_bytes: int, close_timeout: float, now: float) -> None:
        self._state = ConnState.HTTP
        self._out: list[bytes] = []
        self._ws: Connection | None = None
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
        # Inbound frames are cut here (see _receive_ws); wsproto gets all but plain ones.
        self._carry = b""  # the start of a frame that has not fully arrived
        self._cutting = True  # False once wsproto holds a partial message for good
        self._peer_mask_bit = 0  # what the peer's frames must have in the mask bit

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
        if self._ws is not None:
            return self._receive_ws(data)
        if not data:  # not an end of stream: that is receive_eof()
            return []
        return self._receive_http(data, now)

    def receive_eof(self, now: float) -> list[EventT]:
        """The peer closed its side (or the transport broke): the connection is over.
        Returns the ``ConnectionClosed`` event unless one was already reported."""
        return self._eof(now)

    def close(self, code: int = 1000, reason: str = "", *, now: float) -> None:
        """Close: a WebSocket starts the close handshake (``ConnectionClosed`` comes when
        the peer answers or ``close_timeout`` passes); a connection without one ends at
        once (its ``ConnectionClosed`` comes from the next call that returns events, at
        ``next_deadline()`` at the latest); a closing one is left alone. Drain
        ``data_to_send()`` afterwards."""
        state = self._state
        if state in WS_LIVE:
            self._send_close(code, reason, now)
        elif state is ConnState.HTTP or state is ConnState.UPGRADING:
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
        self._state = transition(self._ROLE, self._state, trigger)

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
        if self._ws is None:
            self._end(events, None, "connection closed by peer", now)
        else:
            self._end(events, CLOSE_ABNORMAL, "connection lost", now)
        return events

    # --- WebSocket -------------------------------------------------------------------

    def _start_ws(self, now: float) -> None:
        self._ws = Connection(self._WS_TYPE)
        self._last_rx = now
        # RFC 6455 5.1: a client masks every frame, a server none.
        self._peer_mask_bit = 0x80 if self._WS_TYPE is ConnectionType.SERVER else 0

    def _send_text(self, text: str) -> None:
        assert self._ws is not None
        self._out.append(self._ws.send(TextMessage(data=text)))

    def _send_close(self, code: int, reason: str, now: float) -> None:
        """Start the close handshake: our close frame goes out, the peer's is awaited
        for ``close_timeout`` seconds."""
        assert self._ws is not None
        self._set_cause(code, reason)
        self._out.append(self._ws.send(CloseConnection(code=code, reason=reason)))
        self._move(Trigger.CLOSE)
        self._close_deadline = now + self._close_timeout

    def _closing_timer(self, now: float) -> list[Any]:
        events: list[Any] = []
        if now >= self._close_deadline:
            self._end(events, None, "", now)
        return events

    def _receive_ws(self, data: bytes) -> list[Any]:
        """Cut the bytes into frames; decode a whole, unfragmented text frame here and
        hand every other frame, whole, to wsproto (the hot path).

        Most reads are one or more whole chat frames, and wsproto's general parser
        cost about 12 us per frame. wsproto is only ever given whole frames here, so
        between them it holds no partial state and frames may skip it. A frame that has
        not fully arrived, one over the size limit, or one that begins a fragmented
        message leaves wsproto holding state: from then on every byte goes through it
        (as before; exact, only slower). Only the first bytes of a plain text frame's
        header wait in ``_carry`` (at most 13 bytes): wsproto, given them, would wait too.
        ``tests/libchat/test_fuzz.py`` checks both paths say and write the same.
        """
        if not self._cutting:
            return self._receive_wsproto(data)
        if self._carry:
            data = self._carry + data
            self._carry = b""
        ws = self._ws
        assert ws is not None
        events: list[Any] = []
        end = len(data)
        pos = 0
        while end - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            masked = second & 0x80
            plain = first == _FIN_TEXT and masked == self._peer_mask_bit
            size = second & 0x7F
            length_end = pos + (4 if size == 126 else 10 if size == 127 else 2)
            if length_end <= end and size >= 126:
                size = int.from_bytes(data[pos + 2 : length_end], "big")
                # a longer length form than the size needs is refused
                plain = plain and size > (125 if length_end == pos + 4 else 0xFFFF)
            head = length_end + (4 if masked else 0)
            if head > end:  # the header is not all here yet
                if plain:
                    break  # wsproto would wait too: keep it for the next bytes
                return self._stop_cutting(data[pos:], events)  # wsproto may refuse it now
            frame_end = head + size
            if frame_end > end or size > self._max_frame:
                # Part of a frame, or one over the limit: wsproto reads the part as it
                # comes (and checks it, so errors come as early as they always did).
                return self._stop_cutting(data[pos:], events)
            if plain and ws.state is ConnectionState.OPEN:
                payload = data[head:frame_end]
                if masked:
                    payload = _unmask(payload, data[head - 4 : head])
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    events.extend(self._receive_wsproto(data[pos:frame_end]))  # it says 1007
                else:
                    self._on_text(text, events)
            else:
                events.extend(self._receive_wsproto(data[pos:frame_end]))
                if not first & _FIN or not first & _OPCODE:  # a fragment: wsproto keeps it
                    return self._stop_cutting(data[frame_end:], events)
            pos = frame_end
        if pos < end:
            self._carry = data[pos:]
        return events

    def _stop_cutting(self, rest: bytes, events: list[Any]) -> list[Any]:
        """From here on wsproto holds state between reads: it gets every byte."""
        self._cutting = False
        events.extend(self._receive_wsproto(rest))
        return events

    def _receive_wsproto(self, data: bytes) -> list[Any]:
        """Feed bytes to wsproto and turn what it parsed into events."""
        events: list[Any] = []
        ws = self._ws
        assert ws is not None
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
        """Close with 1009 if a message has grown past the limit; say whether it did."""
        if size <= self._max_frame:
            return False
        self._parts = None
        self._part_bytes = 0
        if self._state in WS_LIVE:
            self._on_too_big(events)
            self._send_close(1009, "message too big", self._last_rx)
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
            if self._state in WS_LIVE:
                self._on_binary(events)
        else:
            self._part_bytes = size

    def _on_close(self, event: CloseConnection, events: list[Any]) -> None:
        ws = self._ws
        assert ws is not None
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
