"""An asyncio host for a :class:`~libchat.session.Session`: the one module of libchat
that does I/O.

Everything else in libchat is sans-IO (no sockets, clocks, threads or event loops; a
test checks it), so it can run under any loop or none. This module is the small shell
that runs a session on asyncio streams: it opens the TCP (optionally TLS) connections
the session asks for, feeds it their bytes and the loop's clock, fires its timer, and
hands its events out through an async iterator. Reconnecting with backoff, token
refresh, resends and dedupe are the session's: the host only moves bytes.

::

    async with AsyncClient.from_url("https://chat.example:8765") as client:
        client.sign_in(Credentials(username="echo", password=secret))
        async for event in client:
            if isinstance(event, Message):
                client.send_message(event.sender, event.body)

Create it inside a running event loop. Methods that act (``sign_in``,
``send_message``...) return at once; what follows comes as events. Iteration ends once
the session is over (signed out, or closed) and every connection is gone.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import ssl
from collections.abc import Callable, Iterable
from typing import TypeVar
from urllib.parse import urlsplit

from libchat import protocol
from libchat.outbox import OutboxEntry, OutboxStorage
from libchat.session import (
    CloseTransport,
    OpenTransport,
    Session,
    SessionConfig,
    SessionEvent,
    WriteTransport,
)

__all__ = ["AsyncClient"]

_log = logging.getLogger(__name__)

READ_SIZE = 65536  # bytes per read: a catch-up arrives in a few reads
CLOSE_WAIT = 6.0  # seconds aclose() waits for the close handshake (the engine's is 5 s)

T = TypeVar("T")


class AsyncClient:
    """Runs one :class:`Session` against one server over asyncio streams.

    Args:
        host: the server's name or address.
        port: its TCP port.
        ssl: a context to speak TLS (e.g. ``ssl.create_default_context()``, or one with
            ``cafile=`` for a private CA); ``None`` for plain TCP.
        config: the session's configuration; by default one whose ``Host`` header
            names ``host`` and ``port``.
        storage: where the outbox keeps unsent messages (default: in memory).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl: ssl.SSLContext | None = None,
        config: SessionConfig | None = None,
        storage: OutboxStorage | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._host = host
        self._port = port
        self._ssl = ssl
        if config is None:
            default_port = 443 if ssl is not None else 80
            config = SessionConfig(host=host if port == default_port else f"{host}:{port}")
        self.session = Session(config, rng=random.SystemRandom(), storage=storage)
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._events: collections.deque[SessionEvent] = collections.deque()
        self._changed = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._failure: BaseException | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        storage: OutboxStorage | None = None,
    ) -> AsyncClient:
        """A client for ``http://host:port`` or ``https://host:port`` (TLS with
        ``ssl_context``, by default the system's trusted CAs)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        tls = parts.scheme == "https"
        if tls and ssl_context is None:
            ssl_context = ssl.create_default_context()
        port = parts.port or (443 if tls else 80)
        return cls(parts.hostname, port, ssl=ssl_context if tls else None, storage=storage)

    # --- acting: each calls the session with the loop's clock, then moves its output --------

    def now(self) -> float:
        """The clock the session runs on: the loop's."""
        return self._loop.time()

    def sign_in(self, credentials: protocol.Credentials, *, register: bool = False) -> None:
        """See :meth:`Session.sign_in`."""
        self._act(lambda s, now: s.sign_in(credentials, now, register=register))

    def resume(self, token: str, expires_in: float) -> None:
        """See :meth:`Session.resume`."""
        self._act(lambda s, now: s.resume(token, expires_in, now))

    def send_message(self, to: str, body: str) -> OutboxEntry:
        """See :meth:`Session.send_message`."""
        return self._act(lambda s, now: s.send_message(to, body, now))

    def mark_read(self, peer: str, up_to: int) -> None:
        """See :meth:`Session.mark_read`."""
        self._act(lambda s, now: s.mark_read(peer, up_to, now))

    def confirm(self, seqs: Iterable[int]) -> None:
        """See :meth:`Session.confirm`."""
        self._act(lambda s, now: s.confirm(seqs, now))

    def typing(self, to: str) -> bool:
        """See :meth:`Session.typing`."""
        return self._act(lambda s, now: s.typing(to, now))

    def history(self, peer: str, *, before: int | None = None, limit: int | None = None) -> int:
        """See :meth:`Session.history`."""
        return self._act(lambda s, now: s.history(peer, now, before=before, limit=limit))

    def conversations(self) -> int:
        """See :meth:`Session.conversations`."""
        return self._act(lambda s, now: s.conversations(now))

    def search_users(self, prefix: str) -> int:
        """See :meth:`Session.search_users`."""
        return self._act(lambda s, now: s.search_users(prefix, now))

    def reconnect(self) -> None:
        """See :meth:`Session.reconnect`."""
        self._act(lambda s, now: s.reconnect(now))

    def sign_out(self) -> None:
        """See :meth:`Session.sign_out`; iteration ends once the logout is done."""
        self._act(lambda s, now: s.sign_out(now))

    async def aclose(self, timeout: float = CLOSE_WAIT) -> None:
        """Close the session (the token stays valid), wait up to ``timeout`` seconds
        for the close handshake, and stop every connection and timer."""
        self._act(lambda s, now: s.close(now))
        deadline = self._loop.time() + timeout
        while not self.session.is_finished and self._loop.time() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline - self._loop.time())
            except TimeoutError:
                break
        for task in list(self._tasks.values()):
            task.cancel()
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._tasks.clear()
        self._cancel_timer()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- events ---------------------------------------------------------------------------

    async def next_event(self, timeout: float | None = None) -> SessionEvent:
        """The next event; raises ``TimeoutError`` after ``timeout`` seconds and
        ``EOFError`` once the session is over and every event was taken."""
        async with asyncio.timeout(timeout):
            while True:
                if self._failure is not None:
                    raise self._failure
                if self._events:
                    return self._events.popleft()
                if self.session.is_finished and not self._tasks:
                    raise EOFError("the session is over")
                self._changed.clear()
                await self._changed.wait()

    def __aiter__(self) -> AsyncClient:
        return self

    async def __anext__(self) -> SessionEvent:
        try:
            return await self.next_event()
        except EOFError:
            raise StopAsyncIteration from None

    # --- moving the session's output --------------------------------------------------------

    def _act(self, call: Callable[[Session, float], T]) -> T:
        result = call(self.session, self._loop.time())
        self._pump()
        return result

    def _pump(self) -> None:
        """Carry out the session's actions, queue its events, re-arm its timer."""
        session = self.session
        for action in session.actions():
            if isinstance(action, WriteTransport):
                writer = self._writers.get(action.id)
                if writer is not None and not writer.is_closing():
                    writer.write(action.data)
            elif isinstance(action, OpenTransport):
                task = self._loop.create_task(self._run(action.id))
                self._tasks[action.id] = task
                task.add_done_callback(self._task_done)
            elif isinstance(action, CloseTransport):
                self._drop(action.id)
        self._events.extend(session.events())
        self._arm_timer()
        self._changed.set()

    def _drop(self, transport_id: int) -> None:
        writer = self._writers.pop(transport_id, None)
        if writer is not None:
            writer.close()
        task = self._tasks.pop(transport_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        for key, value in list(self._tasks.items()):
            if value is task:
                del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            self._failure = task.exception()  # a bug: next_event() raises it
        self._changed.set()

    async def _run(self, transport_id: int) -> None:
        """One transport: connect, then feed what it reads until it ends."""
        session = self.session
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._ssl)
        except OSError as exc:
            session.transport_closed(transport_id, self._loop.time(), _describe(exc))
            self._pump()
            return
        self._writers[transport_id] = writer
        session.transport_opened(transport_id, self._loop.time())
        self._pump()
        reason = "connection closed by the server"
        try:
            while transport_id in self._writers:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                session.receive_data(transport_id, data, self._loop.time())
                self._pump()
        except OSError as exc:
            reason = _describe(exc)
        if self._writers.pop(transport_id, None) is not None:  # not closed by the session
            writer.close()
            session.transport_closed(transport_id, self._loop.time(), reason)
            self._pump()

    # --- the timer ------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        deadline = self.session.next_deadline()
        if deadline == self._timer_at:
            return
        self._cancel_timer()
        if deadline is not None:
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._fire)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None

    def _fire(self) -> None:
        due = self._timer_at
        self._timer = self._timer_at = None
        # asyncio may run a timer up to its clock resolution early: it is due all the same
        now = self._loop.time() if due is None else max(due, self._loop.time())
        self.session.handle_timer(now)
        self._pump()


def _describe(exc: OSError) -> str:
    """``connection refused``, ``TLS handshake failed: ...``: the cause, lower case."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):  # asyncio's text names the address only
        return "connection refused"
    if exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
