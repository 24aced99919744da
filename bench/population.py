"""The load generator's connections: simulated users, their sockets and their groups.

Each simulated user has one ``asyncio.Protocol`` per connection around a libchat
:class:`~libchat.client.ClientConnection`, like chatd's own glue. A :class:`Population`
holds one worker's users in named groups, connects and drops them, and coalesces their
writes to one per connection per loop turn.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from bench.ledger import Ledger
from libchat import protocol
from libchat.backoff import Backoff
from libchat.client import ClientConfig, ClientConnection
from libchat.events import ConnectionClosed, HttpResponse, Upgraded
from libchat.limits import MAX_SEQS_PER_DELIVERED
from libchat.outbox import SeenSeqs
from libchat.protocol import Ack, Delivered, DeliveredReceipt, Error, Hello, Message, Welcome

CONNECT_TIMEOUT = 60.0  # seconds for one connection to reach its welcome
MAX_CONNECT_ATTEMPTS = 8  # attempts per user when building the initial population


class User:
    """A simulated user: survives its connections (seen seqs, backoff, storm marks)."""

    def __init__(
        self, name: str, token: str, rng: random.Random, port: int | None = None
    ) -> None:
        self.name = name
        self.token = token
        self.port = port  # the node this user connects to (None: the population's host)
        self.seen = SeenSeqs()
        self.backoff = Backoff(rng=rng)
        self.client: Client | None = None
        self.welcomed = asyncio.Event()
        self.withhold = False  # storm setup: keep pushes unconfirmed so they come again
        self.awaited_seq = -1  # a seq whose (re)push means "caught up"
        self.caught_up_at = 0.0
        self.welcomed_at = 0.0  # loop time of the last welcome
        self.pushes = 0  # pushes accepted on any connection
        self.on_push: Callable[[User, Message, float], None] | None = None

    @property
    def is_live(self) -> bool:
        return self.client is not None and self.client.is_welcomed


class Client(asyncio.Protocol):
    """One connection of one user: glue between a transport and the libchat engine."""

    def __init__(self, population: Population, user: User) -> None:
        self.population = population
        self.ledger = population.ledger
        self.user = user
        self.loop = population.loop
        self.conn = ClientConnection(ClientConfig(host=population.host), population.rng)
        self.transport: asyncio.Transport | None = None
        self.is_welcomed = False
        self.is_lost = False
        self.to_confirm: list[int] = []
        self._dirty = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.user.client = self
        self.conn.upgrade(self.loop.time())
        self.flush()

    def data_received(self, data: bytes) -> None:
        # The latencies are stamped with time.monotonic(): uvloop's loop.time() is the
        # same clock in whole milliseconds, too coarse for a 2 ms target.
        now = time.monotonic()
        for event in self.conn.receive_data(data, now):
            self._handle(event, now)
        self.queue_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_lost = True
        self.is_welcomed = False
        if self.user.client is self:
            self.user.client = None
            self.user.welcomed.clear()
        self.transport = None

    def _handle(self, event: object, now: float) -> None:
        kind = type(event)
        if kind is Message:
            self.ledger.on_message(self, event, now)  # type: ignore[arg-type]  # event: a Message
        elif kind is Ack:
            self.ledger.on_ack(event, now)  # type: ignore[arg-type]
        elif kind is DeliveredReceipt:
            self.ledger.on_receipt(event, now)  # type: ignore[arg-type]
        elif kind is Upgraded:
            self.conn.send(Hello(protocol="1.0", token=self.user.token), now)
        elif kind is Welcome:
            self.is_welcomed = True
            self.user.welcomed_at = now
            self.user.welcomed.set()
            self.user.backoff.connected(now)
        elif kind is Error:
            self.ledger.on_error(event)  # type: ignore[arg-type]
        elif kind is HttpResponse or kind is ConnectionClosed:
            self.abort()

    def send(self, frame: protocol.ClientFrame) -> None:
        self.conn.send(frame, self.loop.time())
        self.queue_flush()

    def queue_flush(self) -> None:
        if not self._dirty:
            self._dirty = True
            self.population.queue_flush(self)

    def flush(self) -> None:
        """Confirm what arrived (one delivered frame per turn) and write once."""
        self._dirty = False
        if self.transport is None or self.conn.is_closed:
            return
        seqs = self.to_confirm
        if seqs and self.is_welcomed:
            self.to_confirm = []
            now = self.loop.time()
            for start in range(0, len(seqs), MAX_SEQS_PER_DELIVERED):
                chunk = tuple(seqs[start : start + MAX_SEQS_PER_DELIVERED])
                self.conn.send(Delivered(seqs=chunk), now)
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class LoginClient(asyncio.Protocol):
    """One ``POST /v1/login`` on its own connection; sets ``answer`` to the status."""

    def __init__(
        self, population: Population, credentials: protocol.Credentials, answer: asyncio.Future[int]
    ) -> None:
        self.loop = population.loop
        self.conn = ClientConnection(ClientConfig(host=population.host), population.rng)
        self.credentials = credentials
        self.answer = answer
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.login(self.credentials, self.loop.time())
        transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data, self.loop.time()):
            if isinstance(event, HttpResponse) and not self.answer.done():
                self.answer.set_result(event.status)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_result(0)


class Population:
    """One worker's users in named groups: connecting, dropping, counting, pairing."""

    def __init__(
        self, host: str, rng: random.Random, ledger: Ledger, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.host = host
        address, _, port = host.rpartition(":")
        self.address = address
        self.port = int(port)
        self.rng = rng
        self.ledger = ledger
        self.loop = loop
        self.groups: dict[str, list[User]] = {}
        self.pairs: dict[str, list[tuple[User, User]]] = {}
        self._dirty: list[Client] = []
        self._flush_scheduled = False

    # --- output coalescing ---------------------------------------------------------------

    def queue_flush(self, client: Client) -> None:
        self._dirty.append(client)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_all)

    def _flush_all(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for client in dirty:
            client.flush()

    # --- connecting ------------------------------------------------------------------

    async def connect_once(self, user: User, timeout: float) -> bool:
        try:
            _, client = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: Client(self, user), self.address, user.port or self.port
                ),
                timeout,
            )
        except (OSError, TimeoutError):
            return False
        try:
            await asyncio.wait_for(user.welcomed.wait(), timeout)
        except TimeoutError:
            client.abort()
            return False
        return True

    async def _connect(self, user: User, deadline: float) -> bool:
        for _ in range(MAX_CONNECT_ATTEMPTS):
            left = deadline - self.loop.time()
            if left <= 0:
                return False
            if await self.connect_once(user, min(CONNECT_TIMEOUT, left)):
                return True
            user.backoff.disconnected(self.loop.time())
            await asyncio.sleep(
                min(user.backoff.next_delay(), max(0.0, deadline - self.loop.time()))
            )
        return False

    async def connect(
        self,
        group: str,
        users: list[tuple[str, str]] | list[tuple[str, str, int | None]],
        concurrency: int,
        timeout: float,
    ) -> dict[str, Any]:
        """Connect ``users`` (name, token and optionally the port of the user's node) as
        ``group``, ``concurrency`` at a time."""
        members = self.groups.setdefault(group, [])
        new = [
            User(user[0], user[1], random.Random(self.rng.random()), user[2] if user[2:] else None)
            for user in users
        ]
        members.extend(new)
        started = self.loop.time()
        deadline = started + timeout
        gate = asyncio.Semaphore(concurrency)
        welcome_ms: list[float] = []

        async def one(user: User) -> bool:
            async with gate:
                begun = self.loop.time()
                ok = await self._connect(user, deadline)
                if ok:
                    welcome_ms.append((self.loop.time() - begun) * 1000)
                return ok

        results = await asyncio.gather(*(one(user) for user in new))
        return {
            "connected": sum(results),
            "failed": len(results) - sum(results),
            "seconds": self.loop.time() - started,
            "welcome_ms": welcome_ms,
        }

    async def disconnect(self, group: str) -> dict[str, Any]:
        users = self.groups.pop(group, [])
        self.pairs.pop(group, None)
        for user in users:
            if user.client is not None:
                user.client.abort()
        return {"closed": len(users)}

    async def count(self, group: str) -> dict[str, Any]:
        users = self.groups.get(group, [])
        return {"live": sum(1 for user in users if user.is_live), "users": len(users)}

    def abort_all(self) -> None:
        for users in self.groups.values():
            for user in users:
                if user.client is not None:
                    user.client.abort()

    def pairs_of(self, group: str) -> list[tuple[User, User]]:
        """The group's conversations: fixed random pairs, drawn once."""
        pairs = self.pairs.get(group)
        if pairs is None:
            users = list(self.groups.get(group, []))
            self.rng.shuffle(users)
            pairs = [(users[i], users[i + 1]) for i in range(0, len(users) - 1, 2)]
            self.pairs[group] = pairs
        return pairs

    # --- logins ----------------------------------------------------------------------

    async def login(self, username: str, password: str, timeout: float) -> int:
        """One ``POST /v1/login`` on a fresh connection; returns the HTTP status (0 when
        there was no answer)."""
        loop = self.loop
        answer: asyncio.Future[int] = loop.create_future()
        credentials = protocol.Credentials(username=username, password=password)
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(
                    lambda: LoginClient(self, credentials, answer), self.address, self.port
                ),
                timeout,
            )
        except (OSError, TimeoutError):
            return 0
        try:
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            return 0
        finally:
            transport.abort()
