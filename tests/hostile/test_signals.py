"""Typing and read frames from hostile clients, against real chatd processes: typing
reaches conversation peers only, and both frames are under a per-connection rate.

Ordering barriers: once a user's conversation peers are loaded (proved by one typing
signal arriving), the hub decides each typing frame as it reads it, so a later frame of
the same connection that arrives somewhere proves the earlier ones were decided; and a
later message to a connection arrives after anything written to it before.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from chatd.hub.presence import TYPING_BURST, TYPING_RATE
from chatd.hub.receipts import READ_BURST, READ_RATE
from tests.chatd.clients import Frame, Peer, WsPeer, anew_user, exchange, ws_connect
from tests.chatd.conftest import _shut, run_async
from tests.chatd.pg import pg_schema, start_nodes
from tests.chatd.server import ChatdProcess
from tests.hostile.conftest import REMOTE_IP

BACKENDS = ("sqlite", "postgres")
FLOOD = 50  # frames a hostile client sends as fast as it can


def typing_from(peer: Peer, sender: str) -> list[Frame]:
    return [f for f in peer.frames if f.get("type") == "typing" and f.get("from") == sender]


async def typing_arrives(sender: Peer, sender_name: str, to: Peer, to_name: str) -> None:
    """One typing signal from ``sender`` reaches ``to`` (they share a conversation)."""
    await sender.send({"type": "typing", "to": to_name})
    assert await to.recv("typing", where=lambda f: f["from"] == sender_name)


@run_async
async def test_typing_reaches_a_conversation_peer_and_never_a_stranger(
    server: ChatdProcess,
) -> None:
    alice, alice_token = await anew_user(server, "alice")
    bob, bob_token = await anew_user(server, "bob")  # alice's conversation partner
    mallory, mallory_token = await anew_user(server, "mal")  # a stranger to alice
    wendy, wendy_token = await anew_user(server, "wendy")  # mallory's own contact
    a = await ws_connect(server, alice_token)
    b = await ws_connect(server, bob_token)
    m = await ws_connect(server, mallory_token, source_ip=REMOTE_IP)
    w = await ws_connect(server, wendy_token)
    await exchange(b, a, alice)
    await exchange(m, w, wendy)
    await typing_arrives(m, mallory, w, wendy)  # mallory's peers are loaded

    for _ in range(3):
        await m.send({"type": "typing", "to": alice})
    await typing_arrives(m, mallory, w, wendy)  # so the three were decided
    await typing_arrives(b, bob, a, alice)
    await exchange(b, a, alice)  # anything written to alice before is here now
    assert typing_from(a, mallory) == []
    assert len(typing_from(a, bob)) == 1
    for peer in (a, b, m, w):
        await peer.close()


@run_async
async def test_a_conversation_started_by_a_send_opens_typing_both_ways(
    server: ChatdProcess,
) -> None:
    """The peer cache is loaded at the first typing; a send afterwards adds to it."""
    alice, alice_token = await anew_user(server, "alice")
    bob, bob_token = await anew_user(server, "bob")
    carol, carol_token = await anew_user(server, "carol")
    a = await ws_connect(server, alice_token)
    b = await ws_connect(server, bob_token)
    c = await ws_connect(server, carol_token)
    await exchange(a, c, carol)
    await typing_arrives(a, alice, c, carol)  # alice's peers: carol
    await b.send({"type": "typing", "to": alice})  # loads bob's peers: none
    await exchange(b, c, carol)  # bob's peers: carol
    await typing_arrives(b, bob, c, carol)  # bob's typing to alice was decided: dropped
    await exchange(a, b, bob)  # a new conversation, learned by both caches
    await typing_arrives(a, alice, b, bob)
    await typing_arrives(b, bob, a, alice)
    assert len(typing_from(a, bob)) == 1
    for peer in (a, b, c):
        await peer.close()


@run_async
async def test_a_typing_flood_delivers_at_most_the_burst(server: ChatdProcess) -> None:
    alice, alice_token = await anew_user(server, "alice")
    bob, bob_token = await anew_user(server, "bob")
    a = await ws_connect(server, alice_token)
    b = await ws_connect(server, bob_token)
    await exchange(b, a, alice)
    await typing_arrives(b, bob, a, alice)  # bob's peers are loaded
    flooder = await ws_connect(server, bob_token, source_ip=REMOTE_IP)  # a fresh bucket
    start = time.monotonic()
    for _ in range(FLOOD):
        await flooder.send({"type": "typing", "to": alice})
    await exchange(flooder, a, alice)  # after the flood on the same connection
    elapsed = time.monotonic() - start
    arrived = len(typing_from(a, bob)) - 1
    assert TYPING_BURST <= arrived <= TYPING_BURST + math.ceil(elapsed * TYPING_RATE), arrived
    assert not flooder.untaken("error")  # typing is dropped silently
    for peer in (a, b, flooder):
        await peer.close()


@run_async
async def test_a_read_flood_gets_rate_limited(server: ChatdProcess) -> None:
    alice, alice_token = await anew_user(server, "alice")
    bob, bob_token = await anew_user(server, "bob")
    a = await ws_connect(server, alice_token)
    b = await ws_connect(server, bob_token, source_ip=REMOTE_IP)
    push = await exchange(a, b, bob)
    start = time.monotonic()
    for _ in range(FLOOD):
        await b.send({"type": "read", "peer": alice, "up_to": push["seq"]})
    await exchange(b, a, alice)  # the errors come before this ack
    elapsed = time.monotonic() - start
    errors = b.untaken("error")
    allowed = READ_BURST + math.ceil(elapsed * READ_RATE)
    assert FLOOD - allowed <= len(errors) <= FLOOD - READ_BURST, len(errors)
    for error in errors:
        assert error["code"] == "rate_limited"
        assert "ref" not in error
        assert isinstance(error["retry_after_ms"], int)
        assert 0 < error["retry_after_ms"] <= math.ceil(1000 / READ_RATE)
    # the reads in the budget did their work: one read receipt, the repeats changed nothing
    receipt = await a.recv("receipt", where=lambda f: f["status"] == "read")
    assert (receipt["peer"], receipt["up_to"]) == (bob, push["seq"])
    for peer in (a, b):
        await peer.close()


@pytest.mark.pg
@run_async
async def test_typing_follows_a_conversation_started_on_another_node(tmp_path: Path) -> None:
    """alice on node A, bob on node B: bob's typing to alice is dropped until alice
    writes to him through node A; node B learns it from the bus."""
    with pg_schema() as url:
        node_a, node_b = start_nodes(tmp_path, url)
        try:
            alice, alice_token = await anew_user(node_a, "alice")
            bob, bob_token = await anew_user(node_a, "bob")
            carol, carol_token = await anew_user(node_a, "carol")
            a: WsPeer = await ws_connect(node_a, alice_token)
            b: WsPeer = await ws_connect(node_b, bob_token)
            c: WsPeer = await ws_connect(node_b, carol_token)
            await exchange(b, c, carol)
            await typing_arrives(b, bob, c, carol)  # bob's peers on B are loaded: carol
            await b.send({"type": "typing", "to": alice})
            await typing_arrives(b, bob, c, carol)  # so that one was decided: dropped
            await exchange(a, b, bob)  # stored on A; B hears of it on the bus
            await typing_arrives(b, bob, a, alice)
            await exchange(b, a, alice)
            assert len(typing_from(a, bob)) == 1
            for peer in (a, b, c):
                await peer.close()
        finally:
            _shut(node_a)
            _shut(node_b)
