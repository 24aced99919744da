"""Slow and idle sockets from an untrusted address are closed within the documented
HTTP deadlines (PROTOCOL.md section 4), against a real chatd.

The three attacks run together, so the module takes about one keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from libchat import limits
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.hostile.conftest import REMOTE_IP

PACE = 1.0  # seconds between the bytes of a slowloris client
EARLY = 0.5  # the server's clock starts a little after the client's
LATE = 3.0  # a timer firing late on a busy 2-core machine


class RawSocket:
    """A TCP connection from REMOTE_IP that records when the server closed it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = b""
        self.closed_at: float | None = None
        self.eof = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, server: ChatdProcess) -> RawSocket:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, local_addr=(REMOTE_IP, 0)
        )
        return cls(reader, writer)

    async def _read(self) -> None:
        try:
            while chunk := await self.reader.read(65536):
                self.received += chunk
        except ConnectionError:
            pass
        self.closed_at = time.monotonic()

    async def trickle(self, data: bytes) -> None:
        """Send ``data`` one byte per PACE until the server closes the connection."""
        for byte in data:
            if self.eof.done():
                return
            try:
                self.writer.write(bytes([byte]))
                await self.writer.drain()
            except ConnectionError:
                return
            with contextlib.suppress(TimeoutError):  # still open after PACE: next byte
                await asyncio.wait_for(asyncio.shield(self.eof), PACE)

    async def closed_after(self, start: float, deadline: float) -> float:
        """Seconds from ``start`` until the server closed the connection; fails if it is
        still open LATE seconds after ``deadline``."""
        await asyncio.wait_for(asyncio.shield(self.eof), start + deadline + LATE - time.monotonic())
        assert self.closed_at is not None
        self.writer.close()
        return self.closed_at - start


async def _slowloris(server: ChatdProcess) -> None:
    """A request head, one byte a second: closed REQUEST_TIMEOUT after its first byte,
    without an answer (the head never became a request)."""
    sock = await RawSocket.open(server)
    start = time.monotonic()
    writer = asyncio.create_task(sock.trickle(b"GET /healthz HTTP/1.1\r\nHost: chat.test\r\n"))
    took = await sock.closed_after(start, limits.REQUEST_TIMEOUT)
    await writer
    assert took >= limits.REQUEST_TIMEOUT - EARLY, took
    assert sock.received == b""


async def _slow_body(server: ChatdProcess) -> None:
    """A whole head, then the body one byte a second: 408 request_timeout and a close,
    REQUEST_TIMEOUT after the first byte."""
    sock = await RawSocket.open(server)
    start = time.monotonic()
    sock.writer.write(
        b"POST /v1/login HTTP/1.1\r\nHost: chat.test\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    writer = asyncio.create_task(sock.trickle(b'{"username": "slowly", "password": "x' + b" " * 60))
    took = await sock.closed_after(start, limits.REQUEST_TIMEOUT)
    await writer
    assert took >= limits.REQUEST_TIMEOUT - EARLY, took
    assert sock.received.startswith(b"HTTP/1.1 408 "), sock.received
    assert b"connection: close" in sock.received.lower()
    assert sock.received.endswith(
        b'"code":"request_timeout","message":"the request did not arrive whole within 10 s"}}'
    )


async def _idle(server: ChatdProcess) -> None:
    """A connection that never sends a byte: closed after KEEPALIVE_TIMEOUT."""
    sock = await RawSocket.open(server)
    start = time.monotonic()
    took = await sock.closed_after(start, limits.KEEPALIVE_TIMEOUT)
    assert took >= limits.KEEPALIVE_TIMEOUT - EARLY, took
    assert sock.received == b""


@run_async
async def test_slow_and_idle_sockets_are_closed_within_the_deadlines(
    server: ChatdProcess,
) -> None:
    await asyncio.gather(_slowloris(server), _slow_body(server), _idle(server))
