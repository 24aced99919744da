"""Outbox: nothing unacked is lost, nothing is in flight twice on one connection, no push
is accepted twice, across reconnects and restarts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libchat.outbox import (
    PERMANENT_ERRORS,
    QUEUE_FULL_DELAY,
    STORE_ERROR_DELAY,
    MemoryOutboxStorage,
    Outbox,
    OutboxEntry,
    SeenSeqs,
    SendDeferred,
    SendFailed,
)
from libchat.protocol import CLIENT_ID_RE, Ack, Error, Message, ProtocolViolation, Send


def make(seed: int = 1, storage: MemoryOutboxStorage | None = None) -> Outbox:
    return Outbox(storage if storage is not None else MemoryOutboxStorage(), random.Random(seed))


def ack(entry: OutboxEntry, seq: int) -> Ack:
    return Ack(id=entry.client_id, seq=seq, ts=1_700_000_000_000)


def push(seq: int, sender: str = "bob", recipient: str = "alice") -> Message:
    return Message(id=f"m{seq}", seq=seq, sender=sender, recipient=recipient, body="x", ts=1)


def ids(frames: list[Send]) -> list[str]:
    return [f.id for f in frames]


# --- ids ---------------------------------------------------------------------------------


def test_ids_are_unique_and_match_the_contract() -> None:
    outbox = make()
    entries = [outbox.submit("bob", f"hi {i}", now=0.0) for i in range(500)]
    client_ids = {e.client_id for e in entries}
    assert len(client_ids) == 500
    for client_id in client_ids:
        assert CLIENT_ID_RE.fullmatch(client_id)
        assert len(client_id) <= 64


def test_injected_rng_gives_deterministic_ids() -> None:
    first = [make(seed=9).submit("bob", "hi", now=0.0).client_id for _ in range(2)]
    assert first[0] == first[1]
    assert make(seed=10).submit("bob", "hi", now=0.0).client_id != first[0]


def test_id_collision_with_a_pending_entry_draws_again() -> None:
    storage = MemoryOutboxStorage()
    taken = make(seed=3, storage=storage).submit("bob", "one", now=0.0)
    # a second outbox with the same seed over the same storage draws the same first id
    second = make(seed=3, storage=storage).submit("bob", "two", now=0.0)
    assert second.client_id != taken.client_id


# --- submit and send ---------------------------------------------------------------------


def test_submit_stores_at_once_and_keeps_the_fields() -> None:
    storage = MemoryOutboxStorage()
    outbox = make(storage=storage)
    entry = outbox.submit("Bob", "hello", now=12.5)
    assert entry.to == "bob"
    assert entry.body == "hello"
    assert entry.created_at == 12.5
    assert entry.attempts == 0
    assert storage.entries() == [entry]
    assert outbox.pending() == [entry]


@pytest.mark.parametrize(("body", "code"), [("", "empty_body"), ("x" * 5001, "too_long")])
def test_submit_refuses_a_bad_body_without_storing(body: str, code: str) -> None:
    storage = MemoryOutboxStorage()
    with pytest.raises(ProtocolViolation) as info:
        make(storage=storage).submit("bob", body, now=0.0)
    assert info.value.code == code
    assert storage.entries() == []


def test_nothing_is_sent_while_disconnected() -> None:
    outbox = make()
    outbox.submit("bob", "hi", now=0.0)
    assert not outbox.is_connected
    assert outbox.frames_due(now=1.0) == []
    assert outbox.next_retry_at() is None


def test_connect_sends_pending_in_order_once() -> None:
    outbox = make()
    entries = [outbox.submit("bob", f"m{i}", now=float(i)) for i in range(3)]
    frames = outbox.on_connected(now=5.0)
    assert ids(frames) == [e.client_id for e in entries]
    assert frames[0] == Send(id=entries[0].client_id, to="bob", body="m0")
    assert outbox.frames_due(now=6.0) == []
    later = outbox.submit("carol", "m3", now=7.0)
    assert ids(outbox.frames_due(now=7.0)) == [later.client_id]
    assert outbox.frames_due(now=8.0) == []
    assert outbox.next_retry_at() is None
    assert [e.attempts for e in outbox.pending()] == [1, 1, 1, 1]


def test_reconnect_resends_unacked_in_order() -> None:
    outbox = make()
    a, b, c = (outbox.submit("bob", body, now=0.0) for body in "abc")
    outbox.on_connected(now=1.0)
    acked = outbox.on_ack(ack(b, seq=10))
    assert acked is not None
    assert acked.client_id == b.client_id
    outbox.on_disconnected()
    assert not outbox.is_connected
    assert outbox.frames_due(now=2.0) == []
    assert ids(outbox.on_connected(now=3.0)) == [a.client_id, c.client_id]
    assert [e.attempts for e in outbox.pending()] == [2, 2]


def test_ack_removes_and_unknown_ack_is_ignored() -> None:
    storage = MemoryOutboxStorage()
    outbox = make(storage=storage)
    entry = outbox.submit("bob", "hi", now=0.0)
    outbox.on_connected(now=0.0)
    removed = outbox.on_ack(ack(entry, seq=4))
    assert removed is not None
    assert removed.client_id == entry.client_id
    assert outbox.pending() == []
    assert storage.entries() == []
    assert outbox.on_ack(ack(entry, seq=4)) is None  # the repeat after a resend


def test_acked_seq_counts_as_seen() -> None:
    outbox = make()
    entry = outbox.submit("bob", "hi", now=0.0)
    outbox.on_connected(now=0.0)
    outbox.on_ack(ack(entry, seq=4))
    assert not outbox.accept_push(push(4, sender="alice", recipient="bob"))


# --- restart -----------------------------------------------------------------------------


def test_a_new_outbox_over_the_same_storage_keeps_pending_and_seen() -> None:
    storage = MemoryOutboxStorage()
    before = make(seed=1, storage=storage)
    a = before.submit("bob", "a", now=0.0)
    b = before.submit("bob", "b", now=1.0)
    before.on_connected(now=2.0)
    before.on_ack(ack(a, seq=7))
    assert before.accept_push(push(8))

    after = make(seed=2, storage=storage)
    assert [e.client_id for e in after.pending()] == [b.client_id]
    assert after.pending()[0].attempts == 1
    assert ids(after.on_connected(now=3.0)) == [b.client_id]
    assert not after.accept_push(push(8))
    assert not after.accept_push(push(7))
    assert after.accept_push(push(9))


# --- pushes ------------------------------------------------------------------------------


def test_repeated_pushes_are_dropped() -> None:
    outbox = make()
    assert outbox.accept_push(push(5))
    assert not outbox.accept_push(push(5))
    assert outbox.accept_push(push(3))  # late but new
    assert not outbox.accept_push(push(3))


def test_copy_of_my_own_send_from_another_device_follows_the_seq_rule() -> None:
    outbox = make()
    mine = push(11, sender="alice", recipient="bob")
    assert outbox.accept_push(mine)
    assert not outbox.accept_push(mine)


def test_seen_seqs_are_bounded_by_a_floor() -> None:
    storage = MemoryOutboxStorage(seen_capacity=3)
    outbox = make(storage=storage)
    for seq in (10, 20, 30, 40):
        assert outbox.accept_push(push(seq))
    # 10 was folded into the floor: it and everything below count as seen
    assert not outbox.accept_push(push(10))
    assert not outbox.accept_push(push(5))
    assert outbox.accept_push(push(15))


def test_seen_seqs_structure() -> None:
    seen = SeenSeqs(capacity=2)
    assert 0 not in seen
    for seq in (5, 1, 9, 9):
        seen.add(seq)
    assert len(seen) == 2
    assert seen.floor == 1
    assert seen.recent() == [5, 9]
    assert 1 in seen
    assert 0 in seen
    assert 7 not in seen
    seen.add(0)  # below the floor: already seen, nothing changes
    assert seen.recent() == [5, 9]
    with pytest.raises(ValueError):
        SeenSeqs(capacity=0)


def test_memory_storage_checks_its_keys() -> None:
    storage = MemoryOutboxStorage()
    entry = OutboxEntry(client_id="c1", to="bob", body="hi", created_at=0.0)
    storage.append(entry)
    with pytest.raises(ValueError):
        storage.append(entry)
    with pytest.raises(KeyError):
        storage.update(OutboxEntry(client_id="c2", to="bob", body="hi", created_at=0.0))
    storage.remove("c2")  # absent: nothing happens
    assert storage.entries() == [entry]


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [*sorted(PERMANENT_ERRORS), "some_future_code"])
def test_permanent_error_removes_and_reports(code: str) -> None:
    storage = MemoryOutboxStorage()
    outbox = make(storage=storage)
    entry = outbox.submit("bob", "hi", now=0.0)
    outbox.on_connected(now=0.0)
    result = outbox.on_error(Error(code=code, ref=entry.client_id, message="no"), now=1.0)
    assert isinstance(result, SendFailed)
    assert result.entry.client_id == entry.client_id
    assert result.code == code
    assert result.message == "no"
    assert outbox.pending() == []
    assert storage.entries() == []


def test_errors_without_a_known_ref_are_not_the_outbox_s() -> None:
    outbox = make()
    entry = outbox.submit("bob", "hi", now=0.0)
    outbox.on_connected(now=0.0)
    assert outbox.on_error(Error(code="unauthorized"), now=0.0) is None
    assert outbox.on_error(Error(code="too_long", ref="other"), now=0.0) is None
    assert outbox.pending() == [outbox.pending()[0]]
    assert outbox.pending()[0].client_id == entry.client_id


def test_rate_limited_pauses_everything_until_retry_after() -> None:
    outbox = make()
    a = outbox.submit("bob", "a", now=0.0)
    b = outbox.submit("carol", "b", now=0.0)
    outbox.on_connected(now=10.0)
    result = outbox.on_error(
        Error(code="rate_limited", ref=a.client_id, retry_after_ms=1500), now=10.0
    )
    assert isinstance(result, SendDeferred)
    assert result.retry_at == 11.5
    assert outbox.next_retry_at() == 11.5
    c = outbox.submit("dave", "c", now=10.5)
    assert outbox.frames_due(now=11.0) == []  # paused, even for another recipient
    assert ids(outbox.frames_due(now=11.5)) == [a.client_id, c.client_id]
    assert outbox.next_retry_at() is None
    assert outbox.on_ack(ack(b, seq=1)) is not None
    assert [e.attempts for e in outbox.pending()] == [2, 1]


def test_rate_limited_without_retry_after_waits_a_default() -> None:
    outbox = make()
    a = outbox.submit("bob", "a", now=0.0)
    outbox.on_connected(now=0.0)
    result = outbox.on_error(Error(code="rate_limited", ref=a.client_id), now=0.0)
    assert isinstance(result, SendDeferred)
    assert 0.0 < result.retry_at <= 5.0
    assert outbox.frames_due(now=result.retry_at) == [a.frame()]


def test_a_second_rate_limit_only_lengthens_the_pause() -> None:
    outbox = make()
    a = outbox.submit("bob", "a", now=0.0)
    b = outbox.submit("bob", "b", now=0.0)
    outbox.on_connected(now=0.0)
    outbox.on_error(Error(code="rate_limited", ref=a.client_id, retry_after_ms=5000), now=0.0)
    outbox.on_error(Error(code="rate_limited", ref=b.client_id, retry_after_ms=1000), now=0.0)
    assert outbox.next_retry_at() == 5.0
    assert outbox.frames_due(now=4.9) == []
    assert ids(outbox.frames_due(now=5.0)) == [a.client_id, b.client_id]


def test_queue_full_holds_that_conversation_only() -> None:
    outbox = make()
    a = outbox.submit("bob", "a", now=0.0)
    outbox.on_connected(now=0.0)
    result = outbox.on_error(Error(code="queue_full", ref=a.client_id), now=1.0)
    assert isinstance(result, SendDeferred)
    assert result.retry_at == 1.0 + QUEUE_FULL_DELAY
    b = outbox.submit("bob", "b", now=2.0)
    c = outbox.submit("carol", "c", now=2.0)
    assert ids(outbox.frames_due(now=2.0)) == [c.client_id]  # bob's stay in order
    assert outbox.next_retry_at() == 1.0 + QUEUE_FULL_DELAY
    assert ids(outbox.frames_due(now=1.0 + QUEUE_FULL_DELAY)) == [a.client_id, b.client_id]


def test_internal_error_is_retried_not_dropped() -> None:
    outbox = make()
    a = outbox.submit("bob", "a", now=0.0)
    outbox.on_connected(now=0.0)
    result = outbox.on_error(Error(code="internal_error", ref=a.client_id), now=1.0)
    assert isinstance(result, SendDeferred)
    assert [entry.client_id for entry in outbox.pending()] == [a.client_id]
    assert outbox.frames_due(now=1.0) == []
    assert ids(outbox.frames_due(now=1.0 + STORE_ERROR_DELAY)) == [a.client_id]


def test_retry_times_survive_a_reconnect() -> None:
    outbox = make()
    a = outbox.submit("bob", "a", now=0.0)
    outbox.on_connected(now=0.0)
    outbox.on_error(Error(code="queue_full", ref=a.client_id), now=0.0)
    outbox.on_disconnected()
    assert outbox.next_retry_at() is None
    assert outbox.on_connected(now=1.0) == []
    assert outbox.next_retry_at() == QUEUE_FULL_DELAY
    assert ids(outbox.frames_due(now=QUEUE_FULL_DELAY)) == [a.client_id]


def test_a_deferred_entry_can_then_fail_or_be_acked() -> None:
    outbox = make()
    a = outbox.submit("bob", "a", now=0.0)
    b = outbox.submit("bob", "b", now=0.0)
    outbox.on_connected(now=0.0)
    outbox.on_error(Error(code="queue_full", ref=a.client_id), now=0.0)
    outbox.on_error(Error(code="queue_full", ref=b.client_id), now=0.0)
    assert outbox.on_ack(ack(a, seq=3)) is not None  # a late ack still settles it
    failed = outbox.on_error(Error(code="unknown_user", ref=b.client_id), now=0.0)
    assert isinstance(failed, SendFailed)
    assert outbox.pending() == []
    assert outbox.next_retry_at() is None


# --- property: any interleaving ----------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from(["bob", "carol"])),
        st.tuples(st.just("ack"), st.integers(min_value=0, max_value=50)),
        st.tuples(st.just("drain"), st.just(0)),
        st.tuples(st.just("disconnect"), st.just(0)),
        st.tuples(st.just("connect"), st.just(0)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=operations, seed=st.integers(min_value=0, max_value=2**32))
def test_no_unacked_entry_is_lost_and_none_is_sent_twice_per_connection(
    ops: list[tuple[str, object]], seed: int
) -> None:
    storage = MemoryOutboxStorage()
    rng = random.Random(seed)
    outbox = Outbox(storage, rng)
    unacked: list[str] = []  # the model: submitted, not yet acked, in order
    on_this_connection: list[str] = []  # ids sent since the last connect
    ever_sent: set[str] = set()
    connected = False
    seq = 0

    def sent(frames: list[Send]) -> None:
        for frame in frames:
            assert frame.id not in on_this_connection
            assert frame.id in unacked
            on_this_connection.append(frame.id)
            ever_sent.add(frame.id)

    for op, arg in ops:
        if op == "submit":
            entry = outbox.submit(str(arg), "hi", now=0.0)
            unacked.append(entry.client_id)
        elif op == "ack":
            # the server can only ack what it received on this connection
            if connected and on_this_connection:
                target = on_this_connection[int(str(arg)) % len(on_this_connection)]
                seq += 1
                got = outbox.on_ack(Ack(id=target, seq=seq, ts=0))
                assert (got is not None) == (target in unacked)
                if target in unacked:
                    unacked.remove(target)
        elif op == "drain":
            sent(outbox.frames_due(now=0.0))
            if not connected:
                assert outbox.frames_due(now=0.0) == []
        elif op == "disconnect":
            outbox.on_disconnected()
            connected = False
            on_this_connection.clear()
        elif op == "connect":
            on_this_connection.clear()
            sent(outbox.on_connected(now=0.0))
            connected = True
        else:  # restart: the process dies, a new outbox opens the same storage
            outbox = Outbox(storage, rng)
            connected = False
            on_this_connection.clear()
        assert [e.client_id for e in outbox.pending()] == unacked
        assert [e.client_id for e in storage.entries()] == unacked
        if connected and op in ("connect", "drain"):
            # nothing unacked is left behind: all of it is in flight on this connection
            assert set(unacked) <= set(on_this_connection)
    # whatever happened, one more connection sends everything still unacked
    outbox.on_disconnected()
    on_this_connection.clear()
    sent(outbox.on_connected(now=0.0))
    assert on_this_connection == unacked
