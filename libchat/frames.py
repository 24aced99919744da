"""The text-frame fast path beside wsproto: plain text frames read and written by hand.

Nearly every frame on a chat connection is one whole text message in a single frame, and
wsproto's general parser and writer cost several times what such a frame needs (about
12 us per inbound frame). So the engines read and write those frames here (RFC 6455
section 5.2) and leave every other frame, and every state wsproto must keep, to wsproto:

- :func:`text_frame` writes a server's frame (unmasked, FIN, no extension bits; a
  client's frames are masked, so wsproto builds those);
- :class:`FrameCutter` cuts inbound bytes into whole frames, decodes the plain text ones,
  drops the pongs (an answer to a ping means nothing but that bytes arrived) and hands
  each other frame, whole, to wsproto.

Both are switched by the engines' ``fast_frames`` setting (``ServerConfig`` and
``ClientConfig``): with it off, wsproto reads and writes every byte. That slower path is
the reference ``tests/libchat/test_fuzz.py`` holds the fast one to: fed the same bytes,
both must report the same events and write the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, TypeVar

__all__ = ["FrameCutter", "text_frame"]

_FIN: Final = 0x80  # first header byte: the last frame of a message
_OPCODE: Final = 0x0F  # first header byte: the opcode (0: continuation)
_FIN_TEXT: Final = _FIN | 0x1  # a whole text message in one frame, no extension bits
_FIN_PONG: Final = _FIN | 0xA  # a pong (control frames are never fragmented), no extension bits
_MASK: Final = 0x80  # second header byte: the payload is masked
_HEADER_16: Final = struct.Struct("!BBH")  # payloads of 126 to 65,535 bytes
_HEADER_64: Final = struct.Struct("!BBQ")  # larger payloads
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


class FrameCutter:
    """Cuts one WebSocket's inbound bytes into frames: decodes a whole, unfragmented text
    frame itself, drops a pong (wsproto would report it, and the engines ignore it) and
    leaves every other frame, whole, to wsproto.

    wsproto is only ever given whole frames, so between them it holds no partial state
    and frames may skip it. A frame that has not fully arrived, one over the size limit,
    or one that begins a fragmented message leaves wsproto holding state: from then on
    :attr:`cutting` is False and every byte goes through wsproto (exact, only slower).
    Only the first bytes of a plain text frame's header wait here (at most 13 bytes):
    wsproto, given them, would wait too.
    """

    __slots__ = ("_carry", "_max_frame", "_peer_mask_bit", "cutting")

    def __init__(self, *, peer_masks: bool, max_frame_bytes: int, enabled: bool = True) -> None:
        """``peer_masks``: the peer is a client, whose frames must be masked (RFC 6455
        5.1). ``enabled=False``: cut nothing, wsproto reads every byte."""
        self.cutting = enabled  # read-only outside: False once wsproto gets every byte
        self._peer_mask_bit = _MASK if peer_masks else 0
        self._max_frame = max_frame_bytes
        self._carry = b""  # the start of a frame that has not fully arrived

    def cut(
        self,
        data: bytes,
        ws_open: Callable[[], bool],
        on_text: Callable[[str, list[EventT]], None],
        on_frames: Callable[[bytes], list[EventT]],
    ) -> list[EventT]:
        """Cut ``data`` into frames and hand each on, in order: a text message decoded
        here to ``on_text(text, events)``, which adds its events; the bytes of every
        other frame (whole; once :attr:`cutting` turns False, all the rest) to
        ``on_frames``, which feeds them to the connection's wsproto object and returns
        their events. Returns the events, in order. Plain frames and pongs are taken
        here only while ``ws_open()`` (wsproto's state is, or would be, OPEN), which
        handing on earlier frames may change.

        (Callbacks rather than a generator of pieces: a generator cost about 0.4 us
        per read, some 6% of the hot path.)"""
        events: list[EventT] = []
        if self._carry:
            data = self._carry + data
            self._carry = b""
        end = len(data)
        pos = 0
        mask_bit = self._peer_mask_bit
        max_frame = self._max_frame
        while end - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            masked = second & _MASK
            plain = first == _FIN_TEXT and masked == mask_bit
            size = second & 0x7F
            # a control frame's payload is at most 125 bytes, in the short length form
            pong = first == _FIN_PONG and masked == mask_bit and size < 126
            length_end = pos + (4 if size == 126 else 10 if size == 127 else 2)
            if length_end <= end and size >= 126:
                size = int.from_bytes(data[pos + 2 : length_end], "big")
                # a longer length form than the size needs is refused
                plain = plain and size > (125 if length_end == pos + 4 else 0xFFFF)
            head = length_end + (4 if masked else 0)
            if head > end:  # the header is not all here yet
                if plain or pong:
                    break  # wsproto would wait too: keep it for the next bytes
                self.cutting = False  # wsproto may refuse it now
                events.extend(on_frames(data[pos:]))
                return events
            frame_end = head + size
            if frame_end > end or size > max_frame:
                # Part of a frame, or one over the limit: wsproto reads the part as it
                # comes (and checks it, so errors come as early as they always did).
                self.cutting = False
                events.extend(on_frames(data[pos:]))
                return events
            if pong and ws_open():
                pass  # its bytes already counted as activity: nothing else to do
            elif plain and ws_open():
                payload = data[head:frame_end]
                if masked:
                    payload = _unmask(payload, data[head - 4 : head])
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    events.extend(on_frames(data[pos:frame_end]))  # wsproto closes with 1007
                else:
                    on_text(text, events)
            else:
                events.extend(on_frames(data[pos:frame_end]))
                if not first & _FIN or not first & _OPCODE:  # a fragment: wsproto keeps it
                    self.cutting = False
                    events.extend(on_frames(data[frame_end:]))
                    return events
            pos = frame_end
        if pos < end:
            self._carry = data[pos:]
        return events
