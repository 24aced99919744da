"""Raw clients for hostile tests: many requests at once, from a chosen loopback address.

``http.client`` in threads cannot start 50 requests together (the default thread pool
has a handful of threads); these run on the test's event loop, one socket each, and
parse the answer with h11.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import h11
import orjson

from tests.chatd.clients import TIMEOUT, Response
from tests.chatd.server import ChatdProcess


async def request(
    server: ChatdProcess,
    method: str,
    path: str,
    body: Any = None,
    *,
    source_ip: str | None = None,
    token: str | None = None,
    timeout: float = TIMEOUT,
) -> Response:
    """One request on a fresh socket from ``source_ip``; the answer, whole."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", server.port,
            local_addr=None if source_ip is None else (source_ip, 0),
        ),
        timeout,
    )
    try:
        client = h11.Connection(h11.CLIENT)
        payload = b"" if body is None else orjson.dumps(body)
        headers = [("Host", server.host), ("Content-Length", str(len(payload)))]
        if token is not None:
            headers.append(("Authorization", f"Bearer {token}"))
        if payload:
            headers.append(("Content-Type", "application/json"))
        out = client.send(h11.Request(method=method, target=path, headers=headers))
        out += client.send(h11.Data(data=payload)) if payload else b""
        writer.write(out + client.send(h11.EndOfMessage()))
        return await asyncio.wait_for(_response(client, reader), timeout)
    finally:
        writer.close()


async def _response(client: h11.Connection, reader: asyncio.StreamReader) -> Response:
    head: h11.Response | None = None
    body = b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            assert head is not None, "the connection closed before any answer"
            headers = {name.decode().lower(): value.decode() for name, value in head.headers}
            return Response(head.status_code, headers, body)


async def timed(coro: Any) -> tuple[float, Any]:
    """``coro``'s result and when it came (``time.monotonic()``)."""
    result = await coro
    return time.monotonic(), result


PACE = 1.0  # seconds between the bytes of a slowloris client
EARLY = 0.5  # the server's clock starts a little after the client's
LATE = 3.0  # a timer firing late on a busy 2-core machine


class RawSocket:
    """A TCP connection from a chosen address that records when the server closed it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = b""
        self.closed_at: float | None = None
        self.eof = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, server: ChatdProcess, source_ip: str) -> RawSocket:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, local_addr=(source_ip, 0)
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
