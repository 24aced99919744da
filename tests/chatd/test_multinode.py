"""Two chatd nodes on one PostgreSQL schema: live delivery, receipts, logout and the
login rate limit all cross from one node to the other.

alice is connected to node A and bob to node B; tokens come from either node (the
signing key lives in the database). The nodes only share the database and its
LISTEN/NOTIFY bus.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import ClientConnection as WsConnection

from tests.chatd.clients import (
    PASSWORD,
    TIMEOUT,
    Frame,
    WsPeer,
    ahttp,
    anew_user,
    exchange,
    http,
    register,
    unique_name,
    ws_connect,
)
from tests.chatd.conftest import _shut, run_async
from tests.chatd.pg import Nodes, frames, pg_schema, running_nodes, start_nodes
from tests.chatd.server import ChatdProcess
from tests.support.poll import apoll

pytestmark = pytest.mark.pg

MESSAGES = 500  # live messages in all, half each way
SEND_INTERVAL = 0.01  # seconds between one sender's messages: a steady stream, not a burst
P99_BOUND = 1.0  # seconds from send to the push on the other node, at the 99th percentile


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """Shared by the tests of this module; each test uses fresh users."""
    with running_nodes(tmp_path_factory.mktemp("multinode")) as pair:
        yield pair


class TimedPeer(WsPeer):
    """A ``websockets`` client that notes when each pushed message arrived."""

    def __init__(self, ws: WsConnection) -> None:
        self.arrived: dict[str, float] = {}  # client id -> time.monotonic() at arrival
        super().__init__(ws)

    def _add(self, frame: Frame) -> None:
        if frame.get("type") == "message":
            self.arrived.setdefault(frame["id"], time.monotonic())
        super()._add(frame)


async def timed_connect(server: ChatdProcess, token: str) -> TimedPeer:
    ws = await websockets.connect(
        server.ws_url, compression=None, open_timeout=TIMEOUT, ping_interval=None
    )
    peer = TimedPeer(ws)
    await peer.send({"type": "hello", "protocol": "1.0", "token": token})
    await peer.recv("welcome")
    return peer


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


async def stream(sender: WsPeer, to: str, tag: str, count: int) -> dict[str, float]:
    """Send ``count`` messages at a steady pace; client id -> time.monotonic() at send."""
    sent: dict[str, float] = {}
    for index in range(count):
        client_id = f"{tag}{index}"
        sent[client_id] = time.monotonic()
        await sender.send({"type": "send", "id": client_id, "to": to, "body": f"{tag} {index}"})
        await asyncio.sleep(SEND_INTERVAL)
    return sent


async def confirm(reader: WsPeer, sender: WsPeer, peer_name: str, seqs: list[int]) -> None:
    """``reader`` confirms delivery then reads up to the newest; ``sender``, on the other
    node, gets a delivered receipt for every message and the read receipt."""
    await reader.send({"type": "delivered", "seqs": seqs})
    await apoll(
        lambda: {f["seq"] for f in frames(sender, "receipt", status="delivered")} >= set(seqs),
        "delivered receipts on the other node",
    )
    await reader.send({"type": "read", "peer": peer_name, "up_to": max(seqs)})
    await sender.recv("receipt", where=lambda f: f["status"] == "read" and f["up_to"] == max(seqs))


@run_async
async def test_live_messages_and_receipts_cross_nodes(nodes: Nodes) -> None:
    a, b = nodes
    alice_name, alice_token = await anew_user(a, "alice")
    bob_name, bob_token = await anew_user(b, "bob")
    alice = await timed_connect(a, alice_token)
    bob = await timed_connect(b, bob_token)
    try:
        half = MESSAGES // 2
        sent_ab, sent_ba = await asyncio.gather(
            stream(alice, bob_name, "ab", half), stream(bob, alice_name, "ba", half)
        )
        await apoll(lambda: len(bob.arrived) >= half and len(alice.arrived) >= half,
                         "every message pushed on the other node", timeout=30)
        assert set(bob.arrived) == set(sent_ab)
        assert set(alice.arrived) == set(sent_ba)
        latencies = [bob.arrived[i] - sent_ab[i] for i in sent_ab]
        latencies += [alice.arrived[i] - sent_ba[i] for i in sent_ba]
        assert len(latencies) == MESSAGES
        assert p99(latencies) < P99_BOUND, sorted(latencies)[-10:]

        # Every push carries the seq its sender was acked with.
        for sender, receiver in ((alice, bob), (bob, alice)):
            acks = {f["id"]: f["seq"] for f in frames(sender, "ack")}
            pushes = {f["id"]: f["seq"] for f in frames(receiver, "message")}
            assert pushes == acks

        # Receipts cross too, both ways.
        seqs_ab = sorted(f["seq"] for f in frames(bob, "message"))
        seqs_ba = sorted(f["seq"] for f in frames(alice, "message"))
        await confirm(bob, alice, alice_name, seqs_ab)
        await confirm(alice, bob, bob_name, seqs_ba)
        receipt_ids = {f["id"] for f in frames(alice, "receipt", status="delivered")}
        assert receipt_ids == set(sent_ab)

        # And the database agrees, seen from either node.
        page = await ahttp(b, "GET", f"/v1/conversations/{alice_name}/messages?limit=200",
                           token=bob_token)
        assert page.status == 200, page
        assert all(m["delivered_at"] and m["read_at"] for m in page.json["messages"])
        listing = await ahttp(a, "GET", "/v1/conversations", token=alice_token)
        assert [(c["peer"], c["unread"]) for c in listing.json["conversations"]] == [(bob_name, 0)]
    finally:
        await alice.close()
        await bob.close()


@run_async
async def test_a_first_message_across_nodes_tells_both_of_the_other(nodes: Nodes) -> None:
    """alice on one node and bob on the other, both online, no conversation yet: the
    first message tells each that the other is online."""
    a, b = nodes
    _, alice_token = await anew_user(a, "alice")
    bob_name, bob_token = await anew_user(b, "bob")
    alice = await timed_connect(a, alice_token)
    bob = await timed_connect(b, bob_token)
    try:
        await alice.send({"type": "send", "id": "first-1", "to": bob_name, "body": "hi"})
        await apoll(lambda: frames(bob, "presence") and frames(alice, "presence"),
                    "presence on both nodes")
        assert [f["online"] for f in frames(bob, "presence")] == [True]
        assert [(f["user"], f["online"]) for f in frames(alice, "presence")] == [
            (bob_name, True)]
    finally:
        await alice.close()
        await bob.close()


@run_async
async def test_a_connection_is_told_of_its_peers_online_on_the_other_node(nodes: Nodes) -> None:
    """alice is online on one node; bob, her conversation peer, connects to the other:
    after his catch-up he is told she is online (and so is his second device), as he
    would be were she on his node."""
    a, b = nodes
    alice_name, alice_token = await anew_user(a, "alice")
    bob_name, bob_token = await anew_user(b, "bob")
    alice = await timed_connect(a, alice_token)
    try:
        await alice.send({"type": "send", "id": "before-1", "to": bob_name,
                          "body": "are you there?"})
        await alice.recv("ack")
        bob = await timed_connect(b, bob_token)
        bob_again = await timed_connect(b, bob_token)
        try:
            for device in (bob, bob_again):
                await apoll(lambda d=device: frames(d, "presence"),  # type: ignore[misc]
                            "bob told of alice on the other node")
                assert [(f["user"], f["online"]) for f in frames(device, "presence")] == [
                    (alice_name, True)]
            await apoll(lambda: frames(alice, "presence"), "alice told of bob")
            assert [(f["user"], f["online"]) for f in frames(alice, "presence")] == [
                (bob_name, True)]
        finally:
            await bob.close()
            await bob_again.close()
    finally:
        await alice.close()


@run_async
async def test_a_user_still_online_on_one_node_is_not_reported_offline_by_the_other(
    nodes: Nodes,
) -> None:
    """alice has a device on each node; bob, her peer, is on B. Her device on A going
    away is not her going offline: bob hears nothing of it. When her last device goes,
    he hears she is offline."""
    a, b = nodes
    alice_name, alice_token = await anew_user(a, "alice")
    bob_name, bob_token = await anew_user(b, "bob")
    carol_name, carol_token = await anew_user(a, "carol")
    bob = await timed_connect(b, bob_token)
    carol = await timed_connect(a, carol_token)
    await exchange(carol, bob, bob_name)  # carol is bob's peer too, then goes
    await carol.close()
    alice_on_a = await timed_connect(a, alice_token)
    alice_on_b = await timed_connect(b, alice_token)
    try:
        await exchange(alice_on_a, bob, bob_name)

        def told() -> list[tuple[str, bool]]:
            return [(f["user"], f["online"]) for f in frames(bob, "presence")]

        await apoll(lambda: (alice_name, True) in told(), "bob told alice is online")
        await alice_on_a.close()
        # A marker: carol coming online on A reaches bob after A's news of alice's
        # device, by the same way.
        carol = await timed_connect(a, carol_token)
        await apoll(lambda: told().count((carol_name, True)) == 2, "bob told of carol again")
        await carol.close()
        assert (alice_name, False) not in told()
        await alice_on_b.close()
        await apoll(lambda: (alice_name, False) in told(), "bob told alice is offline")
    finally:
        await alice_on_a.close()
        await alice_on_b.close()
        await bob.close()


@run_async
async def test_a_users_peers_on_the_other_node_hear_it_come_and_go(nodes: Nodes) -> None:
    """alice on A; bob, her peer, and dave, who is not, on B. Her going and coming back
    reach bob and never dave; after bob left B and came back, they reach his new
    connection too (B answers from the peers of the users it holds, not the store)."""
    a, b = nodes
    alice_name, alice_token = await anew_user(a, "alice")
    bob_name, bob_token = await anew_user(b, "bob")
    _, dave_token = await anew_user(b, "dave")
    alice = await timed_connect(a, alice_token)
    bob = await timed_connect(b, bob_token)
    dave = await timed_connect(b, dave_token)
    try:
        await exchange(alice, bob, bob_name)

        def told(peer: WsPeer) -> list[bool]:
            return [f["online"] for f in frames(peer, "presence") if f["user"] == alice_name]

        await apoll(lambda: told(bob) == [True], "bob told alice is online")
        await alice.close()
        await apoll(lambda: told(bob) == [True, False], "bob told alice is offline")
        alice = await timed_connect(a, alice_token)
        await apoll(lambda: told(bob) == [True, False, True], "bob told she is back")
        await bob.close()
        bob = await timed_connect(b, bob_token)
        await apoll(lambda: told(bob) == [True], "bob's new connection told she is online")
        await alice.close()
        await apoll(lambda: told(bob) == [True, False], "and that she went")
        assert told(dave) == []
    finally:
        await alice.close()
        await bob.close()
        await dave.close()


@run_async
async def test_logout_on_one_node_refuses_the_token_on_the_other(nodes: Nodes) -> None:
    a, b = nodes
    _, token = await anew_user(a, "carol")
    live_on_b = await ws_connect(b, token)
    try:
        assert (await ahttp(b, "GET", "/v1/conversations", token=token)).status == 200
        assert (await ahttp(a, "POST", "/v1/logout", token=token)).status == 204

        # The revocation reaches B over the bus (and B's poll of the store as a backstop).
        async def refused_on_b() -> bool:
            return (await ahttp(b, "GET", "/v1/conversations", token=token)).status == 401

        await apoll(refused_on_b, "node B to refuse the revoked token", timeout=5.0,
                    interval=0.05)
        error = await live_on_b.recv("error", timeout=5.0)
        assert error["code"] == "unauthorized"
        assert await live_on_b.wait_closed(timeout=5.0) == 4001
        # A new connection on B with that token is refused as well.
        refused = await ws_connect(b, hello=False)
        await refused.send({"type": "hello", "protocol": "1.0", "token": token})
        assert await refused.wait_closed() == 4001
    finally:
        await live_on_b.close()


def test_failed_logins_on_both_nodes_add_up(tmp_path: Path) -> None:
    """Its own nodes: a rate-limited 127.0.0.1 would refuse every later login there."""
    with pg_schema() as url:
        a, b = start_nodes(tmp_path, url)
        try:
            dave = register(a, unique_name("dave"))
            for server in (a, b, a, b, a):  # unknown users: no per-account slowdown
                answer = http(server, "POST", "/v1/login",
                              {"username": unique_name("nobody"), "password": "wrong password"})
                assert answer.status == 401, answer
                assert answer.error_code == "invalid_credentials"
            for server, name, password in (
                (b, unique_name("nobody"), "wrong password"),
                (a, unique_name("nobody"), "wrong password"),
                (b, dave, PASSWORD),  # the right password too: the IP is limited
            ):
                answer = http(server, "POST", "/v1/login",
                              {"username": name, "password": password})
                assert answer.status == 429, answer
                assert answer.error_code == "rate_limited"
                assert 0 < int(answer.headers["retry-after"]) <= 900
        finally:
            _shut(a)
            _shut(b)


def test_nodes_sharing_one_port(tmp_path: Path) -> None:
    """``--reuse-port``: both nodes listen on one port; users reach each other through it
    whichever node the kernel hands each connection to."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pg_schema() as url:
        a, b = start_nodes(tmp_path, url, "--reuse-port", port=port)
        try:
            assert a.port == b.port == port

            async def talk() -> None:
                peers = [await anew_user(a) for _ in range(2)]
                first = await ws_connect(a, peers[0][1])
                second = await ws_connect(b, peers[1][1])
                try:
                    await exchange(first, second, peers[1][0])
                    await exchange(second, first, peers[0][0])
                finally:
                    await first.close()
                    await second.close()

            asyncio.run(talk())
        finally:
            _shut(a)
            _shut(b)
