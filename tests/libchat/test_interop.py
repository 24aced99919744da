"""The engines against an independent WebSocket implementation (the ``websockets`` library).

The server engine is hosted on a minimal asyncio loop on ``127.0.0.1:0`` and a
``websockets`` client upgrades, says hello, gets the welcome, sends and gets the ack.
The client engine, over a plain asyncio stream, talks to a ``websockets`` server.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection as WsServerConnection
from websockets.asyncio.server import serve

from libchat import events as ev
from libchat import limits, protocol
from libchat.client import ClientConfig, ClientConnection
from libchat.server import ServerConfig, ServerConnection

TIMEOUT = 10.0  # seconds for a whole test: a deadline, never a bare sleep


class EngineProtocol(asyncio.Protocol):
    """The thinnest host: feed bytes, answer events, write output, run the one timer."""

    def __init__(self, seen: list[Any], closed: asyncio.Event) -> None:
        self.loop = asyncio.get_running_loop()
        self.seen = seen
        self.closed = closed
        self.conn = ServerConnection(ServerConfig(), random.Random(0), self.loop.time())
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.handle(self.conn.receive_data(data, self.loop.time()))
        self.flush()

    def eof_received(self) -> bool | None:
        self.handle(self.conn.receive_eof(self.loop.time()))
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.conn.is_closed:
            self.handle(self.conn.receive_eof(self.loop.time()))
        if self.timer is not None:
            self.timer.cancel()

    def handle(self, events: list[Any]) -> None:
        now = self.loop.time()
        for event in events:
            self.seen.append(event)
            if isinstance(event, ev.ConnectionClosed):
                self.closed.set()
            elif isinstance(event, ev.UpgradeRequest):
                self.handle(self.conn.accept_upgrade(now))
            elif isinstance(event, protocol.Hello):
                welcome = protocol.Welcome(user_id=1, username="alice", server_time=1)
                self.conn.send(welcome, now)
            elif isinstance(event, protocol.Send):
                self.conn.send(protocol.Ack(id=event.id, seq=1, ts=2), now)

    def flush(self) -> None:
        assert self.transport is not None
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)
        if self.conn.is_closed:
            self.transport.close()
            return
        if self.timer is not None:
            self.timer.cancel()
        deadline = self.conn.next_deadline()
        if deadline is not None:
            self.timer = self.loop.call_at(deadline, self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        self.handle(self.conn.handle_timer(self.loop.time()))
        self.flush()


def test_websockets_client_against_the_server_engine() -> None:
    seen: list[Any] = []

    async def scenario() -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        closed = asyncio.Event()
        server = await loop.create_server(lambda: EngineProtocol(seen, closed), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            async with connect(
                f"ws://127.0.0.1:{port}/v1/ws",
                additional_headers={"Authorization": "Bearer tok.en"},
            ) as ws:
                assert ws.response is not None
                assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
                await ws.send(json.dumps({"type": "hello", "protocol": "1.0"}))
                welcome = json.loads(await ws.recv())
                await ws.send(json.dumps({"type": "send", "id": "c-1", "to": "bob", "body": "hé"}))
                ack = json.loads(await ws.recv())
                pong = await ws.ping(b"are you there")
                await asyncio.wait_for(pong, TIMEOUT)
            await closed.wait()  # the close handshake's last step, on our side
        return welcome, ack

    welcome, ack = asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    assert welcome["type"] == "welcome" and welcome["protocol"] == limits.PROTOCOL_VERSION
    assert ack == {"type": "ack", "id": "c-1", "seq": 1, "ts": 2}
    assert seen[0] == ev.UpgradeRequest(token="tok.en", origin=None)
    assert protocol.Send(id="c-1", to="bob", body="hé") in seen
    assert seen[-1] == ev.ConnectionClosed(code=1000, reason="")


def test_client_engine_against_a_websockets_server() -> None:
    async def handler(ws: WsServerConnection) -> None:
        hello = json.loads(await ws.recv())
        assert hello == {"type": "hello", "protocol": "1.0", "token": "t"}
        await ws.send(
            json.dumps(
                {
                    "type": "welcome",
                    "user_id": 1,
                    "username": "alice",
                    "protocol": "1.0.0",
                    "server_time": 5,
                }
            )
        )
        sent = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "ack", "id": sent["id"], "seq": 3, "ts": 4}))
        await ws.wait_closed()

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        async with serve(handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            client = ClientConnection(ClientConfig(host=f"127.0.0.1:{port}"), random.Random(0))
            got: list[Any] = []

            async def pump() -> None:
                writer.write(client.data_to_send())
                data = await reader.read(65536)
                got.extend(
                    client.receive_data(data, loop.time())
                    if data
                    else client.receive_eof(loop.time())
                )

            client.upgrade(loop.time())
            await pump()
            assert got == [ev.Upgraded()]
            client.send(protocol.Hello(protocol="1.0", token="t"), loop.time())
            while not any(isinstance(e, protocol.Welcome) for e in got):
                await pump()
            client.send(protocol.Send(id="c-9", to="bob", body="yo"), loop.time())
            while not any(isinstance(e, protocol.Ack) for e in got):
                await pump()
            client.close(now=loop.time())
            while not client.is_closed:
                await pump()
            writer.close()
            return got

    got = asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    assert protocol.Ack(id="c-9", seq=3, ts=4) in got
    assert got[-1] == ev.ConnectionClosed(code=1000, reason="")
