"""The server engine: bytes in, events and bytes out, each input whole and byte by byte."""

from __future__ import annotations

import random

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

from libchat import events as ev
from libchat import limits, protocol
from libchat.server import LocalProtocolError, ServerConfig, ServerConnection
from libchat.states import ConnState
from tests.libchat.pair import (
    RawClient,
    close_of,
    closed_events,
    parse_responses,
    request_bytes,
    upgrade_request,
)

AUTH = ("Authorization", "Bearer abc.DEF-_~+/=")


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def raw(request: pytest.FixtureRequest) -> RawClient:
    return RawClient(bytewise=request.param)


def get(target: str, *headers: tuple[str, str]) -> bytes:
    return request_bytes("GET", target, [("Host", "chat.test"), *headers])


def post(target: str, body: bytes = b"", *headers: tuple[str, str]) -> bytes:
    return request_bytes("POST", target, [("Host", "chat.test"), *headers], body)


# --- HTTP: requests become typed events ------------------------------------------------


CREDS = b'{"username":"Alice","password":"correct horse"}'


@pytest.mark.parametrize(
    ("data", "event"),
    [
        (
            post("/v1/register", CREDS),
            ev.RegisterRequest(
                credentials=protocol.Credentials(username="Alice", password="correct horse")
            ),
        ),
        (
            post("/v1/login", CREDS),
            ev.LoginRequest(
                credentials=protocol.Credentials(username="Alice", password="correct horse")
            ),
        ),
        (post("/v1/logout", b"", AUTH), ev.LogoutRequest(token="abc.DEF-_~+/=")),
        (post("/v1/token/refresh", b"", AUTH), ev.RefreshRequest(token="abc.DEF-_~+/=")),
        (
            post("/v1/token/refresh", b' {"rotate": true, "x": 1}', AUTH),
            ev.RefreshRequest(token="abc.DEF-_~+/=", rotate=True),
        ),
        (
            post("/v1/token/refresh", b'{"rotate": false}', AUTH),
            ev.RefreshRequest(token="abc.DEF-_~+/="),
        ),
        (post("/v1/token/refresh", b"{}", AUTH), ev.RefreshRequest(token="abc.DEF-_~+/=")),
        (post("/v1/token/refresh", b" \r\n", AUTH), ev.RefreshRequest(token="abc.DEF-_~+/=")),
        (
            get("/v1/users?prefix=al%20x", AUTH),
            ev.UserSearchRequest(token="abc.DEF-_~+/=", prefix="al x"),
        ),
        (get("/v1/conversations", AUTH), ev.ConversationsRequest(token="abc.DEF-_~+/=")),
        (
            get("/v1/conversations/%41lice/messages", AUTH),
            ev.HistoryRequest(token="abc.DEF-_~+/=", peer="alice", before=None, limit=50),
        ),
        (
            get("/v1/conversations/bob/messages?before=0&limit=200", AUTH),
            ev.HistoryRequest(token="abc.DEF-_~+/=", peer="bob", before=0, limit=200),
        ),
        (
            get("/v1/conversations/bob/messages?before=9223372036854775807", AUTH),
            ev.HistoryRequest(token="abc.DEF-_~+/=", peer="bob", before=2**63 - 1, limit=50),
        ),
        (get("/healthz"), ev.HealthRequest()),
        (get("/metrics"), ev.MetricsRequest()),
        (
            upgrade_request(("Authorization", "bearer tok"), ("Origin", "https://x.test")),
            ev.UpgradeRequest(token="tok", origin="https://x.test"),
        ),
    ],
)
def test_requests_become_events(raw: RawClient, data: bytes, event: object) -> None:
    assert raw.feed(data) == [event]
    assert raw.server.data_to_send() == b""
    assert raw.server.next_deadline() is None  # the host has the request


def test_respond_with_a_body_class_bytes_or_nothing(raw: RawClient) -> None:
    raw.feed(get("/healthz"))
    grant = protocol.TokenGrant(token="t", expires_in=5, user_id=1, username="alice")
    assert raw.server.respond(200, grant, now=1.0, headers=[("X-Extra", "1")]) == []
    (response,) = raw.responses()
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["server"] == "chatd"
    assert response.headers["x-extra"] == "1"
    assert response.json()["token"] == "t"
    assert raw.server.state is ConnState.HTTP

    raw.feed(get("/metrics"))
    raw.server.respond(200, b"up 1\n", now=2.0, content_type="text/plain; version=0.0.4")
    (response,) = raw.responses()
    assert (response.body, response.headers["content-type"]) == (
        b"up 1\n",
        "text/plain; version=0.0.4",
    )

    raw.feed(post("/v1/logout", b"", AUTH))
    raw.server.respond(204, now=3.0)
    out = raw.server.data_to_send()
    assert out.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"content-length" not in out

    raw.feed(get("/healthz"))
    raw.server.respond(299, None, now=4.0)  # a status with no reason phrase
    (response,) = raw.responses()
    assert (response.status, response.headers["content-length"]) == (299, "0")


def test_keep_alive_and_pipelining(raw: RawClient) -> None:
    three = get("/healthz") + get("/nowhere") + get("/metrics") + get("/healthz")
    # Only one request is handed over at a time; the 404 is the engine's own answer.
    assert raw.feed(three) == [ev.HealthRequest()]
    more = raw.server.respond(200, b"a", now=1.0)
    assert more == [ev.RequestRejected(status=404, code="not_found"), ev.MetricsRequest()]
    assert raw.server.respond(200, b"b", now=1.0) == [ev.HealthRequest()]
    assert raw.server.respond(200, b"c", now=1.0) == []
    statuses = [(r.status, r.body[:1]) for r in raw.responses()]
    assert statuses == [(200, b"a"), (404, b"{"), (200, b"b"), (200, b"c")]
    assert raw.server.state is ConnState.HTTP
    assert not raw.server.is_closed


def test_connection_close_request_ends_after_the_response(raw: RawClient) -> None:
    raw.feed(get("/healthz", ("Connection", "close")))
    assert raw.server.respond(200, b"ok", now=1.0) == [
        ev.ConnectionClosed(code=None, reason="HTTP connection closed")
    ]
    assert raw.server.is_closed
    assert raw.responses()[0].headers["connection"] == "close"
    assert raw.server.receive_data(get("/healthz"), 2.0) == []
    assert raw.server.receive_eof(2.0) == []


def test_http_10_request_is_answered_and_closed() -> None:
    raw = RawClient()
    assert raw.feed(b"GET /healthz HTTP/1.0\r\n\r\n") == [ev.HealthRequest()]
    assert closed_events(raw.server.respond(200, b"ok", now=1.0))
    assert raw.server.is_closed


def test_expect_100_continue_is_answered(raw: RawClient) -> None:
    head = (
        b"POST /v1/login HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % len(CREDS)
    )
    assert raw.feed(head) == []
    assert raw.server.data_to_send() == b"HTTP/1.1 100 \r\n\r\n"
    assert [type(e) for e in raw.feed(CREDS)] == [ev.LoginRequest]


# --- HTTP: faults the engine answers itself --------------------------------------------


def rejected(raw: RawClient, status: int, code: str, *, closes: bool = False) -> None:
    (response,) = raw.responses()
    assert (response.status, response.error_code) == (status, code)
    assert response.json()["error"]["message"]
    assert ev.RequestRejected(status=status, code=code) in raw.events
    assert raw.server.is_closed is closes
    assert bool(closed_events(raw.events)) is closes
    if closes:
        assert response.headers["connection"] == "close"


def test_unknown_path_is_404(raw: RawClient) -> None:
    for target in ("/nope", "/v1/conversations//messages", "/v1/conversations/a/b", "*"):
        raw.feed(get(target))
        rejected(raw, 404, "not_found")
        raw.events.clear()


def test_wrong_method_is_405_with_allow(raw: RawClient) -> None:
    raw.feed(get("/v1/login"))
    (response,) = raw.responses()
    assert (response.status, response.error_code, response.headers["allow"]) == (
        405,
        "method_not_allowed",
        "POST",
    )
    raw.feed(post("/v1/conversations/bob/messages", b"x"))
    assert raw.responses()[0].headers["allow"] == "GET"
    assert not raw.server.is_closed


def test_head_request_gets_headers_only(raw: RawClient) -> None:
    raw.feed(request_bytes("HEAD", "/healthz"))
    out = raw.server.data_to_send()
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ")
    assert b"content-length: " in head and rest == b""
    assert not raw.server.is_closed


def test_body_over_the_limit_by_content_length_is_413_and_closes(raw: RawClient) -> None:
    head = b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n"
    raw.feed(head)  # judged before a byte of the body arrives
    rejected(raw, 413, "too_large", closes=True)


def test_chunked_body_over_the_limit_is_413_and_closes(raw: RawClient) -> None:
    raw.feed(b"POST /v1/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (40000, b"x" * 40000)
    raw.feed(chunk)
    assert raw.responses() == []
    raw.feed(chunk)
    rejected(raw, 413, "too_large", closes=True)


def test_body_at_the_limit_is_read() -> None:
    raw = RawClient()
    body = b"{" + b" " * (limits.MAX_BODY_BYTES - 2) + b"}"
    raw.feed(post("/v1/login", body))
    rejected(raw, 400, "invalid_body")


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",  # HTTP/1.1 needs Host
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 17000 + b"\r\n\r\n",
    ],
    ids=["request-line", "header", "no-host", "oversize-headers"],
)
def test_malformed_http_is_400_json_and_closes(raw: RawClient, data: bytes) -> None:
    raw.feed(data)
    rejected(raw, 400, "bad_request", closes=True)
    assert raw.server.close_code is None


@pytest.mark.parametrize(
    "auth",
    [None, b"Basic abc", b"Bearer", b"Bearer a b", b"Bearer \xe4"],
)
def test_missing_or_malformed_bearer_is_401(raw: RawClient, auth: bytes | None) -> None:
    header = b"" if auth is None else b"Authorization: " + auth + b"\r\n"
    for head in (
        b"POST /v1/logout HTTP/1.1\r\nContent-Length: 0\r\n",
        b"GET /v1/conversations HTTP/1.1\r\n",
        b"GET /v1/users?prefix=a HTTP/1.1\r\n",
    ):
        raw.feed(head + b"Host: x\r\n" + header + b"\r\n")
        rejected(raw, 401, "unauthorized")
        raw.events.clear()


def test_two_authorization_headers_are_401(raw: RawClient) -> None:
    raw.feed(get("/v1/conversations", AUTH, AUTH))
    rejected(raw, 401, "unauthorized")


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=abc",
        "limit=-1",
        "limit=+5",
        "limit=",
        "before=-1",
        "before=1.5",
        "before=" + "9" * 19,
        "before=9223372036854775808",  # 2**63: past a signed 64-bit column
        "before=18446744073709551615",
        "before=" + "0" * 20 + "1",
    ],
)
def test_bad_history_query_is_invalid_query(raw: RawClient, query: str) -> None:
    raw.feed(get(f"/v1/conversations/bob/messages?{query}", AUTH))
    rejected(raw, 400, "invalid_query")


@pytest.mark.parametrize("target", ["/v1/users", "/v1/users?prefix=", "/v1/users?x=1"])
def test_user_search_needs_a_prefix(raw: RawClient, target: str) -> None:
    raw.feed(get(target, AUTH))
    rejected(raw, 400, "invalid_query")


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'{"username":"a"}', b'{"username":1,"password":"x"}'],
)
def test_bad_credentials_body_is_invalid_body(raw: RawClient, body: bytes) -> None:
    raw.feed(post("/v1/login", body, ("Content-Length", str(len(body)))))
    rejected(raw, 400, "invalid_body")


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b"null", b"true", b'{"rotate":1}', b'{"rotate":"yes"}', b'{"rotate":null}'],
)
def test_bad_refresh_body_is_invalid_body(raw: RawClient, body: bytes) -> None:
    raw.feed(post("/v1/token/refresh", body, AUTH, ("Content-Length", str(len(body)))))
    rejected(raw, 400, "invalid_body")


def test_refresh_checks_the_token_before_the_body(raw: RawClient) -> None:
    raw.feed(post("/v1/token/refresh", b"{", ("Content-Length", "1")))
    rejected(raw, 401, "unauthorized")


# --- the upgrade -----------------------------------------------------------------------


def test_upgrade_without_upgrade_headers_is_400(raw: RawClient) -> None:
    raw.feed(get("/v1/ws"))
    rejected(raw, 400, "bad_request")  # not an upgrade at all: keep-alive


def test_upgrade_to_another_protocol_is_400_and_closes(raw: RawClient) -> None:
    raw.feed(get("/v1/ws", ("Upgrade", "h2c"), ("Connection", "Upgrade")))
    rejected(raw, 400, "bad_request", closes=True)


@pytest.mark.parametrize("key", [b"", b"short", b"!!!!notbase64!!!!!!!!!!!", b"YWJj"])
def test_upgrade_with_a_bad_key_is_400(raw: RawClient, key: bytes) -> None:
    raw.feed(upgrade_request(key=key))
    rejected(raw, 400, "bad_request", closes=True)


def test_upgrade_without_a_key_is_400(raw: RawClient) -> None:
    data = upgrade_request().replace(b"Sec-WebSocket-Key", b"X-Nothing")
    raw.feed(data)
    rejected(raw, 400, "bad_request", closes=True)


def test_wrong_websocket_version_is_426(raw: RawClient) -> None:
    data = upgrade_request().replace(b"Version: 13", b"Version: 8")
    raw.feed(data)
    (response,) = raw.responses()
    assert (response.status, response.error_code) == (426, "unsupported_version")
    assert response.headers["sec-websocket-version"] == "13"
    assert raw.server.is_closed


def test_upgrade_with_a_malformed_authorization_is_401(raw: RawClient) -> None:
    raw.feed(upgrade_request(("Authorization", "Token x")))
    rejected(raw, 401, "unauthorized", closes=True)


def test_upgrade_with_post_is_405(raw: RawClient) -> None:
    raw.feed(upgrade_request().replace(b"GET", b"POST", 1))
    (response,) = raw.responses()
    assert response.status == 405


def test_refused_upgrade_closes(raw: RawClient) -> None:
    raw.feed(upgrade_request())
    assert raw.server.state is ConnState.UPGRADING
    events = raw.server.respond_error(403, "origin_not_allowed", "no", now=1.0)
    assert events == [ev.ConnectionClosed(code=None, reason="upgrade refused")]
    assert raw.server.is_closed
    (response,) = raw.responses()
    assert (response.status, response.error_code) == (403, "origin_not_allowed")


def test_accepted_upgrade_sends_101_and_awaits_hello(raw: RawClient) -> None:
    assert raw.upgrade() == []
    assert raw.server.state is ConnState.AWAITING_HELLO
    deadline = raw.server.next_deadline()
    assert deadline == limits.HELLO_TIMEOUT


def test_hello_pipelined_with_the_upgrade_comes_from_accept(raw: RawClient) -> None:
    from wsproto.connection import Connection, ConnectionType

    hello = Connection(ConnectionType.CLIENT).send(
        TextMessage(data='{"type":"hello","protocol":"1.0"}')
    )
    events = raw.upgrade(then=hello)
    assert events == [protocol.Hello(protocol="1.0")]
    assert raw.server.state is ConnState.AUTHENTICATING


def test_pipelined_bytes_are_bounded_while_a_request_waits() -> None:
    raw = RawClient(config=ServerConfig(max_header_bytes=1024, max_body_bytes=1024))
    raw.feed(get("/healthz"))
    raw.feed(b"x" * 2000)
    assert not raw.server.is_closed
    raw.feed(b"x" * 100)
    assert raw.server.is_closed
    assert closed_events(raw.events) == [
        ev.ConnectionClosed(code=None, reason="too much pipelined data")
    ]
    assert raw.server.respond(200, b"late", now=1.0) == []  # the host raced the end: dropped


# --- HTTP deadlines: keep-alive and whole requests --------------------------------------


def test_a_connection_that_never_sends_a_byte_is_dropped(raw: RawClient) -> None:
    assert raw.server.next_deadline() == limits.KEEPALIVE_TIMEOUT
    assert raw.advance_to(limits.KEEPALIVE_TIMEOUT - 1) == []
    assert raw.advance_to(limits.KEEPALIVE_TIMEOUT) == [
        ev.ConnectionClosed(code=None, reason="keep-alive timeout")
    ]
    assert raw.server.is_closed
    assert raw.server.data_to_send() == b""  # no request, nothing h11 could answer
    assert raw.server.next_deadline() is None


def test_no_http_timer_while_the_host_answers(raw: RawClient) -> None:
    raw.feed(get("/healthz"))
    assert raw.server.next_deadline() is None
    assert raw.advance_to(1000.0) == []
    raw.server.respond(200, b"", now=1000.0)
    assert raw.server.next_deadline() == 1000.0 + limits.KEEPALIVE_TIMEOUT


def test_an_answered_connection_waits_keepalive_timeout_for_the_next_request(
    raw: RawClient,
) -> None:
    raw.now = 3.0
    raw.feed(get("/healthz"))
    raw.server.respond(200, b"", now=4.0)
    assert raw.server.next_deadline() == 4.0 + limits.KEEPALIVE_TIMEOUT
    assert raw.advance_to(4.0 + limits.KEEPALIVE_TIMEOUT) == [
        ev.ConnectionClosed(code=None, reason="keep-alive timeout")
    ]


def test_a_trickled_request_head_is_dropped_at_its_deadline() -> None:
    """Slowloris: one byte a second keeps bytes flowing, but the deadline is measured
    from the request's first byte and does not move."""
    raw = RawClient()
    start = 5.0
    deadline = start + limits.REQUEST_TIMEOUT
    head = get("/healthz")
    for i, byte in enumerate(head[: int(limits.REQUEST_TIMEOUT)]):
        raw.now = start + i
        assert raw.feed(bytes([byte])) == []
        assert raw.server.next_deadline() == deadline
        assert raw.advance_to(raw.now) == []
    assert raw.advance_to(deadline) == [ev.ConnectionClosed(code=None, reason="request timeout")]
    assert raw.server.is_closed
    assert raw.server.data_to_send() == b""  # h11 cannot answer an unparsed request
    assert raw.server.receive_data(b"x", deadline + 1) == []


def test_a_trickled_body_gets_408_at_the_deadline(raw: RawClient) -> None:
    raw.now = 1.0
    raw.feed(b'POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n{"username"')
    for second in range(2, 11):
        raw.now = float(second)
        raw.feed(b" ")
        assert raw.server.next_deadline() == 1.0 + limits.REQUEST_TIMEOUT
    assert raw.advance_to(1.0 + limits.REQUEST_TIMEOUT) == [
        ev.RequestRejected(status=408, code="request_timeout"),
        ev.ConnectionClosed(code=None, reason="request timeout"),
    ]
    (response,) = raw.responses()
    assert response.status == 408
    assert response.headers["connection"] == "close"
    assert response.json()["error"]["code"] == "request_timeout"
    assert raw.server.is_closed


def test_a_request_in_time_is_handed_over_and_its_timer_stops(raw: RawClient) -> None:
    raw.feed(b"GET /hea")
    assert raw.server.next_deadline() == limits.REQUEST_TIMEOUT
    raw.now = limits.REQUEST_TIMEOUT - 0.5
    assert raw.feed(b"lthz HTTP/1.1\r\nHost: x\r\n\r\n") == [ev.HealthRequest()]
    assert raw.server.next_deadline() is None
    assert raw.advance_to(100.0) == []


def test_a_pipelined_partial_request_is_timed_from_the_answer(raw: RawClient) -> None:
    assert raw.feed(get("/healthz") + b"GET /hea") == [ev.HealthRequest()]
    raw.server.respond(200, b"", now=7.0)
    assert raw.server.next_deadline() == 7.0 + limits.REQUEST_TIMEOUT
    assert raw.advance_to(7.0 + limits.REQUEST_TIMEOUT) == [
        ev.ConnectionClosed(code=None, reason="request timeout")
    ]


def test_http_deadlines_come_from_the_config() -> None:
    raw = RawClient(config=ServerConfig(request_timeout=2.0, keepalive_timeout=3.0))
    assert raw.server.next_deadline() == 3.0
    raw.feed(b"G")
    assert raw.server.next_deadline() == 2.0


def test_eof_on_http_reports_closed(raw: RawClient) -> None:
    raw.feed(b"GET /hea")
    assert raw.server.receive_eof(1.0) == [
        ev.ConnectionClosed(code=None, reason="connection closed by peer")
    ]
    assert raw.server.receive_eof(1.0) == []
    assert raw.server.handle_timer(2.0) == []
    assert raw.server.receive_data(b"x", 2.0) == []


def test_host_close_on_http_is_reported_by_the_next_call(raw: RawClient) -> None:
    raw.server.close(now=5.0)
    assert raw.server.is_closed
    assert raw.server.next_deadline() == 5.0
    assert raw.server.handle_timer(5.0) == [ev.ConnectionClosed(code=None, reason="closed by host")]
    assert raw.server.next_deadline() is None
    assert raw.server.receive_eof(6.0) == []


def test_host_close_while_upgrading(raw: RawClient) -> None:
    raw.feed(upgrade_request())
    raw.server.close(1001, "shutting down", now=1.0)
    assert raw.server.receive_data(b"more", 1.0) == [
        ev.ConnectionClosed(code=None, reason="shutting down")
    ]


def test_empty_data_is_not_eof(raw: RawClient) -> None:
    assert raw.server.receive_data(b"", 1.0) == []
    assert not raw.server.is_closed


# --- caller misuse -----------------------------------------------------------------------


def test_bad_status_or_header_from_the_host_raises(raw: RawClient) -> None:
    raw.feed(get("/healthz"))
    with pytest.raises(LocalProtocolError):
        raw.server.respond(200, b"x", now=1.0, headers=[("X-Bad", "a\r\nb")])
    with pytest.raises(LocalProtocolError):
        raw.server.respond(101, now=1.0)
    assert raw.server.respond(200, b"ok", now=1.0) == []  # the request is still answerable
    assert raw.responses()[0].body == b"ok"


def test_misuse_raises_local_protocol_error(raw: RawClient) -> None:
    server = raw.server
    with pytest.raises(LocalProtocolError):
        server.respond(200, now=0.0)
    with pytest.raises(LocalProtocolError):
        server.accept_upgrade(0.0)
    with pytest.raises(LocalProtocolError):
        server.send(protocol.Ack(id="a", seq=1, ts=1), 0.0)
    with pytest.raises(LocalProtocolError):
        server.send_encoded("{}", 0.0)
    with pytest.raises(LocalProtocolError):
        server.fail("unauthorized", 4001, now=0.0)
    raw.upgrade()
    with pytest.raises(LocalProtocolError):  # not before the hello
        server.send(protocol.Welcome(user_id=1, username="alice", server_time=1), 0.0)
    with pytest.raises(LocalProtocolError):
        server.respond(200, now=0.0)
    raw.text('{"type":"hello","protocol":"1.0"}')
    with pytest.raises(LocalProtocolError):  # only welcome or error before welcome
        server.send(protocol.Ack(id="a", seq=1, ts=1), 0.0)
    with pytest.raises(LocalProtocolError):
        server.send_encoded("{}", 0.0)
    server.send(protocol.Welcome(user_id=1, username="alice", server_time=1), 0.0)
    with pytest.raises(LocalProtocolError):  # a second welcome
        server.send(protocol.Welcome(user_id=1, username="alice", server_time=1), 0.0)


# --- WebSocket: hello ---------------------------------------------------------------------


def test_hello_then_welcome_opens(raw: RawClient) -> None:
    raw.upgrade()
    assert raw.text('{"type":"hello","protocol":"1.3","token":"t","extra":1}') == [
        protocol.Hello(protocol="1.3", token="t")
    ]
    assert raw.server.state is ConnState.AUTHENTICATING
    raw.server.send(protocol.Error(code="internal_error"), 1.0)  # allowed before welcome
    raw.server.send(protocol.Welcome(user_id=1, username="alice", server_time=3), 1.0)
    assert raw.server.state is ConnState.OPEN
    assert raw.frames() == [
        protocol.Error(code="internal_error"),
        protocol.Welcome(user_id=1, username="alice", server_time=3),
    ]


def test_hello_timeout_closes_4003(raw: RawClient) -> None:
    raw.upgrade()
    assert raw.advance_to(limits.HELLO_TIMEOUT - 0.5) == []
    assert raw.frames() == []
    assert raw.advance_to(limits.HELLO_TIMEOUT) == []
    close = close_of(raw.frames())
    assert (close.code, close.reason) == (4003, "hello timeout")
    assert raw.server.state is ConnState.CLOSING
    assert raw.send_ws(close.response()) == [ev.ConnectionClosed(code=4003, reason="hello timeout")]
    assert raw.server.is_closed
    assert raw.server.close_code == 4003


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"send","id":"a","to":"b","body":"c"}',
        '{"type":"nope"}',  # any other frame, known type or not
        '{"type":"send","id":"a"}',  # a malformed frame of another type is still not hello
    ],
)
def test_frame_before_hello_is_hello_required_1008(raw: RawClient, frame: str) -> None:
    raw.upgrade()
    assert raw.text(frame) == [ev.FrameRejected(code="hello_required")]
    assert raw.server.state is ConnState.CLOSING
    assert raw.text(frame) == []  # the peer's last words are ignored
    error, close = raw.frames()
    assert error.code == "hello_required"
    assert close.code == limits.CLOSE_POLICY


@pytest.mark.parametrize("version", ["2.0", "abc", "0.9", "1.x", ""])
def test_other_major_is_unsupported_protocol_4002(raw: RawClient, version: str) -> None:
    raw.upgrade()
    events = raw.text(f'{{"type":"hello","protocol":"{version}"}}')
    frames = raw.frames()
    if version == "":  # not a valid hello at all
        assert events == [ev.FrameRejected(code="invalid_frame")]
        assert raw.server.state is ConnState.AWAITING_HELLO
        return
    assert events == [ev.FrameRejected(code="unsupported_protocol")]
    assert frames[0].code == "unsupported_protocol"
    assert close_of(frames).code == limits.CLOSE_UNSUPPORTED_PROTOCOL


def test_invalid_json_before_hello_keeps_waiting(raw: RawClient) -> None:
    raw.upgrade()
    assert raw.text("{nope") == [ev.FrameRejected(code="invalid_frame")]
    assert [f.code for f in raw.frames()] == ["invalid_frame"]
    assert raw.server.state is ConnState.AWAITING_HELLO
    assert raw.text('{"type":"hello","protocol":"1"}') == [protocol.Hello(protocol="1")]


def test_second_hello_is_invalid_frame(raw: RawClient) -> None:
    raw.open()
    assert raw.text('{"type":"hello","protocol":"1.0"}') == [ev.FrameRejected(code="invalid_frame")]
    assert [f.code for f in raw.frames()] == ["invalid_frame"]
    assert raw.server.state is ConnState.OPEN


# --- WebSocket: frames ------------------------------------------------------------------------


def test_frames_become_events(raw: RawClient) -> None:
    raw.open()
    frames = [
        protocol.Send(id="c-1", to="bob", body="hi 😀"),
        protocol.Delivered(seqs=(1, 2)),
        protocol.Read(peer="bob", up_to=3),
        protocol.Typing(to="bob"),
        protocol.Reauth(token="t2"),
    ]
    for frame in frames:
        assert raw.text(protocol.encode_frame(frame)) == [frame]
    assert raw.frames() == []


@pytest.mark.parametrize(
    ("text", "code", "ref"),
    [
        ("not json", "invalid_frame", None),
        ('{"type":"nope","id":"x1"}', "invalid_frame", "x1"),
        ('{"id":"x1"}', "invalid_frame", "x1"),
        ('{"type":"send","id":"x1","to":"bob"}', "invalid_frame", "x1"),
        ('{"type":"send","id":"x1","to":"bob","body":5}', "invalid_frame", "x1"),
        ('{"type":"send","id":"bad id","to":"bob","body":""}', "invalid_frame", None),
        # integers outside 0..2**63-1 would fail in the store's bind: refused here
        ('{"type":"delivered","seqs":[18446744073709551615]}', "invalid_frame", None),
        ('{"type":"delivered","seqs":[9223372036854775808]}', "invalid_frame", None),
        ('{"type":"delivered","seqs":[1,-1]}', "invalid_frame", None),
        ('{"type":"read","peer":"bob","up_to":18446744073709551615}', "invalid_frame", None),
        ('{"type":"read","peer":"bob","up_to":-1}', "invalid_frame", None),
        ('{"type":"read","peer":"bob","up_to":true}', "invalid_frame", None),
    ],
)
def test_bad_frames_get_an_error_and_stay_open(
    raw: RawClient, text: str, code: str, ref: str | None
) -> None:
    raw.open()
    assert raw.text(text) == [ev.FrameRejected(code=code, ref=ref)]
    (error,) = raw.frames()
    assert (error.code, error.ref) == (code, ref)
    assert error.message
    assert raw.server.state is ConnState.OPEN


@pytest.mark.parametrize(
    ("body", "code"), [("", "empty_body"), ("a" * 5001, "too_long"), ("😀" * 5001, "too_long")]
)
def test_a_send_refused_for_its_body_is_left_to_the_host(
    raw: RawClient, body: str, code: str
) -> None:
    """The host answers it: a repeat of a stored id gets its ack whatever its body."""
    raw.open()
    text = '{"type":"send","id":"x1","to":"bob","body":"' + body + '"}'
    (event,) = raw.text(text)
    assert isinstance(event, ev.SendRefused)
    assert (event.id, event.code) == ("x1", code)
    assert event.message
    assert raw.frames() == []
    assert raw.server.state is ConnState.OPEN


def test_binary_frame_is_invalid_frame(raw: RawClient) -> None:
    raw.open()
    assert raw.binary(b"\x00\x01", fin=False) == []
    assert raw.binary(b"\x02") == [ev.FrameRejected(code="invalid_frame")]
    assert [f.code for f in raw.frames()] == ["invalid_frame"]
    assert raw.server.state is ConnState.OPEN


def test_fragmented_text_is_reassembled(raw: RawClient) -> None:
    raw.open()
    text = protocol.encode_frame(protocol.Send(id="c-1", to="bob", body="é" * 40))
    assert raw.text(text[:10], fin=False) == []
    assert raw.send_ws(TextMessage(data=text[10:30], message_finished=False)) == []
    assert raw.text(text[30:]) == [protocol.Send(id="c-1", to="bob", body="é" * 40)]


def test_oversized_message_closes_1009() -> None:
    raw = RawClient()
    raw.open()
    big = '{"type":"typing","to":"' + "b" * limits.MAX_FRAME_BYTES + '"}'
    assert raw.text(big) == [ev.FrameRejected(code="too_large")]
    close = close_of(raw.frames())
    assert close.code == limits.CLOSE_TOO_BIG
    assert raw.send_ws(close.response()) == [
        ev.ConnectionClosed(code=1009, reason="message too big")
    ]


def test_oversized_multibyte_message_is_measured_in_bytes() -> None:
    raw = RawClient()
    raw.open()
    # 20,000 characters is under the limit in characters, but not in bytes.
    big = '{"type":"typing","to":"' + "😀" * 20000 + '"}'
    assert raw.text(big) == [ev.FrameRejected(code="too_large")]
    # Under the limit in bytes but over a quarter of it in characters: accepted.
    raw2 = RawClient()
    raw2.open()
    ok = '{"type":"typing","to":"' + "b" * 20000 + '"}'
    assert raw2.text(ok) == [protocol.Typing(to="b" * 20000)]


def test_oversized_fragments_close_before_the_end() -> None:
    raw = RawClient()
    raw.open()
    piece = "x" * 30000
    assert raw.text('{"type":"typing","to":"' + piece, fin=False) == []
    assert raw.text(piece, fin=False) == []
    assert raw.text(piece, fin=False) == [ev.FrameRejected(code="too_large")]
    assert raw.server.state is ConnState.CLOSING
    assert raw.text(piece, fin=False) == []  # the rest is ignored
    assert raw.text('"}') == []


def test_oversized_binary_closes_1009() -> None:
    raw = RawClient()
    raw.open()
    assert raw.binary(b"x" * (limits.MAX_FRAME_BYTES + 1)) == [ev.FrameRejected(code="too_large")]
    assert close_of(raw.frames()).code == 1009


def test_messages_while_closing_are_ignored_whatever_their_size() -> None:
    raw = RawClient()
    raw.open()
    raw.server.close(now=1.0)
    huge = "x" * (limits.MAX_FRAME_BYTES + 1)
    assert raw.text(huge) == []
    assert raw.text(huge[:100], fin=False) == []
    assert raw.text(huge) == []  # the continuation of a message that grew too big
    assert raw.binary(b"x" * (limits.MAX_FRAME_BYTES + 1)) == []
    assert raw.binary(b"x") == []
    assert raw.server.state is ConnState.CLOSING


def test_pings_are_answered_and_sent(raw: RawClient) -> None:
    raw.open()
    assert raw.send_ws(Ping(payload=b"abc")) == []
    assert raw.frames() == [Pong(payload=b"abc")]
    assert raw.server.next_deadline() == limits.PING_INTERVAL
    raw.advance_to(limits.PING_INTERVAL)
    assert raw.frames() == [Ping(payload=b"")]
    assert raw.server.next_deadline() == 2 * limits.PING_INTERVAL
    raw.send_ws(Pong(payload=b""))  # activity at 30 s
    raw.advance_to(2 * limits.PING_INTERVAL)
    assert raw.frames() == [Ping(payload=b"")]
    assert raw.server.next_deadline() == 3 * limits.PING_INTERVAL
    raw.advance_to(3 * limits.PING_INTERVAL)
    raw.frames()
    assert raw.server.next_deadline() == limits.PING_INTERVAL + limits.IDLE_TIMEOUT


@pytest.mark.parametrize("fast_frames", [True, False], ids=["fast", "wsproto"])
def test_pings_and_pongs_of_an_idle_connection_cost_no_wsproto_state(
    fast_frames: bool, raw: RawClient
) -> None:
    """Texts, our pings and the peer's pongs take the fast path: wsproto's connection
    (about 1.7 KiB) is made only for a frame the fast path leaves to it; the ping bytes
    are the ones wsproto writes, and a pong (whole or in pieces) is activity."""
    raw.config = ServerConfig(fast_frames=fast_frames)
    raw.__attrs_post_init__()
    raw.open()
    assert raw.text('{"type":"typing","to":"bob"}') == [protocol.Typing(to="bob")]
    raw.advance_to(limits.PING_INTERVAL)
    ping = raw.server.data_to_send()
    assert ping == b"\x89\x00"  # FIN ping, unmasked, empty: what wsproto writes
    raw.now = limits.PING_INTERVAL + 1
    assert raw.send_ws(Pong(payload=b"")) == []
    assert raw.server.next_deadline() == 2 * limits.PING_INTERVAL
    raw.advance_to(2 * limits.PING_INTERVAL)
    assert raw.server.data_to_send() == ping
    assert raw.server.next_deadline() == 3 * limits.PING_INTERVAL
    # (a frame arriving in pieces hands the rest of the stream to wsproto)
    assert (raw.server._ws is None) is (fast_frames and not raw.bytewise)
    raw.send_ws(Ping(payload=b"p"))  # the peer's own ping: wsproto answers it
    assert raw.server._ws is not None
    assert raw.frames()[-1] == Pong(payload=b"p")


def test_idle_connection_is_closed_then_given_up(raw: RawClient) -> None:
    raw.open()
    raw.advance_to(limits.PING_INTERVAL)
    raw.advance_to(2 * limits.PING_INTERVAL)
    assert raw.advance_to(limits.IDLE_TIMEOUT) == []
    frames = raw.frames()
    assert frames[:2] == [Ping(payload=b""), Ping(payload=b"")]
    assert (frames[2].code, frames[2].reason) == (1000, "idle timeout")
    assert raw.server.next_deadline() == limits.IDLE_TIMEOUT + limits.CLOSE_TIMEOUT
    assert raw.advance_to(limits.IDLE_TIMEOUT + 1) == []
    assert raw.advance_to(limits.IDLE_TIMEOUT + limits.CLOSE_TIMEOUT) == [
        ev.ConnectionClosed(code=1000, reason="idle timeout")
    ]
    assert raw.server.is_closed


def test_peer_close_is_answered(raw: RawClient) -> None:
    raw.open()
    assert raw.send_ws(CloseConnection(code=1001, reason="bye")) == [
        ev.ConnectionClosed(code=1001, reason="bye")
    ]
    assert close_of(raw.frames()).code == 1001
    assert raw.server.is_closed
    assert (raw.server.close_code, raw.server.close_reason) == (1001, "bye")
    raw.server.send(protocol.Ack(id="a", seq=1, ts=1), 1.0)  # dropped: the host raced
    raw.server.send_encoded("{}", 1.0)
    raw.server.fail("unauthorized", 4001, now=1.0)
    raw.server.close(now=1.0)
    assert raw.server.data_to_send() == b""
    assert raw.server.receive_eof(1.0) == []


def test_peer_close_without_code(raw: RawClient) -> None:
    raw.open()
    assert raw.feed(b"\x88\x80\x00\x00\x00\x00") == [ev.ConnectionClosed(code=1005, reason="")]


def test_server_close_handshake(raw: RawClient) -> None:
    raw.open()
    raw.server.close(1001, "restart", now=1.0)
    assert raw.server.state is ConnState.CLOSING
    raw.server.close(1000, now=1.0)  # a second close changes nothing
    raw.server.send(protocol.Ack(id="a", seq=1, ts=1), 1.0)  # dropped
    assert raw.send_ws(Ping(payload=b"late")) == []  # no pong while closing
    close = close_of(raw.frames())
    assert (close.code, close.reason) == (1001, "restart")
    assert raw.send_ws(close.response()) == [ev.ConnectionClosed(code=1001, reason="restart")]
    assert raw.server.data_to_send() == b""


def test_fail_sends_error_then_closes(raw: RawClient) -> None:
    raw.open()
    raw.server.fail("unauthorized", 4001, now=1.0, message="token expired")
    error, close = raw.frames()
    assert (error.code, error.message) == ("unauthorized", "token expired")
    assert (close.code, close.reason) == (4001, "unauthorized")
    assert raw.server.close_code == 4001


def test_send_when_open(raw: RawClient) -> None:
    raw.open()
    raw.server.send(protocol.Ack(id="c-1", seq=4, ts=5), 1.0)
    raw.server.send(protocol.Error(code="unknown_user", ref="c-2"), 1.0)
    assert raw.frames() == [
        protocol.Ack(id="c-1", seq=4, ts=5),
        protocol.Error(code="unknown_user", ref="c-2"),
    ]


def test_send_encoded(raw: RawClient) -> None:
    raw.open()
    text = protocol.encode_frame(protocol.Presence(user="bob", online=True))
    raw.server.send_encoded(text, 1.0)
    assert raw.frames() == [protocol.Presence(user="bob", online=True)]


@pytest.mark.parametrize("size", [0, 1, 124, 125, 126, 127, 65_534, 65_535, 65_536, 70_001])
def test_text_frames_are_what_wsproto_would_write(size: int) -> None:
    """The engine frames its text itself: byte for byte wsproto's server frame, at each
    length-encoding boundary (7-bit, 16-bit, 64-bit), with multi-byte characters."""
    raw = RawClient()
    raw.open()
    text = ("é" * (size // 2)) + ("x" * (size % 2))  # `size` bytes of UTF-8
    raw.server.send_encoded(text, 1.0)
    out = raw.server.data_to_send()
    assert out == Connection(ConnectionType.SERVER).send(TextMessage(data=text))
    assert raw.ws is not None
    raw.ws.receive_data(out)
    assert [event.data for event in raw.ws.events()] == [text]


def test_eof_on_websocket_is_1006(raw: RawClient) -> None:
    raw.open()
    assert raw.server.receive_eof(1.0) == [ev.ConnectionClosed(code=1006, reason="connection lost")]
    assert raw.server.receive_eof(1.0) == []


def test_eof_while_closing_keeps_our_code(raw: RawClient) -> None:
    raw.open()
    raw.server.close(4001, "x", now=1.0)
    assert raw.server.receive_eof(1.0) == [ev.ConnectionClosed(code=4001, reason="x")]


def test_websocket_protocol_error_closes_1002(raw: RawClient) -> None:
    raw.open()
    events = raw.feed(b"\x81\x05hello")  # an unmasked frame from a client
    assert events == [
        ev.ConnectionClosed(code=1002, reason="server received unexpected unmasked frame")
    ]
    assert close_of(raw.frames()).code == 1002
    assert raw.server.is_closed


def test_invalid_utf8_closes_1007(raw: RawClient) -> None:
    raw.open()
    # A masked text frame (mask 0) whose payload is not UTF-8.
    (event,) = raw.feed(b"\x81\x82\x00\x00\x00\x00\xc3\x28")
    assert isinstance(event, ev.ConnectionClosed)
    assert event.code == 1007


def test_protocol_error_while_closing_ends(raw: RawClient) -> None:
    raw.open()
    raw.server.close(now=1.0)
    assert raw.feed(b"\x81\x05hello") == [ev.ConnectionClosed(code=1000, reason="")]
    assert raw.server.is_closed


def test_exactly_one_connection_closed(raw: RawClient) -> None:
    raw.open()
    raw.server.close(now=1.0)
    raw.send_ws(CloseConnection(code=1000))
    raw.server.receive_eof(2.0)
    raw.advance_to(100.0)
    assert len(closed_events(raw.events)) == 1


def test_rng_and_now_are_the_only_inputs() -> None:
    """Two engines fed the same bytes at the same times produce the same bytes."""
    outputs = []
    for _ in range(2):
        raw = RawClient()
        raw.open()
        raw.advance_to(limits.PING_INTERVAL)
        raw.server.fail("unauthorized", 4001, now=31.0)
        outputs.append(raw.server.data_to_send())
    assert outputs[0] == outputs[1]


def test_custom_server_header() -> None:
    server = ServerConnection(ServerConfig(server_header="x/1"), random.Random(), 0.0)
    server.receive_data(get("/nope"), 0.0)
    assert parse_responses(server.data_to_send())[0].headers["server"] == "x/1"
