"""Delivery failures are told (issue 12): a push whose connection dies before the
recipient confirms it is logged (``message.push_unconfirmed``, with why), and its next
push, on the recipient's next connection, says which attempt it is and what became of
the last one; ``chatd_messages_redelivered_total`` counts it."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from pathlib import Path

import orjson

from tests.chatd.clients import TIMEOUT, ahttp, anew_user, http, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess

BACKENDS = ("sqlite", "postgres")


def logged(log_dir: Path, event: str) -> list[dict[str, object]]:
    lines = (log_dir / "chatd.log").read_text().splitlines()
    return [record for record in map(orjson.loads, lines) if record["event"] == event]


async def wait_logged(log_dir: Path, event: str, **fields: object) -> dict[str, object]:
    """The first ``event`` line with these field values, once the server wrote it."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for record in logged(log_dir, event):
            if all(record.get(name) == value for name, value in fields.items()):
                return record
        await asyncio.sleep(0.05)  # the poll interval of this deadline loop
    raise AssertionError(f"no {event} with {fields} in the log")


def redelivered_total(server: ChatdProcess) -> float:
    text = http(server, "GET", "/metrics").raw.decode()
    match = re.search(r"^chatd_messages_redelivered_total (\S+)$", text, re.M)
    assert match is not None, "chatd_messages_redelivered_total is not in /metrics"
    return float(match.group(1))


@run_async
async def test_a_push_lost_with_its_connection_is_attempt_2_on_the_next(
    server: ChatdProcess,
) -> None:
    alice, alice_token = await anew_user(server)
    bob, bob_token = await anew_user(server)
    before = await asyncio.to_thread(redelivered_total, server)
    a = await ws_connect(server, alice_token)
    b = await ws_connect(server, bob_token)
    await a.send({"type": "send", "id": "lost-push", "to": bob, "body": "hello"})
    pushed = await b.recv("message", where=lambda f: f["id"] == "lost-push")
    # bob's connection is reset (RST) before bob says "delivered"
    sock = b.ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    b.ws.transport.abort()
    failure = await wait_logged(server.log_dir, "message.push_unconfirmed", user=bob)
    assert failure["count"] == 1 and failure["reason"] == "reset", failure

    b2 = await ws_connect(server, bob_token)
    again = await b2.recv("message", where=lambda f: f["id"] == "lost-push")
    assert again["seq"] == pushed["seq"]
    record = await wait_logged(server.log_dir, "message.redelivered", seq=pushed["seq"])
    assert record["attempt"] == 2 and record["last_error"] == "reset", record
    assert await asyncio.to_thread(redelivered_total, server) == before + 1

    # confirmed this time: nothing more to redeliver, and the count stays
    await b2.send({"type": "delivered", "seqs": [pushed["seq"]]})
    await a.recv("receipt", where=lambda f: f.get("seq") == pushed["seq"])
    await b2.close()
    b3 = await ws_connect(server, bob_token)
    await a.send({"type": "send", "id": "after", "to": bob, "body": "again"})
    await b3.recv("message", where=lambda f: f["id"] == "after")
    assert not [f for f in b3.frames if f.get("id") == "lost-push"]
    assert await asyncio.to_thread(redelivered_total, server) == before + 1
    history = await ahttp(server, "GET", f"/v1/conversations/{alice}/messages", token=bob_token)
    assert [m["id"] for m in history.json["messages"]] == ["lost-push", "after"]
    await b3.close()
    await a.close()


@run_async
async def test_a_queued_message_is_attempt_1(server: ChatdProcess) -> None:
    """A message sent while its recipient was offline: its first push, not a redelivery."""
    _, alice_token = await anew_user(server)
    bob, bob_token = await anew_user(server)
    before = await asyncio.to_thread(redelivered_total, server)
    a = await ws_connect(server, alice_token)
    await a.send({"type": "send", "id": "queued", "to": bob, "body": "for later"})
    ack = await a.recv("ack", where=lambda f: f["id"] == "queued")
    b = await ws_connect(server, bob_token)
    await b.recv("message", where=lambda f: f["id"] == "queued")
    record = await wait_logged(server.log_dir, "message.redelivered", seq=ack["seq"])
    assert record["attempt"] == 1 and "last_error" not in record, record
    assert await asyncio.to_thread(redelivered_total, server) == before
    await b.close()
    await a.close()
