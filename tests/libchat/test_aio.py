"""libchat.aio: the asyncio host runs a session over real loopback sockets (plain and
TLS) against the fake chat server, itself served by asyncio streams."""

from __future__ import annotations

import asyncio
import errno
import shutil
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from libchat import (
    Acked,
    AsyncClient,
    Connected,
    Credentials,
    Disconnected,
    Message,
    SessionConfig,
    SignedIn,
    SignedOut,
    SignInFailed,
)
from libchat.aio import _describe
from tests.libchat.fakechat import PASSWORD, FakeChat
from tests.support.tls import make_certificate

ALICE = Credentials(username="alice", password=PASSWORD)
TIMEOUT = 10.0  # seconds: generous on a busy machine


class ChatServer:
    """A :class:`FakeChat` on a real loopback port."""

    def __init__(self, chat: FakeChat) -> None:
        self.chat = chat
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.server: asyncio.Server | None = None
        self.port = 0
        self.deaf = False  # read and ignore everything (a hung server)
        self._next = 1000

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> ChatServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tid = self._next
        self._next += 1
        self.chat.open(tid, self.now())
        self.writers[tid] = writer
        try:
            while tid in self.chat.conns:
                data = await reader.read(65536)
                if not data:
                    break
                if self.deaf:
                    continue
                self.chat.receive(tid, data, self.now())
                self.flush()
        except OSError:
            pass
        finally:
            self.chat.eof(tid, self.now())
            self.writers.pop(tid, None)
            writer.close()

    def flush(self) -> None:
        """Write every connection's output; close the ones that are over."""
        for tid, conn in list(self.chat.conns.items()):
            writer = self.writers.get(tid)
            if writer is None:
                continue
            data = conn.data_to_send()
            if data:
                writer.write(data)
            if conn.is_closed:
                writer.close()

    def drop_all(self) -> None:
        for writer in self.writers.values():
            writer.transport.abort()

    async def stop(self) -> None:
        assert self.server is not None
        self.drop_all()
        self.server.close()
        await self.server.wait_closed()


def run(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 60))

    wrapper.__name__ = test.__name__
    return wrapper


async def expect(client: AsyncClient, kind: type[Any]) -> Any:
    """The next event of ``kind``, skipping others."""
    while True:
        event = await client.next_event(TIMEOUT)
        if isinstance(event, kind):
            return event


def fast(port: int) -> SessionConfig:
    return SessionConfig(host=f"127.0.0.1:{port}", backoff_base=0.05, backoff_cap=0.2)


@run
async def test_a_client_signs_in_receives_and_sends() -> None:
    server = await ChatServer(FakeChat()).start()
    async with AsyncClient("127.0.0.1", server.port) as client:
        assert client.session._config.host == f"127.0.0.1:{server.port}"
        client.sign_in(ALICE)
        assert isinstance(await client.next_event(TIMEOUT), SignedIn)
        assert isinstance(await client.next_event(TIMEOUT), Connected)
        message = Message(id="b1", seq=5, sender="bob", recipient="alice", body="hi", ts=1)
        server.chat.push(message, server.now())
        server.flush()
        assert await client.next_event(TIMEOUT) == message
        entry = client.send_message("bob", "hi yourself")
        acked = await expect(client, Acked)
        assert acked.entry.client_id == entry.client_id
        client.mark_read("bob", 5)
        assert client.typing("bob") is True
        for call in (
            client.history("bob", before=9, limit=3),
            client.conversations(),
            client.search_users("b"),
        ):
            assert (await client.next_event(TIMEOUT)).call == call
        client.confirm([5])
        client.reconnect()  # connected: nothing to do
        with pytest.raises(TimeoutError):
            await client.next_event(0.05)
    await server.stop()


@run
async def test_the_client_reconnects_and_resends_after_the_server_drops_it() -> None:
    chat = FakeChat()
    server = await ChatServer(chat).start()
    async with AsyncClient("127.0.0.1", server.port, config=fast(server.port)) as client:
        client.sign_in(ALICE)
        await expect(client, Connected)
        chat.hold_sends = True
        entry = client.send_message("bob", "through the outage")
        while not chat.frames(type(entry.frame())):
            await asyncio.sleep(0.01)  # poll: the send reaches the server
        chat.hold_sends = False
        server.drop_all()
        down = await expect(client, Disconnected)
        assert down.code == 1006 and down.retry_at is not None
        await expect(client, Connected)
        acked = await expect(client, Acked)
        assert acked.entry.client_id == entry.client_id
    await server.stop()


@run
async def test_sign_out_ends_the_iteration() -> None:
    server = await ChatServer(FakeChat()).start()
    client = AsyncClient("127.0.0.1", server.port)
    client.sign_in(ALICE)
    await expect(client, Connected)
    client.sign_out()
    events = [event async for event in client]
    assert events == [SignedOut(reason="signed out")]
    assert server.chat.tokens == {}
    await client.aclose()
    await server.stop()


@run
async def test_an_unreachable_server_fails_the_sign_in() -> None:
    server = await ChatServer(FakeChat()).start()
    port = server.port
    await server.stop()
    client = AsyncClient("127.0.0.1", port)
    client.sign_in(ALICE)
    failed = await client.next_event(TIMEOUT)
    assert isinstance(failed, SignInFailed)
    assert (failed.code, failed.message) == ("unreachable", "connection refused")
    await client.aclose()


@run
async def test_a_bug_in_the_session_surfaces_from_next_event() -> None:
    server = await ChatServer(FakeChat()).start()
    client = AsyncClient("127.0.0.1", server.port)

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    client.session.transport_opened = broken  # type: ignore[method-assign]
    client.sign_in(ALICE)
    with pytest.raises(RuntimeError, match="a bug"):
        await client.next_event(TIMEOUT)
    await client.aclose()
    await server.stop()


def test_from_url() -> None:
    async def main() -> None:
        plain = AsyncClient.from_url("http://127.0.0.1:8765")
        assert (plain._host, plain._port, plain._ssl) == ("127.0.0.1", 8765, None)
        assert plain.session._config.host == "127.0.0.1:8765"
        tls = AsyncClient.from_url("https://chat.example")
        assert (tls._port, tls.session._config.host) == (443, "chat.example")
        assert isinstance(tls._ssl, ssl.SSLContext)
        with pytest.raises(ValueError, match="not an http"):
            AsyncClient.from_url("ws://chat.example")

    asyncio.run(main())


# --- TLS ---------------------------------------------------------------------------------



@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_tls_with_a_trusted_and_an_untrusted_certificate(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)

    async def main() -> None:
        server = await ChatServer(FakeChat()).start(server_context)
        url = f"https://127.0.0.1:{server.port}"
        trusted = ssl.create_default_context(cafile=str(cert))
        async with AsyncClient.from_url(url, ssl_context=trusted) as client:
            client.sign_in(ALICE)
            await expect(client, Connected)
        async with AsyncClient.from_url(url) as untrusted:
            untrusted.sign_in(ALICE)
            failed = await untrusted.next_event(TIMEOUT)
            assert isinstance(failed, SignInFailed) and failed.code == "unreachable"
            assert failed.message.startswith("TLS handshake failed: CERTIFICATE_VERIFY_FAILED")
        await server.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


@run
async def test_a_saved_token_resumes_and_a_silent_server_is_timed_out() -> None:
    chat = FakeChat()
    server = await ChatServer(chat).start()
    grant = chat.grant("alice")
    config = SessionConfig(host="127.0.0.1", http_timeout=0.2)
    async with AsyncClient("127.0.0.1", server.port, config=config) as client:
        client.resume(grant.token, expires_in=100)
        connected = await client.next_event(TIMEOUT)
        assert isinstance(connected, Connected) and client.now() > 0
        chat.silent = True
        call = client.conversations()
        result = await client.next_event(TIMEOUT)
        assert (result.call, result.response, result.reason) == (call, None, "timed out")
        server.deaf = True
        await client.aclose(timeout=0.1)  # a hung server never answers the close
        assert not client.session.is_finished and not client._tasks
    await server.stop()


def test_errors_are_described_in_lower_case() -> None:
    assert _describe(OSError(errno.ECONNRESET, "Connection reset by peer")) == (
        "connection reset by peer"
    )
    assert _describe(OSError("odd")) == "odd"
    assert _describe(OSError()) == "OSError"
