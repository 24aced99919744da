"""Test clients for a real chatd: plain HTTP, the ``websockets`` library, and libchat's
own client engine on asyncio.

Both WebSocket clients speak in plain dicts (the JSON objects on the wire) so a test can
run the same scenario with either. ``recv(type)`` returns the first frame of that type
not yet taken, waiting up to a deadline; frames of other types stay buffered for later
``recv`` calls, so a test never loses a frame it did not ask for yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client as httpclient
import itertools
import random
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import websockets
from websockets.asyncio.client import ClientConnection as WsConnection

from libchat import protocol
from libchat.client import ClientConfig, ClientConnection
from libchat.events import ConnectionClosed, HttpResponse, Upgraded
from tests.chatd.server import ChatdProcess

Frame = dict[str, Any]
TIMEOUT = 10.0  # seconds for anything to arrive: generous on a busy 2-core machine
PASSWORD = "correct horse battery"
ISSUED_TOKENS: list[str] = []  # every token login() got: the log tests look for them

_names = itertools.count(1)
_run = f"{random.randrange(36**4):04x}"


def unique_name(prefix: str = "u") -> str:
    """A fresh username (3..32 of a-z 0-9 _ . -), unique within the test run."""
    return f"{prefix}{_run}{next(_names)}"


# --- plain HTTP ---------------------------------------------------------------------


class Response:
    def __init__(self, status: int, headers: dict[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw

    @property
    def json(self) -> Any:
        return orjson.loads(self.raw)

    @property
    def error_code(self) -> str:
        return str(self.json["error"]["code"])

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.raw[:200]!r})"


def http(
    server: ChatdProcess,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = TIMEOUT,
    source_ip: str | None = None,
) -> Response:
    """One request on a fresh connection with ``http.client``. ``body`` that is not
    bytes is sent as JSON. ``source_ip`` (another loopback address, e.g. 127.0.0.2)
    makes the request come from another client IP."""
    source = None if source_ip is None else (source_ip, 0)
    if server.scheme == "https":
        conn: httpclient.HTTPConnection = httpclient.HTTPSConnection(
            "127.0.0.1", server.port, timeout=timeout, context=ssl_context,
            source_address=source,
        )
    else:
        conn = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=timeout,
                                         source_address=source)
    sent: dict[str, str] = dict(headers or {})
    payload: bytes | None = None
    if body is not None:
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        sent.setdefault("Content-Type", "application/json")
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=payload, headers=sent)
        answer = conn.getresponse()
        raw = answer.read()
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, raw)
    finally:
        conn.close()


async def ahttp(server: ChatdProcess, method: str, path: str, body: Any = None,
                **kwargs: Any) -> Response:
    """:func:`http` in a thread, for use inside a test's event loop."""
    return await asyncio.to_thread(http, server, method, path, body, **kwargs)


def register(server: ChatdProcess, name: str | None = None, password: str = PASSWORD,
             **kwargs: Any) -> str:
    name = name or unique_name()
    answer = http(server, "POST", "/v1/register", {"username": name, "password": password},
                  **kwargs)
    assert answer.status == 201, answer
    return name


def login(server: ChatdProcess, name: str, password: str = PASSWORD, **kwargs: Any) -> str:
    answer = http(server, "POST", "/v1/login", {"username": name, "password": password},
                  **kwargs)
    assert answer.status == 200, answer
    token = str(answer.json["token"])
    ISSUED_TOKENS.append(token)
    return token


def new_user(server: ChatdProcess, prefix: str = "u", **kwargs: Any) -> tuple[str, str]:
    """Register a fresh user and log in: (username, token)."""
    name = register(server, unique_name(prefix), **kwargs)
    return name, login(server, name, **kwargs)


async def anew_user(server: ChatdProcess, prefix: str = "u", **kwargs: Any) -> tuple[str, str]:
    return await asyncio.to_thread(new_user, server, prefix, **kwargs)


# --- a WebSocket client, either kind -------------------------------------------------


class Peer(Protocol):
    """What a scenario needs from a WebSocket client."""

    frames: list[Frame]
    close_code: int | None

    async def send(self, frame: Frame) -> None: ...

    async def recv(self, kind: str | tuple[str, ...], timeout: float = TIMEOUT,
                   where: Callable[[Frame], bool] | None = None) -> Frame: ...

    async def wait_closed(self, timeout: float = TIMEOUT) -> int | None: ...

    async def close(self) -> None: ...

    def untaken(self, kind: str | None = None) -> list[Frame]: ...


class _Buffered:
    """The frame buffer and ``recv`` both clients share."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []  # every frame received, in order
        self._taken: set[int] = set()
        self._arrived = asyncio.Event()
        self._done = asyncio.Event()
        self.close_code: int | None = None

    def _add(self, frame: Frame) -> None:
        self.frames.append(frame)
        self._arrived.set()

    def _closed(self, code: int | None) -> None:
        self.close_code = code
        self._done.set()
        self._arrived.set()

    def untaken(self, kind: str | None = None) -> list[Frame]:
        return [f for i, f in enumerate(self.frames)
                if i not in self._taken and (kind is None or f.get("type") == kind)]

    async def recv(self, kind: str | tuple[str, ...], timeout: float = TIMEOUT,
                   where: Callable[[Frame], bool] | None = None) -> Frame:
        """The first frame not yet taken whose type is ``kind`` (or one of them)."""
        kinds = (kind,) if isinstance(kind, str) else kind
        deadline = time.monotonic() + timeout
        while True:
            for index, frame in enumerate(self.frames):
                if index in self._taken or frame.get("type") not in kinds:
                    continue
                if where is None or where(frame):
                    self._taken.add(index)
                    return frame
            if self._done.is_set():
                raise AssertionError(
                    f"closed ({self.close_code}) before a {kind!r} frame; got {self.frames}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} frame within {timeout} s; got {self.frames}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def wait_closed(self, timeout: float = TIMEOUT) -> int | None:
        await asyncio.wait_for(self._done.wait(), timeout)
        return self.close_code


class WsPeer(_Buffered):
    """The independent client: the ``websockets`` library."""

    def __init__(self, ws: WsConnection) -> None:
        super().__init__()
        self.ws = ws
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self._add(orjson.loads(message))
        except websockets.ConnectionClosed:
            pass
        finally:
            rcvd = self.ws.close_code
            self._closed(rcvd)

    async def send(self, frame: Frame) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self._reader, TIMEOUT)


async def ws_connect(
    server: ChatdProcess,
    token: str | None = None,
    *,
    hello: bool = True,
    header_token: str | None = None,
    origin: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_size: int | None = 4 * 1024 * 1024,
    source_ip: str | None = None,
) -> WsPeer:
    """Open a WebSocket with ``websockets``; with ``hello`` send the hello and wait
    for the welcome. ``source_ip`` (e.g. 127.0.0.2) plays another client address."""
    headers = {"Authorization": f"Bearer {header_token}"} if header_token else None
    ws = await websockets.connect(
        server.ws_url, additional_headers=headers, origin=origin,  # type: ignore[arg-type]
        ssl=ssl_context, compression=None, max_size=max_size, open_timeout=TIMEOUT,
        ping_interval=None, local_addr=None if source_ip is None else (source_ip, 0),
    )
    peer = WsPeer(ws)
    if hello:
        frame: Frame = {"type": "hello", "protocol": "1.0"}
        if token is not None:
            frame["token"] = token
        await peer.send(frame)
        await peer.recv("welcome")
    return peer


class LibchatPeer(_Buffered):
    """libchat's own client engine on an asyncio stream. HTTP calls go out one at a
    time; after :meth:`upgrade` the frames come and go as dicts."""

    def __init__(self, server: ChatdProcess, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.server = server
        self.ssl_context = ssl_context
        self.conn = ClientConnection(ClientConfig(host=server.host), random.Random())
        self.responses: asyncio.Queue[HttpResponse | Upgraded] = asyncio.Queue()
        self.closed_event: ConnectionClosed | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

    async def open(self) -> LibchatPeer:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.server.port, ssl=self.ssl_context,
            server_hostname="localhost" if self.ssl_context else None,
        )
        self._writer = writer
        self._reader_task = self._loop.create_task(self._read(reader))
        return self

    def _now(self) -> float:
        return self._loop.time()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)
        if self.conn.is_closed and self._writer is not None:
            self._writer.close()

    def _events(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, HttpResponse | Upgraded):
                self.responses.put_nowait(event)
            elif isinstance(event, ConnectionClosed):
                self.closed_event = event
                self._closed(event.code)
            else:
                self._add(orjson.loads(protocol.encode_frame(event)))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    self._events(self.conn.receive_eof(self._now()))
                    break
                self._events(self.conn.receive_data(data, self._now()))
                self._flush()
                if self.conn.is_closed:
                    break
        except (ConnectionError, ssl.SSLError):
            self._events(self.conn.receive_eof(self._now()))
        finally:
            self._flush()
            if not self._done.is_set():
                self._closed(self.conn.close_code)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> HttpResponse:
        """Call one of the engine's HTTP methods (``login``, ``history``...) and wait
        for the answer."""
        getattr(self.conn, method)(*args, now=self._now(), **kwargs)
        self._flush()
        answer = await asyncio.wait_for(self.responses.get(), TIMEOUT)
        assert isinstance(answer, HttpResponse), answer
        return answer

    async def upgrade(self, token: str | None = None, origin: str | None = None,
                      ) -> HttpResponse | Upgraded:
        self.conn.upgrade(self._now(), token=token, origin=origin)
        self._flush()
        return await asyncio.wait_for(self.responses.get(), TIMEOUT)

    async def send(self, frame: Frame) -> None:
        self.conn.send(protocol.decode_client_frame(orjson.dumps(frame)), self._now())
        self._flush()

    async def close(self) -> None:
        self.conn.close(1000, now=self._now())
        self._flush()
        try:
            await asyncio.wait_for(self._done.wait(), TIMEOUT)
        finally:
            if self._writer is not None:
                self._writer.close()


async def libchat_connect(
    server: ChatdProcess, token: str | None = None, *, hello: bool = True,
    ssl_context: ssl.SSLContext | None = None,
) -> LibchatPeer:
    """Open a WebSocket with libchat's client engine (upgrade, hello, welcome)."""
    peer = await LibchatPeer(server, ssl_context).open()
    answer = await peer.upgrade()
    assert isinstance(answer, Upgraded), answer
    if hello:
        frame: Frame = {"type": "hello", "protocol": "1.0"}
        if token is not None:
            frame["token"] = token
        await peer.send(frame)
        await peer.recv("welcome")
    return peer


async def connect(kind: str, server: ChatdProcess, token: str, **kwargs: Any) -> Peer:
    """A WebSocket through hello with the named client: "websockets" or "libchat"."""
    if kind == "libchat":
        return await libchat_connect(server, token, **kwargs)
    return await ws_connect(server, token, **kwargs)


def answers(client_id: str) -> Callable[[Frame], bool]:
    """A ``recv(("ack", "error"), where=...)`` filter: the answer to one send."""
    return lambda frame: frame.get("id" if frame["type"] == "ack" else "ref") == client_id


def field_is(name: str, value: Any) -> Callable[[Frame], bool]:
    """A ``recv(where=...)`` filter: the frame's ``name`` equals ``value``."""
    return lambda frame: frame.get(name) == value


async def exchange(alice: Peer, bob: Peer, bob_name: str, tag: str = "") -> Frame:
    """alice sends bob a fresh message; returns bob's push after checking alice's ack.
    Proves both connections (and the server) are still served."""
    client_id = f"x{next(_names)}{tag}"
    await alice.send({"type": "send", "id": client_id, "to": bob_name, "body": "ping " + tag})
    ack = await alice.recv("ack", where=lambda f: f["id"] == client_id)
    push = await bob.recv("message", where=lambda f: f["id"] == client_id)
    assert push["seq"] == ack["seq"]
    return push


class Streamer:
    """Send numbered messages (ids ``<stem>-0``, ``<stem>-1``...) from one peer as fast
    as acks come back, at most ``window`` unacknowledged, optionally paced by
    ``interval`` seconds; records every ack and when it arrived. Ends when ``count``
    acks came, when :meth:`stop` is called, or when the connection closes."""

    def __init__(self, peer: Peer, to: str, stem: str, *, window: int = 8,
                 interval: float = 0.0, text: str = "") -> None:
        self.peer = peer
        self.text = text
        self.to = to
        self.stem = stem
        self.window = window
        self.interval = interval
        self.sent: list[str] = []
        self.acks: dict[str, Frame] = {}
        self.ack_times: list[float] = []
        self.errors: list[Frame] = []
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        self._stopped.set()

    async def run(self, count: int | None = None) -> None:
        credit = asyncio.Semaphore(self.window)
        sender = asyncio.get_running_loop().create_task(self._send(credit, count))
        try:
            await self._receive(credit, count)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send(self, credit: asyncio.Semaphore, count: int | None) -> None:
        index = 0
        while not self._stopped.is_set() and (count is None or index < count):
            await credit.acquire()
            client_id = f"{self.stem}-{index}"
            index += 1
            self.sent.append(client_id)
            try:
                await self.peer.send({"type": "send", "id": client_id, "to": self.to,
                                      "body": self.text or f"stream {client_id}"})
            except Exception:  # the connection is gone: the receiver ends the run
                return
            if self.interval:
                await asyncio.sleep(self.interval)  # pacing a rate, not waiting for a state

    async def _receive(self, credit: asyncio.Semaphore, count: int | None) -> None:
        loop = asyncio.get_running_loop()
        while count is None or len(self.acks) < count:
            if self._stopped.is_set() and len(self.acks) + len(self.errors) >= len(self.sent):
                return
            try:
                ack = await self.peer.recv("ack", timeout=TIMEOUT)
            except AssertionError:  # closed, or nothing for TIMEOUT
                return
            self.acks[ack["id"]] = ack
            self.ack_times.append(loop.time())
            credit.release()


async def whole_history(server: ChatdProcess, token: str, peer: str) -> list[Frame]:
    """Every message of a conversation, oldest first, walking the pages back."""
    messages: list[Frame] = []
    before = ""
    while True:
        page = (await ahttp(server, "GET",
                            f"/v1/conversations/{peer}/messages?limit=200{before}",
                            token=token)).json
        messages[:0] = page["messages"]
        if not page["has_more"]:
            return messages
        before = f"&before={page['messages'][0]['seq']}"
