"""Nothing blocks chatd's event loop: a 50 msg/s stream keeps its acks flowing while 20
logins (20 argon2 verifications) run at once. Hashing on the loop would stall every
ack for seconds."""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.chatd.clients import (
    PASSWORD,
    Streamer,
    anew_user,
    http,
    register,
    unique_name,
    ws_connect,
)
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess

LOGINS = 20
MAX_GAP = 1.0  # seconds between consecutive acks


@run_async
async def test_acks_keep_flowing_during_20_concurrent_logins(make_server: Any) -> None:
    server: ChatdProcess = make_server("--send-rate", "200", "--send-burst", "200")
    name = register(server, unique_name("nb"))  # 20 logins of one user: 20 verifications
    _, alice_token = await anew_user(server, "nb")
    bob, _ = await anew_user(server, "nb")
    a = await ws_connect(server, alice_token)
    loop = asyncio.get_running_loop()
    streamer = Streamer(a, bob, "nb", window=50, interval=1 / 50)
    stream_task = loop.create_task(streamer.run())
    deadline = loop.time() + 20
    while len(streamer.acks) < 25 and loop.time() < deadline:  # the stream is flowing
        await asyncio.wait({stream_task}, timeout=0.02)
    with ThreadPoolExecutor(max_workers=LOGINS) as pool:
        logins = [
            loop.run_in_executor(pool, lambda: http(
                server, "POST", "/v1/login", {"username": name, "password": PASSWORD}))
            for _ in range(LOGINS)
        ]
        first_ack = len(streamer.ack_times)
        answers = await asyncio.wait_for(asyncio.gather(*logins), 60)
        during = len(streamer.ack_times) - first_ack
    assert [answer.status for answer in answers] == [200] * LOGINS
    # Keep streaming a little after the logins, then stop.
    target = len(streamer.acks) + 25
    while len(streamer.acks) < target and loop.time() < deadline + 20:
        await asyncio.wait({stream_task}, timeout=0.02)
    streamer.stop()
    await asyncio.wait_for(stream_task, 15)
    assert not streamer.errors
    times = streamer.ack_times
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    print(f"max ack gap {max(gaps):.3f} s over {len(times)} acks, {during} during the logins")
    assert max(gaps) <= MAX_GAP, f"an ack gap of {max(gaps):.2f} s"
    assert during > 0, "no ack arrived while the logins ran"
    await a.close()


BURST = 300  # connections opened at once: several turns' worth of upgrades (32 a turn)


@run_async
async def test_a_burst_of_connections_is_admitted_in_turns_and_all_welcomed(
    make_server: Any,
) -> None:
    # one user, many devices: above the per-user cap, which is not on trial here
    server: ChatdProcess = make_server("--max-connections-per-user", str(BURST))
    _, token = await anew_user(server, "burst")
    peers = await asyncio.wait_for(
        asyncio.gather(*(ws_connect(server, token) for _ in range(BURST))), 60
    )
    assert len(peers) == BURST  # each one got its welcome
    await asyncio.gather(*(peer.close() for peer in peers))
