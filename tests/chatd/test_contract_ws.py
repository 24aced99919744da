"""The WebSocket rows of the contract against a real chatd, with the independent
``websockets`` client and with libchat's own client engine (parametrized as ``kind``).

Absence ("no second receipt", "not delivered again") is checked with a barrier, not a
sleep: a later round trip that the server handles after the frame under test.

Users come signed in from tests/chatd/users.py (``pair`` gives alice and bob, ``users``
any number); their connections are closed when the test's ``async with`` ends.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import jwt
import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from libchat.client import LocalProtocolError
from libchat.events import HttpResponse
from tests.chatd.clients import (
    ISSUED_TOKENS,
    PASSWORD,
    Frame,
    LibchatPeer,
    Peer,
    Streamer,
    WsPeer,
    ahttp,
    anew_user,
    answers,
    exchange,
    field_is,
    http,
    register,
)
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.chatd.users import KINDS, pair, users
from tests.support.poll import apoll

# The contract holds on both stores (see conftest.pytest_generate_tests).
BACKENDS = ("sqlite", "postgres")

_ids = itertools.count(1)
SECRET_BODY = "s3cr3t-body-"  # every body sent here starts with this: the log test looks for it


def body(text: str = "") -> str:
    return f"{SECRET_BODY}{next(_ids)}-{text}"


def new_id(stem: str = "m") -> str:
    return f"{stem}-{next(_ids)}"


async def send(peer: Peer, to: str, text: str | None = None, client_id: str | None = None,
               ) -> Frame:
    """Send one message and return its ack."""
    client_id = client_id or new_id()
    await peer.send({"type": "send", "id": client_id, "to": to,
                     "body": text if text is not None else body()})
    return await peer.recv("ack", where=lambda f: f["id"] == client_id)


async def settle(actor: Peer, observer: Peer, observer_name: str) -> None:
    """A barrier: two messages from ``actor`` to ``observer``. Whatever the server does
    for the frames ``actor`` sent before has reached ``observer`` once this returns."""
    await exchange(actor, observer, observer_name, "barrier")
    await exchange(actor, observer, observer_name, "barrier")


async def error_for(peer: Peer, ref: str) -> Frame:
    return await peer.recv("error", where=lambda f: f.get("ref") == ref)


# --- hello ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_hello_gets_welcome(server: ChatdProcess, kind: str) -> None:
    async with users(server, kind) as made:
        me = await made.new()
        welcome = me.frames[0]
        assert welcome["type"] == "welcome"
        assert welcome["username"] == me.name and isinstance(welcome["user_id"], int)
        assert welcome["protocol"] == "1.0.0"
        assert isinstance(welcome["server_time"], int) and welcome["server_time"] > 1.6e12


@pytest.mark.parametrize(("spoken", "welcomed"), [("1.1", "1.1.0"), ("1.9", "1.1.0")])
@run_async
async def test_welcome_names_the_lower_of_the_two_minors(
    server: ChatdProcess, spoken: str, welcomed: str
) -> None:
    """A 1.0 client is welcomed with 1.0.0 (above); newer ones with what both speak."""
    async with users(server) as made:
        me = await made.new(online=False)
        peer = await made.connect(hello=False)
        await peer.send({"type": "hello", "protocol": spoken, "token": me.token})
        assert (await peer.recv("welcome"))["protocol"] == welcomed


@run_async
async def test_hello_accepts_any_1_x_protocol(server: ChatdProcess) -> None:
    async with users(server) as made:
        me = await made.new(online=False)
        for version in ("1.0", "1.7", "1"):
            peer = await made.connect(hello=False)
            await peer.send({"type": "hello", "protocol": version, "token": me.token})
            await peer.recv("welcome")
            await peer.close()


@run_async
async def test_frame_before_hello_gets_hello_required_and_1008(server: ChatdProcess) -> None:
    async with users(server) as made:
        bob = await made.new(online=False)
        peer = await made.connect(hello=False)
        await peer.send({"type": "send", "id": "early", "to": bob.name, "body": "hi"})
        assert (await peer.recv("error"))["code"] == "hello_required"
        assert await peer.wait_closed() == 1008


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_unsupported_major_version_gets_4002(server: ChatdProcess, kind: str) -> None:
    async with users(server, kind) as made:
        me = await made.new(online=False)
        peer = await made.connect(hello=False)
        await peer.send({"type": "hello", "protocol": "2.0", "token": me.token})
        assert (await peer.recv("error"))["code"] == "unsupported_protocol"
        assert await peer.wait_closed() == 4002


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("token", [None, "garbage", "a.b.c"])
@run_async
async def test_hello_with_a_bad_token_gets_unauthorized_and_4001(
    server: ChatdProcess, token: str | None, kind: str
) -> None:
    async with users(server, kind) as made:
        peer = await made.connect(hello=False)
        frame: Frame = {"type": "hello", "protocol": "1.0"}
        if token is not None:
            frame["token"] = token
        await peer.send(frame)
        assert (await peer.recv("error"))["code"] == "unauthorized"
        assert await peer.wait_closed() == 4001


@run_async
async def test_second_hello_gets_invalid_frame_and_stays_open(server: ChatdProcess) -> None:
    async with pair(server) as (alice, bob):
        await alice.send({"type": "hello", "protocol": "1.0", "token": alice.token})
        assert (await alice.recv("error"))["code"] == "invalid_frame"
        await exchange(alice, bob, bob.name)


@run_async
async def test_libchat_client_will_not_send_a_second_hello(server: ChatdProcess) -> None:
    async with users(server, "libchat") as made:
        me = await made.new()
        with pytest.raises(LocalProtocolError, match="cannot send Hello"):
            await me.send({"type": "hello", "protocol": "1.0", "token": me.token})


@run_async
async def test_authorization_header_on_the_upgrade(server: ChatdProcess) -> None:
    async with users(server) as made:
        alice = await made.new(online=False)
        other = await made.new(online=False)
        peer = await made.connect(header_token=alice.token, hello=False)
        await peer.send({"type": "hello", "protocol": "1.0"})
        assert (await peer.recv("welcome"))["username"] == alice.name
        await peer.close()
        # Both carry a token of the same user: fine.
        peer = await made.connect(alice.login(), header_token=alice.token)
        await peer.close()
        # Tokens of two users: refused.
        peer = await made.connect(other.token, header_token=alice.token, hello=False)
        await peer.send({"type": "hello", "protocol": "1.0", "token": other.token})
        assert (await peer.recv("error"))["code"] == "unauthorized"
        assert await peer.wait_closed() == 4001
        # A bad header token: the upgrade itself is refused with 401.
        with pytest.raises(InvalidStatus) as refused:
            await made.connect(header_token="bad.token.here", hello=False)
        assert refused.value.response.status_code == 401
        assert orjson.loads(refused.value.response.body)["error"]["code"] == "unauthorized"


@run_async
async def test_libchat_upgrade_with_header_token(server: ChatdProcess) -> None:
    async with users(server, "libchat") as made:
        me = await made.new(online=False)
        client = made.track(await LibchatPeer(server).open())
        refused = await client.upgrade(token="bad.token.x")
        assert isinstance(refused, HttpResponse) and refused.status == 401
        client = made.track(await LibchatPeer(server).open())
        await client.upgrade(token=me.token)
        await client.send({"type": "hello", "protocol": "1.0"})
        assert (await client.recv("welcome"))["username"] == me.name


@run_async
async def test_origin_outside_the_allow_list_is_refused(server: ChatdProcess) -> None:
    async with users(server) as made:
        with pytest.raises(InvalidStatus) as refused:
            await made.connect(origin="https://ok.example", hello=False)
        assert refused.value.response.status_code == 403
        assert orjson.loads(refused.value.response.body)["error"]["code"] == "origin_not_allowed"
        client = made.track(await LibchatPeer(server).open())
        answer = await client.upgrade(origin="https://evil.example")
        assert isinstance(answer, HttpResponse) and answer.status == 403
        assert answer.body.error.code == "origin_not_allowed"


# --- sending --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_send_is_acked_and_pushed(server: ChatdProcess, kind: str) -> None:
    async with pair(server, kind) as (alice, bob):
        text = body("hello")
        ack = await send(alice, bob.name, text, "c-1")
        assert set(ack) == {"type", "id", "seq", "ts"} and ack["id"] == "c-1"
        push = await bob.recv("message")
        assert push == {"type": "message", "id": "c-1", "seq": ack["seq"], "from": alice.name,
                        "to": bob.name, "body": text, "ts": ack["ts"], "delivered_at": None,
                        "read_at": None}
        # Recipient names are case-insensitive.
        ack2 = await send(alice, bob.name.upper())
        assert ack2["seq"] > ack["seq"]
        assert (await bob.recv("message"))["seq"] == ack2["seq"]


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_5000_emoji_are_accepted(server: ChatdProcess, kind: str) -> None:
    async with pair(server, kind) as (alice, bob):
        text = "😀" * 5000  # 5000 code points, 20000 UTF-8 bytes
        await send(alice, bob.name, text)
        assert (await bob.recv("message"))["body"] == text
        page = (await ahttp(server, "GET", f"/v1/conversations/{alice.name}/messages",
                            token=bob.token)).json
        assert page["messages"][-1]["body"] == text


@run_async
async def test_5001_characters_and_empty_bodies_are_refused(server: ChatdProcess) -> None:
    async with pair(server) as (alice, bob):
        await alice.send({"type": "send", "id": "long", "to": bob.name, "body": "😀" * 5001})
        assert (await error_for(alice, "long"))["code"] == "too_long"
        await alice.send({"type": "send", "id": "empty", "to": bob.name, "body": ""})
        assert (await error_for(alice, "empty"))["code"] == "empty_body"
        await exchange(alice, bob, bob.name)  # the connection stays open
        assert not bob.untaken("message")


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_resend_gets_the_same_ack_and_one_delivery(server: ChatdProcess, kind: str) -> None:
    async with users(server, kind) as made:
        alice = await made.new()
        bob = await made.new()
        carol = await made.new(online=False)
        first = await send(alice, bob.name, body("original"), "same-id")
        push = await bob.recv("message")
        await bob.send({"type": "delivered", "seqs": [first["seq"]]})
        await alice.recv("receipt")
        # The same id again, even with another body or recipient: the original ack.
        again = await send(alice, bob.name, body("changed"), "same-id")
        other = await send(alice, carol.name, body("elsewhere"), "same-id")
        assert again == first and other == first
        # Even to a recipient that would be refused: the repeat's content is ignored.
        assert await send(alice, alice.name, None, "same-id") == first
        assert await send(alice, "nobody-at-all", None, "same-id") == first
        # Even on a new connection, later.
        await alice.close()
        await alice.connect()
        assert await send(alice, bob.name, None, "same-id") == first
        await settle(alice, bob, bob.name)
        assert [f["id"] for f in bob.frames if f["type"] == "message"].count("same-id") == 1
        page = (await ahttp(server, "GET", f"/v1/conversations/{alice.name}/messages",
                            token=bob.token)).json
        assert [m["id"] for m in page["messages"]].count("same-id") == 1
        assert page["messages"][0]["body"] == push["body"]
        carol_page = (await ahttp(server, "GET", f"/v1/conversations/{carol.name}/messages",
                                  token=alice.token)).json
        assert carol_page["messages"] == []


@run_async
async def test_repeat_with_an_invalid_body_still_gets_the_original_ack(
    server: ChatdProcess,
) -> None:
    async with users(server) as made:
        bob = await made.new(online=False)
        alice = await made.new()
        first = await send(alice, bob.name, None, "used-id")
        for text in ("x" * 5001, ""):
            await alice.send({"type": "send", "id": "used-id", "to": bob.name, "body": text})
            answer = await alice.recv(("ack", "error"), where=answers("used-id"))
            assert answer == first


@run_async
async def test_resend_of_an_unconfirmed_message_stays_one_message(server: ChatdProcess) -> None:
    """Before bob confirms, a repeat may push the message again (at least once on the
    wire), but always as the same seq: deduplicated by seq, bob has one message."""
    async with pair(server) as (alice, bob):
        first = await send(alice, bob.name, body(), "twice")
        for _ in range(2):
            assert await send(alice, bob.name, body("changed"), "twice") == first
        await settle(alice, bob, bob.name)
        pushes = [f for f in bob.frames if f["type"] == "message" and f["id"] == "twice"]
        assert pushes and {p["seq"] for p in pushes} == {first["seq"]}
        assert len({orjson.dumps(p) for p in pushes}) == 1  # the original content every time
        history = (await ahttp(server, "GET", f"/v1/conversations/{alice.name}/messages",
                               token=bob.token)).json["messages"]
        assert [m["id"] for m in history].count("twice") == 1


@run_async
async def test_sending_to_yourself_or_an_unknown_user_is_refused(server: ChatdProcess) -> None:
    async with pair(server) as (alice, bob):
        await alice.send({"type": "send", "id": "self", "to": alice.name, "body": "me"})
        assert (await error_for(alice, "self"))["code"] == "invalid_recipient"
        await alice.send({"type": "send", "id": "ghost", "to": "nobody-here-xyz", "body": "hi"})
        error = await error_for(alice, "ghost")
        assert error["code"] == "unknown_user" and error["message"]
        await exchange(alice, bob, bob.name)


@pytest.mark.parametrize("frame", [
    {"type": "send", "id": "bad id!", "to": "x", "body": "hi"},
    {"type": "send", "id": "x" * 65, "to": "x", "body": "hi"},
    {"type": "send", "id": "noto", "body": "hi"},
    {"type": "send", "id": "n", "to": "x", "body": 5},
    {"type": "delivered", "seqs": "all"},
    {"type": "read", "peer": "x"},
    {"type": "typing"},
    {"type": "reauth"},
    {"type": "no-such-type", "id": "unk-1"},
    {"no": "type"},
    ["a", "list"],
])
@run_async
async def test_bad_frames_get_invalid_frame_and_the_connection_stays(
    server: ChatdProcess, frame: Any
) -> None:
    async with pair(server) as (alice, bob):
        await alice.send(frame)
        error = await alice.recv("error")
        assert error["code"] == "invalid_frame", error
        if isinstance(frame, dict) and frame.get("type") == "no-such-type":
            assert error["ref"] == "unk-1"
        await exchange(alice, bob, bob.name)


@run_async
async def test_unknown_fields_are_ignored(server: ChatdProcess) -> None:
    async with pair(server) as (alice, bob):
        await alice.send({"type": "send", "id": "extra", "to": bob.name, "body": body(),
                          "colour": "red"})
        assert (await alice.recv("ack"))["id"] == "extra"
        await bob.recv("message")


# --- offline, catch-up, redelivery -------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_offline_store_and_forward_oldest_first(server: ChatdProcess, kind: str) -> None:
    async with users(server, kind) as made:
        alice = await made.new()
        bob = await made.new(online=False)
        acks = [await send(alice, bob.name) for _ in range(4)]
        await bob.connect()
        pushes = [await bob.recv("message") for _ in acks]
        assert [p["seq"] for p in pushes] == [ack["seq"] for ack in acks]
        assert bob.frames[0]["type"] == "welcome"
        assert all(p["from"] == alice.name and p["delivered_at"] is None for p in pushes)


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_unconfirmed_messages_are_pushed_again_until_delivered(
    server: ChatdProcess, kind: str
) -> None:
    async with pair(server, kind) as (alice, bob):
        acks = [await send(alice, bob.name) for _ in range(3)]
        seqs = [ack["seq"] for ack in acks]
        assert [(await bob.recv("message"))["seq"] for _ in acks] == seqs
        await bob.close()  # never confirmed
        await bob.connect()
        assert [(await bob.recv("message"))["seq"] for _ in acks] == seqs
        await bob.send({"type": "delivered", "seqs": seqs})
        for seq in seqs:
            receipt = await alice.recv("receipt", where=field_is("seq", seq))
            assert receipt["status"] == "delivered"
        await bob.close()
        await bob.connect()
        # A live message after the catch-up; nothing older may come before it.
        fresh = await exchange(alice, bob, bob.name)
        assert [f["seq"] for f in bob.frames if f["type"] == "message"] == [fresh["seq"]]


# --- receipts -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_delivered_receipt_once(server: ChatdProcess, kind: str) -> None:
    async with pair(server, kind) as (alice, bob):
        alice2 = await alice.device()  # the sender's other device
        ack = await send(alice, bob.name, None, "d-1")
        await bob.recv("message")
        await bob.send({"type": "delivered", "seqs": [ack["seq"]]})
        for peer in (alice, alice2):
            receipt = await peer.recv("receipt")
            assert set(receipt) == {"type", "status", "id", "seq", "ts"}
            assert (receipt["status"], receipt["id"], receipt["seq"]) == ("delivered", "d-1",
                                                                          ack["seq"])
            assert receipt["ts"] >= ack["ts"]
        await bob.send({"type": "delivered", "seqs": [ack["seq"], ack["seq"]]})
        await settle(bob, alice, alice.name)
        assert not alice.untaken("receipt")
        page = (await ahttp(server, "GET", f"/v1/conversations/{bob.name}/messages",
                            token=alice.token)).json
        assert page["messages"][0]["delivered_at"] is not None
        assert page["messages"][0]["read_at"] is None
        # Delivered is not read: still unread for bob.
        rows = (await ahttp(server, "GET", "/v1/conversations", token=bob.token)).json
        assert rows["conversations"][0]["unread"] == 1


@run_async
async def test_delivered_from_several_connections_at_once_one_receipt_each(
    server: ChatdProcess,
) -> None:
    """Marks that reach the server together (the hub stores a loop turn's marks in one
    job), two of them from devices of one user confirming the same seq."""
    async with users(server) as made:
        alice = await made.new()
        bob = await made.new()
        carol = await made.new()
        bob2 = await bob.device(bob.login())
        to_bob = [(await send(alice, bob.name))["seq"] for _ in range(3)]
        to_carol = [(await send(alice, carol.name))["seq"] for _ in range(2)]
        for peer, seqs in ((bob, to_bob), (bob2, to_bob), (carol, to_carol)):
            assert [(await peer.recv("message"))["seq"] for _ in seqs] == seqs
        await asyncio.gather(
            bob.send({"type": "delivered", "seqs": to_bob[:2]}),
            bob2.send({"type": "delivered", "seqs": to_bob[1:]}),
            carol.send({"type": "delivered", "seqs": to_carol}),
        )
        receipts = [await alice.recv("receipt") for _ in range(5)]
        assert all(receipt["status"] == "delivered" for receipt in receipts)
        assert sorted(receipt["seq"] for receipt in receipts) == sorted(to_bob + to_carol)
        await settle(bob2, alice, alice.name)
        assert not alice.untaken("receipt")


@run_async
async def test_delivered_for_someone_elses_message_is_ignored(server: ChatdProcess) -> None:
    async with users(server) as made:
        alice = await made.new()
        bob = await made.new()
        carol = await made.new()
        ack = await send(alice, bob.name)
        await carol.send({"type": "delivered", "seqs": [ack["seq"]]})
        await settle(bob, alice, alice.name)
        assert not alice.untaken("receipt")
        bob2 = await bob.device()  # still undelivered: pushed again
        assert (await bob2.recv("message"))["seq"] == ack["seq"]


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_read_receipt_once_and_read_marks_delivered(
    server: ChatdProcess, kind: str
) -> None:
    async with pair(server, kind) as (alice, bob):
        acks = [await send(alice, bob.name) for _ in range(3)]
        await bob.send({"type": "read", "peer": alice.name, "up_to": acks[1]["seq"]})
        receipt = await alice.recv("receipt", where=lambda f: f["status"] == "read")
        assert set(receipt) == {"type", "status", "peer", "up_to", "ts"}
        assert (receipt["peer"], receipt["up_to"]) == (bob.name, acks[1]["seq"])
        # read also marks delivered: the sender gets the delivered receipts of both.
        delivered = {
            (await alice.recv("receipt", where=lambda f: f["status"] == "delivered"))["seq"]
            for _ in range(2)
        }
        assert delivered == {acks[0]["seq"], acks[1]["seq"]}
        # Repeated read, and a read beyond the last message: nothing.
        await bob.send({"type": "read", "peer": alice.name, "up_to": acks[1]["seq"]})
        await bob.send({"type": "read", "peer": alice.name, "up_to": acks[2]["seq"] + 1000})
        await settle(bob, alice, alice.name)
        assert not alice.untaken("receipt")
        rows = (await ahttp(server, "GET", "/v1/conversations", token=bob.token)).json
        assert rows["conversations"][0]["unread"] == 1
        page = (await ahttp(server, "GET", f"/v1/conversations/{alice.name}/messages",
                            token=bob.token)).json
        read_at = [m["read_at"] for m in page["messages"] if m["from"] == alice.name]
        assert read_at[0] is not None and read_at[1] is not None and read_at[2] is None


# --- several devices, typing, presence -----------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_pushes_reach_every_device_of_both_sides(server: ChatdProcess, kind: str) -> None:
    async with pair(server, kind) as (alice, bob):
        alice2 = await alice.device(alice.login())
        bob2 = await bob.device(bob.login())
        ack = await send(alice, bob.name, None, "multi")
        for peer in (alice2, bob, bob2):
            push = await peer.recv("message", where=lambda f: f["id"] == "multi")
            assert push["seq"] == ack["seq"] and push["from"] == alice.name
        await settle(bob, alice, alice.name)
        assert [f["id"] for f in alice.frames if f["type"] == "message"].count("multi") == 0


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_typing_is_forwarded_to_the_peers_connections(
    server: ChatdProcess, kind: str
) -> None:
    async with pair(server, kind) as (alice, bob):
        bob2 = await bob.device()
        await exchange(alice, bob, bob.name)  # typing goes only to a conversation peer (1.1)
        await alice.send({"type": "typing", "to": bob.name})
        for peer in (bob, bob2):
            assert await peer.recv("typing") == {"type": "typing", "from": alice.name}
        await alice.send({"type": "typing", "to": alice.name})  # to yourself: nothing
        await alice.send({"type": "typing", "to": "nobody-at-all"})  # unknown: nothing
        await settle(bob, alice, alice.name)
        assert not alice.untaken("typing")
        # Never stored: bob's new connection gets no typing.
        await bob2.close()
        await bob.close()
        await bob.connect()
        await exchange(alice, bob, bob.name)
        assert not bob.untaken("typing")


def presence_states(peer: Peer, user: str) -> list[bool]:
    """The presence of ``user`` as ``peer`` saw it change: repeats of the same state
    (a connection's first snapshot can overlap a peer's announcement) are collapsed."""
    states: list[bool] = []
    for frame in peer.frames:
        is_news = frame["type"] == "presence" and frame["user"] == user and (
            not states or states[-1] != frame["online"])
        if is_news:
            states.append(frame["online"])
    return states


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_presence_online_and_offline(server: ChatdProcess, kind: str) -> None:
    async with users(server, kind) as made:
        alice = await made.new()
        bob = await made.new(online=False)
        carol = await made.new(online=False)
        await send(alice, bob.name)  # now they share a conversation
        await bob.connect()
        assert await alice.recv("presence") == {"type": "presence", "user": bob.name,
                                                "online": True}
        assert await bob.recv("presence") == {"type": "presence", "user": alice.name,
                                              "online": True}
        # A second device of bob coming and going changes nothing for alice.
        bob2 = await bob.device()
        await bob2.close()
        await settle(bob, alice, alice.name)
        assert presence_states(alice, bob.name) == [True]
        await bob.close()
        assert await alice.recv("presence", where=lambda f: not f["online"]) == {
            "type": "presence", "user": bob.name, "online": False}
        # A stranger's presence never comes; bob's return does.
        await carol.connect()
        await carol.close()
        await bob.connect()
        await alice.recv("presence", where=lambda f: f["online"] and f["user"] == bob.name)
        await settle(bob, alice, alice.name)
        assert presence_states(alice, bob.name) == [True, False, True]
        assert presence_states(alice, carol.name) == []
        assert {f["user"] for f in alice.frames if f["type"] == "presence"} == {bob.name}


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_a_first_message_between_two_online_users_tells_each_of_the_other(
    server: ChatdProcess, kind: str
) -> None:
    """Presence goes to conversation peers when a user comes or goes; two users already
    online when their conversation begins learn of each other with its first message."""
    async with pair(server, kind) as (alice, bob):
        assert presence_states(alice, bob.name) == []
        await send(alice, bob.name)
        assert await bob.recv("presence") == {"type": "presence", "user": alice.name,
                                              "online": True}
        assert await alice.recv("presence") == {"type": "presence", "user": bob.name,
                                                "online": True}
        await send(bob, alice.name)  # no news: not told again
        await settle(bob, alice, alice.name)
        assert presence_states(alice, bob.name) == [True]
        assert presence_states(bob, alice.name) == [True]


# --- tokens on a live connection ----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_reauth(server: ChatdProcess, kind: str) -> None:
    async with pair(server, kind) as (alice, bob):
        newer = (await ahttp(server, "POST", "/v1/token/refresh",
                             token=alice.token)).json["token"]
        await alice.send({"type": "reauth", "token": newer})
        reauthed = await alice.recv("reauthed")
        assert set(reauthed) == {"type", "expires_in"}
        assert 86000 < reauthed["expires_in"] <= 86400
        await alice.send({"type": "reauth", "token": bob.token})  # another user's token
        assert (await alice.recv("error"))["code"] == "unauthorized"
        await alice.send({"type": "reauth", "token": "not-a-token"})
        assert (await alice.recv("error"))["code"] == "unauthorized"
        await exchange(alice, bob, bob.name)  # still open, still alice
        # After a reauth, the old token's logout no longer closes the connection...
        assert (await ahttp(server, "POST", "/v1/logout", token=alice.token)).status == 204
        await exchange(bob, alice, alice.name)
        # ...but the new token's does.
        assert (await ahttp(server, "POST", "/v1/logout", token=newer)).status == 204
        assert (await alice.recv("error"))["code"] == "unauthorized"
        assert await alice.wait_closed() == 4001


@pytest.mark.parametrize("kind", KINDS)
@run_async
async def test_logout_elsewhere_closes_that_tokens_connections_with_4001(
    server: ChatdProcess, kind: str
) -> None:
    async with pair(server, kind) as (alice, bob):
        alice2 = await alice.device()
        other = await alice.device(alice.login())
        assert (await ahttp(server, "POST", "/v1/logout", token=alice.token)).status == 204
        for peer in (alice, alice2):
            assert (await peer.recv("error"))["code"] == "unauthorized"
            assert await peer.wait_closed() == 4001
        await exchange(bob, other, alice.name)  # the connection on another token stays


# --- servers with special flags ----------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatdProcess]:
    """No presence, an Origin allow-list, a tight send limit and a queue cap."""
    base = tmp_path_factory.mktemp("limited")
    process = ChatdProcess(
        base / "data", base / "logs", "--no-presence", "--allowed-origin", "https://ok.example",
        "--send-rate", "1", "--send-burst", "2", "--max-queue", "2",
    ).start()
    yield process
    process.stop()


@run_async
async def test_send_rate_limit(limited: ChatdProcess) -> None:
    async with users(limited) as made:
        bob = await made.new(online=False)
        alice = await made.new()
        for client_id in ("r1", "r2", "r3"):
            await alice.send({"type": "send", "id": client_id, "to": bob.name, "body": body()})
        await alice.recv("ack", where=lambda f: f["id"] == "r1")
        await alice.recv("ack", where=lambda f: f["id"] == "r2")
        error = await error_for(alice, "r3")
        assert error["code"] == "rate_limited"
        assert isinstance(error["retry_after_ms"], int) and 0 < error["retry_after_ms"] <= 1000


@run_async
async def test_queue_full(limited: ChatdProcess) -> None:
    async with users(limited) as made:
        bob = await made.new(online=False)
        senders = [await made.new() for _ in range(3)]
        await send(senders[0], bob.name)
        await send(senders[1], bob.name)
        await senders[2].send({"type": "send", "id": "q3", "to": bob.name, "body": body()})
        assert (await error_for(senders[2], "q3"))["code"] == "queue_full"
        # A repeat of a stored message is acked, full queue or not.
        first = next(f for f in senders[0].frames if f["type"] == "ack")
        assert await send(senders[0], bob.name, None, first["id"]) == first
        # Once bob confirms, the queue has room again.
        await bob.connect()
        seqs = [(await bob.recv("message"))["seq"] for _ in range(2)]
        await bob.send({"type": "delivered", "seqs": seqs})
        await senders[0].recv("receipt")
        await senders[1].recv("receipt")
        await send(senders[2], bob.name, None, "q4")


@run_async
async def test_queue_cap_holds_for_a_burst(make_server: Any) -> None:
    """Sends that arrive together (one read, or two senders at once) cannot push a
    recipient's queue past the cap: each is counted against the ones still in flight."""
    server = make_server("--max-queue", "2")
    async with users(server) as made:
        bob = await made.new(online=False)
        alice = await made.new()
        ids = [f"burst-{i}" for i in range(5)]
        for client_id in ids:  # no waiting in between: they arrive together
            await alice.send({"type": "send", "id": client_id, "to": bob.name, "body": body()})
        outcomes = []
        for client_id in ids:
            frame = await alice.recv(("ack", "error"), where=answers(client_id))
            outcomes.append(frame["type"] if frame["type"] == "ack" else frame["code"])
        assert sorted(outcomes) == ["ack", "ack", "queue_full", "queue_full", "queue_full"]
        # Two senders at once, to someone else.
        carol = await made.new(online=False)
        senders = [await made.new() for _ in range(2)]
        await asyncio.gather(*(
            peer.send({"type": "send", "id": f"two-{i}-{j}", "to": carol.name, "body": body()})
            for i, peer in enumerate(senders) for j in range(2)
        ))
        acked = 0
        for i, peer in enumerate(senders):
            for j in range(2):
                frame = await peer.recv(("ack", "error"), where=answers(f"two-{i}-{j}"))
                acked += frame["type"] == "ack"
        assert acked == 2


@run_async
async def test_no_presence_flag(limited: ChatdProcess) -> None:
    async with users(limited) as made:
        alice = await made.new()
        bob = await made.new(online=False)
        await send(alice, bob.name)
        await bob.connect()
        await bob.recv("message")
        await bob.close()
        await bob.connect()
        await exchange(bob, alice, alice.name)
        assert not alice.untaken("presence") and not bob.untaken("presence")


@run_async
async def test_allowed_origin_passes_and_others_do_not(limited: ChatdProcess) -> None:
    async with users(limited) as made:
        me = await made.new(online=False)
        peer = await made.connect(me.token, origin="https://ok.example")
        assert peer.frames[0]["username"] == me.name
        await peer.close()
        for origin in ("https://evil.example", "https://ok.example.evil", "http://ok.example"):
            with pytest.raises(InvalidStatus) as refused:
                await made.connect(me.token, origin=origin)
            assert refused.value.response.status_code == 403


@run_async
async def test_max_connections_refuses_the_next_socket_with_503(make_server: Any) -> None:
    """--max-connections counts every socket, WebSocket or HTTP; the next gets 503."""
    server = make_server("--max-connections", "1")
    async with users(server) as made:
        me = await made.new()
        with pytest.raises(InvalidStatus) as refused:
            await made.connect(me.token)
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "5"
        assert orjson.loads(refused.value.response.body)["error"]["code"] == "server_busy"
        assert (await ahttp(server, "GET", "/healthz")).status == 503  # a socket too
        await me.close()

        async def slot_free() -> bool:
            return (await ahttp(server, "GET", "/healthz")).status == 200

        await apoll(slot_free, "the closed WebSocket's slot to come back")


@run_async
async def test_connection_closed_with_4001_when_its_token_expires(make_server: Any) -> None:
    """A real wait of 1-2 s: a token's ``exp`` is in whole seconds, so a TTL of 2 is the
    shortest that surely leaves the token a second to say hello with."""
    server = make_server("--token-ttl", "2")
    async with users(server) as made:
        me = await made.new()
        assert (await me.recv("error", timeout=10))["code"] == "unauthorized"
        assert await me.wait_closed() == 4001
        answer = await ahttp(server, "GET", "/v1/conversations", token=me.token)
        assert answer.status == 401


@run_async
async def test_token_signed_with_another_key_is_refused(server: ChatdProcess) -> None:
    """A token signed with a random key cannot pass as anyone."""
    async with users(server) as made:
        me = await made.new(online=False)
        claims = jwt.decode(me.token, options={"verify_signature": False})
        forged = jwt.encode(claims, "x" * 32, algorithm="HS256")
        peer = await made.connect(hello=False)
        await peer.send({"type": "hello", "protocol": "1.0", "token": forged})
        assert (await peer.recv("error"))["code"] == "unauthorized"
        assert await peer.wait_closed() == 4001


@run_async
async def test_send_errors_carry_ref_and_message(server: ChatdProcess) -> None:
    async with users(server) as made:
        alice = await made.new()
        await alice.send({"type": "send", "id": "e-1", "to": "nobody-xyz", "body": "x"})
        error = await error_for(alice, "e-1")
        assert set(error) >= {"type", "code", "ref", "message"}
        assert error["code"] == "unknown_user" and isinstance(error["message"], str)


@run_async
async def test_fragmented_messages_are_reassembled(server: ChatdProcess) -> None:
    async with pair(server) as (alice, bob):
        text = orjson.dumps({"type": "send", "id": "frag", "to": bob.name,
                             "body": body("f" * 3000)})
        parts = [text[i:i + 1000].decode() for i in range(0, len(text), 1000)]
        ws = alice.peer.ws  # the websockets connection: frames of our own making
        await ws.send(iter(parts))  # one message in several frames
        assert (await alice.recv("ack"))["id"] == "frag"
        assert (await bob.recv("message"))["id"] == "frag"
        # Over 64 KiB in total, in pieces of 16 KiB each: 1009 all the same.
        await ws.send(iter(["x" * 16384] * 5))
        assert await alice.wait_closed() == 1009


@run_async
async def test_permessage_deflate_is_not_offered(server: ChatdProcess) -> None:
    _, token = await anew_user(server)
    ws = await websockets.connect(server.ws_url, compression="deflate")
    try:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send(orjson.dumps({"type": "hello", "protocol": "1.0", "token": token}).decode())
        assert orjson.loads(await ws.recv())["type"] == "welcome"
    finally:
        await ws.close()


@run_async
async def test_catch_up_of_more_than_one_batch_comes_whole_and_in_order(
    make_server: Any,
) -> None:
    server = make_server("--send-rate", "5000", "--send-burst", "5000")
    async with users(server) as made:
        alice = await made.new()
        bob = await made.new(online=False)
        streamer = Streamer(alice, bob.name, "cu", window=100)
        await streamer.run(count=1100)  # more than two catch-up batches of 500
        assert len(streamer.acks) == 1100
        seqs = sorted(ack["seq"] for ack in streamer.acks.values())
        for kind in KINDS:  # unconfirmed: each client gets the whole queue
            b = await made.connect(bob.token, kind=kind)
            got = [(await b.recv("message"))["seq"] for _ in seqs]
            assert got == seqs
            fresh = await exchange(alice, b, bob.name)  # live pushes come after the catch-up
            assert fresh["seq"] > seqs[-1]
            await b.close()


async def silent_device(server: ChatdProcess, token: str) -> Any:
    """A WebSocket through hello that then reads nothing: the server's catch-up to it
    stalls once its socket is full, and stays stalled."""
    ws = await websockets.connect(server.ws_url, compression=None, max_queue=1,
                                  max_size=None)
    await ws.send(orjson.dumps({"type": "hello", "protocol": "1.0", "token": token}).decode())
    assert orjson.loads(await ws.recv())["type"] == "welcome"
    return ws


@run_async
async def test_own_messages_reach_a_device_that_is_still_catching_up(make_server: Any) -> None:
    """bob's second device is stuck in a long catch-up when bob's first device sends and
    alice answers. Once it reads, it gets the copy of bob's own message, although
    alice's newer message comes in its catch-up (the copy used to be dropped)."""
    server = make_server("--send-rate", "5000", "--send-burst", "5000")
    async with users(server) as made:
        alice = await made.new()
        bob = await made.new(online=False)
        # 600 x 20 KB: one catch-up batch (500) is far more than the socket buffers hold.
        await Streamer(alice, bob.name, "big", window=20, text="😀" * 5000).run(count=600)
        stuck = await silent_device(server, bob.token)
        sender = await silent_device(server, bob.token)
        try:
            await sender.send(orjson.dumps({"type": "send", "id": "own", "to": alice.name,
                                            "body": "mine"}).decode())

            async def own_stored() -> bool:  # its ack waits behind the catch-up
                page = (await ahttp(server, "GET",
                                    f"/v1/conversations/{bob.name}/messages?limit=1",
                                    token=alice.token)).json
                return bool(page["messages"]) and page["messages"][0]["id"] == "own"

            await apoll(own_stored, "the message of bob's first device to be stored")
            await send(alice, bob.name, None, "answer")
            bob2 = made.track(WsPeer(stuck))  # now read everything
            await bob2.recv("message", timeout=30, where=lambda f: f["id"] == "answer")
            await exchange(alice, bob2, bob.name)  # the catch-up is over
            copies = [f for f in bob2.frames if f["type"] == "message" and f["id"] == "own"]
            assert len(copies) == 1
        finally:
            sender.transport.abort()


@run_async
async def test_reauth_keeps_a_connection_past_its_first_tokens_expiry(
    make_server: Any,
) -> None:
    """A real wait of 2-3 s: with ``exp`` in whole seconds, a TTL of 2 is the shortest
    that gives the refreshed token a later second and still leaves about a second to
    reauth before the first token expires."""
    server = make_server("--token-ttl", "2")
    async with users(server) as made:
        alice = await made.new()
        bob = await made.new(online=False)  # offline: alice's acks show she is connected
        expires_at = jwt.decode(alice.token, options={"verify_signature": False})["exp"]
        # A token issued a second later lives a second longer.
        while int(time.time()) <= expires_at - 2:
            await send(alice, bob.name)
            await asyncio.sleep(0.1)  # pacing under the send rate limit, not a wait
        newer = (await ahttp(server, "POST", "/v1/token/refresh",
                             token=alice.token)).json["token"]
        newer_expiry = jwt.decode(newer, options={"verify_signature": False})["exp"]
        assert newer_expiry > expires_at
        await alice.send({"type": "reauth", "token": newer})
        assert (await alice.recv("reauthed"))["expires_in"] >= 1
        while time.time() < expires_at + 0.3:  # past the first token's expiry: still open
            await send(alice, bob.name)
            await asyncio.sleep(0.1)
        assert alice.close_code is None
        assert (await alice.recv("error"))["code"] == "unauthorized"  # then the new one expires
        assert await alice.wait_closed() == 4001
        assert time.time() >= newer_expiry - 0.5


def admin(server: ChatdProcess, *args: str, stdin: str = "") -> None:
    subprocess.run(
        [sys.executable, "-m", "chatd", *args, "--data-dir", str(server.data_dir),
         "--log-dir", str(server.log_dir), *(["--db", server.db] if server.db else [])],
        input=stdin, text=True, check=True, capture_output=True, timeout=60,
    )


@pytest.mark.parametrize("action", ["disable", "passwd"])
@run_async
async def test_disable_or_password_change_closes_live_connections_with_4001(
    make_server: Any, action: str
) -> None:
    server = make_server()
    async with pair(server) as (alice, bob):
        await asyncio.to_thread(admin, server, "user", action, alice.name,
                                stdin="a new password 1\n")
        assert (await alice.recv("error"))["code"] == "unauthorized"
        assert await alice.wait_closed() == 4001
        answer = await ahttp(server, "GET", "/v1/conversations", token=alice.token)
        assert answer.status == 401
        assert (await ahttp(server, "GET", "/v1/conversations", token=bob.token)).status == 200


@run_async
async def test_settings_from_a_toml_config_file(make_server: Any, tmp_path: Any) -> None:
    config = tmp_path / "chatd.toml"
    config.write_text(
        'token_ttl = 7\nmax_connections = 1\nallowed_origin = ["https://ok.example"]\n'
        "send_rate = 50\n"
    )
    server = make_server("--config", str(config), "--send-rate", "1", "--send-burst", "1")
    name = register(server)
    grant = (await ahttp(server, "POST", "/v1/login",
                         {"username": name, "password": PASSWORD})).json
    assert grant["expires_in"] == 7  # from the file
    async with users(server) as made:
        bob = await made.new(online=False)
        first = await made.connect(grant["token"], origin="https://ok.example")
        with pytest.raises(InvalidStatus) as refused:
            await made.connect(grant["token"])
        assert refused.value.response.status_code == 503  # max_connections from the file
        await first.send({"type": "send", "id": "c1", "to": bob.name, "body": "1"})
        await first.send({"type": "send", "id": "c2", "to": bob.name, "body": "2"})
        # The flag beats the file: a burst of 1.
        assert (await error_for(first, "c2"))["code"] == "rate_limited"


# --- the server's log after all of the above -----------------------------------------


def test_server_log_is_json_lines_without_secrets(server: ChatdProcess) -> None:
    """Runs last in this module: every line the shared server logged is a JSON object,
    and no password, token or message body used above appears in it."""
    log_files = sorted(server.log_dir.glob("chatd.log*"))
    assert log_files
    text = "\n".join(path.read_text() for path in log_files)
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) > 50
    for line in lines:
        assert isinstance(orjson.loads(line), dict), line
    assert PASSWORD not in text
    assert SECRET_BODY not in text
    assert "😀" not in text and "\\ud83d" not in text.lower()
    assert ISSUED_TOKENS
    for token in ISSUED_TOKENS:
        assert token.split(".")[2] not in text  # not even a token's signature part


# The events issue 4 lists, each with the fields it must carry.
LOGGED_EVENTS = {
    "server.start": {"version", "host", "port"},
    "connection.open": {"conn_id", "peer"},
    "connection.close": {"conn_id", "peer", "user", "duration_s", "close_code"},
    "register.ok": {"user", "user_id"},
    "login.ok": {"ip", "user", "user_id"},
    "login.failed": {"ip", "user"},
    "login.rate_limited": {"ip", "user"},
    "logout.ok": {"user", "jti"},
    "message.accepted": {"seq", "client_id", "sender", "recipient"},
    "message.delivered": {"seq", "client_id", "sender", "recipient", "latency_ms"},
    "message.redelivered": {"seq", "client_id", "sender", "recipient", "age_ms", "attempt"},
    "message.rejected": {"code", "client_id", "sender"},
}


@run_async
async def test_server_log_has_every_listed_event_with_its_fields(server: ChatdProcess) -> None:
    """Every event issue 4 lists reaches the log with its fields (failed logins come
    from another loopback address, so this server's other clients are not limited)."""
    async with users(server) as made:
        alice = await made.new()
        bob = await made.new(online=False)
        queued = await send(alice, bob.name)  # bob is offline: redelivered at his hello
        await bob.connect()
        pushed = await bob.recv("message", where=lambda f: f["seq"] == queued["seq"])
        await bob.send({"type": "delivered", "seqs": [pushed["seq"]]})
        await alice.recv("receipt", where=lambda f: f.get("seq") == queued["seq"])
        await alice.send({"type": "send", "id": new_id(), "to": alice.name, "body": body()})
        await alice.recv("error", where=field_is("code", "invalid_recipient"))
        assert (await ahttp(server, "POST", "/v1/logout", token=alice.token)).status == 204
        await alice.recv("error", where=field_is("code", "unauthorized"))
        await bob.close()
    statuses = [
        (await asyncio.to_thread(
            http, server, "POST", "/v1/login",
            {"username": bob.name, "password": "wrong password"}, source_ip="127.0.0.9",
        )).status
        for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]

    def missing() -> list[str]:
        records = [
            orjson.loads(line)
            for path in sorted(server.log_dir.glob("chatd.log*"))
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        for record in records:
            assert {"ts", "level", "event"} <= record.keys(), record
        return [
            event for event, fields in LOGGED_EVENTS.items()
            if not any(r["event"] == event and fields <= r.keys() for r in records)
        ]

    # chatd writes its log from a thread of its own: the last lines may lag a little
    await apoll(lambda: not missing(), lambda: f"every event logged with its fields, "
                f"but never: {missing()}", interval=0.05)
