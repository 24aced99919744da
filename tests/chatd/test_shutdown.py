"""Graceful shutdown: SIGTERM during a send stream stores every acked message, closes
open WebSockets with 1001 and exits 0 within 5 s."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

from tests.chatd.clients import Streamer, ahttp, anew_user, login, whole_history, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess

FAST = ("--send-rate", "1000", "--send-burst", "1000")


@run_async
async def test_sigterm_mid_stream(make_server: Any) -> None:
    server: ChatdProcess = make_server(*FAST)
    alice, alice_token = await anew_user(server, "term")
    bob, bob_token = await anew_user(server, "term")
    a = await ws_connect(server, alice_token)
    b = await ws_connect(server, bob_token)  # an idle connection
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
    assert len(streamer.acks) >= 40

    restarted = ChatdProcess(server.data_dir, server.log_dir).start()
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
