"""The client session against a fake chat server, with a fake clock: sign-in, token
refresh timing and rotation, hello and catch-up, seen-seq dedupe, delivered and read
marks, the outbox across reconnects, backoff, HTTP calls, sign-out."""

from __future__ import annotations

import random

import pytest

from libchat import protocol
from libchat.outbox import MemoryOutboxStorage, SendDeferred, SendFailed
from libchat.session import (
    Acked,
    CallResult,
    CloseTransport,
    Connected,
    Disconnected,
    OpenTransport,
    Session,
    SessionConfig,
    SessionState,
    SignedIn,
    SignedOut,
    SignInFailed,
    TokenRefreshed,
    WriteTransport,
)
from libchat.states import LocalProtocolError
from tests.libchat.fakechat import GRACE, PASSWORD, TOKEN_TTL, FakeChat, Net

ALICE = protocol.Credentials(username="alice", password=PASSWORD)


def bob_says(net: Net, seq: int, body: str = "hi") -> protocol.Message:
    message = protocol.Message(
        id=f"b{seq}", seq=seq, sender="bob", recipient="alice", body=body, ts=seq
    )
    net.chat.push(message, net.now)
    net.pump()
    return message


def connected_net(**config: object) -> Net:
    net = Net(config=SessionConfig(host="chat.test", **config))  # type: ignore[arg-type]
    net.sign_in()
    assert net.session.is_connected
    return net


# --- sign-in ---------------------------------------------------------------------------


def test_sign_in_logs_in_then_opens_the_websocket_and_says_hello() -> None:
    net = Net()
    net.sign_in()
    events = net.take()
    assert [type(e) for e in events] == [SignedIn, Connected]
    signed = events[0]
    assert isinstance(signed, SignedIn) and signed.username == "alice"
    assert signed.expires_in == TOKEN_TTL and signed.token not in repr(signed)
    assert events[1] == Connected(username="alice", user_id=5, protocol="1.1.0", server_time=1)
    opens = [a for a in net.actions if isinstance(a, OpenTransport)]
    assert [o.kind for o in opens] == ["http", "websocket"]
    # the login's transport is closed once answered; the WebSocket stays
    assert CloseTransport(id=opens[0].id) in net.actions
    assert net.open_ids == {opens[1].id}
    hello = net.chat.frames(protocol.Hello)[0]
    assert hello.protocol == "1.1" and hello.token == signed.token
    assert net.session.state is SessionState.SIGNED_IN and net.session.username == "alice"
    assert "bytes>" in repr(next(a for a in net.actions if isinstance(a, WriteTransport)))


def test_a_wrong_password_fails_and_leaves_the_session_new() -> None:
    net = Net()
    net.do(lambda s, now: s.sign_in(protocol.Credentials(username="alice", password="x"), now))
    assert net.take() == [
        SignInFailed(status=401, code="invalid_credentials", message="wrong", retry_after=None)
    ]
    assert net.session.state is SessionState.NEW
    net.sign_in()  # and may try again
    assert [type(e) for e in net.take()] == [SignedIn, Connected]


def test_an_unreachable_server_fails_the_sign_in() -> None:
    net = Net(chat=FakeChat(down=True))
    net.sign_in()
    assert net.take() == [
        SignInFailed(status=None, code="unreachable", message="connection refused")
    ]


def test_a_silent_server_times_the_sign_in_out() -> None:
    net = Net(chat=FakeChat(silent=True))
    net.sign_in()
    net.advance(29.9)
    assert net.take() == []
    net.advance(0.2)
    assert net.take() == [SignInFailed(status=None, code="unreachable", message="timed out")]
    assert not net.open_ids


def test_a_rate_limited_login_says_when_to_try_again() -> None:
    net = Net(chat=FakeChat(login_answer=(429, "rate_limited", (("Retry-After", "42"),))))
    net.sign_in()
    (failed,) = net.take()
    assert isinstance(failed, SignInFailed) and failed.retry_after == 42.0


def test_an_error_without_a_body_is_named_by_its_status() -> None:
    net = Net(chat=FakeChat(login_answer=(503, "server_busy", ())))
    net.sign_in()
    (failed,) = net.take()
    assert isinstance(failed, SignInFailed)
    assert (failed.code, failed.retry_after) == ("server_busy", 60.0)


def test_an_error_page_without_the_error_body_is_named_by_its_status() -> None:
    net = Net(chat=FakeChat(login_answer=(502, "", ())))
    net.sign_in()
    assert net.take() == [
        SignInFailed(status=502, code="http_502", message="the server answered 502")
    ]


def test_signing_out_before_the_websocket_opened_drops_its_transport() -> None:
    session = Session(SessionConfig(host="h"), rng=random.Random(1))
    session.resume("saved", 100, 0.0)
    session.sign_out(0.0)
    assert session.actions() == [
        OpenTransport(id=1, kind="websocket"),
        OpenTransport(id=2, kind="http"),
        CloseTransport(id=1),
    ]
    assert session.events() == [SignedOut(reason="signed out")]


def test_register_creates_the_account_then_logs_in() -> None:
    net = Net()
    carol = protocol.Credentials(username="carol", password=PASSWORD)
    net.do(lambda s, now: s.sign_in(carol, now, register=True))
    assert [type(e) for e in net.take()] == [SignedIn, Connected]
    net2 = Net(chat=net.chat)
    net2.do(lambda s, now: s.sign_in(carol, now, register=True))
    (failed,) = net2.take()
    assert isinstance(failed, SignInFailed) and failed.code == "username_taken"


def test_a_failed_sign_in_says_which_request_failed() -> None:
    net = Net()
    carol = protocol.Credentials(username="carol", password=PASSWORD)
    net.do(lambda s, now: s.sign_in(carol, now, register=True))
    net.take()
    net2 = Net(chat=net.chat)
    net2.do(lambda s, now: s.sign_in(carol, now, register=True))
    (taken,) = net2.take()
    assert isinstance(taken, SignInFailed) and (taken.status, taken.step) == (409, "register")
    net3 = Net(chat=FakeChat(login_answer=(429, "rate_limited", ())))
    net3.do(lambda s, now: s.sign_in(carol, now, register=True))
    (created,) = net3.take()  # the account exists now: sign in without register next time
    assert isinstance(created, SignInFailed) and (created.status, created.step) == (429, "login")


def test_calls_out_of_turn_raise() -> None:
    net = Net()
    with pytest.raises(LocalProtocolError, match="not signed in"):
        net.session.history("bob", 0.0)
    net.sign_in()
    with pytest.raises(LocalProtocolError, match="cannot sign_in in state signed_in"):
        net.session.sign_in(ALICE, net.now)
    with pytest.raises(LocalProtocolError):
        net.session.resume("t", 10, net.now)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="refresh_share"):
        SessionConfig(host="h", refresh_share=1.5)
    with pytest.raises(ValueError, match="http_timeout"):
        SessionConfig(host="h", http_timeout=0)


# --- tokens ------------------------------------------------------------------------------


def test_the_token_is_refreshed_before_it_expires_and_the_websocket_reauthed() -> None:
    net = connected_net()
    net.take()
    net.advance(TOKEN_TTL * 0.75 - 0.01)
    assert net.chat.frames(protocol.Reauth) == []
    net.advance(0.02)
    (refreshed,) = net.take(TokenRefreshed)
    requests = [e for e in net.chat.seen if type(e).__name__ == "RefreshRequest"]
    assert len(requests) == 1 and requests[0].rotate
    assert net.chat.frames(protocol.Reauth) == [protocol.Reauth(token=refreshed.token)]
    # the old token's grace ends: the WebSocket lives on, bound to the new token
    net.advance(GRACE + 1)
    assert net.session.is_connected
    # and the next refresh comes 3/4 of the new lifetime later, with the new token
    net.advance(TOKEN_TTL * 0.75 - GRACE - 1)
    (second,) = net.take(TokenRefreshed)
    assert second.token != refreshed.token
    assert [e.token for e in net.chat.seen if type(e).__name__ == "RefreshRequest"][1] == (
        refreshed.token
    )


def test_a_refresh_without_rotation_sends_no_body() -> None:
    net = connected_net(rotate_tokens=False)
    net.advance(TOKEN_TTL * 0.75)
    request = next(e for e in net.chat.seen if type(e).__name__ == "RefreshRequest")
    assert not request.rotate


def test_a_token_refreshed_during_the_hello_is_reauthed_after_the_welcome() -> None:
    net = Net(chat=FakeChat(token_ttl=12, hold_hello=True))
    net.sign_in()
    net.advance(9)  # the refresh (at 9 s) happens while the hello waits
    (refreshed,) = net.take(TokenRefreshed)
    assert not net.session.is_connected
    net.chat.release_hellos(net.now)
    net.pump()
    assert [type(e) for e in net.take()] == [Connected]
    assert net.chat.frames(protocol.Reauth) == [protocol.Reauth(token=refreshed.token)]


def test_a_failed_refresh_is_retried_later() -> None:
    net = connected_net(refresh_retry=90.0)
    net.chat.refresh_answer = (500, "internal_error")
    net.advance(TOKEN_TTL * 0.75)
    assert net.take(TokenRefreshed) == []
    net.chat.refresh_answer = None
    net.advance(89)
    assert net.take(TokenRefreshed) == []
    net.advance(1)
    assert len(net.take(TokenRefreshed)) == 1


def test_a_refused_refresh_signs_in_again_with_the_password() -> None:
    net = connected_net()
    net.take()
    net.chat.refresh_answer = (401, "unauthorized")
    net.advance(TOKEN_TTL * 0.75)
    events = net.take()
    assert [type(e) for e in events] == [SignedIn, Connected]
    assert net.session.is_connected


def test_a_reconnect_waiting_while_the_session_signs_in_again_starts_no_second_login() -> None:
    net = connected_net(http_timeout=600.0)
    net.chat.upgrade_answer = (503, "server_busy", (("retry-after", "1000"),))
    net.chat.close_ws(1001, net.now, "restart")
    net.pump()
    net.advance(1)  # the reconnect is refused: the next one waits 1000 s
    assert not net.session.is_connected
    net.chat.refresh_answer = (401, "unauthorized")
    net.chat.hold_logins = True
    net.advance(TOKEN_TTL)  # the refresh is refused: one login, while the reconnect waits
    logins = [e for e in net.chat.seen if type(e).__name__ == "LoginRequest"]
    assert len(logins) == 2  # the first sign-in, and signing in again
    assert net.session.state is SessionState.SIGNING_IN


def test_a_refused_resumed_token_ends_the_session() -> None:
    net = Net()
    net.do(lambda s, now: s.resume("stolen", 100, now))
    events = net.take()
    assert events == [SignedOut(reason="the server refused the token")]
    assert net.session.state is SessionState.SIGNED_OUT
    net.pump()
    assert net.session.is_finished


def test_a_resumed_token_connects_and_refreshes_on_time() -> None:
    chat = FakeChat()
    grant = chat.grant("alice")
    net = Net(chat=chat)
    net.do(lambda s, now: s.resume(grant.token, 40, now))
    assert net.take() == [Connected(username="alice", user_id=5, protocol="1.1.0", server_time=1)]
    net.advance(30)
    assert len(net.take(TokenRefreshed)) == 1


def test_a_short_token_is_refreshed_while_its_whole_seconds_surely_last() -> None:
    """``expires_in`` is whole seconds and the token may end up to one sooner (a server
    counting from the start of the second it issued it in): a 4-second token is
    refreshed at 2 s, not at 75% (3 s), when it may already have ended."""
    chat = FakeChat()
    grant = chat.grant("alice")
    net = Net(chat=chat)
    net.do(lambda s, now: s.resume(grant.token, 4, now))
    net.take()
    net.advance(1.9)
    assert net.take(TokenRefreshed) == []
    net.advance(0.2)
    assert len(net.take(TokenRefreshed)) == 1


def test_a_4001_with_the_current_token_signs_in_again() -> None:
    net = connected_net()
    net.take()
    token = next(iter(net.chat.tokens))
    net.chat.revoke(token)
    net.chat.close_ws(4001, net.now, "unauthorized")
    net.pump()
    events = net.take()
    assert [type(e) for e in events] == [Disconnected, SignedIn, Connected]
    assert events[0] == Disconnected(code=4001, reason="unauthorized", retry_at=net.now)


def test_when_signing_in_again_fails_for_good_the_session_ends() -> None:
    net = connected_net()
    net.take()
    net.chat.passwords["alice"] = "changed elsewhere"
    net.chat.tokens.clear()
    net.chat.close_ws(4001, net.now)
    net.pump()
    assert net.take()[-1] == SignedOut(reason="cannot sign in again: 401 invalid_credentials")


def test_signing_in_again_retries_while_the_server_is_unreachable() -> None:
    net = connected_net()
    net.take()
    net.chat.tokens.clear()
    net.chat.login_answer = (503, "server_busy", (("Retry-After", "5"),))
    net.chat.close_ws(4001, net.now)
    net.pump()
    assert [type(e) for e in net.take()] == [Disconnected]
    assert net.session.state is SessionState.SIGNING_IN
    net.chat.login_answer = None
    net.advance(5)
    assert [type(e) for e in net.take()] == [SignedIn, Connected]


def test_a_4001_for_a_token_already_replaced_just_reconnects() -> None:
    chat = FakeChat(token_ttl=12, hold_hello=True)
    net = Net(chat=chat)
    net.sign_in()
    net.advance(9)  # the refresh rotates the token while the hello (old token) waits
    assert len(net.take(TokenRefreshed)) == 1
    (old,) = chat.retired
    chat.revoke(old)
    chat.hold_hello = False
    ((tid, _),) = chat.held_hellos
    chat.conns[tid].fail("unauthorized", 4001, now=net.now)
    net.pump()
    assert net.take() == [Disconnected(code=4001, reason="unauthorized", retry_at=net.now)]
    net.advance(0)
    assert net.session.is_connected


# --- catch-up, dedupe, receipts ----------------------------------------------------------


def test_the_catch_up_comes_once_per_seq_and_is_confirmed() -> None:
    net = Net()
    chat = net.chat
    first = protocol.Message(id="b1", seq=11, sender="bob", recipient="alice", body="1", ts=1)
    second = protocol.Message(id="b2", seq=12, sender="bob", recipient="alice", body="2", ts=2)
    chat.undelivered = {11: first, 12: second}
    net.sign_in()
    assert net.take(protocol.Message) == [first, second]
    assert chat.frames(protocol.Delivered) == [protocol.Delivered(seqs=(11, 12))]
    assert chat.undelivered == {}
    # a repeat (a resend, a second node) is dropped, and confirmed again
    chat.push(first, net.now)
    net.pump()
    assert net.take(protocol.Message) == []
    assert chat.frames(protocol.Delivered)[-1] == protocol.Delivered(seqs=(11,))


def test_a_copy_of_my_own_send_is_shown_but_not_confirmed() -> None:
    net = connected_net()
    mine = protocol.Message(id="m9", seq=50, sender="alice", recipient="bob", body="x", ts=1)
    for tid in net.chat.ws_user:
        net.chat.conns[tid].send(mine, net.now)
    net.pump()
    assert net.take(protocol.Message) == [mine]
    assert net.chat.frames(protocol.Delivered) == []


def test_without_auto_confirm_the_application_confirms() -> None:
    net = connected_net(auto_confirm=False)
    message = bob_says(net, 20)
    assert net.take(protocol.Message) == [message]
    assert net.chat.frames(protocol.Delivered) == []
    net.do(lambda s, now: s.confirm([20], now))
    assert net.chat.frames(protocol.Delivered) == [protocol.Delivered(seqs=(20,))]


def test_a_big_catch_up_is_confirmed_in_frames_of_at_most_1000_seqs() -> None:
    net = Net()
    for seq in range(1, 1502):
        net.chat.undelivered[seq] = protocol.Message(
            id=f"b{seq}", seq=seq, sender="bob", recipient="alice", body="x", ts=1
        )
    net.sign_in()
    assert [len(d.seqs) for d in net.chat.frames(protocol.Delivered)] == [1000, 501]


def test_receipts_typing_and_presence_pass_through_reauthed_does_not() -> None:
    net = connected_net()
    net.take()
    frames = [
        protocol.DeliveredReceipt(id="m1", seq=3, ts=4),
        protocol.ReadReceipt(peer="bob", up_to=3, ts=5),
        protocol.PeerTyping(sender="bob"),
        protocol.Presence(user="bob", online=True),
        protocol.Reauthed(expires_in=10),
        protocol.Error(code="unauthorized"),
    ]
    for tid in net.chat.ws_user:
        for frame in frames:
            net.chat.conns[tid].send(frame, net.now)
    net.pump()
    assert net.take() == frames[:4] + frames[5:]


def test_read_marks_wait_for_the_connection_and_keep_the_highest() -> None:
    net = Net()
    net.do(lambda s, now: s.mark_read("Bob", 5, now))
    net.do(lambda s, now: s.mark_read("bob", 9, now))
    net.do(lambda s, now: s.mark_read("bob", 7, now))
    assert net.do(lambda s, now: s.typing("bob", now)) is False
    net.sign_in()
    assert net.chat.frames(protocol.Read) == [protocol.Read(peer="bob", up_to=9)]
    net.do(lambda s, now: s.mark_read("bob", 12, now))
    assert net.chat.frames(protocol.Read)[-1] == protocol.Read(peer="bob", up_to=12)
    assert net.do(lambda s, now: s.typing("bob", now)) is True
    assert net.chat.frames(protocol.Typing) == [protocol.Typing(to="bob")]


# --- the outbox ------------------------------------------------------------------------------


def test_a_message_queued_before_sign_in_goes_out_once_connected() -> None:
    net = Net()
    entry = net.do(lambda s, now: s.send_message("bob", "early", now))
    assert net.session.pending() == [entry]
    net.sign_in()
    (acked,) = net.take(Acked)
    assert acked.entry.client_id == entry.client_id and acked.ack.seq == 101
    assert net.session.pending() == []


def test_an_unacked_message_is_resent_after_a_reconnect_and_acked_once() -> None:
    net = connected_net()
    net.chat.hold_sends = True
    entry = net.do(lambda s, now: s.send_message("bob", "lost ack", now))
    net.chat.hold_sends = False
    net.break_transports()
    (down,) = net.take(Disconnected)
    assert down.code == 1006 and down.retry_at is not None
    assert net.now < down.retry_at <= net.now + 0.5
    net.advance(down.retry_at - net.now)
    sends = net.chat.frames(protocol.Send)
    assert [s.id for s in sends] == [entry.client_id, entry.client_id]
    assert [a.entry.client_id for a in net.take(Acked)] == [entry.client_id]


def test_a_repeated_ack_is_not_reported_twice() -> None:
    net = connected_net()
    entry = net.do(lambda s, now: s.send_message("bob", "once", now))
    ack = net.chat.acks[("alice", entry.client_id)]
    for tid in net.chat.ws_user:
        net.chat.conns[tid].send(ack, net.now)
    net.pump()
    assert len(net.take(Acked)) == 1


def test_refused_sends_are_deferred_or_failed() -> None:
    net = connected_net()
    net.chat.send_error = protocol.Error(code="rate_limited", retry_after_ms=2000)
    entry = net.do(lambda s, now: s.send_message("bob", "slow down", now))
    (deferred,) = net.take(SendDeferred)
    assert deferred.retry_at == net.now + 2.0
    net.advance(1.9)
    assert net.take(Acked) == []
    net.advance(0.1)
    assert [a.entry.client_id for a in net.take(Acked)] == [entry.client_id]
    net.chat.send_error = protocol.Error(code="unknown_user")
    net.do(lambda s, now: s.send_message("nobody", "hello?", now))
    (failed,) = net.take(SendFailed)
    assert failed.code == "unknown_user" and net.session.pending() == []


def test_the_outbox_storage_is_the_callers() -> None:
    storage = MemoryOutboxStorage()
    session = Session(SessionConfig(host="h"), rng=random.Random(1), storage=storage)
    entry = session.send_message("bob", "kept", 0.0)
    assert storage.entries() == [entry]
    with pytest.raises(protocol.ProtocolViolation):
        session.send_message("bob", "", 0.0)


# --- reconnecting ---------------------------------------------------------------------------


def test_reconnects_back_off_while_the_server_is_down_and_reset_after_a_long_connection() -> None:
    net = connected_net(backoff_base=0.5, backoff_cap=8.0)
    net.take()
    net.chat.down = True
    net.break_transports()
    waits = []
    for _ in range(7):
        (down,) = net.take(Disconnected)
        assert down.retry_at is not None
        waits.append(down.retry_at - net.now)
        net.advance(down.retry_at - net.now)
    ceilings = [0.5, 1, 2, 4, 8, 8, 8]
    assert all(0 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits
    net.chat.down = False
    net.take()
    (down,) = [e for e in net.events if isinstance(e, Disconnected)] or [None]
    net.advance(8.0)
    assert net.session.is_connected
    net.take()
    net.advance(31)  # up long enough: the next outage starts from short delays
    net.break_transports()
    (down,) = net.take(Disconnected)
    assert down.retry_at is not None and down.retry_at - net.now <= 0.5


def test_a_server_restart_closes_with_1001_and_the_session_comes_back() -> None:
    net = connected_net()
    net.take()
    net.chat.close_ws(1001, net.now, "going away")
    net.pump()
    (down,) = net.take(Disconnected)
    assert (down.code, down.reason) == (1001, "going away")
    assert down.retry_at is not None
    net.advance(down.retry_at - net.now)
    assert [type(e) for e in net.take()] == [Connected]


def test_a_busy_upgrade_waits_for_retry_after() -> None:
    net = Net(chat=FakeChat(upgrade_answer=(503, "server_busy", (("Retry-After", "7"),))))
    net.sign_in()
    (down,) = net.take(Disconnected)
    assert down.code is None and down.reason == "upgrade refused: 503 server_busy"
    assert down.retry_at == net.now + 7.0
    net.chat.upgrade_answer = None
    net.advance(7)
    assert net.session.is_connected


def test_an_unsupported_protocol_stops_reconnecting_until_asked() -> None:
    net = connected_net()
    net.take()
    net.chat.close_ws(4002, net.now)
    net.pump()
    assert net.take(Disconnected) == [Disconnected(code=4002, reason="", retry_at=None)]
    assert net.session.next_deadline() is None or not net.open_ids
    net.advance(100)
    assert not net.session.is_connected
    net.do(lambda s, now: s.reconnect(now))
    assert net.session.is_connected
    net.do(lambda s, now: s.reconnect(now))  # connected already: nothing happens
    assert len(net.chat.frames(protocol.Hello)) == 2


def test_a_hello_never_answered_times_out() -> None:
    net = Net(chat=FakeChat(hold_hello=True))
    net.sign_in()
    net.advance(15)
    (down,) = net.take(Disconnected)
    assert (down.code, down.reason) == (None, "timed out")


def test_a_silent_server_is_given_up_after_the_idle_timeout() -> None:
    net = connected_net()
    net.take()
    net.chat.silent = True
    for conn in net.chat.conns.values():
        conn.close(1000, now=net.now)  # stop its pings; the close frame goes unanswered
    net.chat.conns.clear()  # and it never says anything again
    net.advance(100)
    downs = net.take(Disconnected)
    assert downs and downs[0].code == 1000


# --- HTTP calls ------------------------------------------------------------------------------


def test_http_calls_are_answered_with_their_number() -> None:
    net = connected_net()
    net.take()
    history = net.do(lambda s, now: s.history("bob", now, before=10, limit=5))
    users = net.do(lambda s, now: s.search_users("b", now))
    convs = net.do(lambda s, now: s.conversations(now))
    results = net.take(CallResult)
    assert [r.call for r in results] == [history, users, convs]
    assert isinstance(results[0].response.body, protocol.MessagePage)
    assert isinstance(results[1].response.body, protocol.UserList)
    assert isinstance(results[2].response.body, protocol.ConversationList)
    request = next(e for e in net.chat.seen if type(e).__name__ == "HistoryRequest")
    assert (request.peer, request.before, request.limit) == ("bob", 10, 5)


def test_an_unanswered_call_gets_a_result_without_a_response() -> None:
    net = connected_net()
    net.chat.down = True
    call = net.do(lambda s, now: s.conversations(now))
    assert net.take(CallResult) == [
        CallResult(call=call, response=None, reason="connection refused")
    ]


# --- ending -------------------------------------------------------------------------------------


def test_sign_out_revokes_the_token_and_closes_everything() -> None:
    net = connected_net()
    net.take()
    token = next(iter(net.chat.tokens))
    net.do(lambda s, now: s.sign_out(now))
    assert net.take() == [SignedOut(reason="signed out")]
    assert token not in net.chat.tokens
    assert net.session.is_finished and not net.open_ids
    net.do(lambda s, now: s.sign_out(now))  # once is enough
    assert net.take() == []
    assert net.session.next_deadline() is None


def test_close_keeps_the_token_and_answers_open_calls() -> None:
    net = connected_net()
    net.take()
    net.chat.silent = True
    call = net.do(lambda s, now: s.conversations(now))
    net.do(lambda s, now: s.close(now))
    assert net.take() == [CallResult(call=call, response=None, reason="session closed")]
    net.advance(5)  # the silent server never answers the close frame
    assert net.session.is_finished and net.chat.tokens
    net.do(lambda s, now: s.close(now))
    assert net.session.state is SessionState.CLOSED


def test_signing_out_while_signing_in_drops_the_answer() -> None:
    net = Net(chat=FakeChat(silent=True))
    net.sign_in()
    net.do(lambda s, now: s.sign_out(now))
    net.chat.silent = False
    assert net.take() == [SignedOut(reason="signed out")]
    net.advance(31)
    assert net.take() == []


def test_unknown_transport_ids_are_ignored() -> None:
    session = Session(SessionConfig(host="h"), rng=random.Random(1))
    session.transport_opened(99, 0.0)
    session.receive_data(99, b"x", 0.0)
    session.transport_closed(99, 0.0)
    assert session.actions() == [] and session.events() == []
