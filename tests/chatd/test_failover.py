"""A node dies: nothing acked is lost or delivered twice.

alice streams messages to bob through node A while bob listens on node B. A is killed
with SIGKILL mid-stream; alice's client (libchat's Outbox over the ``websockets``
library) reconnects to B and resends every unacked message with its original client id.
The server answers a repeated id with the original ack, so each message is stored once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chatd.clients import TIMEOUT, ahttp, anew_user, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.pg import Nodes, frames, running_nodes
from tests.faults.senders import OutboxSender
from tests.faults.tally import Tally
from tests.support.poll import apoll

pytestmark = pytest.mark.pg

TOTAL = 150  # messages alice writes
KILL_AFTER = 60  # node A is killed once alice has written this many
SEND_INTERVAL = 0.01  # seconds between alice's messages


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    with running_nodes(tmp_path) as pair:
        yield pair


@run_async
async def test_acked_messages_survive_a_killed_node_exactly_once(nodes: Nodes) -> None:
    a, b = nodes
    alice_name, alice_token = await anew_user(a, "alice")
    bob_name, bob_token = await anew_user(b, "bob")
    bob = await ws_connect(b, bob_token)
    tally = Tally("a node killed, its clients moved over")
    alice = OutboxSender(alice_token, tally)
    await alice.connect(a)
    killer: asyncio.Task[None] | None = None
    reconnects = 0

    deadline = time.monotonic() + 60
    written = 0
    while written < TOTAL or alice.outbox.pending():
        assert time.monotonic() < deadline, f"{len(alice.outbox.pending())} never acked"
        if written < TOTAL:
            alice.submit(bob_name, f"message {written}")
            written += 1
        if written == KILL_AFTER and killer is None:
            killer = asyncio.create_task(asyncio.to_thread(a.kill))  # SIGKILL, mid-stream
        if not alice.connected:
            alice.disconnected()
            await alice.connect(b)  # what a load balancer in front would hand her next
            reconnects += 1
        await alice.pump()
        await asyncio.sleep(SEND_INTERVAL)
    assert killer is not None
    await killer
    assert reconnects == 1
    alice.handle_frames()
    assert tally.errors == {}, f"alice got errors: {tally.errors}"

    # Each client id was acked with one seq only, on A before the kill or on B after it.
    assert len(alice.acks) == TOTAL
    assert all(len(seqs) == 1 for seqs in alice.acks.values()), alice.acks
    acked = {client_id: next(iter(seqs)) for client_id, seqs in alice.acks.items()}
    assert len(set(acked.values())) == TOTAL

    # bob's application drops repeats by seq. He confirms what came live (alice, now on
    # B, gets the receipts once it is recorded). A message that A committed but died
    # before announcing reaches bob on his next connection, from the database.
    live = {f["seq"]: f["id"] for f in bob.frames if f["type"] == "message"}
    await bob.send({"type": "delivered", "seqs": sorted(live)})
    alice_on_b = alice.peer
    assert alice_on_b is not None
    await apoll(
        lambda: len(frames(alice_on_b, "receipt", status="delivered")) >= len(live),
        "delivered receipts at alice",
    )
    await bob.close()
    again = await ws_connect(b, bob_token)
    try:
        await apoll(
            lambda: set(live) | {f["seq"] for f in again.frames if f["type"] == "message"}
            >= set(acked.values()),
            "every acked message at bob", timeout=TIMEOUT,
        )
        caught_up = {f["seq"]: f["id"] for f in again.frames if f["type"] == "message"}
    finally:
        await again.close()
    assert set(caught_up) == set(acked.values()) - set(live)  # nothing confirmed comes again
    app_view = live | caught_up  # seq -> client id, each seq once
    assert app_view == {seq: client_id for client_id, seq in acked.items()}

    # The database holds each message once, with the seq its ack carried.
    page = await ahttp(b, "GET", f"/v1/conversations/{alice_name}/messages?limit=200",
                       token=bob_token)
    assert page.status == 200, page
    stored = {m["id"]: m["seq"] for m in page.json["messages"]}
    assert len(page.json["messages"]) == TOTAL
    assert stored == acked
    tally.receive_all({"id": client_id, "seq": seq} for seq, client_id in app_view.items())
    tally.store(page.json["messages"])
    tally.check()
