"""Clients that vanish with a TCP reset among live traffic.

The bug (issue 12): the server writes every connection's output of a loop turn in one
loop; writing to a connection whose peer had just reset it raised, and the connections
after it in that loop were never written. Their output waited for their own next read or
the 30 s ping: a recipient reading steadily got nothing for 18 s.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from tests.chatd.clients import anew_user, login, register, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.faults.tally import Tally

STREAM = 60  # messages of the live stream, one every INTERVAL
INTERVAL = 0.05  # seconds
LATE = 1.0  # seconds: no message may reach its online recipient later than this after its ack


async def abort_after_sending(server: ChatdProcess, token: str, to: str, index: int) -> None:
    """Connect, say hello, send one message and vanish with a reset (SO_LINGER 0)."""
    peer = await ws_connect(server, token)
    for part in range(3):
        await peer.send({"type": "send", "id": f"gone-{index}-{part}", "to": to, "body": "bye"})
    sock = peer.ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.ws.transport.abort()


@run_async
async def test_resets_never_hold_back_other_connections_output(server: ChatdProcess) -> None:
    recipient, recipient_token = await anew_user(server)
    sender_name, sender_token = await anew_user(server)
    quitter = register(server)
    quitter_token = login(server, quitter)
    reader = await ws_connect(server, recipient_token)
    sender = await ws_connect(server, sender_token)
    acked_at: dict[str, float] = {}
    late: list[tuple[str, float]] = []
    tally = Tally("clients vanishing with RST")  # the stream, not the quitters' sends

    async def stream() -> None:
        for index in range(STREAM):
            tally.send(f"m{index}")
            await sender.send({"type": "send", "id": f"m{index}", "to": recipient, "body": "x"})
            await asyncio.sleep(INTERVAL)

    async def acks() -> None:
        for _ in range(STREAM):
            ack = await sender.recv("ack")
            acked_at[ack["id"]] = time.monotonic()
            tally.answer(ack)

    async def receive() -> None:
        seen = 0
        while seen < STREAM:
            message = await reader.recv("message")
            if message["from"] != sender_name:
                continue  # the quitters' own messages
            seen += 1
            tally.receive(message)
            arrived = time.monotonic()  # (no delivered: a reader that only reads)
            # the ack may be read just after the push: wait for it, briefly
            deadline = arrived + 2.0
            while message["id"] not in acked_at and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if arrived - acked_at.get(message["id"], arrived) > LATE:
                late.append((message["id"], arrived - acked_at[message["id"]]))

    async def quitters(first: int) -> None:
        for index in range(first, STREAM * 4, 4):
            await abort_after_sending(server, quitter_token, recipient, index)

    await asyncio.wait_for(
        asyncio.gather(stream(), acks(), receive(), *(quitters(i) for i in range(4))), 60
    )
    assert late == [], f"pushed more than {LATE} s after their ack: {late}"
    tally.check()
    # Whether a stall shows depends on the order of one loop turn's output; a write into
    # a reset socket in the middle of it is what caused it, and must never happen.
    log = (server.log_dir / "chatd.log").read_text()
    failed_flushes = [line for line in log.splitlines() if "_flush_all" in line]
    assert failed_flushes == [], failed_flushes[0][:300]
    await reader.close()
    await sender.close()
