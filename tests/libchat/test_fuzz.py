"""Property-based tests: random bytes, HTTP, frames and JSON, fed whole and split.

For every input, both engines must never raise, must stay in a state of the enum,
report at most one ``ConnectionClosed`` (exactly one once the transport ends), and say
nothing more once closed. About 15,000 examples per run in all: ``make test`` runs
them at a third of that (``LIBCHAT_FUZZ_SCALE=0.33``), ``make fuzz`` at four times.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from libchat import events as ev
from libchat import protocol
from libchat.client import ClientConfig, ClientConnection
from libchat.server import ServerConfig, ServerConnection
from libchat.states import ConnState
from tests.libchat.pair import WS_KEY, upgrade_request

# Each fuzzer's examples: the count it names, times LIBCHAT_FUZZ_SCALE (1 when unset).
FUZZ_SCALE = float(os.environ.get("LIBCHAT_FUZZ_SCALE", "1"))


def examples(count: int) -> int:
    return max(100, round(count * FUZZ_SCALE))


SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
SMALL = ServerConfig(max_body_bytes=512, max_frame_bytes=512, max_header_bytes=512)

SERVER_EVENTS = (
    ev.RegisterRequest,
    ev.LoginRequest,
    ev.LogoutRequest,
    ev.RefreshRequest,
    ev.UserSearchRequest,
    ev.ConversationsRequest,
    ev.HistoryRequest,
    ev.HealthRequest,
    ev.MetricsRequest,
    ev.UpgradeRequest,
    ev.RequestRejected,
    ev.FrameRejected,
    ev.SendRefused,
    ev.ConnectionClosed,
    *protocol.CLIENT_FRAMES.values(),
)
CLIENT_EVENTS = (
    ev.HttpResponse,
    ev.Upgraded,
    ev.ConnectionClosed,
    protocol.DeliveredReceipt,
    protocol.ReadReceipt,
    *protocol.SERVER_FRAMES.values(),
)

# --- inputs ------------------------------------------------------------------------------
#
# Drawing rich structures value by value costs Hypothesis about 10 ms per example, too
# much for 11,000 examples in under a minute. So the structured inputs (requests,
# responses, JSON frames) are pools of variants built once from a fixed seed, out of
# parts that carry the interesting cases (empty, wrong type, non-ASCII, 64-bit edges,
# missing framing); Hypothesis picks from the pools, and draws the rest (splits, clock
# steps, raw noise, fragmentation) itself.

_gen = random.Random(20261126)
_JSON_LEAVES: list[Any] = [None, True, False, 0, -1, 2**63 - 1, 1.5, "", "x", "bob", "é😀"]


def _json(depth: int = 0) -> Any:
    roll = _gen.random()
    if depth > 2 or roll < 0.6:
        return _gen.choice(_JSON_LEAVES)
    if roll < 0.8:
        return [_json(depth + 1) for _ in range(_gen.randrange(4))]
    return {_gen.choice("abt"): _json(depth + 1) for _ in range(_gen.randrange(4))}


_CLIENT_FIELDS: dict[str, list[Any]] = {
    "id": ["c-1", "x", "", "a b", "é", 5, "a" * 65],
    "to": ["bob", "Bob", "", None],
    "body": ["hi", "", "x" * 5001, "😀" * 5000, 1],
    "seqs": [[1, 2], [], [-1], [True], "1", [2**63 - 1], list(range(1001))],
    "peer": ["bob", "", 0],
    "up_to": [0, 9, -1, "1", None],
    "protocol": ["1.0", "1", "2.0", "abc", "1.0.0", "", 1],
    "token": ["t", "bad.token", "", None, 7],
}
_SERVER_FIELDS: dict[str, list[Any]] = {
    "id": ["c-1", "", 3],
    "seq": [1, -1, "1"],
    "ts": [0, 5, None],
    "status": ["delivered", "read", "x", 1],
    "code": ["invalid_frame", "", None],
    "user_id": [1, "1"],
    "username": ["alice", "a"],
    "protocol": ["1.0.0"],
    "server_time": [9],
    "from": ["bob", "x"],
    "to": ["alice"],
    "body": ["hi", ""],
    "user": ["bob"],
    "online": [True, "yes"],
    "expires_in": [60],
    "peer": ["bob"],
    "up_to": [3],
    "message": ["m", None],
}


def _frame_text(types: list[str], fields: dict[str, list[Any]]) -> str:
    roll = _gen.random()
    if roll < 0.1:
        return _gen.choice(["", "{", "[]", "null", '{"type":', "é", "\u0000", "x" * 600])
    if roll < 0.2:
        return orjson.dumps(_json()).decode()
    frame: dict[str, Any] = {}
    if _gen.random() < 0.95:
        frame["type"] = _gen.choice([*types, "x", 1])
    for name, values in fields.items():
        if _gen.random() < 0.6:
            frame[name] = _gen.choice(values) if _gen.random() < 0.9 else _json()
    text = orjson.dumps(frame).decode()
    return text[: _gen.randrange(len(text))] if _gen.random() < 0.05 else text


CLIENT_TEXTS = [
    _frame_text([*protocol.CLIENT_FRAMES, "welcome"], _CLIENT_FIELDS) for _ in range(3000)
]
SERVER_TEXTS = [
    _frame_text([*protocol.SERVER_FRAMES, "receipt"], _SERVER_FIELDS) for _ in range(2000)
]

_TARGETS = [
    "/v1/register",
    "/v1/login",
    "/v1/logout",
    "/v1/token/refresh",
    "/v1/users",
    "/v1/conversations",
    "/v1/conversations/bob/messages",
    "/v1/conversations/%FF%41/messages",
    "/healthz",
    "/metrics",
    "/v1/ws",
    "*",
    "/",
    "//",
    "/v1/conversations/a/b/messages",
    "/%",
]
_QUERIES = ["", "", "?prefix=a", "?limit=5&before=3", "?limit=x&&=&prefix=", "?%zz"]
_HEADERS = [
    ("Authorization", "Bearer tok"),
    ("Authorization", "Bearer bad.token"),
    ("Authorization", "Bearer"),
    ("Authorization", "Basic x"),
    ("Content-Length", "0"),
    ("Content-Length", "5"),
    ("Content-Length", "100000"),
    ("Content-Length", "-1"),
    ("Transfer-Encoding", "chunked"),
    ("Connection", "close"),
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Upgrade", "h2c"),
    ("Sec-WebSocket-Key", WS_KEY.decode()),
    ("Sec-WebSocket-Key", "bad"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Version", "8"),
    ("Expect", "100-continue"),
    ("Origin", "https://x"),
    ("X-Pad", "p" * 600),
    ("bad header", "v"),
    ("X-A", "\x00"),
    ("X-B", "é"),
]
_UPGRADE = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", WS_KEY.decode()),
    ("Sec-WebSocket-Version", "13"),
]
_BODIES = [b"", b'{"username":"alice","password":"correct horse"}', b"{", b"\xff" * 40]


def _request() -> bytes:
    method = _gen.choice(["GET", "GET", "POST", "POST", "PUT", "HEAD", "G T", "get"])
    version = _gen.choice(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2", "XYZ"])
    lines = [f"{method} {_gen.choice(_TARGETS)}{_gen.choice(_QUERIES)} {version}"]
    headers = [("Host", "x")] if _gen.random() < 0.9 else []
    if _gen.random() < 0.2:
        headers += _UPGRADE
    headers += _gen.sample(_HEADERS, _gen.randrange(4))
    _gen.shuffle(headers)
    lines += [f"{name}: {value}" for name, value in headers]
    payload = _gen.choice(_BODIES) if _gen.random() < 0.8 else orjson.dumps(_json())
    if _gen.random() < 0.6:
        lines.append(f"Content-Length: {len(payload)}")
    head = "\r\n".join(lines).encode() + b"\r\n\r\n"
    if _gen.random() < 0.1:
        payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    return head + payload


REQUESTS = [_request() for _ in range(3000)]

_RESPONSE_HEADERS = [
    ("Connection", "close"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Accept", "x"),
    ("Transfer-Encoding", "chunked"),
    ("Content-Type", "application/json"),
    ("Content-Length", "3"),
    ("bad header", "v"),
]
_RESPONSE_BODIES = [
    b"",
    b'{"error":{"code":"x","message":"y"}}',
    b'{"token":"t","token_type":"Bearer","expires_in":1,"user_id":1,"username":"alice"}',
    b"{",
    b"up 1\n",
]


def _response() -> bytes:
    status = _gen.choice([100, 101, 200, 200, 201, 204, 401, 404, 500, 503, 999])
    version = _gen.choice(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/9"])
    headers = _gen.sample(_RESPONSE_HEADERS, _gen.randrange(4))
    lines = [f"{version} {status} X"] + [f"{name}: {value}" for name, value in headers]
    roll = _gen.random()
    if roll < 0.6:
        payload = _gen.choice(_RESPONSE_BODIES)
    elif roll < 0.8:
        payload = _gen.choice(SERVER_TEXTS).encode()
    else:
        payload = orjson.dumps(_json())
    if _gen.random() < 0.7:
        lines.append(f"Content-Length: {len(payload)}")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + payload


RESPONSES = [_response() for _ in range(2000)]

chunk_sizes = st.lists(st.integers(1, 64), max_size=12)
time_steps = st.lists(st.floats(0.0, 40.0, allow_nan=False), min_size=1, max_size=4)


def ws_events(texts: list[str]) -> st.SearchStrategy[Any]:
    """wsproto events for one side to send: messages (maybe unfinished), pings, closes."""
    return st.one_of(
        st.builds(TextMessage, data=st.sampled_from(texts)),
        st.builds(TextMessage, data=st.sampled_from(texts), message_finished=st.booleans()),
        st.builds(BytesMessage, data=st.binary(max_size=20), message_finished=st.booleans()),
        st.builds(Ping, payload=st.binary(max_size=8)),
        st.builds(Pong, payload=st.binary(max_size=8)),
        st.builds(
            CloseConnection,
            code=st.sampled_from([1000, 1001, 1005, 1011, 3000, 4001, 4999]),
            reason=st.sampled_from(["", "bye", "é"]),
        ),
    )


# --- driving ----------------------------------------------------------------------------


def split(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    """``data`` cut at the given sizes, then whatever is left in one piece."""
    i = 0
    for size in sizes:
        if i >= len(data):
            return
        yield data[i : i + size]
        i += size
    if i < len(data):
        yield data[i:]


class Watch:
    """Feeds one engine and checks the invariants after every call."""

    def __init__(self, conn: Any, allowed: tuple[type[Any], ...]) -> None:
        self.conn = conn
        self.allowed = allowed
        self.closed = 0
        self.now = 0.0

    def took(self, events: list[Any], *, was_closed: bool) -> list[Any]:
        assert isinstance(self.conn.state, ConnState)
        assert isinstance(self.conn.data_to_send(), bytes)
        for event in events:
            assert isinstance(event, self.allowed), event
        self.closed += sum(isinstance(e, ev.ConnectionClosed) for e in events)
        assert self.closed <= 1
        if was_closed:
            assert events == [], events
        if self.closed:
            assert self.conn.is_closed
        return events

    def feed(self, data: bytes) -> list[Any]:
        was = self.conn.is_closed
        return self.took(self.conn.receive_data(data, self.now), was_closed=was)

    def timers(self, step: float) -> list[Any]:
        self.now += step
        got: list[Any] = []
        deadline = self.conn.next_deadline()
        if deadline is not None and deadline <= self.now:
            was = self.conn.is_closed
            got = self.took(self.conn.handle_timer(self.now), was_closed=was)
        return got

    def finish(self) -> None:
        was = self.conn.is_closed
        self.took(self.conn.receive_eof(self.now), was_closed=was)
        assert self.closed == 1
        assert self.conn.is_closed
        assert self.conn.next_deadline() is None
        self.took(self.conn.receive_data(b"more", self.now + 1), was_closed=True)
        self.took(self.conn.handle_timer(self.now + 1000), was_closed=True)


def serve(watch: Watch, events: list[Any]) -> None:
    """A host that answers everything as a real one would, so inputs get deep."""
    server: ServerConnection = watch.conn
    for event in events:
        more: list[Any] = []
        if isinstance(event, ev.UpgradeRequest):
            if event.token == "bad.token":
                more = server.respond_error(401, "unauthorized", "no", now=watch.now)
            else:
                more = server.accept_upgrade(watch.now)
        elif isinstance(event, ev.MetricsRequest):
            more = server.respond(200, b"up 1\n", now=watch.now, content_type="text/plain")
        elif isinstance(event, SERVER_EVENTS[:9]):
            more = server.respond(204, now=watch.now)
        elif isinstance(event, protocol.Hello):
            if event.token == "bad.token":
                server.fail("unauthorized", 4001, now=watch.now)
            else:
                server.send(protocol.Welcome(user_id=1, username="alice", server_time=1), watch.now)
        elif isinstance(event, protocol.Send):
            server.send(protocol.Ack(id=event.id, seq=1, ts=1), watch.now)
        serve(watch, watch.took(more, was_closed=False))


def run_server(conn: ServerConnection, data: bytes, sizes: list[int], steps: list[float]) -> None:
    watch = Watch(conn, SERVER_EVENTS)
    for i, chunk in enumerate(split(data, sizes)):
        serve(watch, watch.feed(chunk))
        serve(watch, watch.timers(steps[i % len(steps)]))
    watch.finish()


def open_server(config: ServerConfig = SMALL, *, hello: bool) -> tuple[ServerConnection, Any]:
    server = ServerConnection(config, random.Random(0), 0.0)
    assert server.receive_data(upgrade_request(), 0.0)
    server.accept_upgrade(0.0)
    client_ws = Connection(ConnectionType.CLIENT)
    if hello:
        server.receive_data(client_ws.send(TextMessage(data='{"type":"hello","protocol":"1"}')), 0)
        server.send(protocol.Welcome(user_id=1, username="alice", server_time=1), 0.0)
        assert server.state is ConnState.OPEN
    server.data_to_send()
    return server, client_ws


def wire_bytes(ws: Connection, events: list[Any]) -> bytes:
    """What a peer's wsproto puts on the wire for ``events`` (in order, as far as its
    own state allows: nothing after its close)."""
    out = b""
    for event in events:
        if ws.state.name != "OPEN":
            break
        try:
            out += ws.send(event)
        except TypeError:  # a text fragment after a binary one, or the reverse
            continue
    return out


# --- the server ---------------------------------------------------------------------------


@settings(max_examples=examples(2000), deadline=None, suppress_health_check=SLOW)
@given(data=st.binary(max_size=300), sizes=chunk_sizes, steps=time_steps)
def test_server_survives_random_bytes(data: bytes, sizes: list[int], steps: list[float]) -> None:
    run_server(ServerConnection(SMALL, random.Random(0), 0.0), data, sizes, steps)


@settings(max_examples=examples(2500), deadline=None, suppress_health_check=SLOW)
@given(
    requests=st.lists(st.sampled_from(REQUESTS), min_size=1, max_size=3),
    tail=st.binary(max_size=20),
    sizes=chunk_sizes,
    steps=time_steps,
)
def test_server_survives_random_http(
    requests: list[bytes], tail: bytes, sizes: list[int], steps: list[float]
) -> None:
    data = b"".join(requests) + tail
    run_server(ServerConnection(SMALL, random.Random(0), 0.0), data, sizes, steps)


@settings(max_examples=examples(2500), deadline=None, suppress_health_check=SLOW)
@given(
    hello=st.booleans(),
    frames=st.lists(ws_events(CLIENT_TEXTS), max_size=6),
    noise=st.binary(max_size=8),
    sizes=chunk_sizes,
    steps=time_steps,
)
def test_server_survives_random_frames(
    hello: bool, frames: list[Any], noise: bytes, sizes: list[int], steps: list[float]
) -> None:
    server, client_ws = open_server(hello=hello)
    run_server(server, wire_bytes(client_ws, frames) + noise, sizes, steps)


# --- the client ---------------------------------------------------------------------------


def fresh_client(*, fast_frames: bool = True) -> ClientConnection:
    config = ClientConfig(host="x", max_frame_bytes=512, fast_frames=fast_frames)
    return ClientConnection(config, random.Random(0))


def run_client(client: ClientConnection, data: bytes, sizes: list[int], steps: list[float]) -> None:
    watch = Watch(client, CLIENT_EVENTS)
    for i, chunk in enumerate(split(data, sizes)):
        for event in watch.feed(chunk):
            if isinstance(event, ev.Upgraded) and client.state is ConnState.AWAITING_HELLO:
                client.send(protocol.Hello(protocol="1.0"), watch.now)
        watch.timers(steps[i % len(steps)])
    watch.finish()


@pytest.mark.schema_exempt(reason="feeds deliberately invalid server output to the client")
@settings(max_examples=examples(2000), deadline=None, suppress_health_check=SLOW)
@given(
    calls=st.lists(st.sampled_from(["health", "metrics", "login", "logout", "history"])),
    upgrade=st.booleans(),
    responses=st.lists(st.sampled_from(RESPONSES), max_size=3),
    noise=st.binary(max_size=30),
    sizes=chunk_sizes,
    steps=time_steps,
)
def test_client_survives_random_responses(
    calls: list[str],
    upgrade: bool,
    responses: list[bytes],
    noise: bytes,
    sizes: list[int],
    steps: list[float],
) -> None:
    client = fresh_client()
    for call in calls:
        if call == "login":
            client.login(protocol.Credentials(username="alice", password="p" * 8), 0.0)
        elif call in ("logout", "history"):
            client.logout("t", 0.0) if call == "logout" else client.history("t", "bob", 0.0)
        else:
            getattr(client, call)(0.0)
    if upgrade:
        client.upgrade(0.0)
    client.data_to_send()
    run_client(client, b"".join(responses) + noise, sizes, steps)


@pytest.mark.schema_exempt(reason="feeds deliberately invalid server output to the client")
@settings(max_examples=examples(2000), deadline=None, suppress_health_check=SLOW)
@given(
    frames=st.lists(ws_events(SERVER_TEXTS), max_size=6),
    noise=st.binary(max_size=8),
    sizes=chunk_sizes,
    steps=time_steps,
)
def test_client_survives_random_frames(
    frames: list[Any], noise: bytes, sizes: list[int], steps: list[float]
) -> None:
    from wsproto.utilities import generate_accept_token

    client = fresh_client()
    client.upgrade(0.0)
    key = client.data_to_send().split(b"sec-websocket-key: ")[1].split(b"\r\n")[0]
    head = (
        b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + generate_accept_token(key) + b"\r\n\r\n"
    )
    server_ws = Connection(ConnectionType.SERVER)
    run_client(client, head + wire_bytes(server_ws, frames) + noise, sizes, steps)


# --- frame cutting: the engines' own frame path against wsproto's ---------------------------
#
# The engines decode whole, unfragmented text frames themselves and hand every other frame
# to wsproto (libchat.frames). Fed the same bytes in the same pieces, an engine doing that
# and one whose every frame goes through wsproto (``fast_frames=False``) must give the same
# events and write the same bytes, for any input: frames wsproto itself would send, and
# hand-made ones it must refuse (unmasked from a client, reserved bits or opcodes,
# lengths in more bytes than needed, bad UTF-8, fragments out of place).

_FIRST_BYTES = [0x81] * 6 + [0x01, 0x80, 0x00, 0x82, 0x02, 0x89, 0x8A, 0x88, 0xC1, 0x91, 0x83]
_PAYLOADS = [text.encode() for text in CLIENT_TEXTS[:200]] + [b"", b"\xff\xfe", b"\xc3", b"x" * 300]


def _raw_frame(first: int, masked: bool, payload: bytes, width: int, key: bytes) -> bytes:
    """One frame as bytes; ``width`` 0, 1 or 2 asks for the 7-bit, 16-bit or 64-bit
    length form (a longer form than the length needs is a protocol error)."""
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if width == 0 and size < 126:
        header = bytes((first, mask_bit | size))
    elif width <= 1 and size < 65_536:
        header = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    if masked:
        header += key
        payload = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return header + payload


def raw_frames(masked: st.SearchStrategy[bool]) -> st.SearchStrategy[bytes]:
    return st.builds(
        _raw_frame,
        first=st.sampled_from(_FIRST_BYTES),
        masked=masked,
        payload=st.sampled_from(_PAYLOADS),
        width=st.sampled_from([0, 0, 0, 1, 2]),
        key=st.sampled_from([b"\x00\x00\x00\x00", b"\x12\x34\x56\x78", b"\xff\x01\xfe\x02"]),
    )


def mixed_frames(masked: bool, texts: list[str]) -> st.SearchStrategy[list[Any]]:
    """Up to 6 frames: hand-made ones (mostly with the mask bit as ``masked`` says) and
    wsproto events."""
    mask_bits = st.sampled_from([masked] * 5 + [not masked])
    return st.lists(st.one_of(raw_frames(mask_bits), ws_events(texts)), max_size=6)


def frames_on_wire(ws: Connection, frames: list[Any]) -> bytes:
    return b"".join(
        frame if isinstance(frame, bytes) else wire_bytes(ws, [frame]) for frame in frames
    )


def _trace(
    conn: Any, chunks: list[bytes], steps: list[float], written: Any = bytes
) -> list[Any]:
    """Everything an engine says and writes for these pieces, as a host would drive it;
    ``written`` turns what it writes into something comparable."""
    trace: list[Any] = []
    now = 0.0

    def took(events: list[Any]) -> None:
        trace.append(events)
        for event in events:
            if isinstance(event, protocol.Hello):
                conn.send(protocol.Welcome(user_id=1, username="alice", server_time=1), now)
            elif isinstance(event, protocol.Send):
                conn.send(protocol.Ack(id=event.id, seq=1, ts=1), now)
        trace.append(written(conn.data_to_send()))

    for i, chunk in enumerate(chunks):
        took(conn.receive_data(chunk, now))
        now += steps[i % len(steps)]
        deadline = conn.next_deadline()
        if deadline is not None and deadline <= now:
            took(conn.handle_timer(now))
    took(conn.receive_eof(now))
    return trace


@settings(max_examples=examples(2500), deadline=None, suppress_health_check=SLOW)
@given(
    hello=st.booleans(),
    frames=mixed_frames(True, CLIENT_TEXTS),
    sizes=chunk_sizes,
    steps=time_steps,
)
def test_server_cuts_frames_as_wsproto_parses_them(
    hello: bool, frames: list[Any], sizes: list[int], steps: list[float]
) -> None:
    chunks = list(split(frames_on_wire(Connection(ConnectionType.CLIENT), frames), sizes))
    cutting, _ = open_server(hello=hello)
    # the reference: every byte goes through wsproto
    reference, _ = open_server(attrs.evolve(SMALL, fast_frames=False), hello=hello)
    assert _trace(cutting, chunks, steps) == _trace(reference, chunks, steps)


@pytest.mark.schema_exempt(reason="feeds deliberately invalid server output to the client")
@settings(max_examples=examples(1500), deadline=None, suppress_health_check=SLOW)
@given(frames=mixed_frames(False, SERVER_TEXTS), sizes=chunk_sizes, steps=time_steps)
def test_client_cuts_frames_as_wsproto_parses_them(
    frames: list[Any], sizes: list[int], steps: list[float]
) -> None:
    from wsproto.utilities import generate_accept_token

    data = frames_on_wire(Connection(ConnectionType.SERVER), frames)
    traces = []
    for engine in (fresh_client(), fresh_client(fast_frames=False)):
        # A client masks what it writes with random keys: compare what a server reads.
        reader = Connection(ConnectionType.SERVER)

        def read(data: bytes, reader: Connection = reader) -> list[str]:
            reader.receive_data(data)
            return [repr(event) for event in reader.events()]

        engine.upgrade(0.0)
        key = engine.data_to_send().split(b"sec-websocket-key: ")[1].split(b"\r\n")[0]
        head = (
            b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + generate_accept_token(key) + b"\r\n\r\n"
        )
        traces.append(_trace(engine, list(split(head + data, sizes)), steps, read))
    assert traces[0] == traces[1]
