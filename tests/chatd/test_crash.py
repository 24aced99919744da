"""SIGKILL in the middle of a send stream loses no acknowledged message.

alice streams messages to bob (who confirms what he gets) when chatd is killed. A new
chatd on the same data dir and port must hold every acked message in history; alice
resends what was never acked (same ids: the ones already stored get their original
seq); bob reconnects and, once he drops repeats by seq, has every message exactly once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.chatd.clients import (
    Frame,
    Peer,
    Streamer,
    ahttp,
    anew_user,
    field_is,
    login,
    whole_history,
    ws_connect,
)
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.faults.tally import Tally

# The contract holds on both stores (see conftest.pytest_generate_tests).
BACKENDS = ("sqlite", "postgres")

FAST = ("--send-rate", "1000", "--send-burst", "1000")


async def confirm_all(peer: Peer, received: dict[int, Frame], stop: asyncio.Event) -> None:
    """bob's loop: take every pushed message, remember it by seq, confirm it."""
    while not stop.is_set():
        try:
            message = await peer.recv("message", timeout=1.0)
        except AssertionError:
            if peer.close_code is not None:
                return
            continue
        received.setdefault(message["seq"], message)
        try:
            await peer.send({"type": "delivered", "seqs": [message["seq"]]})
        except Exception:
            return


@run_async
async def test_sigkill_mid_stream_loses_no_acked_message(make_server: Any) -> None:
    server: ChatdProcess = make_server(*FAST)
    alice, alice_token = await anew_user(server, "crash")
    bob, bob_token = await anew_user(server, "crash")
    revoked = login(server, alice)
    assert (await ahttp(server, "POST", "/v1/logout", token=revoked)).status == 204
    a = await ws_connect(server, alice_token)
    b = await ws_connect(server, bob_token)
    received: dict[int, Frame] = {}  # bob's view, deduplicated by seq
    stop_bob = asyncio.Event()
    loop = asyncio.get_running_loop()
    bob_task = loop.create_task(confirm_all(b, received, stop_bob))
    streamer = Streamer(a, bob, "k", window=16)
    stream_task = loop.create_task(streamer.run())
    deadline = loop.time() + 30
    # Mid-stream: acks flowing, more sends in flight.
    while len(streamer.acks) < 60 and not stream_task.done() and loop.time() < deadline:
        await asyncio.wait({stream_task}, timeout=0.01)
    server.kill()
    await asyncio.wait_for(stream_task, 15)
    await asyncio.wait_for(bob_task, 15)
    acked_before = dict(streamer.acks)
    assert len(acked_before) >= 60
    unacked = [cid for cid in streamer.sent if cid not in acked_before]

    restarted = ChatdProcess(server.data_dir, server.log_dir, *FAST, db=server.db)
    restarted.start(port=server.port)
    try:
        # Every acked message is in history, with the seq and ts of its ack.
        history = await whole_history(restarted, login(restarted, alice), bob)
        stored = {m["id"]: m for m in history}
        for cid, ack in acked_before.items():
            assert cid in stored, f"acked message {cid} lost"
            assert (stored[cid]["seq"], stored[cid]["ts"]) == (ack["seq"], ack["ts"])
        # The logout before the crash still holds; the other tokens still work.
        assert (await ahttp(restarted, "GET", "/v1/conversations", token=revoked)).status == 401
        # alice resends what was never acked; a stored one keeps its seq.
        a = await ws_connect(restarted, alice_token)
        resent: dict[str, Frame] = {}
        for cid in unacked:
            await a.send({"type": "send", "id": cid, "to": bob, "body": f"stream {cid}"})
            resent[cid] = await a.recv("ack", where=field_is("id", cid))
            if cid in stored:
                assert resent[cid]["seq"] == stored[cid]["seq"]
        # Resending an acked one changes nothing either.
        first = next(iter(acked_before))
        await a.send({"type": "send", "id": first, "to": bob, "body": "again"})
        assert (await a.recv("ack", where=lambda f: f["id"] == first)) == acked_before[first]
        all_acks = {**acked_before, **resent}
        # bob comes back: the catch-up brings whatever he did not confirm.
        b = await ws_connect(restarted, bob_token)
        stop_bob = asyncio.Event()
        bob_task = loop.create_task(confirm_all(b, received, stop_bob))
        wanted = {ack["seq"] for ack in all_acks.values()}
        for _ in range(200):
            if wanted <= set(received):
                break
            await asyncio.wait({bob_task}, timeout=0.05)
        stop_bob.set()
        await asyncio.wait_for(bob_task, 15)
        assert wanted <= set(received), sorted(wanted - set(received))
        # Deduplicated by seq, each message id arrived once: no double delivery.
        ids = [m["id"] for m in received.values()]
        assert sorted(ids) == sorted(set(ids))
        assert set(ids) == set(all_acks)
        # And the server's history agrees: one message per id, nothing else.
        history = await whole_history(restarted, bob_token, alice)
        assert sorted(m["id"] for m in history) == sorted(all_acks)
        tally = Tally(f"sigkill mid-stream ({'sqlite' if server.db is None else 'postgres'})")
        for cid in streamer.sent:  # the unacked ones were sent again, under the same id
            tally.send(cid)
        for ack in [*acked_before.values(), *resent.values()]:
            tally.answer(ack)
        tally.receive_all(received.values())
        tally.store(history)
        tally.check()
        await a.close()
        await b.close()
    finally:
        assert restarted.stop() == 0
