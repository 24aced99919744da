"""The Store contract: every implementation must pass this whole file.

Each test runs once per backend through the ``store`` fixture (see conftest.py): the
async body gets a freshly opened store on an empty database.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from chatd.store.base import NewMessage, Retirement, SchemaMismatch, Store, StoreError, User
from libchat.protocol import Message
from tests.store.conftest import StoreHarness

TS = 1_700_000_000_000  # a fixed acceptance time, Unix ms


def new(
    sender: User, recipient: User, client_id: str, body: str = "hi", ts: int = TS
) -> NewMessage:
    return NewMessage(
        sender_id=sender.id,
        sender=sender.username,
        recipient_id=recipient.id,
        recipient=recipient.username,
        client_id=client_id,
        body=body,
        ts=ts,
    )


async def users(store: Store, *names: str) -> list[User]:
    made = []
    for i, name in enumerate(names):
        user = await store.create_user(name, f"hash-{name}", TS + i)
        assert user is not None
        made.append(user)
    return made


async def send(store: Store, sender: User, recipient: User, *client_ids: str) -> list[Message]:
    """One submit per message, in order (so seqs follow the argument order)."""
    return [(await store.submit([new(sender, recipient, cid)]))[0] for cid in client_ids]


# --- users ------------------------------------------------------------------------------


def test_create_user_and_look_it_up(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice = await s.create_user("alice", "hash-a", TS)
        assert alice is not None
        assert alice.username == "alice"
        assert alice.password_hash == "hash-a"
        assert alice.disabled is False
        assert alice.token_generation == 0
        assert alice.created_at == TS
        assert await s.user_by_name("alice") == alice
        assert await s.user_by_id(alice.id) == alice
        assert await s.user_by_name("nobody") is None
        assert await s.user_by_id(alice.id + 1000) is None

    store.run(body)


def test_duplicate_username_is_refused(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        (alice,) = await users(s, "alice")
        assert await s.create_user("alice", "other", TS + 5) is None
        assert await s.user_by_name("alice") == alice
        assert len(await s.list_users()) == 1

    store.run(body)


def test_list_users(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        made = await users(s, "carol", "alice", "bob")
        listed = await s.list_users()
        assert sorted(listed, key=lambda u: u.id) == sorted(made, key=lambda u: u.id)
        assert len({u.id for u in listed}) == 3

    store.run(body)


def test_search_users_by_prefix_sorted_without_self(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        await users(s, "bob", "alice", "albert", "al_x", "alz", "carol")
        assert await s.search_users("al", "nobody", 20) == ["al_x", "albert", "alice", "alz"]
        assert await s.search_users("al", "alice", 20) == ["al_x", "albert", "alz"]
        assert await s.search_users("al", "nobody", 2) == ["al_x", "albert"]
        assert await s.search_users("al_", "nobody", 20) == ["al_x"]  # "_" is no wildcard
        assert await s.search_users("carol", "nobody", 20) == ["carol"]
        assert await s.search_users("z", "nobody", 20) == []

    store.run(body)


def test_set_password_bumps_generation(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob = await users(s, "alice", "bob")
        changed = await s.set_password(alice.id, "new-hash")
        assert changed.password_hash == "new-hash"
        assert changed.token_generation == alice.token_generation + 1
        assert await s.user_by_id(alice.id) == changed
        again = await s.set_password(alice.id, "newer-hash")
        assert again.token_generation == alice.token_generation + 2
        assert await s.user_by_id(bob.id) == bob

    store.run(body)


def test_disable_bumps_generation_enable_does_not(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        (alice,) = await users(s, "alice")
        disabled = await s.set_disabled(alice.id, True)
        assert disabled.disabled is True
        assert disabled.token_generation == alice.token_generation + 1
        enabled = await s.set_disabled(alice.id, False)
        assert enabled.disabled is False
        assert enabled.token_generation == disabled.token_generation
        assert await s.user_by_name("alice") == enabled

    store.run(body)


def test_changing_an_unknown_user_fails(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        with pytest.raises(StoreError):
            await s.set_password(424242, "x")
        with pytest.raises(StoreError):
            await s.set_disabled(424242, True)

    store.run(body)


def test_users_changed_since(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob, _carol = await users(s, "alice", "bob", "carol")
        before = int(time.time() * 1000) - 1
        assert await s.users_changed_since(before) == []
        changed_alice = await s.set_password(alice.id, "new")
        changed_bob = await s.set_disabled(bob.id, True)
        assert await s.users_changed_since(before) == [changed_alice, changed_bob]
        assert await s.users_changed_since(int(time.time() * 1000) + 60_000) == []

    store.run(body)


# --- revocations and login failures -------------------------------------------------------


def test_revocations(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        (alice,) = await users(s, "alice")
        later = int(time.time()) + 3600
        start = time.time()
        await s.revoke_token("jti-1", alice.id, later)
        await s.revoke_token("jti-1", alice.id, later)  # idempotent
        middle = time.time()
        await s.revoke_token("jti-2", alice.id, later + 1)
        await s.revoke_token("jti-old", alice.id, int(time.time()) - 10)  # already expired
        assert await s.revoked_since(0) == [("jti-1", later), ("jti-2", later + 1)]
        assert await s.revoked_since(start) == [("jti-1", later), ("jti-2", later + 1)]
        assert await s.revoked_since(middle) == [("jti-2", later + 1)]
        assert await s.revoked_since(time.time() + 3600) == []

    store.run(body)


def test_retired_tokens(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        (alice,) = await users(s, "alice")
        later = int(time.time()) + 3600
        first = Retirement(jti="j1", family="f1", expires_at=later, grace_until=time.time() + 60)
        assert await s.retire_token(first, alice.id) is True
        assert await s.retire_token(first, alice.id) is False  # the second retirement: a reuse
        middle = time.time()
        second = Retirement(jti="j2", family="j2", expires_at=later + 1, grace_until=middle)
        assert await s.retire_token(second, alice.id) is True
        gone = Retirement(jti="j3", family="f1", expires_at=int(time.time()) - 10, grace_until=0)
        assert await s.retire_token(gone, alice.id) is True  # already expired: never listed
        assert await s.retired_since(0) == [first, second]
        assert await s.retired_since(middle) == [second]
        assert await s.retired_since(time.time() + 3600) == []

    store.run(body)


def test_revoked_families(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        (alice,) = await users(s, "alice")
        later = int(time.time()) + 3600
        await s.revoke_family("f1", alice.id, later)
        await s.revoke_family("f1", alice.id, later - 5)  # an earlier expiry changes nothing
        middle = time.time()
        await s.revoke_family("f2", alice.id, later)
        await s.revoke_family("f0", alice.id, int(time.time()) - 10)
        assert await s.revoked_families_since(0) == [("f1", later), ("f2", later)]
        assert await s.revoked_families_since(middle) == [("f2", later)]
        await s.revoke_family("f1", alice.id, later + 9)  # a later one extends it
        assert ("f1", later + 9) in await s.revoked_families_since(0)

    store.run(body)


def test_token_family_heads(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        (alice,) = await users(s, "alice")
        later = int(time.time()) + 3600
        assert await s.family_head("f") is None
        assert await s.advance_family("f", "t1", "t2", alice.id, later) is True  # the first
        assert await s.family_head("f") == "t2"
        assert await s.advance_family("f", "t1", "t3", alice.id, later) is False  # not the head
        assert await s.advance_family("f", "fork", "t4", alice.id, later) is False
        assert await s.advance_family("f", "t2", "t5", alice.id, later) is True
        assert await s.family_head("f") == "t5"
        await s.advance_family("old", "a", "b", alice.id, int(time.time()) - 1)
        assert await s.family_head("old") is None  # expired

    store.run(body)


def test_login_failures(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        now = time.time()
        await s.record_login_failure("10.0.0.1", "alice", now - 100)
        await s.record_login_failure("10.0.0.1", "bob", now - 50)
        await s.record_login_failure("10.0.0.2", "alice", now - 10)
        await s.record_login_failure("10.0.0.1", "nobody", now - 5)
        assert await s.login_failures("10.0.0.1", 0) == [now - 100, now - 50, now - 5]
        assert await s.login_failures("10.0.0.1", now - 50) == [now - 50, now - 5]
        assert await s.login_failures("10.0.0.3", 0) == []
        assert await s.account_failures("alice", 0) == 2
        assert await s.account_failures("alice", now - 10) == 1
        assert await s.account_failures("alice", now) == 0
        assert await s.account_failures("nobody", 0) == 1

    store.run(body)


def test_login_attempts_are_reserved_atomically_and_released(store: StoreHarness) -> None:
    """Reservations made together each see the ones before them (the limit's guard)."""

    async def body(s: Store) -> None:
        now = time.time()
        await s.record_login_failure("10.0.0.1", "alice", now - 100)
        seen: list[tuple[list[float], list[float]]] = []

        def at_most_three(ip_times: list[float], account_times: list[float]) -> float | None:
            seen.append((ip_times, account_times))
            return now if len(ip_times) < 3 else None

        reserved = await asyncio.gather(
            *(s.reserve_login_attempt("10.0.0.1", f"u{i}", now - 200, at_most_three)
              for i in range(6))
        )
        assert sorted(reserved, key=lambda at: at is None) == [now, now, None, None, None, None]
        assert sorted(len(ip_times) for ip_times, _ in seen) == [1, 2, 3, 3, 3, 3]
        assert await s.login_failures("10.0.0.1", 0) == [now - 100, now, now]
        # the account's times are there too, and a release forgets one attempt
        assert await s.reserve_login_attempt(
            "10.0.0.2", "ALICE", now - 200, lambda ip, account: now + 1.5 if account else None
        ) == now + 1.5
        await s.release_login_attempt("10.0.0.2", "alice", now + 1.5)
        await s.release_login_attempt("10.0.0.1", "u9", now)  # no such attempt: nothing
        assert await s.account_failures("alice", 0) == 1

    store.run(body)


# --- submit ------------------------------------------------------------------------------


def test_submit_returns_stored_messages_with_increasing_seqs(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob = await users(s, "alice", "bob")
        assert await s.submit([]) == []
        stored = await s.submit([new(alice, bob, "m1", "one"), new(bob, alice, "m2", "two")])
        assert [m.id for m in stored] == ["m1", "m2"]
        assert stored[0].seq < stored[1].seq
        assert (stored[0].sender, stored[0].recipient, stored[0].body) == ("alice", "bob", "one")
        assert (stored[1].sender, stored[1].recipient, stored[1].body) == ("bob", "alice", "two")
        assert all(m.ts == TS and m.delivered_at is None and m.read_at is None for m in stored)
        later = await s.submit([new(alice, bob, "m3")])
        assert later[0].seq > stored[1].seq

    store.run(body)


def test_repeat_returns_the_original_and_stores_nothing(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob, carol = await users(s, "alice", "bob", "carol")
        (original,) = await s.submit([new(alice, bob, "same", "first", ts=TS)])
        (repeat,) = await s.submit([new(alice, carol, "same", "second", ts=TS + 999)])
        assert repeat == original
        assert repeat.body == "first" and repeat.recipient == "bob" and repeat.ts == TS
        # another sender may use the same client id
        (bobs,) = await s.submit([new(bob, alice, "same")])
        assert bobs.seq != original.seq
        assert (await s.stats()).messages == 2
        assert await s.undelivered(carol.id, 0, 10) == []
        assert await s.conversations(carol.id) == []

    store.run(body)


def test_sent_message_finds_a_used_client_id(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob = await users(s, "alice", "bob")
        [stored] = await send(s, alice, bob, "c-1")
        assert await s.sent_message(alice.id, "c-1") == stored
        assert await s.sent_message(bob.id, "c-1") is None
        assert await s.sent_message(alice.id, "c-2") is None

    store.run(body)


def test_repeat_inside_one_batch(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob = await users(s, "alice", "bob")
        stored = await s.submit(
            [new(alice, bob, "a", "one"), new(alice, bob, "b"), new(alice, bob, "a", "two")]
        )
        assert stored[2] == stored[0]
        assert stored[0].body == "one"
        assert stored[1].seq > stored[0].seq
        assert [m.id for m in await s.undelivered(bob.id, 0, 10)] == ["a", "b"]

    store.run(body)


def test_a_repeat_after_delivery_shows_the_stored_state(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob = await users(s, "alice", "bob")
        (original,) = await s.submit([new(alice, bob, "x")])
        await s.mark_delivered(bob.id, [original.seq], TS + 5)
        (repeat,) = await s.submit([new(alice, bob, "x")])
        assert (repeat.seq, repeat.ts, repeat.delivered_at) == (original.seq, original.ts, TS + 5)

    store.run(body)


def test_concurrent_submits_get_distinct_increasing_seqs(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob = await users(s, "alice", "bob")
        results = await asyncio.gather(*(s.submit([new(alice, bob, f"c{i}")]) for i in range(500)))
        seqs = [stored[0].seq for stored in results]
        assert [stored[0].id for stored in results] == [f"c{i}" for i in range(500)]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 500
        assert await s.queue_depth(bob.id) == 500

    store.run(body)


def test_close_finishes_queued_writes(store: StoreHarness) -> None:
    async def body() -> None:
        s = store.make()
        await s.open()
        alice, bob = await users(s, "alice", "bob")
        tasks = [asyncio.create_task(s.submit([new(alice, bob, f"q{i}")])) for i in range(50)]
        await asyncio.sleep(0)  # one loop turn: every submit is now queued
        await s.close()
        done = await asyncio.gather(*tasks)
        assert len({stored[0].seq for stored in done}) == 50
        again = store.make()
        await again.open()
        try:
            assert await again.queue_depth(bob.id) == 50
        finally:
            await again.close()

    store.run_loop(body)


# --- delivered and read ----------------------------------------------------------------


def test_mark_delivered_only_the_recipients_newly(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob, carol = await users(s, "alice", "bob", "carol")
        to_bob = await send(s, alice, bob, "b1", "b2", "b3")
        (to_carol,) = await send(s, alice, carol, "c1")
        seqs = [m.seq for m in to_bob]
        marked = await s.mark_delivered(bob.id, [seqs[1], seqs[0], to_carol.seq, 999_999], TS + 7)
        assert [m.seq for m in marked] == seqs[:2]
        assert all(m.delivered_at == TS + 7 and m.read_at is None for m in marked)
        assert [(m.id, m.sender, m.recipient) for m in marked] == [
            ("b1", "alice", "bob"),
            ("b2", "alice", "bob"),
        ]
        assert await s.mark_delivered(bob.id, seqs[:2], TS + 8) == []  # idempotent
        assert await s.mark_delivered(bob.id, [], TS + 8) == []
        assert [m.seq for m in await s.mark_delivered(bob.id, seqs, TS + 9)] == [seqs[2]]
        assert await s.queue_depth(bob.id) == 0
        assert await s.queue_depth(carol.id) == 1  # alice could not mark carol's message
        history, _ = await s.history(alice.id, bob.id, None, 10)
        assert [m.delivered_at for m in history] == [TS + 7, TS + 7, TS + 9]

    store.run(body)


def test_mark_delivered_many_in_one_call(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob, carol = await users(s, "alice", "bob", "carol")
        to_bob = [m.seq for m in await send(s, alice, bob, "b1", "b2", "b3")]
        to_carol = [m.seq for m in await send(s, alice, carol, "c1", "c2")]
        to_alice = [m.seq for m in await send(s, bob, alice, "a1")]
        await s.mark_delivered(bob.id, [to_bob[0]], TS + 1)
        marks = [
            (bob.id, [to_bob[2], to_bob[0], to_bob[1], to_carol[0]]),  # b1 already delivered
            (carol.id, [to_carol[1], to_bob[2], 999_999]),  # bob's seq is not carol's
            (alice.id, []),
            (bob.id, [to_bob[1], to_bob[2]]),  # a second device: bob's first entry has them
            (alice.id, to_alice),
        ]
        marked = await s.mark_delivered_many(marks, TS + 7)
        assert [[m.seq for m in entry] for entry in marked] == [
            to_bob[1:], [to_carol[1]], [], [], to_alice
        ]
        assert [(m.id, m.sender, m.recipient) for m in marked[0]] == [
            ("b2", "alice", "bob"),
            ("b3", "alice", "bob"),
        ]
        assert all(m.delivered_at == TS + 7 for entry in marked for m in entry)
        assert await s.queue_depth(bob.id) == 0
        assert [m.seq for m in await s.undelivered(carol.id, 0, 10)] == [to_carol[0]]
        assert await s.mark_delivered_many(marks, TS + 8) == [[], [], [], [], []]

    store.run(body)


def test_mark_delivered_many_with_nothing_to_mark(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob = await users(s, "alice", "bob")
        await send(s, alice, bob, "b1")
        assert await s.mark_delivered_many([], TS) == []
        assert await s.mark_delivered_many([(bob.id, []), (alice.id, [])], TS) == [[], []]
        assert await s.queue_depth(bob.id) == 1

    store.run(body)


def test_an_integer_past_64_bits_is_a_store_error_or_matches_nothing(
    store: StoreHarness,
) -> None:
    """libchat refuses such integers; should one reach a store anyway, it must come out
    as StoreError (the hub's answer to it is an error frame) or change nothing, never as
    another exception, and the store keeps working."""

    async def body(s: Store) -> None:
        alice, bob = await users(s, "alice", "bob")
        (message,) = await send(s, alice, bob, "b1")
        huge = 2**64 - 1
        calls = [
            lambda: s.mark_delivered(bob.id, [huge], TS + 1),
            lambda: s.mark_delivered_many([(alice.id, [message.seq]), (bob.id, [huge])], TS + 1),
            lambda: s.mark_read(bob.id, alice.id, huge, TS + 1),
            lambda: s.history(bob.id, alice.id, huge, 10),
            lambda: s.messages_by_seq([huge]),
        ]
        for call in calls:
            with contextlib.suppress(StoreError):
                await call()
        assert await s.queue_depth(bob.id) == 1
        assert [m.seq for m in await s.mark_delivered(bob.id, [message.seq], TS + 2)] == [
            message.seq
        ]

    store.run(body)


def test_mark_read_marks_delivered_too(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob = await users(s, "alice", "bob")
        sent = await send(s, alice, bob, "r1", "r2", "r3", "r4")
        await s.mark_delivered(bob.id, [sent[0].seq], TS + 1)
        result = await s.mark_read(bob.id, alice.id, sent[2].seq, TS + 2)
        assert result.up_to == sent[2].seq
        assert [m.seq for m in result.newly_delivered] == [sent[1].seq, sent[2].seq]
        assert all(m.delivered_at == TS + 2 and m.read_at == TS + 2 for m in result.newly_delivered)
        assert [m.sender for m in result.newly_delivered] == ["alice", "alice"]
        history, _ = await s.history(bob.id, alice.id, None, 10)
        assert [(m.delivered_at, m.read_at) for m in history] == [
            (TS + 1, TS + 2),
            (TS + 2, TS + 2),
            (TS + 2, TS + 2),
            (None, None),
        ]
        assert [m.seq for m in await s.undelivered(bob.id, 0, 10)] == [sent[3].seq]
        again = await s.mark_read(bob.id, alice.id, sent[2].seq, TS + 3)  # nothing changes
        assert again.up_to is None and again.newly_delivered == ()

    store.run(body)


def test_mark_read_only_touches_messages_from_peer_to_reader(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob, carol = await users(s, "alice", "bob", "carol")
        (from_alice,) = await send(s, alice, bob, "a1")
        (from_bob,) = await send(s, bob, alice, "b1")
        (from_carol,) = await send(s, carol, bob, "c1")
        result = await s.mark_read(bob.id, alice.id, from_bob.seq, TS + 1)
        assert result.up_to == from_alice.seq
        history, _ = await s.history(alice.id, bob.id, None, 10)
        assert [(m.id, m.read_at) for m in history] == [("a1", TS + 1), ("b1", None)]
        assert await s.queue_depth(alice.id) == 1
        assert [m.seq for m in await s.undelivered(bob.id, 0, 10)] == [from_carol.seq]
        # a read from the wrong side changes nothing
        assert (await s.mark_read(alice.id, carol.id, from_carol.seq, TS + 2)).up_to is None

    store.run(body)


def test_mark_read_beyond_the_last_message_is_ignored(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob, carol = await users(s, "alice", "bob", "carol")
        sent = await send(s, alice, bob, "x1", "x2")
        (elsewhere,) = await send(s, carol, bob, "later")  # a higher seq, other conversation
        result = await s.mark_read(bob.id, alice.id, elsewhere.seq, TS + 1)
        assert result.up_to is None and result.newly_delivered == ()
        assert await s.queue_depth(bob.id) == 3
        convs = {peer: unread for peer, _, unread in await s.conversations(bob.id)}
        assert convs == {"alice": 2, "carol": 1}
        # no conversation at all
        assert (await s.mark_read(alice.id, carol.id, 1, TS)).up_to is None
        assert (await s.mark_read(bob.id, alice.id, sent[1].seq, TS + 2)).up_to == sent[1].seq

    store.run(body)


# --- reading messages ------------------------------------------------------------------


def test_undelivered_pages_oldest_first(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob, carol = await users(s, "alice", "bob", "carol")
        await send(s, alice, bob, "u1", "u2")
        await send(s, carol, bob, "u3")
        await send(s, bob, alice, "not-for-bob")
        await send(s, alice, bob, "u4", "u5")
        page = await s.undelivered(bob.id, 0, 2)
        assert [m.id for m in page] == ["u1", "u2"]
        page2 = await s.undelivered(bob.id, page[-1].seq, 2)
        assert [m.id for m in page2] == ["u3", "u4"]
        assert page2[0].sender == "carol" and page2[0].recipient == "bob"
        page3 = await s.undelivered(bob.id, page2[-1].seq, 2)
        assert [m.id for m in page3] == ["u5"]
        assert await s.undelivered(bob.id, page3[-1].seq, 2) == []
        await s.mark_delivered(bob.id, [page2[0].seq], TS)
        assert [m.id for m in await s.undelivered(bob.id, 0, 10)] == ["u1", "u2", "u4", "u5"]

    store.run(body)


def test_failed_pushes_are_counted_per_undelivered_message(store: StoreHarness) -> None:
    """A connection that closed with unconfirmed pushes counts them: the next catch-up
    (``queued``) says which attempt its push is. Delivered messages, and messages to
    someone else, are left alone."""

    async def body(s: Store) -> None:
        alice, bob = await users(s, "alice", "bob")
        first, second, third = await send(s, alice, bob, "p1", "p2", "p3")
        (to_alice,) = await send(s, bob, alice, "to-alice")
        assert [(q.message, q.failed_pushes) for q in await s.queued(bob.id, 0, 10)] == [
            (first, 0), (second, 0), (third, 0)]
        await s.count_failed_pushes(bob.id, [first.seq, second.seq, first.seq, to_alice.seq])
        await s.mark_delivered(bob.id, [second.seq], TS)
        await s.count_failed_pushes(bob.id, [first.seq, second.seq])
        await s.count_failed_pushes(bob.id, [])
        assert [(q.message.id, q.failed_pushes) for q in await s.queued(bob.id, 0, 10)] == [
            ("p1", 2), ("p3", 0)]
        assert [(q.message.id, q.failed_pushes) for q in await s.queued(bob.id, first.seq, 1)
                ] == [("p3", 0)]
        assert [q.failed_pushes for q in await s.queued(alice.id, 0, 10)] == [0]

    store.run(body)


def test_history_pages_both_ways(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob, carol = await users(s, "alice", "bob", "carol")
        ids = []
        for i in range(7):
            sender, recipient = (alice, bob) if i % 2 == 0 else (bob, alice)
            await send(s, sender, recipient, f"h{i}")
            ids.append(f"h{i}")
            await send(s, carol, alice, f"noise{i}")
        newest, more = await s.history(alice.id, bob.id, None, 3)
        assert [m.id for m in newest] == ids[4:]
        assert more is True
        assert await s.history(bob.id, alice.id, None, 3) == (newest, True)  # same both ways
        middle, more = await s.history(alice.id, bob.id, newest[0].seq, 3)
        assert [m.id for m in middle] == ids[1:4]
        assert more is True
        oldest, more = await s.history(alice.id, bob.id, middle[0].seq, 3)
        assert [m.id for m in oldest] == ids[:1]
        assert more is False
        everything, more = await s.history(alice.id, bob.id, None, 200)
        assert [m.id for m in everything] == ids and more is False
        exact, more = await s.history(alice.id, bob.id, middle[0].seq, 1)
        assert [m.id for m in exact] == ids[:1] and more is False
        assert await s.history(bob.id, carol.id, None, 10) == ([], False)

    store.run(body)


def test_conversations_newest_first_with_unread(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob, carol, dave = await users(s, "alice", "bob", "carol", "dave")
        await send(s, bob, alice, "b1", "b2")
        await send(s, carol, alice, "c1")
        (last_bob,) = await send(s, alice, bob, "a1")
        await send(s, dave, carol, "d1")
        convs = await s.conversations(alice.id)
        assert [(peer, m.id, unread) for peer, m, unread in convs] == [
            ("bob", "a1", 2),
            ("carol", "c1", 1),
        ]
        assert convs[0][1] == last_bob
        await s.mark_read(alice.id, bob.id, last_bob.seq, TS + 1)
        convs = await s.conversations(alice.id)
        assert [(peer, unread) for peer, _, unread in convs] == [("bob", 0), ("carol", 1)]
        assert [(peer, unread) for peer, _, unread in await s.conversations(bob.id)] == [
            ("alice", 1)
        ]
        (newest,) = await send(s, carol, alice, "c2")
        convs = await s.conversations(alice.id)
        assert [(peer, m.seq, unread) for peer, m, unread in convs] == [
            ("carol", newest.seq, 2),
            ("bob", last_bob.seq, 0),
        ]
        assert await s.conversations(dave.id) == [
            ("carol", (await s.history(dave.id, carol.id, None, 1))[0][0], 0)
        ]

    store.run(body)


def test_peers(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob, carol, dave, _eve = await users(s, "alice", "bob", "carol", "dave", "eve")
        await send(s, alice, carol, "1")
        await send(s, bob, alice, "2")
        await send(s, dave, bob, "3")
        assert sorted(await s.peers(alice.id)) == ["bob", "carol"]
        assert sorted(await s.peers(bob.id)) == ["alice", "dave"]
        assert await s.peers(_eve.id) == []

    store.run(body)


def test_queue_depth_and_stats(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        alice, bob, _carol = await users(s, "alice", "bob", "carol")
        assert await s.queue_depth(bob.id) == 0
        sent = await send(s, alice, bob, "1", "2", "3")
        await send(s, bob, alice, "4")
        assert await s.queue_depth(bob.id) == 3
        assert await s.queue_depth(alice.id) == 1
        await s.mark_delivered(bob.id, [sent[0].seq], TS)
        assert await s.queue_depth(bob.id) == 2
        stats = await s.stats()
        assert (stats.users, stats.messages, stats.undelivered) == (3, 4, 3)
        assert stats.db_bytes > 0
        assert await s.undelivered_total() == 3  # the gauge's cheap count: no scan of the table

    store.run(body)


# --- lifecycle ----------------------------------------------------------------------------


def test_ping_and_migrate_when_open(store: StoreHarness) -> None:
    async def body(s: Store) -> None:
        await s.ping()
        assert await s.migrate() == s.schema_version

    store.run(body)


def test_data_survives_close_and_reopen(store: StoreHarness) -> None:
    async def first(s: Store) -> tuple[list[Message], User]:
        alice, bob = await users(s, "alice", "bob")
        await s.revoke_token("jti", alice.id, int(time.time()) + 600)
        await s.record_login_failure("10.0.0.9", "bob", 1000.0)
        sent = await send(s, alice, bob, "keep1", "keep2")
        await s.mark_delivered(bob.id, [sent[0].seq], TS + 1)
        return sent, bob

    sent, bob = store.run(first)

    async def second(s: Store) -> None:
        assert await s.user_by_name("bob") == bob
        assert [jti for jti, _ in await s.revoked_since(0)] == ["jti"]
        assert await s.login_failures("10.0.0.9", 0) == [1000.0]
        alice = await s.user_by_name("alice")
        assert alice is not None
        history, _ = await s.history(bob.id, alice.id, None, 10)
        assert [m.seq for m in history] == [m.seq for m in sent]
        assert history[0].delivered_at == TS + 1
        (repeat,) = await s.submit([new(alice, bob, "keep2", "changed")])
        assert repeat == sent[1]
        (fresh,) = await s.submit([new(alice, bob, "keep3")])
        assert fresh.seq > sent[1].seq

    store.run(second)


def test_newer_schema_version_is_refused(store: StoreHarness) -> None:
    async def create(s: Store) -> int:
        await users(s, "alice")
        return s.schema_version

    version = store.run(create)
    store.set_schema_version(version + 1)

    async def reopen() -> None:
        s = store.make()
        with pytest.raises(SchemaMismatch) as caught:
            await s.open()
        assert (caught.value.found, caught.value.expected) == (version + 1, version)
        with pytest.raises(SchemaMismatch):
            await s.migrate()  # never downgrades

    store.run_loop(reopen)
