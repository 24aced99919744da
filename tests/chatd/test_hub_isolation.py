"""One connection's failing store job never costs another connection its work.

The hub batches a loop turn's sends (one ``submit``) and delivered marks (one
``mark_delivered_many``) across connections. These tests run a real :class:`Hub` on a
real SQLite store whose jobs fail for one chosen user, with sessions that record what
the hub sends them, and check that the other users' work lands and that the failing
connection alone hears ``internal_error``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from chatd.accounts import Accounts, Identity
from chatd.auth import LoginLimiter, Passwords, RevocationCache, Tokens
from chatd.bus import Delivered as BusDelivered
from chatd.bus import MessageStored, UserRevoked
from chatd.config import Config
from chatd.hub import Hub, Publisher, Sessions
from chatd.observe.metrics import Metrics
from chatd.store import NewMessage, StoreError, StoreUnavailable, User
from chatd.store.sqlite import SqliteStore
from chatd.turn import LoopTurn
from chatd.users import UserDirectory
from libchat import limits, protocol
from libchat.protocol import Delivered, Error, Hello, Message, Read, Send, ServerFrame
from tests.chatd.conftest import run_async

TS = 1_700_000_000_000


class FaultyStore(SqliteStore):
    """A real SQLite store whose message jobs fail when they touch a ``failing`` user
    (as the sender of a message, or as the one marking delivered or read)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, sync="normal")
        self.failing: set[int] = set()
        self.error: type[Exception] = StoreError  # or another type: a store's bug
        self.calls: list[str] = []

    def _check(self, op: str, user_ids: Sequence[int]) -> None:
        self.calls.append(op)
        if self.failing.intersection(user_ids):
            raise self.error(f"injected failure in {op}")

    async def submit(self, messages: Sequence[NewMessage]) -> list[Message]:
        self._check("submit", [m.sender_id for m in messages])
        return await super().submit(messages)

    async def mark_delivered_many(
        self, marks: Sequence[tuple[int, Sequence[int]]], now_ms: int
    ) -> list[list[Message]]:
        self._check("mark_delivered_many", [user_id for user_id, _ in marks])
        return await super().mark_delivered_many(marks, now_ms)

    async def queued(self, recipient_id: int, after: int, limit: int) -> Any:
        self._check("queued", [recipient_id])
        return await super().queued(recipient_id, after, limit)

    async def mark_read(self, reader_id: int, peer_id: int, up_to: int, now_ms: int) -> Any:
        self._check("mark_read", [reader_id])
        return await super().mark_read(reader_id, peer_id, up_to, now_ms)


@attrs.define
class FakeSession:
    """A WebSocket as the hub sees it; keeps every frame it was sent, decoded."""

    conn_id: int
    peer_ip: str = "127.0.0.1"
    upgrade_token: str | None = None
    identity: Identity | None = None
    frames: list[ServerFrame] = attrs.field(factory=list)

    def signed_in(self, identity: Identity) -> None:
        self.identity = identity

    def send_frame(self, frame: ServerFrame) -> None:
        self.frames.append(frame)

    def send_text(self, text: str) -> None:
        self.frames.append(protocol.decode_server_frame(text))

    def fail(self, code: str, close_code: int, message: str | None = None) -> None:
        raise AssertionError(f"session failed: {code} {close_code} {message}")

    async def drained(self) -> None:
        return None

    def of(self, kind: type[Any]) -> list[Any]:
        return [frame for frame in self.frames if type(frame) is kind]


@attrs.define
class World:
    hub: Hub
    store: FaultyStore
    tokens: Tokens
    users: dict[str, User] = attrs.field(factory=dict)
    sessions: dict[str, FakeSession] = attrs.field(factory=dict)

    async def connect(self, *names: str) -> None:
        for name in names:
            user = await self.store.create_user(name, "hash", TS)
            assert user is not None
            token = self.tokens.issue(user.id, user.token_generation, TS / 1000).token
            session = FakeSession(conn_id=len(self.sessions) + 1)
            self.users[name], self.sessions[name] = user, session
            self.hub.receive(session, [Hello(protocol="1.0", token=token)])
        await self.hub.wait_idle()

    async def delivered_elsewhere(self, sender: str, recipient: str, *ids: str) -> list[Message]:
        """Messages from ``sender`` to ``recipient``, a user with no connection here,
        stored and marked delivered as the recipient's node does."""
        user = await self.store.create_user(recipient, "hash", TS)
        assert user is not None
        self.users[recipient] = user
        messages = [await self.send(sender, recipient, client_id) for client_id in ids]
        await self.store.mark_delivered_many([(user.id, [m.seq for m in messages])], TS + 5)
        return messages

    async def send(self, sender: str, recipient: str, client_id: str) -> Message:
        (message,) = await self.store.submit([NewMessage(
            sender_id=self.users[sender].id, sender=sender,
            recipient_id=self.users[recipient].id, recipient=recipient,
            client_id=client_id, body="hi", ts=TS,
        )])
        return message


@asynccontextmanager
async def world(tmp_path: Path, config: Config | None = None) -> AsyncIterator[World]:
    store = FaultyStore(tmp_path / "chatd.db")
    await store.migrate()
    await store.open()
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        users = UserDirectory(store)
        metrics = Metrics()
        tokens = Tokens(secrets.token_bytes(32), 3600)
        revocations = RevocationCache()
        publisher = Publisher()
        sessions = Sessions(revocations, users, metrics, publisher.publish,
                            clock=lambda: TS / 1000 + 1)
        accounts = Accounts(
            store, users, Passwords(executor), tokens, LoginLimiter(store),
            revocations, metrics, news=sessions, clock=lambda: TS / 1000,
        )
        hub = Hub(config or Config(presence=False), store, users, accounts, metrics,
                  sessions=sessions, publisher=publisher,
                  turn=LoopTurn(asyncio.get_running_loop()), clock=lambda: TS / 1000 + 1)
        yield World(hub=hub, store=store, tokens=tokens)
        await hub.wait_idle()
    finally:
        await store.close()
        executor.shutdown()


@pytest.mark.parametrize("error", [StoreError, OverflowError])
@run_async
async def test_a_failing_delivered_job_lands_the_other_connections_marks(
    tmp_path: Path, error: type[Exception]
) -> None:
    async with world(tmp_path) as w:
        await w.connect("alice", "bob", "carol", "dave")
        to_bob = await w.send("alice", "bob", "m1")
        to_dave = await w.send("carol", "dave", "m2")
        w.store.failing.add(w.users["dave"].id)
        w.store.error = error
        # one loop turn: both marks go to the store in one job, which fails for dave
        w.hub.receive(w.sessions["bob"], [Delivered(seqs=(to_bob.seq,))])
        w.hub.receive(w.sessions["dave"], [Delivered(seqs=(to_dave.seq,))])
        await w.hub.wait_idle()

        assert [r.seq for r in w.sessions["alice"].of(protocol.DeliveredReceipt)] == [to_bob.seq]
        assert await w.store.queue_depth(w.users["bob"].id) == 0
        (error,) = w.sessions["dave"].of(Error)
        assert (error.code, error.ref) == ("internal_error", None)
        assert w.sessions["carol"].of(protocol.DeliveredReceipt) == []
        assert await w.store.queue_depth(w.users["dave"].id) == 1
        assert w.sessions["bob"].of(Error) == []
        # one batch job, then one job per connection
        assert w.store.calls.count("mark_delivered_many") == 3


@run_async
async def test_the_normal_case_is_one_delivered_job_per_turn(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.connect("alice", "bob", "carol", "dave")
        to_bob = await w.send("alice", "bob", "m1")
        to_dave = await w.send("carol", "dave", "m2")
        w.store.calls.clear()
        w.hub.receive(w.sessions["bob"], [Delivered(seqs=(to_bob.seq,))])
        w.hub.receive(w.sessions["dave"], [Delivered(seqs=(to_dave.seq,))])
        await w.hub.wait_idle()
        assert w.store.calls == ["mark_delivered_many"]
        assert len(w.sessions["alice"].of(protocol.DeliveredReceipt)) == 1
        assert len(w.sessions["carol"].of(protocol.DeliveredReceipt)) == 1


@run_async
async def test_a_lone_failing_delivered_job_gets_an_error_and_no_retry(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.connect("alice", "bob")
        to_bob = await w.send("alice", "bob", "m1")
        w.store.failing.add(w.users["bob"].id)
        w.store.calls.clear()
        w.hub.receive(w.sessions["bob"], [Delivered(seqs=(to_bob.seq,))])
        await w.hub.wait_idle()
        assert [e.code for e in w.sessions["bob"].of(Error)] == ["internal_error"]
        assert w.store.calls == ["mark_delivered_many"]
        assert w.sessions["alice"].of(protocol.DeliveredReceipt) == []


@run_async
async def test_a_failing_send_job_still_acks_the_other_connections_sends(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        await w.connect("alice", "bob", "carol", "dave")
        w.store.failing.add(w.users["carol"].id)
        # one loop turn: both sends go to the store in one submit, which fails for carol
        w.hub.receive(w.sessions["alice"], [Send(id="a1", to="bob", body="hello")])
        w.hub.receive(w.sessions["carol"], [Send(id="c1", to="dave", body="hello")])
        await w.hub.wait_idle()

        (ack,) = w.sessions["alice"].of(protocol.Ack)
        assert ack.id == "a1"
        assert [m.seq for m in w.sessions["bob"].of(Message)] == [ack.seq]
        (error,) = w.sessions["carol"].of(Error)
        assert (error.code, error.ref) == ("internal_error", "c1")
        assert w.sessions["dave"].of(Message) == []
        assert w.store.calls.count("submit") == 3  # the batch, then one per connection


@run_async
async def test_a_failing_read_gets_an_error_frame(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.connect("alice", "bob")
        to_bob = await w.send("alice", "bob", "m1")
        w.store.failing.add(w.users["bob"].id)
        w.hub.receive(w.sessions["bob"], [Read(peer="alice", up_to=to_bob.seq)])
        await w.hub.wait_idle()
        assert [(e.code, e.ref) for e in w.sessions["bob"].of(Error)] == [
            ("internal_error", None)
        ]
        assert w.sessions["alice"].of(protocol.ReadReceipt) == []
        w.store.failing.clear()
        w.hub.receive(w.sessions["bob"], [Read(peer="alice", up_to=to_bob.seq)])
        await w.hub.wait_idle()
        assert [r.up_to for r in w.sessions["alice"].of(protocol.ReadReceipt)] == [to_bob.seq]


@run_async
async def test_a_remote_message_that_cannot_be_read_reaches_its_recipient_anyway(
    tmp_path: Path,
) -> None:
    """Another node stored a message for bob and announced it on the bus; reading it
    failed (the database connection died, as when backends are terminated). The hub
    must catch bob up rather than drop the push until his next connection."""
    async with world(tmp_path) as w:
        await w.connect("bob")
        alice = await w.store.create_user("alice", "hash", TS)
        assert alice is not None
        w.users["alice"] = alice
        message = await w.send("alice", "bob", "remote-1")
        failing_read = w.store.messages_by_seq

        async def unreadable(seqs: Sequence[int]) -> list[Message]:
            w.store.messages_by_seq = failing_read  # type: ignore[method-assign]
            raise StoreError("terminating connection due to administrator command")

        w.store.messages_by_seq = unreadable  # type: ignore[method-assign]
        w.hub.on_bus_event(MessageStored(recipient="bob", seq=message.seq, sender="alice"))
        await w.hub.wait_idle()
        assert [m.seq for m in w.sessions["bob"].of(Message)] == [message.seq]


@run_async
async def test_remote_delivered_marks_of_one_loop_turn_are_read_at_once(tmp_path: Path) -> None:
    """Bob, on another node, confirmed two of alice's messages, in two events that
    arrive in one loop turn: one store read brings alice both receipts (issue 17)."""
    async with world(tmp_path) as w:
        await w.connect("alice")
        first, second = await w.delivered_elsewhere("alice", "bob", "m-1", "m-2")
        reads: list[Sequence[int]] = []
        read = w.store.messages_by_seq

        async def counted(seqs: Sequence[int]) -> list[Message]:
            reads.append(list(seqs))
            return await read(seqs)

        w.store.messages_by_seq = counted  # type: ignore[method-assign]
        w.hub.on_bus_event(BusDelivered(sender="alice", seqs=[first.seq]))
        w.hub.on_bus_event(BusDelivered(sender="alice", seqs=[second.seq]))
        await w.hub.wait_idle()
        assert reads == [[first.seq, second.seq]]
        receipts = w.sessions["alice"].of(protocol.DeliveredReceipt)
        assert [r.id for r in receipts] == ["m-1", "m-2"]


@pytest.mark.parametrize("error", [StoreUnavailable, StoreError])
@run_async
async def test_remote_delivered_marks_that_cannot_be_read_fail_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: type[StoreError]
) -> None:
    """Bob, on another node, confirmed alice's message; reading it here fails. Receipts
    are not stored or queued (the contract: alice sees it delivered in her history), so
    it is dropped, but as a store failure: during an outage nothing (the store logs the
    outage once), otherwise one store.error line, never a failed hub task. The next
    receipt reads again."""
    async with world(tmp_path) as w:
        await w.connect("alice")
        first, second = await w.delivered_elsewhere("alice", "bob", "m-1", "m-2")
        read = w.store.messages_by_seq

        async def unreadable(seqs: Sequence[int]) -> list[Message]:
            w.store.messages_by_seq = read  # type: ignore[method-assign]
            raise error("no answer within 2.0 s")

        w.store.messages_by_seq = unreadable  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO, logger="chatd"):
            w.hub.on_bus_event(BusDelivered(sender="alice", seqs=[first.seq]))
            await w.hub.wait_idle()
            w.hub.on_bus_event(BusDelivered(sender="alice", seqs=[second.seq]))
            await w.hub.wait_idle()
        logged = [record.getMessage() for record in caplog.records]
        assert "hub.task_failed" not in logged
        assert logged.count("store.error") == (error is StoreError)
        receipts = w.sessions["alice"].of(protocol.DeliveredReceipt)
        assert [r.id for r in receipts] == ["m-2"]


@run_async
async def test_a_remote_user_change_that_cannot_be_read_asks_for_the_look_for_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another node disabled bob; reading his row here fails. His connections must still
    close: the server's look for changes (which reads every user changed lately) is
    asked to run, instead of the hub task failing and the change waiting for the next
    regular look."""
    async with world(tmp_path) as w:
        await w.connect("bob")
        looks: list[None] = []
        w.hub._bridge._on_store_changed = lambda: looks.append(None)

        async def unreadable(username: str) -> User | None:
            raise StoreUnavailable("no answer within 2.0 s")

        w.store.user_by_name = unreadable  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO, logger="chatd"):
            w.hub.on_bus_event(UserRevoked(username="bob", generation=2))
            await w.hub.wait_idle()
        assert looks == [None]
        assert "hub.task_failed" not in [record.getMessage() for record in caplog.records]


@run_async
async def test_a_connection_closed_while_its_token_is_checked_is_not_left_online(
    tmp_path: Path,
) -> None:
    """A hello whose token needs the store (its user not in memory yet) from a
    connection that closes before the store answers: the hub must not welcome the
    closed connection, or it would count against its user's connections for good."""
    async with world(tmp_path, Config(presence=False, max_connections_per_user=1)) as w:
        bob = await w.store.create_user("bob", "hash", TS)
        assert bob is not None
        token = w.tokens.issue(bob.id, bob.token_generation, TS / 1000).token
        gone = FakeSession(conn_id=1)
        w.hub.receive(gone, [Hello(protocol="1.0", token=token)])
        w.hub.disconnected(gone, "closed")  # before the store answered
        await w.hub.wait_idle()
        assert gone.frames == []

        again = FakeSession(conn_id=2)  # FakeSession.fail raises: no 4004 expected
        w.hub.receive(again, [Hello(protocol="1.0", token=token)])
        await w.hub.wait_idle()
        assert len(again.of(protocol.Welcome)) == 1


@attrs.define
class ClosableSession(FakeSession):
    """A FakeSession the hub may end: what it was told on the way out."""

    failed: list[tuple[str, int]] = attrs.field(factory=list)

    def fail(self, code: str, close_code: int, message: str | None = None) -> None:
        self.failed.append((code, close_code))


@run_async
async def test_a_catch_up_that_cannot_read_ends_the_connection_for_a_retry(
    tmp_path: Path,
) -> None:
    """bob's queued messages cannot be read when he connects: his connection must not
    go on with a gap (later pushes shown, the queued ones not); it ends with 1013, try
    again later, and a connection after the store's recovery gets everything."""
    async with world(tmp_path, Config(presence=False)) as w:
        await w.connect("alice")
        bob = await w.store.create_user("bob", "hash", TS)
        assert bob is not None
        w.users["bob"] = bob
        queued = await w.send("alice", "bob", "while-offline")
        token = w.tokens.issue(bob.id, bob.token_generation, TS / 1000).token
        w.store.failing.add(bob.id)
        first = ClosableSession(conn_id=10)
        w.hub.receive(first, [Hello(protocol="1.0", token=token)])
        await w.hub.wait_idle()
        assert first.failed == [("internal_error", limits.CLOSE_TRY_AGAIN_LATER)]
        assert first.of(Message) == []
        w.hub.disconnected(first, "closed 1013")

        w.store.failing.clear()
        second = ClosableSession(conn_id=11)
        w.hub.receive(second, [Hello(protocol="1.0", token=token)])
        await w.hub.wait_idle()
        assert second.failed == []
        assert [m.seq for m in second.of(Message)] == [queued.seq]
