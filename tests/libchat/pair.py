"""Test helpers: a client engine wired to a server engine, a tiny host, a fake clock.

:class:`Pair` moves bytes between a :class:`ClientConnection` and a
:class:`ServerConnection` (whole, or one byte at a time), lets a small host answer the
server's events (requests, upgrades, hello, send), and steps a float clock, firing
both engines' timers. :class:`RawClient` drives a server engine with hand-made bytes
(through an h11 client and a wsproto client, so tests never build frames by hand).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import attrs
import h11
from wsproto.connection import Connection, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import generate_accept_token

from libchat import events as ev
from libchat import protocol
from libchat.client import ClientConfig, ClientConnection
from libchat.server import ServerConfig, ServerConnection
from libchat.states import ConnState

TOKEN = "good.token"
BAD_TOKEN = "bad.token"
MESSAGE = protocol.Message(id="m-1", seq=7, sender="bob", recipient="alice", body="hi", ts=5)
HEALTH = protocol.Health(
    status="ok",
    version="0.1.0",
    protocol="1.0.0",
    uptime_s=1.5,
    connections=1,
    db="ok",
    disk_used_pct=10.0,
)


def grant(username: str = "alice") -> protocol.TokenGrant:
    return protocol.TokenGrant(token=TOKEN, expires_in=3600, user_id=1, username=username)


def answer(server: ServerConnection, event: object, now: float) -> list[Any]:
    """What the tiny host does with one server event; returns the events that causes."""
    if isinstance(event, ev.RegisterRequest):
        body = protocol.Registered(user_id=1, username=event.credentials.username)
        return server.respond(201, body, now=now)
    if isinstance(event, ev.LoginRequest | ev.RefreshRequest):
        return server.respond(200, grant(), now=now)
    if isinstance(event, ev.LogoutRequest):
        return server.respond(204, now=now)
    if isinstance(event, ev.UserSearchRequest):
        users = [protocol.UserEntry(username="alice")]
        return server.respond(200, protocol.UserList(users=users), now=now)
    if isinstance(event, ev.ConversationsRequest):
        item = protocol.Conversation(peer="bob", last_message=MESSAGE, unread=1)
        return server.respond(200, protocol.ConversationList(conversations=[item]), now=now)
    if isinstance(event, ev.HistoryRequest):
        page = protocol.MessagePage(messages=[MESSAGE], has_more=False)
        return server.respond(200, page, now=now)
    if isinstance(event, ev.HealthRequest):
        return server.respond(200, HEALTH, now=now)
    if isinstance(event, ev.MetricsRequest):
        return server.respond(200, b"chat_up 1\n", now=now, content_type="text/plain")
    if isinstance(event, ev.UpgradeRequest):
        if event.token == BAD_TOKEN:
            return server.respond_error(401, "unauthorized", "bad token", now=now)
        return server.accept_upgrade(now)
    if isinstance(event, protocol.Hello):
        if event.token == BAD_TOKEN:
            server.fail("unauthorized", 4001, now=now)
        else:
            server.send(protocol.Welcome(user_id=1, username="alice", server_time=9), now)
    elif isinstance(event, protocol.Send):
        server.send(protocol.Ack(id=event.id, seq=1, ts=2), now)
    return []


@attrs.define
class Pair:
    """A client engine and a server engine on one fake wire, with a fake clock."""

    bytewise: bool = False  # deliver one byte per receive_data call
    host: bool = True  # let the tiny host answer the server's events
    now: float = 0.0
    client: ClientConnection = attrs.field(init=False)
    server: ServerConnection = attrs.field(init=False)
    client_events: list[Any] = attrs.field(factory=list)
    server_events: list[Any] = attrs.field(factory=list)
    wire_down: bool = False  # bytes from the client are lost (a silent client)
    server_config: ServerConfig = attrs.field(factory=ServerConfig)

    def __attrs_post_init__(self) -> None:
        self.client = ClientConnection(ClientConfig(host="chat.test"), random.Random(1))
        self.server = ServerConnection(self.server_config, random.Random(2), self.now)

    def chunks(self, data: bytes) -> Iterable[bytes]:
        if not self.bytewise:
            return [data] if data else []
        return [data[i : i + 1] for i in range(len(data))]

    def pump(self) -> None:
        """Move bytes both ways (and let the host react) until nothing is left."""
        for _ in range(1000):
            to_server = self.client.data_to_send()
            to_client = self.server.data_to_send()
            if not to_server and not to_client:
                return
            if not self.wire_down:
                for chunk in self.chunks(to_server):
                    self.server_got(self.server.receive_data(chunk, self.now))
            for chunk in self.chunks(to_client):
                self.client_events.extend(self.client.receive_data(chunk, self.now))
        raise AssertionError("the engines never went quiet")

    def server_got(self, events: list[Any]) -> None:
        for event in events:
            self.server_events.append(event)
            if self.host:
                self.server_got(answer(self.server, event, self.now))

    def advance(self, seconds: float) -> None:
        """Step the clock, firing every timer that falls due on the way."""
        end = self.now + seconds
        while True:
            due = [
                d
                for d in (self.client.next_deadline(), self.server.next_deadline())
                if d is not None and d <= end
            ]
            if not due:
                break
            self.now = max(self.now, min(due))
            self.client_events.extend(self.client.handle_timer(self.now))
            self.server_got(self.server.handle_timer(self.now))
            self.pump()
        self.now = end

    def eof_both(self) -> None:
        self.client_events.extend(self.client.receive_eof(self.now))
        self.server_got(self.server.receive_eof(self.now))

    def open(self, token: str | None = TOKEN) -> None:
        """Upgrade and say hello: both engines end OPEN (with the host on)."""
        self.client.upgrade(self.now)
        self.pump()
        assert ev.Upgraded() in self.client_events
        self.client.send(protocol.Hello(protocol="1.0", token=token), self.now)
        self.pump()

    def take_client(self) -> list[Any]:
        taken, self.client_events = self.client_events, []
        return taken

    def take_server(self) -> list[Any]:
        taken, self.server_events = self.server_events, []
        return taken


# --- a hand-driven client for the server engine ------------------------------------------


def closed_events(events: Iterable[object]) -> list[ev.ConnectionClosed]:
    return [e for e in events if isinstance(e, ev.ConnectionClosed)]


WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_request(*extra: tuple[str, str], key: bytes = WS_KEY, path: str = "/v1/ws") -> bytes:
    headers = [
        ("Host", "chat.test"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key.decode()),
        ("Sec-WebSocket-Version", "13"),
        *extra,
    ]
    return request_bytes("GET", path, headers)


def request_bytes(
    method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
) -> bytes:
    """One request, serialised by an h11 client."""
    if headers is None:
        headers = [("Host", "chat.test")]
    if body and not any(name.lower() == "content-length" for name, _ in headers):
        headers = [*headers, ("Content-Length", str(len(body)))]
    conn = h11.Connection(h11.CLIENT)
    data = conn.send(h11.Request(method=method, target=target, headers=headers)) or b""
    if body:
        data += conn.send(h11.Data(data=body)) or b""
    return data + (conn.send(h11.EndOfMessage()) or b"")


@attrs.frozen
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import orjson

        return orjson.loads(self.body)

    @property
    def error_code(self) -> str:
        code: str = self.json()["error"]["code"]
        return code


def parse_responses(data: bytes) -> list[Response]:
    """Split a server's output into responses (each with a Content-Length or none)."""
    responses = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        responses.append(Response(status, headers, rest[:length]))
        data = rest[length:]
        if status == 101:
            break
    return responses


@attrs.define
class RawClient:
    """Drives a server engine with raw HTTP bytes and wsproto client frames."""

    bytewise: bool = False
    now: float = 0.0
    config: ServerConfig = attrs.field(factory=ServerConfig)
    server: ServerConnection = attrs.field(init=False)
    events: list[Any] = attrs.field(factory=list)
    ws: Connection | None = None
    ws_events: list[Any] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.server = ServerConnection(self.config, random.Random(3), self.now)

    def feed(self, data: bytes) -> list[Any]:
        got: list[Any] = []
        if self.bytewise:
            for i in range(len(data)):
                got.extend(self.server.receive_data(data[i : i + 1], self.now))
        else:
            got.extend(self.server.receive_data(data, self.now))
        self.events.extend(got)
        return got

    def responses(self) -> list[Response]:
        return parse_responses(self.server.data_to_send())

    def upgrade(self, then: bytes = b"") -> list[Any]:
        """Upgrade (accepting it) and switch to WebSocket; returns accept's events."""
        got = self.feed(upgrade_request() + then)
        assert got == [ev.UpgradeRequest(token=None, origin=None)]
        accepted = self.server.accept_upgrade(self.now)
        self.events.extend(accepted)
        out = self.server.data_to_send()
        assert out.startswith(b"HTTP/1.1 101 ")
        assert generate_accept_token(WS_KEY) in out
        _, _, rest = out.partition(b"\r\n\r\n")
        self.ws = Connection(ConnectionType.CLIENT)
        self.ws.receive_data(rest)
        return accepted

    def open(self) -> None:
        """Upgrade, hello, welcome: the server engine ends OPEN."""
        self.upgrade()
        assert self.text('{"type":"hello","protocol":"1.0","token":"t"}') == [
            protocol.Hello(protocol="1.0", token="t")
        ]
        self.server.send(protocol.Welcome(user_id=1, username="alice", server_time=1), self.now)
        assert self.server.state is ConnState.OPEN
        self.frames()

    def send_ws(self, event: Any) -> list[Any]:
        assert self.ws is not None
        return self.feed(self.ws.send(event))

    def text(self, text: str, fin: bool = True) -> list[Any]:
        return self.send_ws(TextMessage(data=text, message_finished=fin))

    def binary(self, data: bytes, fin: bool = True) -> list[Any]:
        return self.send_ws(BytesMessage(data=data, message_finished=fin))

    def frames(self) -> list[Any]:
        """What the server sent since last asked: decoded frames, and wsproto's
        Ping/Pong/CloseConnection events as they are."""
        assert self.ws is not None
        self.ws.receive_data(self.server.data_to_send())
        got: list[Any] = []
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                got.append(protocol.decode_server_frame(event.data))
            elif isinstance(event, Ping | Pong | CloseConnection):
                got.append(event)
        return got

    def advance_to(self, when: float) -> list[Any]:
        self.now = when
        got = self.server.handle_timer(when)
        self.events.extend(got)
        return got


def close_of(frames: list[Any]) -> CloseConnection:
    closes = [f for f in frames if isinstance(f, CloseConnection)]
    assert len(closes) == 1, frames
    return closes[0]
