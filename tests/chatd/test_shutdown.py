"""Graceful shutdown: SIGTERM during a send stream stores every acked message, closes
open WebSockets with 1001 and exits 0 within 5 s."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

import orjson
import websockets
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request, TextMessage
from wsproto.frame_protocol import FrameProtocol

from tests.chatd.clients import (
    TIMEOUT,
    Streamer,
    ahttp,
    anew_user,
    libchat_connect,
    login,
    whole_history,
    ws_connect,
)
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess

# The contract holds on both stores (see conftest.pytest_generate_tests).
BACKENDS = ("sqlite", "postgres")

FAST = ("--send-rate", "1000", "--send-burst", "1000")


@run_async
async def test_sigterm_mid_stream(make_server: Any) -> None:
    server: ChatdProcess = make_server(*FAST)
    alice, alice_token = await anew_user(server, "term")
    bob, bob_token = await anew_user(server, "term")
    a = await ws_connect(server, alice_token)
    b = await ws_connect(server, bob_token)  # an idle connection
    c = await libchat_connect(server, bob_token)  # and one through libchat's engine
    loop = asyncio.get_running_loop()
    streamer = Streamer(a, bob, "t", window=16)
    stream_task = loop.create_task(streamer.run())
    deadline = loop.time() + 30
    while len(streamer.acks) < 40 and not stream_task.done() and loop.time() < deadline:
        await asyncio.wait({stream_task}, timeout=0.01)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = await asyncio.to_thread(_wait, server, 10)
    took = time.monotonic() - signalled
    assert code == 0, "".join(server.output)
    assert took < 5, took
    await asyncio.wait_for(stream_task, 15)
    assert await a.wait_closed() == 1001
    assert await b.wait_closed() == 1001
    assert await c.wait_closed() == 1001
    assert len(streamer.acks) >= 40

    restarted = ChatdProcess(server.data_dir, server.log_dir, db=server.db).start()
    try:
        history = await whole_history(restarted, login(restarted, alice), bob)
        stored = {m["id"]: m for m in history}
        for cid, ack in streamer.acks.items():
            assert cid in stored, f"acked message {cid} lost"
            assert stored[cid]["seq"] == ack["seq"]
        # The tokens survived the restart too.
        assert (await ahttp(restarted, "GET", "/v1/conversations", token=bob_token)).status == 200
    finally:
        assert restarted.stop() == 0


def _wait(server: ChatdProcess, timeout: float) -> int | None:
    assert server.proc is not None
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def test_sigterm_when_idle_exits_0_quickly(make_server: Any) -> None:
    server: ChatdProcess = make_server()
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 5
    assert any("listening on" in line for line in server.output)


async def pipelined_session(server: ChatdProcess, token: str, frames: list[dict[str, Any]],
                            wanted: set[str]) -> list[dict[str, Any]]:
    """Upgrade request, hello and more frames in ONE write (a client that does not wait
    for the 101 or the welcome); returns the server's frames until every type in
    ``wanted`` came."""
    client = WSConnection(ConnectionType.CLIENT)
    framer = FrameProtocol(client=True, extensions=[])
    data = client.send(Request(host=server.host, target="/v1/ws"))
    for frame in [{"type": "hello", "protocol": "1.0", "token": token}, *frames]:
        data += framer.send_data(orjson.dumps(frame).decode(), fin=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    got: list[dict[str, Any]] = []
    try:
        while not wanted <= {frame["type"] for frame in got}:
            chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
            assert chunk, f"closed early; got {got}"
            client.receive_data(chunk)
            for event in client.events():
                if isinstance(event, TextMessage):
                    got.append(orjson.loads(event.data))
    finally:
        writer.close()
    return got


@run_async
async def test_restart_keeps_tokens_revocations_and_messages(make_server: Any) -> None:
    server: ChatdProcess = make_server()
    alice, alice_token = await anew_user(server, "rs")
    bob, bob_token = await anew_user(server, "rs")
    revoked = login(server, alice)
    assert (await ahttp(server, "POST", "/v1/logout", token=revoked)).status == 204
    a = await ws_connect(server, alice_token)
    await a.send({"type": "send", "id": "before-restart", "to": bob, "body": "kept"})
    ack = await a.recv("ack")
    await a.close()
    assert server.stop() == 0

    restarted = ChatdProcess(server.data_dir, server.log_dir, db=server.db).start()
    try:
        # bob's first contact after the restart (nobody cached): all in one write.
        frames = await pipelined_session(
            restarted, bob_token,
            [{"type": "send", "id": "after-restart", "to": alice, "body": "hi"}],
            {"welcome", "message", "ack"},
        )
        assert frames[0]["type"] == "welcome" and frames[0]["username"] == bob
        message = next(f for f in frames if f["type"] == "message")
        assert (message["seq"], message["ts"]) == (ack["seq"], ack["ts"])
        assert next(f for f in frames if f["type"] == "ack")["seq"] > ack["seq"]
        answer = await ahttp(restarted, "GET", "/v1/conversations", token=revoked)
        assert answer.status == 401
        peer = await ws_connect(restarted, hello=False)
        await peer.send({"type": "hello", "protocol": "1.0", "token": revoked})
        assert (await peer.recv("error"))["code"] == "unauthorized"
        assert await peer.wait_closed() == 4001
        assert (await ahttp(restarted, "GET", "/v1/conversations",
                            token=alice_token)).status == 200
    finally:
        assert restarted.stop() == 0


@run_async
async def test_sigterm_with_a_stalled_reader_and_a_half_sent_request(make_server: Any) -> None:
    """Peers that do not cooperate cannot hold the shutdown past 5 s: a WebSocket
    whose socket is full (it reads nothing) and an HTTP request cut in the middle."""
    server: ChatdProcess = make_server("--send-rate", "5000", "--send-burst", "5000")
    _, alice_token = await anew_user(server, "st")
    bob, bob_token = await anew_user(server, "st")
    a = await ws_connect(server, alice_token)
    await Streamer(a, bob, "st", window=20, text="😀" * 5000).run(count=600)  # 12 MB
    stalled = await websockets.connect(server.ws_url, compression=None, max_queue=1,
                                       max_size=None)
    await stalled.send(orjson.dumps({"type": "hello", "protocol": "1.0",
                                     "token": bob_token}).decode())
    assert orjson.loads(await stalled.recv())["type"] == "welcome"
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = await asyncio.to_thread(_wait, server, 10)
    assert code == 0, "".join(server.output)
    assert time.monotonic() - signalled < 5
    stalled.transport.abort()
    writer.close()
    assert await a.wait_closed() == 1001
