"""Integers from a hostile client: out of the wire range (0..2**63-1, a signed 64-bit
store column) they get ``invalid_frame`` or ``400 invalid_query`` and touch nobody else.

Seen before the fix: ``{"type":"delivered","seqs":[18446744073709551615]}`` passed
validation, the SQLite bind raised OverflowError, and the loop turn's batch of delivered
marks, other users' too, was lost without an answer to anyone.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.chatd.clients import WsPeer, ahttp, anew_user, exchange, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.hostile.conftest import REMOTE_IP

BACKENDS = ("sqlite", "postgres")

HUGE = 2**64 - 1  # the largest JSON integer orjson reads as an int
JUST_OVER = 2**63  # one past a signed 64-bit column
TOP = 2**63 - 1  # the largest integer the protocol carries


async def _rejected(peer: WsPeer, raw: str) -> None:
    """``raw`` gets invalid_frame (no ref: the frame had no id) and the socket stays open."""
    await peer.send_raw(raw)
    error = await peer.recv("error")
    assert (error["code"], error.get("ref")) == ("invalid_frame", None), error
    assert error["message"]
    assert peer.close_code is None


@pytest.mark.parametrize(
    "raw",
    [
        f'{{"type":"delivered","seqs":[{HUGE}]}}',
        f'{{"type":"delivered","seqs":[1,{JUST_OVER}]}}',
        '{"type":"delivered","seqs":[-1]}',
        f'{{"type":"read","peer":"{{peer}}","up_to":{HUGE}}}',
        f'{{"type":"read","peer":"{{peer}}","up_to":{JUST_OVER}}}',
        '{"type":"read","peer":"{peer}","up_to":-1}',
    ],
)
@run_async
async def test_an_out_of_range_integer_gets_invalid_frame_and_others_marks_land(
    server: ChatdProcess, raw: str
) -> None:
    """mallory's bad frame and bob's good delivered marks reach chatd together, round
    after round (so some share a loop turn, and with it a store job): mallory gets
    invalid_frame each time, alice a receipt for every message bob confirms."""
    (alice, alice_token), (bob, bob_token), (_, mallory_token) = await asyncio.gather(
        anew_user(server, "alice"), anew_user(server, "bob"), anew_user(server, "mal")
    )
    alice_ws, bob_ws = await asyncio.gather(
        ws_connect(server, alice_token), ws_connect(server, bob_token)
    )
    mallory_ws = await ws_connect(server, mallory_token, source_ip=REMOTE_IP)
    bad = raw.replace("{peer}", alice)
    try:
        for _ in range(5):
            push = await exchange(alice_ws, bob_ws, bob)
            confirm = bob_ws.send({"type": "delivered", "seqs": [push["seq"]]})
            await asyncio.gather(_rejected(mallory_ws, bad), confirm)
            receipt = await alice_ws.recv("receipt")
            assert (receipt["status"], receipt["seq"]) == ("delivered", push["seq"])
        # mallory is still served
        await exchange(mallory_ws, alice_ws, alice)
        assert alice_ws.untaken("error") == bob_ws.untaken("error") == []
    finally:
        await asyncio.gather(alice_ws.close(), bob_ws.close(), mallory_ws.close())


@run_async
async def test_a_read_at_the_top_of_the_range_is_a_read(server: ChatdProcess) -> None:
    """2**63-1 is in range: a read that far past the last message is ignored, as the
    contract says, with no error; a read of the real last seq then gets its receipt."""
    (alice, alice_token), (bob, bob_token) = await asyncio.gather(
        anew_user(server, "alice"), anew_user(server, "bob")
    )
    alice_ws, bob_ws = await asyncio.gather(
        ws_connect(server, alice_token), ws_connect(server, bob_token)
    )
    try:
        push = await exchange(alice_ws, bob_ws, bob)
        await bob_ws.send({"type": "read", "peer": alice, "up_to": TOP})
        await bob_ws.send({"type": "delivered", "seqs": [0, TOP]})  # name no message
        await bob_ws.send({"type": "read", "peer": alice, "up_to": push["seq"]})
        receipt = await alice_ws.recv("receipt", where=lambda f: f["status"] == "read")
        assert receipt["up_to"] == push["seq"]
        assert bob_ws.untaken("error") == []
    finally:
        await asyncio.gather(alice_ws.close(), bob_ws.close())


@pytest.mark.parametrize(
    ("query", "status"),
    [
        (f"before={HUGE}", 400),
        (f"before={JUST_OVER}", 400),
        ("before=-1", 400),
        (f"limit={HUGE}", 400),
        (f"before={TOP}", 200),
        ("before=0", 200),
    ],
)
@run_async
async def test_history_query_integers_are_range_checked(
    server: ChatdProcess, query: str, status: int
) -> None:
    (alice, alice_token), (bob, bob_token) = await asyncio.gather(
        anew_user(server, "alice"), anew_user(server, "bob")
    )
    alice_ws, bob_ws = await asyncio.gather(
        ws_connect(server, alice_token), ws_connect(server, bob_token)
    )
    try:
        push = await exchange(alice_ws, bob_ws, bob)
    finally:
        await asyncio.gather(alice_ws.close(), bob_ws.close())
    answer = await ahttp(
        server, "GET", f"/v1/conversations/{alice}/messages?{query}", token=bob_token,
        source_ip=REMOTE_IP,
    )
    assert answer.status == status, answer
    if status == 400:
        assert answer.error_code == "invalid_query"
    elif query == f"before={TOP}":
        assert [m["seq"] for m in answer.json["messages"]] == [push["seq"]]
    else:
        assert answer.json == {"messages": [], "has_more": False}
