"""The TLS port's gate: a client that speaks plain HTTP to it gets a clear ``400`` ("This
port speaks HTTPS/WSS") instead of a TLS alert or an empty reply.

A TLS client's first byte is always 22 (a handshake record); an HTTP request starts with
a method's letter. The listener runs without ``ssl``, and each socket starts with a gate
as its protocol. The gate looks at the first bytes read: for TLS it makes the loop's own
TLS protocol (uvloop's when it runs, asyncio's otherwise: the same one
``create_server(ssl=...)`` would use, with the same handshake timeout), puts it on the
transport, hands it those first bytes and steps aside; from then on the TLS protocol
reads the socket and the chat protocol behind it sees a TLS connection, as before. For
anything else it answers the 400, reads and drops the rest of the request and closes.
Only the first read of each connection costs anything extra.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import ssl
from collections.abc import Callable
from typing import Any, Final, cast

from chatd.observe.logs import EventLogger
from chatd.observe.metrics import Metrics

__all__ = ["NOT_TLS_EVENT", "PLAIN_HTTP_ANSWER", "TlsGates"]

log = EventLogger(logging.getLogger(__name__))

TLS_HANDSHAKE: Final = 0x16  # the content type of a TLS handshake record: a ClientHello
HANDSHAKE_TIMEOUT: Final = 60.0  # seconds for a TLS handshake (asyncio's and uvloop's default)
REFUSED_LINGER: Final = 1.0  # seconds a refused plain client's request is read and dropped
NOT_TLS_EVENT: Final = "connection.not_tls"
_BODY: Final = (
    b'{"error":{"code":"bad_request","message":"This port speaks HTTPS/WSS:'
    b' use https:// or wss://"}}'
)
PLAIN_HTTP_ANSWER: Final = (
    b"HTTP/1.1 400 Bad Request\r\nServer: chatd\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_BODY)
) + _BODY


def _tls_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    """The TLS protocol the loop's own ``create_server(ssl=...)`` uses."""
    try:
        import uvloop
        import uvloop.loop
    except ImportError:  # pragma: no cover - Windows has no uvloop
        return asyncio.sslproto.SSLProtocol
    if isinstance(loop, uvloop.Loop):
        return getattr(uvloop.loop, "SSLProtocol")  # noqa: B009  (not in its stubs)
    return asyncio.sslproto.SSLProtocol


class TlsGates:
    """The gates of the TLS port: :meth:`new_protocol` wraps the chat protocol's factory
    for ``loop.create_server`` (without ``ssl``).

    Args:
        context: the server's TLS context.
        metrics: a plain-HTTP client is a refusal, ``connection.not_tls``.
    """

    def __init__(self, context: ssl.SSLContext, metrics: Metrics) -> None:
        self.context = context
        self.metrics = metrics

    def new_protocol(self, inner: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        return _Gate(self, inner)


class _Gate(asyncio.Protocol):
    """One accepted socket until its first bytes say TLS (then the TLS protocol takes
    over, the chat protocol behind it) or not (then the 400)."""

    def __init__(self, gates: TlsGates, inner: Callable[[], asyncio.Protocol]) -> None:
        self._gates = gates
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it
        # A socket that never says anything is dropped as the TLS handshake timeout
        # would drop it (it is in no connection budget before the chat protocol's).
        self._timer = asyncio.get_running_loop().call_later(
            HANDSHAKE_TIMEOUT, self._transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the rest of a refused plain request
        self._stop_timer()
        if data[0] == TLS_HANDSHAKE:
            self._hand_over(data)
        else:
            self._refuse_plain()

    def eof_received(self) -> bool | None:
        return None  # closes the transport

    def _hand_over(self, first: bytes) -> None:
        """Put the loop's TLS protocol on the transport, with ``first`` as its input."""
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        waiter.add_done_callback(_retrieve)  # a failed handshake is the client's problem
        tls = _tls_protocol_class(loop)(
            loop, self._inner(), self._gates.context, waiter, server_side=True,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )
        transport.pause_reading()  # resumed below with the TLS protocol's read handlers
        transport.set_protocol(tls)
        tls.connection_made(transport)
        view = memoryview(first)
        while view and not transport.is_closing():
            buffer = tls.get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            tls.buffer_updated(size)
            view = view[size:]
        transport.resume_reading()

    def _refuse_plain(self) -> None:
        """Answer the 400 and close, after reading the client's request for a moment
        so the close does not reset the answer away."""
        self._refused = True
        transport = self._transport
        assert transport is not None
        peername = transport.get_extra_info("peername")
        ip = str(peername[0]) if isinstance(peername, tuple) and peername else ""
        self._gates.metrics.refusals.record(log, NOT_TLS_EVENT, key=ip, ip=ip)
        transport.write(PLAIN_HTTP_ANSWER)
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.close)


def _retrieve(waiter: asyncio.Future[Any]) -> None:
    if not waiter.cancelled():
        waiter.exception()
