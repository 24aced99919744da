"""A TCP proxy in front of PostgreSQL that can cut the database off on demand.

chatd is given the proxy's port instead of PostgreSQL's; ``down()`` cuts every
connection through it and refuses new ones (the database "goes away"), ``up()`` lets
connections through again::

    outage = await Outage.to(PG_DSN)
    proxied_url = outage.route(url)  # the same URL, through the proxy
    outage.down(); ...; outage.up()
"""

from __future__ import annotations

import asyncio
import contextlib


def pg_address(dsn: str) -> tuple[str, int]:
    """The ``(host, port)`` of a ``postgresql://user@host:port/db`` URL."""
    host, _, port = dsn.split("@", 1)[1].split("/", 1)[0].rpartition(":")
    return host, int(port)


class Outage:
    """A TCP proxy to PostgreSQL; ``down()`` cuts and refuses, ``up()`` lets through."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.refusing = False
        self._pipes: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None

    @classmethod
    async def to(cls, dsn: str) -> Outage:
        """A started proxy to the PostgreSQL of ``dsn``."""
        return await cls(pg_address(dsn)).start()

    def route(self, url: str) -> str:
        """``url`` (a URL to the target) made to go through this proxy."""
        host, port = self.target
        return url.replace(f"{host}:{port}", f"127.0.0.1:{self.port}", 1)

    async def start(self) -> Outage:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._pipes |= {writer, up_writer}
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._pipes.discard(writer)

    def down(self) -> None:
        self.refusing = True
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    def up(self) -> None:
        self.refusing = False

    def close(self) -> None:
        self.down()
        if self._server is not None:
            self._server.close()
