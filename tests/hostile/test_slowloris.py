"""Slow and idle sockets from an untrusted address are closed within the documented
HTTP deadlines (PROTOCOL.md section 4), against a real chatd.

The three attacks run together, so the module takes about one keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import time

from libchat import limits
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.hostile.conftest import REMOTE_IP
from tests.hostile.wire import EARLY, RawSocket


async def _slowloris(server: ChatdProcess) -> None:
    """A request head, one byte a second: closed REQUEST_TIMEOUT after its first byte,
    without an answer (the head never became a request)."""
    sock = await RawSocket.open(server, REMOTE_IP)
    start = time.monotonic()
    writer = asyncio.create_task(sock.trickle(b"GET /healthz HTTP/1.1\r\nHost: chat.test\r\n"))
    took = await sock.closed_after(start, limits.REQUEST_TIMEOUT)
    await writer
    assert took >= limits.REQUEST_TIMEOUT - EARLY, took
    assert sock.received == b""


async def _slow_body(server: ChatdProcess) -> None:
    """A whole head, then the body one byte a second: 408 request_timeout and a close,
    REQUEST_TIMEOUT after the first byte."""
    sock = await RawSocket.open(server, REMOTE_IP)
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
    sock = await RawSocket.open(server, REMOTE_IP)
    start = time.monotonic()
    took = await sock.closed_after(start, limits.KEEPALIVE_TIMEOUT)
    assert took >= limits.KEEPALIVE_TIMEOUT - EARLY, took
    assert sock.received == b""


@run_async
async def test_slow_and_idle_sockets_are_closed_within_the_deadlines(
    server: ChatdProcess,
) -> None:
    await asyncio.gather(_slowloris(server), _slow_body(server), _idle(server))
