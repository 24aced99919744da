"""The cross-node bus: payload codec, LocalBus, and PostgresBus on a real PostgreSQL.

Each PostgresBus test uses its own NOTIFY channel, so tests running at once stay apart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from psycopg import sql

from chatd.bus import (
    MAX_PAYLOAD_BYTES,
    BusEvent,
    Delivered,
    FamilyRevoked,
    LocalBus,
    MessageStored,
    NodeHere,
    NodeJoined,
    PeersOnline,
    Presence,
    ReadUpTo,
    TokenRetired,
    TokenRevoked,
    Typing,
    UserRevoked,
    decode_event,
    encode_event,
)
from chatd.bus.events import decode_payload, encode_piece, pack_pieces, split_event
from chatd.bus.postgres import PostgresBus
from chatd.hub.bridge import Publisher
from tests.support.aio import run
from tests.support.pg import PG_DSN as DSN
from tests.support.pg import require_postgres
from tests.support.poll import apoll

EVENTS: list[BusEvent] = [
    MessageStored(recipient="bob", seq=42, sender="alice"),
    Delivered(sender="alice", seqs=[1, 2, 2**62]),
    ReadUpTo(reader="bob", peer="alice", up_to=42, ts=1_700_000_000_000),
    Typing(sender="alice", to="bob"),
    Presence(user="alice", online=True),
    Presence(user="alice", online=False),
    PeersOnline(user="bob", peers=("alice", "carol")),
    NodeJoined(),
    NodeHere(to="3f1c9a77aa01"),
    TokenRevoked(jti="3f1c-9a", expires_at=1_700_003_600),
    TokenRetired(jti="3f1c-9a", family="77aa", expires_at=1_700_003_600, grace_until=1.7e9 + 0.25),
    FamilyRevoked(family="77aa", expires_at=1_700_003_600),
    UserRevoked(username="alice", generation=3),
]


# What reaches the hub: the bus acts on its own events (NodeJoined, NodeHere) itself.
HUB_EVENTS = [e for e in EVENTS if not isinstance(e, (NodeJoined, NodeHere))]


@pytest.fixture
def channel() -> str:
    require_postgres()
    return f"chat_{uuid.uuid4().hex}"


# --- codec --------------------------------------------------------------------------------


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_round_trips(event: BusEvent) -> None:
    payload = encode_event(event, "node-1")
    assert decode_event(payload) == ("node-1", event)
    assert len(payload.encode()) < 200  # ids only: compact


def test_delivered_seqs_are_a_tuple() -> None:
    assert Delivered(sender="a", seqs=[3, 4]).seqs == (3, 4)


def test_many_peers_online_are_split_into_payloads_notify_takes() -> None:
    names = [f"{index:04d}" + "x" * 28 for index in range(1000)]  # the longest usernames
    pieces = list(split_event(PeersOnline(user="y" * 32, peers=names)))
    assert len(pieces) > 1
    assert [name for piece in pieces for name in piece.peers] == names
    for piece in pieces:
        assert len(encode_event(piece, "node-1").encode()) <= MAX_PAYLOAD_BYTES


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not json",
        "[]",
        '{"k": "m", "n": "x"}',
        '{"k": "?", "n": "x"}',
        '{"n": "x", "user": "a", "online": true}',
        '{"k": "p", "user": "a", "online": true}',
        '{"k": "p", "n": 7, "user": "a", "online": true}',
        '{"k": "p", "n": "x", "user": "a", "online": true, "extra": 1}',
    ],
)
def test_foreign_payloads_are_refused(payload: str) -> None:
    with pytest.raises(ValueError):
        decode_event(payload)


def test_events_are_packed_in_order_into_payloads_notify_takes() -> None:
    events = [*EVENTS, *(MessageStored(recipient=f"u{i}", seq=i, sender="a") for i in range(300))]
    payloads = pack_pieces([encode_piece(event) for event in events], "node-1")
    assert 1 < len(payloads) < 10
    assert all(len(payload.encode()) <= MAX_PAYLOAD_BYTES for payload in payloads)
    decoded = [decode_payload(payload) for payload in payloads]
    assert {node for node, _ in decoded} == {"node-1"}
    assert [event for _, some in decoded for event in some] == events
    assert decode_payload(payloads[0], unless_from="node-1") == ("node-1", [])  # its own
    # a payload of one event, as a node of any version writes it, reads the same way
    assert decode_payload(encode_event(events[0], "node-2")) == ("node-2", [events[0]])
    with pytest.raises(ValueError):  # several events are not one
        decode_event(payloads[0])
    with pytest.raises(ValueError):
        pack_pieces([encode_piece(Delivered(sender="a", seqs=range(2000)))], "n")


@pytest.mark.parametrize(
    "payload",
    ['{"n": "x", "e": {}}', '{"n": "x", "e": [{"k": "?"}]}', '{"n": 1, "e": []}',
     '{"n": "x", "e": [{"k": "p", "user": "a"}]}'],
)
def test_foreign_packed_payloads_are_refused(payload: str) -> None:
    with pytest.raises(ValueError):
        decode_payload(payload)


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_event(Delivered(sender="a", seqs=range(2000)), "n")
    assert MAX_PAYLOAD_BYTES < 8000


def test_local_bus_delivers_nothing() -> None:
    async def body() -> None:
        seen: list[BusEvent] = []
        bus = LocalBus()
        await bus.start(seen.append)
        await bus.publish(EVENTS[0])
        await bus.close()
        assert seen == []

    run(body)


class RecordingBus:
    """A bus of several nodes that keeps what it was asked to publish, call by call."""

    others_listening = True

    def __init__(self) -> None:
        self.calls: list[list[BusEvent]] = []

    async def start(self, handler: Any, on_resync: Any = None) -> None:
        pass

    async def publish(self, event: BusEvent) -> None:
        self.calls.append([event])

    async def publish_many(self, events: Sequence[BusEvent]) -> None:
        self.calls.append(list(events))

    async def close(self) -> None:
        pass


def test_the_events_of_one_loop_turn_are_published_in_one_job() -> None:
    """A message and its receipt each make an event: one job (one task) per turn, not
    per event (issue 17); events of a later turn go in a later job, in order."""

    async def body() -> None:
        bus = RecordingBus()
        publisher = Publisher(bus)
        for event in EVENTS[:3]:
            publisher.publish(event)
        assert len(publisher.tasks.running) == 1
        await asyncio.wait(publisher.tasks.running)
        publisher.publish(EVENTS[3])
        await asyncio.wait(publisher.tasks.running)
        assert bus.calls == [EVENTS[:3], [EVENTS[3]]]

    run(body)


# --- PostgresBus ------------------------------------------------------------------------


@pytest.mark.pg
def test_a_node_alone_publishes_nothing_and_a_node_joining_is_heard_at_once(
    channel: str,
) -> None:
    """A node alone on the database stops publishing (nobody would hear it); a node
    that starts is heard before anything could be lost: the first publishes again and
    the newcomer resyncs for what was published to nobody; when it leaves, the first
    is alone again."""

    async def body() -> None:
        heard_at_b: list[BusEvent] = []
        resyncs_at_b: list[str] = []
        bus_a = PostgresBus(DSN, channel=channel, node_id="a", check_interval=0.05)
        publisher = Publisher(bus_a)
        await bus_a.start(lambda _event: None)
        try:
            await apoll(lambda: not bus_a.others_listening, "A to find itself alone")
            published = bus_a.published
            publisher.publish(Presence(user="alice", online=True))
            assert not publisher.tasks.running
            assert bus_a.published == published

            bus_b = PostgresBus(DSN, channel=channel, node_id="b", check_interval=3600)
            await bus_b.start(heard_at_b.append, lambda: resyncs_at_b.append("resync"))
            try:
                await apoll(lambda: bus_a.others_listening, "A to hear B join")
                await apoll(lambda: resyncs_at_b == ["resync"], "B told to resync")
                publisher.publish(Presence(user="alice", online=False))
                await apoll(lambda: heard_at_b == [Presence(user="alice", online=False)],
                            "B to hear A")
            finally:
                await bus_b.close()
            await apoll(lambda: not bus_a.others_listening, "A alone again")
        finally:
            await bus_a.close()

    run(body)


@pytest.mark.pg
def test_a_node_whose_listener_is_down_publishes(channel: str) -> None:
    """It could not hear a node join meanwhile."""

    async def body() -> None:
        bus = PostgresBus(DSN, channel=channel, node_id="a", check_interval=0.05)
        await bus.start(lambda _event: None)
        try:
            await apoll(lambda: not bus.others_listening, "alone")
            with psycopg.connect(DSN, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                              " WHERE application_name = %s", (bus.listener_name,))
            await apoll(lambda: bus.others_listening, "publishing while deaf")
            await apoll(lambda: bus.listening and not bus.others_listening,
                        "alone again once listening")
        finally:
            await bus.close()

    run(body)


@pytest.mark.pg
def test_events_reach_the_other_node_and_not_their_own(channel: str) -> None:
    async def body() -> None:
        at_a: list[BusEvent] = []
        at_b: list[BusEvent] = []
        bus_a = PostgresBus(DSN, channel=channel, node_id="a")
        bus_b = PostgresBus(DSN, channel=channel, node_id="b")
        await bus_a.start(at_a.append)
        await bus_b.start(at_b.append)
        try:
            for event in EVENTS:
                await bus_a.publish(event)  # NodeHere is to another node: ignored
            marker = Presence(user="b-done", online=True)
            await bus_b.publish(marker)
            await apoll(lambda: len(at_b) == len(HUB_EVENTS), "B to hear all of A's events")
            # A hears B's marker, published after A's own events: had A not skipped its
            # own, they would be in front of it.
            await apoll(lambda: bool(at_a), "A to hear B's marker")
            assert at_b == HUB_EVENTS
            assert at_a == [marker]
        finally:
            await bus_a.close()
            await bus_b.close()

    run(body)


@pytest.mark.pg
def test_events_published_at_once_go_out_together_in_order(channel: str) -> None:
    """In one statement per round trip's worth, and, between nodes that all read packed
    payloads, in as few notifications as they fit (PostgreSQL queues each one, and
    every listener reads each)."""

    async def body() -> None:
        heard: list[BusEvent] = []
        bus_a = PostgresBus(DSN, channel=channel, node_id="a", check_interval=0.05)
        bus_b = PostgresBus(DSN, channel=channel, node_id="b")
        await bus_b.start(heard.append)
        await bus_a.start(lambda _event: None)  # after B: it never publishes NodeHere
        try:
            await apoll(lambda: bus_a.packing, "A to find that B reads packed payloads")
            # Repeats too: PostgreSQL delivers identical payloads of one transaction
            # once, and the last "online" must not be lost.
            flips = [Presence(user="alice", online=i % 2 == 0) for i in range(5)]
            events = [MessageStored(recipient="bob", seq=i, sender="alice") for i in range(300)]
            events += flips
            published, sends = bus_a.published, bus_a.sends  # its NodeJoined before
            notifications = bus_a.notifications
            await asyncio.gather(*(bus_a.publish(event) for event in events))
            await apoll(lambda: len(heard) == len(events), "B to hear every event")
            assert heard == events
            assert bus_a.published - published == len(events)
            assert bus_a.sends - sends < len(events) / 10
            assert bus_a.notifications - notifications <= 10
        finally:
            await bus_a.close()
            await bus_b.close()

    run(body)


@pytest.mark.pg
def test_a_large_delivered_is_split_and_arrives_whole(channel: str) -> None:
    async def body() -> None:
        heard: list[BusEvent] = []
        bus_a = PostgresBus(DSN, channel=channel)
        bus_b = PostgresBus(DSN, channel=channel)
        await bus_a.start(lambda _event: None)
        await bus_b.start(heard.append)
        try:
            seqs = list(range(10**15, 10**15 + 1000))
            await bus_a.publish(Delivered(sender="alice", seqs=seqs))

            def received() -> list[int]:
                return [s for e in heard if isinstance(e, Delivered) for s in e.seqs]

            await apoll(lambda: len(received()) == len(seqs), "all the seqs")
            assert received() == seqs
            assert len(heard) > 1
        finally:
            await bus_a.close()
            await bus_b.close()

    run(body)


@pytest.mark.pg
def test_listener_reconnects_after_its_connection_is_killed(channel: str) -> None:
    async def body() -> None:
        resyncs: list[None] = []
        heard: list[BusEvent] = []
        bus_a = PostgresBus(DSN, channel=channel)
        bus_b = PostgresBus(DSN, channel=channel)
        await bus_a.start(heard.append, on_resync=lambda: resyncs.append(None))
        await bus_b.start(lambda _event: None)
        try:
            async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as admin:
                cur = await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (bus_a.listener_name,),
                )
                assert [row[0] for row in await cur.fetchall()] == [True]
            await apoll(lambda: bool(resyncs), "the listener to reconnect")
            assert bus_a.reconnects == 1
            event = MessageStored(recipient="bob", seq=7, sender="alice")
            await bus_b.publish(event)
            await apoll(lambda: bool(heard), "an event after the reconnect")
            assert heard == [event]
        finally:
            await bus_a.close()
            await bus_b.close()

    run(body)


@pytest.mark.pg
def test_publish_survives_a_killed_publishing_connection(channel: str) -> None:
    async def body() -> None:
        heard: list[BusEvent] = []
        bus_a = PostgresBus(DSN, channel=channel, node_id=f"pub-{uuid.uuid4().hex[:8]}")
        bus_b = PostgresBus(DSN, channel=channel)
        await bus_a.start(lambda _event: None)
        await bus_b.start(heard.append)
        try:
            first = Typing(sender="alice", to="bob")
            await bus_a.publish(first)
            async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as admin:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (f"chatd-bus-notify-{bus_a.node_id}",),
                )
            second = Typing(sender="alice", to="carol")
            await bus_a.publish(second)
            await apoll(lambda: len(heard) == 2, "both events")
            assert heard == [first, second]
        finally:
            await bus_a.close()
            await bus_b.close()

    run(body)


@pytest.mark.pg
def test_handler_errors_do_not_stop_the_listener(channel: str) -> None:
    async def body() -> None:
        heard: list[BusEvent] = []

        def handler(event: BusEvent) -> None:
            heard.append(event)
            if len(heard) == 1:
                raise RuntimeError("a bug in the host")

        bus_a = PostgresBus(DSN, channel=channel)
        bus_b = PostgresBus(DSN, channel=channel)
        await bus_a.start(lambda _event: None)
        await bus_b.start(handler)
        try:
            await bus_a.publish(EVENTS[0])
            await bus_a.publish(EVENTS[1])
            await apoll(lambda: len(heard) == 2, "both events")
            assert heard == EVENTS[:2]
        finally:
            await bus_a.close()
            await bus_b.close()

    run(body)


@pytest.mark.pg
def test_beside_an_older_node_events_go_one_per_notification(channel: str) -> None:
    """A node that reads one event per notification (its listener's name lacks the
    mark) gets every event as such, from its join on: the node that was packing
    stops at once and tells it to resync for what it may not have read."""

    async def body() -> None:
        bus_a = PostgresBus(DSN, channel=channel, node_id="a", check_interval=0.05)
        bus_b = PostgresBus(DSN, channel=channel, node_id="b")
        await bus_b.start(lambda _event: None)
        await bus_a.start(lambda _event: None)
        old: psycopg.AsyncConnection[Any] | None = None
        try:
            await apoll(lambda: bus_a.packing, "A packing beside B")
            old = await psycopg.AsyncConnection.connect(
                DSN, autocommit=True, application_name="chatd-bus-listen-old")
            await old.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            joined = encode_event(NodeJoined(), "old")
            await old.execute("SELECT pg_notify(%s, %s)", (channel, joined))
            payloads: list[str] = []

            async def read_until_done() -> None:
                async for notify in old.notifies():
                    payloads.append(notify.payload)
                    if notify.payload == encode_event(Presence(user="done", online=True), "a"):
                        return

            reader = asyncio.create_task(read_until_done())
            await apoll(lambda: not bus_a.packing, "A to hear the old node join")
            events = [MessageStored(recipient="bob", seq=i, sender="alice") for i in range(50)]
            await asyncio.gather(*(bus_a.publish(event) for event in events))
            await bus_a.publish(Presence(user="done", online=True))
            await asyncio.wait_for(reader, 10)
            from_a = [decode_payload(p) for p in payloads if decode_payload(p)[0] == "a"]
            assert all(len(some) == 1 for _, some in from_a)  # each one event, old-style
            heard = [some[0] for _, some in from_a]
            assert NodeHere(to="old") in heard
            assert heard[-51:-1] == events
            looks = bus_a.looks  # and later looks find the old node: A does not pack
            await apoll(lambda: bus_a.looks >= looks + 2, "two more looks")
            assert not bus_a.packing
        finally:
            if old is not None:
                await old.close()
            await bus_a.close()
            await bus_b.close()

    run(body)
