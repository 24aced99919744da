"""Pre-authentication budgets: anonymous sockets cannot crowd out signed-in users.

The bugs: upgrades were counted before hello, so ten bare upgrades filled
``--max-connections 10`` and a signed-in user's upgrade got 503 for 15 s; one user with
ten sockets locked everyone out; plain HTTP sockets were not counted at all.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import Any

from chatd.net import REFUSED_LINGER
from libchat import limits
from tests.chatd.clients import PASSWORD, WsPeer, login, register, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.hostile.conftest import OTHER_REMOTE_IP, REMOTE_IP
from tests.hostile.wire import RawSocket, request

BACKENDS = ("sqlite", "postgres")
FLOOD = 500  # anonymous sockets from one address


def bare_upgrade_request(server: ChatdProcess) -> bytes:
    """A WebSocket upgrade request; no hello ever follows it."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /v1/ws HTTP/1.1\r\nHost: {server.host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def bare_upgrade(server: ChatdProcess, source_ip: str) -> tuple[Any, Any]:
    """A WebSocket upgrade that never says hello: (reader, writer)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, local_addr=(source_ip, 0)
    )
    writer.write(bare_upgrade_request(server))
    return reader, writer


async def exchange(server: ChatdProcess, alice: str, bob: str, source_ip: str) -> None:
    """alice logs in and connects from ``source_ip``, sends bob a message, bob gets it."""
    token = (await request(server, "POST", "/v1/login",
                           {"username": alice, "password": PASSWORD},
                           source_ip=source_ip)).json["token"]
    sender = await ws_connect(server, token, source_ip=source_ip)
    bob_peer = await ws_connect(server, login(server, bob))
    await sender.send({"type": "send", "id": "hi-1", "to": bob, "body": "still here"})
    await sender.recv("ack")
    assert (await bob_peer.recv("message"))["body"] == "still here"
    await sender.close()
    await bob_peer.close()


# The longest a socket from the flood may stay: an accepted bare upgrade waits for its
# hello, then for the close handshake; idle and slow HTTP ones have their own deadlines;
# a refused one lingers a moment after its 503.
DEADLINE = max(
    limits.HELLO_TIMEOUT + limits.CLOSE_TIMEOUT,
    limits.KEEPALIVE_TIMEOUT,
    limits.REQUEST_TIMEOUT,
    REFUSED_LINGER,
)


async def flood_socket(server: ChatdProcess, index: int) -> tuple[RawSocket, float]:
    """One of the flood: a bare upgrade, an idle socket, or a slowloris, by turns."""
    sock = await RawSocket.open(server, REMOTE_IP)
    opened = time.monotonic()
    kind = index % 5
    if kind in (0, 1):
        sock.writer.write(bare_upgrade_request(server))
    elif kind == 4:
        asyncio.get_running_loop().create_task(
            sock.trickle(b"GET /healthz HTTP/1.1\r\nHost: chat.test\r\n")
        )
    return sock, opened


@run_async
async def test_an_anonymous_flood_from_one_address_leaves_room_for_a_real_user(
    server: ChatdProcess,
) -> None:
    alice, bob = register(server), register(server)
    flood = [await flood_socket(server, i) for i in range(FLOOD)]
    started = time.monotonic()
    await exchange(server, alice, bob, OTHER_REMOTE_IP)
    assert time.monotonic() - started < 1.0
    # the flood got its budget's worth and no more: the rest were told 503
    answer = await request(server, "GET", "/healthz", source_ip=REMOTE_IP)
    assert answer.status == 503 and answer.error_code == "server_busy"
    assert answer.headers["retry-after"] == "5"
    # and every one of its sockets is closed within the documented deadlines
    await asyncio.gather(*(sock.closed_after(opened, DEADLINE) for sock, opened in flood))
    refused = [sock for sock, _ in flood if sock.received.startswith(b"HTTP/1.1 503 ")]
    assert len(refused) >= FLOOD - 32 - 1  # all but --max-anonymous-per-ip (and a freed slot)


@run_async
async def test_one_users_sockets_are_capped_and_lock_nobody_else_out(
    make_server: Any,
) -> None:
    server = make_server("--max-connections-per-user", "3")
    alice, bob, carol = register(server), register(server), register(server)
    token = login(server, alice)
    devices: list[WsPeer] = [await ws_connect(server, token) for _ in range(3)]
    fourth = await ws_connect(server, token, hello=False)
    await fourth.send({"type": "hello", "protocol": "1.0", "token": token})
    assert (await fourth.recv("error"))["code"] == "too_many_connections"
    assert await fourth.wait_closed() == 4004
    await exchange(server, bob, carol, "127.0.0.1")  # everybody else still gets in
    await devices.pop().close()
    devices.append(await ws_connect(server, token))  # a freed slot can be taken again
    for device in devices:
        await device.close()


@run_async
async def test_bare_upgrades_cannot_keep_signed_in_users_out(make_server: Any) -> None:
    """The issue's case: --max-connections 10 and ten bare upgrades from one address."""
    server = make_server("--max-connections", "10")  # of which 5 may be anonymous
    alice, bob = register(server), register(server)
    tokens = login(server, alice), login(server, bob)
    flood = [await bare_upgrade(server, REMOTE_IP) for _ in range(10)]
    try:
        answers = [await reader.readuntil(b"\r\n\r\n") for reader, _ in flood]
        assert sum(b" 101 " in answer for answer in answers) == 5
        assert sum(b" 503 " in answer for answer in answers) == 5
        # each signed-in user's socket takes the place of one of the flood's
        peers = [await ws_connect(server, token) for token in tokens]
        await peers[0].send({"type": "send", "id": "m1", "to": bob, "body": "hello"})
        assert (await peers[1].recv("message"))["body"] == "hello"
        for peer in peers:
            await peer.close()
    finally:
        for _, writer in flood:
            writer.close()
