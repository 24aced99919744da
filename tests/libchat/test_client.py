"""The client engine, alone and paired with a server engine on a fake clock."""

from __future__ import annotations

import random

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

from libchat import events as ev
from libchat import limits, protocol
from libchat.client import ClientConfig, ClientConnection, LocalProtocolError
from libchat.states import ConnState
from tests.libchat.pair import (
    BAD_TOKEN,
    HEALTH,
    MESSAGE,
    TOKEN,
    Pair,
    closed_events,
    grant,
)
from tests.schemacheck import SchemaChecker

CREDS = protocol.Credentials(username="alice", password="correct horse")


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def pair(request: pytest.FixtureRequest) -> Pair:
    return Pair(bytewise=request.param)


def responses(pair: Pair) -> list[tuple[int, object]]:
    return [(e.status, e.body) for e in pair.take_client() if isinstance(e, ev.HttpResponse)]


# --- HTTP through a server engine ---------------------------------------------------------


def test_every_call_gets_its_typed_answer(pair: Pair) -> None:
    client, now = pair.client, pair.now
    client.register(CREDS, now)
    client.login(CREDS, now)
    client.logout(TOKEN, now)
    client.refresh(TOKEN, now)
    client.search_users(TOKEN, "al i", now)
    client.conversations(TOKEN, now)
    client.history(TOKEN, "Bob Smith", now)
    client.history(TOKEN, "bob", now, before=10, limit=5)
    client.health(now)
    client.metrics(now)
    pair.pump()
    page = protocol.MessagePage(messages=[MESSAGE], has_more=False)
    assert responses(pair) == [
        (201, protocol.Registered(user_id=1, username="alice")),
        (200, grant()),
        (204, None),
        (200, grant()),
        (200, protocol.UserList(users=[protocol.UserEntry(username="alice")])),
        (
            200,
            protocol.ConversationList(
                conversations=[protocol.Conversation(peer="bob", last_message=MESSAGE, unread=1)]
            ),
        ),
        (200, page),
        (200, page),
        (200, HEALTH),
        (200, b"chat_up 1\n"),
    ]
    requests = [e for e in pair.server_events if not isinstance(e, ev.HttpResponse)]
    assert ev.HistoryRequest(token=TOKEN, peer="bob smith", before=None, limit=50) in requests
    assert ev.HistoryRequest(token=TOKEN, peer="bob", before=10, limit=5) in requests
    assert ev.UserSearchRequest(token=TOKEN, prefix="al i") in requests
    assert client.state is ConnState.HTTP
    assert not client.is_closed


def test_requests_go_one_at_a_time(pair: Pair) -> None:
    pair.host = False
    pair.client.health(pair.now)
    pair.client.metrics(pair.now)
    pair.pump()
    assert pair.take_server() == [ev.HealthRequest()]  # the second is still queued
    pair.server_got(pair.server.respond(200, HEALTH, now=pair.now))
    pair.pump()
    assert pair.take_server() == [ev.MetricsRequest()]
    assert responses(pair) == [(200, HEALTH)]


def test_error_statuses_carry_the_error_body(pair: Pair) -> None:
    pair.client.conversations("not a token!", pair.now)  # spaces: a malformed bearer
    pair.client.health(pair.now)
    pair.pump()
    (first, second) = responses(pair)
    assert first == (401, protocol.ErrorBody.of("unauthorized", "malformed Authorization header"))
    assert second == (200, HEALTH)


def test_health_503_carries_a_health_body() -> None:
    pair = Pair(host=False)
    pair.client.health(pair.now)
    pair.pump()
    degraded = protocol.Health(
        status="degraded",
        version="0.1.0",
        protocol="1.0.0",
        uptime_s=3.0,
        connections=0,
        db="error",
        disk_used_pct=99.0,
    )
    pair.server_got(pair.server.respond(503, degraded, now=pair.now))
    pair.pump()
    assert responses(pair) == [(503, degraded)]


def test_unparsable_body_is_none(schema_check: SchemaChecker) -> None:
    pair = Pair(host=False)
    pair.client.login(CREDS, pair.now)
    pair.pump()
    with schema_check.paused():
        pair.server.respond(200, b'{"token": 5}', now=pair.now)
        pair.pump()
        pair.client.health(pair.now)
        pair.pump()
        pair.server.respond(500, b"oops", now=pair.now, content_type="text/plain")
        pair.pump()
    assert responses(pair) == [(200, None), (500, None)]


def test_http_keep_alive_survives_many_requests(pair: Pair) -> None:
    for _ in range(5):
        pair.client.health(pair.now)
        pair.pump()
    assert len(responses(pair)) == 5
    assert pair.server.state is ConnState.HTTP


# --- the upgrade --------------------------------------------------------------------------


def test_upgrade_hello_welcome_send_ack(pair: Pair) -> None:
    pair.client.upgrade(pair.now, token=TOKEN, origin="https://chat.test")
    assert pair.client.state is ConnState.UPGRADING
    pair.pump()
    assert pair.take_client() == [ev.Upgraded()]
    assert pair.take_server() == [ev.UpgradeRequest(token=TOKEN, origin="https://chat.test")]
    assert pair.client.state is ConnState.AWAITING_HELLO
    pair.client.send(protocol.Hello(protocol="1.0"), pair.now)
    assert pair.client.state is ConnState.AWAITING_WELCOME
    pair.pump()
    assert pair.take_client() == [protocol.Welcome(user_id=1, username="alice", server_time=9)]
    assert (pair.client.state, pair.server.state) == (ConnState.OPEN, ConnState.OPEN)
    pair.client.send(protocol.Send(id="c-1", to="bob", body="hello"), pair.now)
    pair.pump()
    assert pair.take_client() == [protocol.Ack(id="c-1", seq=1, ts=2)]
    assert pair.take_server() == [
        protocol.Hello(protocol="1.0"),
        protocol.Send(id="c-1", to="bob", body="hello"),
    ]


def test_upgrade_after_http_requests_on_the_same_connection(pair: Pair) -> None:
    pair.client.login(CREDS, pair.now)
    pair.client.upgrade(pair.now)
    assert pair.client.state is ConnState.HTTP  # the upgrade waits for the login's answer
    pair.pump()
    assert [type(e) for e in pair.take_client()] == [ev.HttpResponse, ev.Upgraded]


def test_refused_upgrade_is_an_error_response_then_closed(pair: Pair) -> None:
    pair.client.upgrade(pair.now, token=BAD_TOKEN)
    pair.pump()
    events = pair.take_client()
    assert events == [
        ev.HttpResponse(
            status=401,
            body=protocol.ErrorBody.of("unauthorized", "bad token"),
            headers=events[0].headers,
        ),
        ev.ConnectionClosed(code=None, reason="the server closed the HTTP connection"),
    ]
    assert events[0].header("Connection") == "close"
    assert events[0].header("x-missing") is None
    assert pair.client.is_closed and pair.server.is_closed


def test_bad_token_in_hello_fails_4001(pair: Pair) -> None:
    pair.open(token=BAD_TOKEN)
    events = pair.take_client()
    assert events[-2:] == [
        protocol.Error(code="unauthorized"),
        ev.ConnectionClosed(code=4001, reason="unauthorized"),
    ]
    assert closed_events(pair.take_server()) == [
        ev.ConnectionClosed(code=4001, reason="unauthorized")
    ]


def test_welcome_is_sent_pushes_arrive(pair: Pair) -> None:
    pair.open()
    pair.take_client()
    for frame in (
        MESSAGE,
        protocol.DeliveredReceipt(id="c-1", seq=1, ts=3),
        protocol.ReadReceipt(peer="bob", up_to=1, ts=4),
        protocol.PeerTyping(sender="bob"),
        protocol.Presence(user="bob", online=False),
        protocol.Reauthed(expires_in=60),
    ):
        pair.server.send(frame, pair.now)
        pair.pump()
        assert pair.take_client() == [frame]


# --- timers, through the pair -------------------------------------------------------------


def test_hello_timeout_4003(pair: Pair) -> None:
    pair.client.upgrade(pair.now)
    pair.pump()
    pair.advance(limits.HELLO_TIMEOUT)
    assert closed_events(pair.client_events) == [
        ev.ConnectionClosed(code=4003, reason="hello timeout")
    ]
    assert closed_events(pair.server_events) == [
        ev.ConnectionClosed(code=4003, reason="hello timeout")
    ]
    assert pair.client.is_closed and pair.server.is_closed


def test_pings_keep_a_connection_alive(pair: Pair) -> None:
    pair.open()
    pair.advance(10 * limits.IDLE_TIMEOUT)
    # The client answered every ping: nobody closed.
    assert pair.client.state is ConnState.OPEN
    assert pair.server.state is ConnState.OPEN


def test_ping_then_idle_close_when_the_client_goes_silent(pair: Pair) -> None:
    pair.open()
    pair.take_client()
    pair.wire_down = True  # the client's bytes no longer reach the server
    pair.advance(limits.IDLE_TIMEOUT + limits.CLOSE_TIMEOUT)
    assert closed_events(pair.server_events) == [
        ev.ConnectionClosed(code=1000, reason="idle timeout")
    ]
    assert pair.server.is_closed
    # The client saw two pings, then the close, and answered it (the answer was lost).
    assert closed_events(pair.client_events) == [
        ev.ConnectionClosed(code=1000, reason="idle timeout")
    ]


def test_client_closes_a_silent_server() -> None:
    client = ClientConnection(ClientConfig(host="x", idle_timeout=90.0), random.Random(1))
    _upgrade_client_by_hand(client, now=0.0)
    assert client.next_deadline() == 90.0
    assert client.handle_timer(89.0) == []
    assert client.handle_timer(90.0) == []
    assert client.state is ConnState.CLOSING
    assert client.next_deadline() == 90.0 + limits.CLOSE_TIMEOUT
    assert client.handle_timer(94.0) == []
    assert client.handle_timer(95.0) == [ev.ConnectionClosed(code=1000, reason="idle timeout")]
    assert client.next_deadline() is None
    assert client.handle_timer(100.0) == []


def test_close_handshake_started_by_the_client(pair: Pair) -> None:
    pair.open()
    pair.client.close(1000, "bye", now=pair.now)
    assert pair.client.state is ConnState.CLOSING
    pair.client.send(protocol.Typing(to="bob"), pair.now)  # dropped while closing
    pair.pump()
    assert closed_events(pair.client_events) == [ev.ConnectionClosed(code=1000, reason="bye")]
    assert closed_events(pair.server_events) == [ev.ConnectionClosed(code=1000, reason="bye")]
    assert pair.client.close_code == 1000


def test_close_handshake_started_by_the_server(pair: Pair) -> None:
    pair.open()
    pair.server.close(1001, "restart", now=pair.now)
    pair.pump()
    assert closed_events(pair.client_events) == [ev.ConnectionClosed(code=1001, reason="restart")]
    assert closed_events(pair.server_events) == [ev.ConnectionClosed(code=1001, reason="restart")]


def test_eof_both_ways(pair: Pair) -> None:
    pair.open()
    pair.eof_both()
    assert closed_events(pair.client_events) == [
        ev.ConnectionClosed(code=1006, reason="connection lost")
    ]
    assert closed_events(pair.server_events) == [
        ev.ConnectionClosed(code=1006, reason="connection lost")
    ]
    pair.eof_both()
    assert len(closed_events(pair.client_events)) == 1


def test_server_frame_over_the_limit_closes_1009() -> None:
    client = ClientConnection(ClientConfig(host="x", max_frame_bytes=100), random.Random(1))
    server_ws = _upgrade_client_by_hand(client, now=0.0)
    big = protocol.encode_frame(MESSAGE)
    assert len(big) > 100
    assert client.receive_data(server_ws.send(TextMessage(data=big)), 1.0) == []
    server_ws.receive_data(client.data_to_send())
    (close,) = list(server_ws.events())
    assert isinstance(close, CloseConnection) and close.code == 1009


# --- the client alone: what the server may get wrong ---------------------------------------


def _upgrade_client_by_hand(client: ClientConnection, now: float) -> Connection:
    """Answer the client's upgrade with a hand-made 101; returns the server's wsproto."""
    from wsproto.utilities import generate_accept_token

    client.upgrade(now)
    request = client.data_to_send()
    key = request.split(b"sec-websocket-key: ")[1].split(b"\r\n")[0]
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + generate_accept_token(key) + b"\r\n\r\n"
    )
    assert client.receive_data(response, now) == [ev.Upgraded()]
    return Connection(ConnectionType.SERVER)


def _client() -> ClientConnection:
    return ClientConnection(ClientConfig(host="x"), random.Random(1))


def test_the_key_comes_from_the_rng() -> None:
    first, second = _client(), _client()
    first.upgrade(0.0)
    second.upgrade(0.0)
    assert first.data_to_send() == second.data_to_send()


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (b"Sec-WebSocket-Accept: wrong\r\n", "bad Sec-WebSocket-Accept in the 101 response"),
        (b"", "bad Sec-WebSocket-Accept in the 101 response"),
    ],
)
def test_a_wrong_accept_closes(extra: bytes, reason: str) -> None:
    client = _client()
    client.upgrade(0.0)
    response = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + extra
    assert client.receive_data(response + b"\r\n", 1.0) == [
        ev.ConnectionClosed(code=None, reason=reason)
    ]
    assert client.is_closed


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (b"Upgrade: h2c\r\n", "the 101 response does not upgrade to websocket"),
        (
            b"Upgrade: websocket\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
            "the server chose an extension or subprotocol",
        ),
    ],
)
def test_a_wrong_101_closes(extra: bytes, reason: str) -> None:
    from wsproto.utilities import generate_accept_token

    client = _client()
    client.upgrade(0.0)
    key = client.data_to_send().split(b"sec-websocket-key: ")[1].split(b"\r\n")[0]
    response = (
        b"HTTP/1.1 101 OK\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        + generate_accept_token(key)
        + b"\r\n"
        + extra
        + b"\r\n"
    )
    assert client.receive_data(response, 1.0) == [ev.ConnectionClosed(code=None, reason=reason)]


def test_frames_right_after_the_101_are_parsed() -> None:
    from wsproto.utilities import generate_accept_token

    client = _client()
    client.upgrade(0.0)
    key = client.data_to_send().split(b"sec-websocket-key: ")[1].split(b"\r\n")[0]
    server_ws = Connection(ConnectionType.SERVER)
    welcome = protocol.Welcome(user_id=1, username="alice", server_time=1)
    frame = server_ws.send(TextMessage(data=protocol.encode_frame(welcome)))
    response = (
        b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        + generate_accept_token(key)
        + b"\r\n\r\n"
    )
    assert client.receive_data(response + frame, 1.0) == [ev.Upgraded(), welcome]
    assert client.state is ConnState.AWAITING_HELLO  # a welcome before hello opens nothing


def test_informational_responses_are_skipped() -> None:
    client = _client()
    client.health(0.0)
    client.data_to_send()
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    assert client.receive_data(data, 1.0) == [ev.HttpResponse(status=204, body=None)]


def test_a_response_without_a_request_closes() -> None:
    client = _client()
    assert client.receive_data(b"HTTP/1.1 200 OK\r\n\r\n", 0.0) == [
        ev.ConnectionClosed(code=None, reason="response without a request")
    ]


def test_a_malformed_response_closes() -> None:
    client = _client()
    client.health(0.0)
    (closed,) = client.receive_data(b"NOT HTTP\r\n\r\n", 0.0)
    assert isinstance(closed, ev.ConnectionClosed)
    assert closed.reason.startswith("malformed HTTP response")


def test_a_response_over_the_limit_closes() -> None:
    client = ClientConnection(ClientConfig(host="x", max_response_bytes=10), random.Random(1))
    client.metrics(0.0)
    assert client.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", 0.0) == []
    assert client.receive_data(b"x" * 11, 0.0) == [
        ev.ConnectionClosed(code=None, reason="response body too large")
    ]


def test_a_response_delimited_by_eof_is_completed() -> None:
    client = _client()
    client.metrics(0.0)
    assert client.receive_data(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nup 1", 0.0) == []
    assert client.receive_eof(1.0) == [
        ev.HttpResponse(status=200, body=b"up 1", headers=(("connection", "close"),)),
        ev.ConnectionClosed(code=None, reason="the server closed the HTTP connection"),
    ]
    assert client.receive_eof(1.0) == []


def test_eof_in_the_middle_of_a_response() -> None:
    client = _client()
    client.metrics(0.0)
    client.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nup", 0.0)
    (closed,) = client.receive_eof(1.0)
    assert isinstance(closed, ev.ConnectionClosed) and closed.code is None


def test_eof_between_requests() -> None:
    client = _client()
    assert client.receive_eof(1.0) == [
        ev.ConnectionClosed(code=None, reason="connection closed by server")
    ]


def test_undecodable_and_binary_server_frames_are_dropped(schema_check: SchemaChecker) -> None:
    client = _client()
    server_ws = _upgrade_client_by_hand(client, now=0.0)
    from wsproto.events import BytesMessage

    with schema_check.paused():
        for event in (
            TextMessage(data="not json"),
            TextMessage(data='{"type":"nope"}'),
            TextMessage(data='{"type":"receipt","status":"lost"}'),
            BytesMessage(data=b"\x00"),
            TextMessage(data='{"type":"presence"', message_finished=False),
            TextMessage(data=',"user":"bob","online":true}'),
        ):
            events = client.receive_data(server_ws.send(event), 1.0)
    assert events == [protocol.Presence(user="bob", online=True)]
    assert client.state is ConnState.AWAITING_HELLO


def test_the_client_answers_pings() -> None:
    client = _client()
    server_ws = _upgrade_client_by_hand(client, now=0.0)
    assert client.receive_data(server_ws.send(Ping(payload=b"p")), 5.0) == []
    server_ws.receive_data(client.data_to_send())
    assert list(server_ws.events()) == [Pong(payload=b"p")]
    assert client.next_deadline() == 5.0 + limits.CLIENT_IDLE_TIMEOUT


def test_close_frame_from_the_server_while_closing_ends() -> None:
    client = _client()
    server_ws = _upgrade_client_by_hand(client, now=0.0)
    client.close(now=1.0)
    server_ws.receive_data(client.data_to_send())
    (close,) = list(server_ws.events())
    late_text = b"\x81\x02{}"  # an unmasked text frame: the server's last words
    frames = late_text + server_ws.send(close.response())
    assert client.receive_data(frames, 2.0) == [ev.ConnectionClosed(code=1000, reason="")]


# --- the client alone: caller misuse ---------------------------------------------------------


def test_misuse_raises() -> None:
    client = _client()
    with pytest.raises(LocalProtocolError):
        client.send(protocol.Hello(protocol="1.0"), 0.0)  # not upgraded yet
    with pytest.raises(LocalProtocolError):
        client.logout("bad\r\ntoken", 0.0)  # not a header value
    client.upgrade(0.0)
    with pytest.raises(LocalProtocolError):  # nothing after an upgrade
        client.health(0.0)
    with pytest.raises(LocalProtocolError):
        client.upgrade(0.0)


def test_send_order_is_enforced() -> None:
    client = _client()
    _upgrade_client_by_hand(client, now=0.0)
    with pytest.raises(LocalProtocolError):
        client.send(protocol.Typing(to="bob"), 0.0)  # hello first
    client.send(protocol.Hello(protocol="1.0"), 0.0)
    with pytest.raises(LocalProtocolError):
        client.send(protocol.Hello(protocol="1.0"), 0.0)
    with pytest.raises(LocalProtocolError):
        client.send(protocol.Typing(to="bob"), 0.0)  # the welcome did not come yet


def test_close_before_the_websocket() -> None:
    client = _client()
    client.health(0.0)
    client.close(now=3.0)
    assert client.is_closed
    assert client.next_deadline() == 3.0
    assert client.receive_data(b"HTTP/1.1 200 OK\r\n\r\n", 3.0) == [
        ev.ConnectionClosed(code=None, reason="closed by host")
    ]
    assert client.handle_timer(4.0) == []
    assert client.receive_eof(4.0) == []
    client.close(now=5.0)  # nothing more to do
    client.send(protocol.Typing(to="bob"), 5.0)  # dropped
    with pytest.raises(LocalProtocolError):
        client.health(5.0)


def test_handle_timer_before_the_websocket_does_nothing() -> None:
    client = _client()
    assert client.next_deadline() is None
    assert client.handle_timer(100.0) == []
    assert client.receive_data(b"", 1.0) == []
