"""Test helpers. :class:`RawClient` drives a server engine with hand-made bytes
(through an h11 client and a wsproto client, so tests never build frames by hand)."""

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
from libchat.server import ServerConfig, ServerConnection
from libchat.states import ConnState

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
