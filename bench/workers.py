"""The load generator's worker process: many simulated users on one uvloop.

Each worker owns a share of the simulated users, one ``asyncio.Protocol`` per connection
around a libchat :class:`~libchat.client.ClientConnection`, like chatd's own glue. The
main process (``bench.load``) sends it commands over a pipe; each command runs as a task
and answers with one dict, so a side stream and a storm can run at the same time.

Sender and recipient of every pair live in the same worker, so send -> ack and
send -> push latencies come from one monotonic clock. Every loop here is bounded in
count and time.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import resource
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any

from libchat import protocol
from libchat.backoff import Backoff
from libchat.client import ClientConfig, ClientConnection
from libchat.events import ConnectionClosed, HttpResponse, Upgraded
from libchat.limits import MAX_SEQS_PER_DELIVERED
from libchat.outbox import SeenSeqs
from libchat.protocol import Ack, Delivered, DeliveredReceipt, Error, Hello, Message, Send, Welcome

BODY = "load test body " * 11  # 165 characters: a send frame of about 250 bytes
TICK = 0.005  # seconds between pacing steps of a stream
POLL = 0.02  # seconds between looks at a condition (drain, storm progress)
CONNECT_TIMEOUT = 60.0  # seconds for one connection to reach its welcome
MAX_CONNECT_ATTEMPTS = 8  # attempts per user when building the initial population


def raise_nofile_limit() -> int:
    """Raise this process's open-file soft limit to the hard limit; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Record:
    """One message's life as the load generator saw it (loop-clock times)."""

    __slots__ = ("ack_seq", "acked_at", "push_seq", "pushed_at", "receipt_at", "sent_at")

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at
        self.acked_at = 0.0
        self.ack_seq = -1
        self.pushed_at = 0.0
        self.push_seq = -1
        self.receipt_at = 0.0


class Run:
    """The accounting of one stream: every message it sent and what came back."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.records: dict[str, Record] = {}
        self.ack_ms: list[float] = []
        self.push_ms: list[float] = []
        self.receipt_ms: list[float] = []
        self.duplicates = 0
        self.skipped = 0  # sends due while the chosen sender was not connected
        self.errors: dict[str, int] = {}

    def pending(self) -> int:
        """Messages still waiting for their ack, push or receipt."""
        return sum(
            1 for r in self.records.values() if not (r.acked_at and r.pushed_at and r.receipt_at)
        )

    def summary(self) -> dict[str, Any]:
        records = self.records.values()
        acked = sum(1 for r in records if r.acked_at)
        pushed = sum(1 for r in records if r.pushed_at)
        lost = sum(1 for r in records if r.acked_at and not r.pushed_at)
        return {
            "sent": len(self.records),
            "acked": acked,
            "delivered": pushed,
            "receipts": len(self.receipt_ms),
            "lost": lost,
            "unacked": len(self.records) - acked,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "errors": dict(self.errors),
            "ack_ms": self.ack_ms,
            "push_ms": self.push_ms,
            "receipt_ms": self.receipt_ms,
        }


class User:
    """A simulated user: survives its connections (seen seqs, backoff, storm marks)."""

    def __init__(self, name: str, token: str, rng: random.Random) -> None:
        self.name = name
        self.token = token
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

    def __init__(self, worker: Worker, user: User) -> None:
        self.worker = worker
        self.user = user
        self.loop = worker.loop
        self.conn = ClientConnection(ClientConfig(host=worker.host), worker.rng)
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
        now = self.loop.time()
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
            self.worker.on_message(self, event, now)  # type: ignore[arg-type]
        elif kind is Ack:
            self.worker.on_ack(event, now)  # type: ignore[arg-type]
        elif kind is DeliveredReceipt:
            self.worker.on_receipt(event, now)  # type: ignore[arg-type]
        elif kind is Upgraded:
            self.conn.send(Hello(protocol="1.0", token=self.user.token), now)
        elif kind is Welcome:
            self.is_welcomed = True
            self.user.welcomed_at = now
            self.user.welcomed.set()
            self.user.backoff.connected(now)
        elif kind is Error:
            self.worker.on_error(event)  # type: ignore[arg-type]
        elif kind is HttpResponse or kind is ConnectionClosed:
            self.abort()

    def send(self, frame: protocol.ClientFrame) -> None:
        self.conn.send(frame, self.loop.time())
        self.queue_flush()

    def queue_flush(self) -> None:
        if not self._dirty:
            self._dirty = True
            self.worker.queue_flush(self)

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
        self, worker: Worker, credentials: protocol.Credentials, answer: asyncio.Future[int]
    ) -> None:
        self.loop = worker.loop
        self.conn = ClientConnection(ClientConfig(host=worker.host), worker.rng)
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


class Worker:
    """One process's users, streams and command loop."""

    def __init__(self, index: int, host: str, pipe: Connection, seed: int) -> None:
        self.index = index
        self.host = host
        address, _, port = host.rpartition(":")
        self.address = address
        self.port = int(port)
        self.pipe = pipe
        self.rng = random.Random(seed)
        self.loop = asyncio.get_running_loop()
        self.groups: dict[str, list[User]] = {}
        self.pairs: dict[str, list[tuple[User, User]]] = {}
        self.runs: dict[str, Run] = {}  # message id prefix -> the run that sent it
        self._ids = itertools.count(1)
        self._dirty: list[Client] = []
        self._flush_scheduled = False
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

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

    # --- what comes back -------------------------------------------------------------

    def _record(self, message_id: str) -> tuple[Run, Record] | None:
        run = self.runs.get(message_id.partition("-")[0])
        if run is None:
            return None
        record = run.records.get(message_id)
        return None if record is None else (run, record)

    def on_ack(self, ack: Ack, now: float) -> None:
        found = self._record(ack.id)
        if found is None:
            return
        run, record = found
        if not record.acked_at:
            record.acked_at = now
            record.ack_seq = ack.seq
            run.ack_ms.append((now - record.sent_at) * 1000)

    def on_message(self, client: Client, message: Message, now: float) -> None:
        user = client.user
        seq = message.seq
        if seq == user.awaited_seq and not user.caught_up_at:
            user.caught_up_at = now
        if not user.withhold:
            client.to_confirm.append(seq)
        if seq in user.seen:
            return  # a repeat on the wire (at least once): the application never sees it
        user.seen.add(seq)
        user.pushes += 1
        if user.on_push is not None:
            user.on_push(user, message, now)
        found = self._record(message.id)
        if found is None:
            return
        run, record = found
        if record.pushed_at:
            if record.push_seq != seq:
                run.duplicates += 1  # the same message stored twice
            return
        record.pushed_at = now
        record.push_seq = seq
        if record.ack_seq >= 0 and record.ack_seq != seq:
            run.duplicates += 1
        run.push_ms.append((now - record.sent_at) * 1000)

    def on_receipt(self, receipt: DeliveredReceipt, now: float) -> None:
        found = self._record(receipt.id)
        if found is None:
            return
        run, record = found
        if not record.receipt_at:
            record.receipt_at = now
            run.receipt_ms.append((now - record.sent_at) * 1000)

    def on_error(self, error: Error) -> None:
        found = self._record(error.ref) if error.ref else None
        if found is not None:
            errors = found[0].errors
            errors[error.code] = errors.get(error.code, 0) + 1

    # --- commands --------------------------------------------------------------------

    async def serve(self) -> None:
        """Read commands until ``exit``; each runs as a task and answers by its tag."""
        self.loop.add_reader(self.pipe.fileno(), self._on_command)
        os.set_blocking(self.pipe.fileno(), True)  # the loop made it non-blocking: replies are big
        await self._done.wait()
        self.loop.remove_reader(self.pipe.fileno())
        for users in self.groups.values():
            for user in users:
                if user.client is not None:
                    user.client.abort()

    def _on_command(self) -> None:
        while self.pipe.poll():
            tag, name, params = self.pipe.recv()
            if name == "exit":
                self._done.set()
                return
            task = self.loop.create_task(self._run_command(tag, name, params))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_command(self, tag: int, name: str, params: dict[str, Any]) -> None:
        handler: Callable[..., Coroutine[Any, Any, dict[str, Any]]] = getattr(self, "cmd_" + name)
        try:
            reply = await handler(**params)
        except Exception as exc:  # reported to the main process, which fails the run
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        self.pipe.send((tag, reply))

    # --- connecting ------------------------------------------------------------------

    async def _connect_once(self, user: User, timeout: float) -> bool:
        try:
            _, client = await asyncio.wait_for(
                self.loop.create_connection(lambda: Client(self, user), self.address, self.port),
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
            if await self._connect_once(user, min(CONNECT_TIMEOUT, left)):
                return True
            user.backoff.disconnected(self.loop.time())
            await asyncio.sleep(
                min(user.backoff.next_delay(), max(0.0, deadline - self.loop.time()))
            )
        return False

    async def cmd_connect(
        self, group: str, users: list[tuple[str, str]], concurrency: int, timeout: float
    ) -> dict[str, Any]:
        """Connect ``users`` (name, token) as ``group``, ``concurrency`` at a time."""
        members = self.groups.setdefault(group, [])
        new = [User(name, token, random.Random(self.rng.random())) for name, token in users]
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

    async def cmd_disconnect(self, group: str) -> dict[str, Any]:
        users = self.groups.pop(group, [])
        self.pairs.pop(group, None)
        for user in users:
            if user.client is not None:
                user.client.abort()
        return {"closed": len(users)}

    async def cmd_count(self, group: str) -> dict[str, Any]:
        users = self.groups.get(group, [])
        return {"live": sum(1 for user in users if user.is_live), "users": len(users)}

    # --- streams ---------------------------------------------------------------------

    def _pairs(self, group: str) -> list[tuple[User, User]]:
        """The group's conversations: fixed random pairs, drawn once."""
        pairs = self.pairs.get(group)
        if pairs is None:
            users = list(self.groups.get(group, []))
            self.rng.shuffle(users)
            pairs = [(users[i], users[i + 1]) for i in range(0, len(users) - 1, 2)]
            self.pairs[group] = pairs
        return pairs

    async def cmd_stream(
        self, group: str, name: str, rate: float, duration: float, drain: float
    ) -> dict[str, Any]:
        """Send ``rate`` messages/s for ``duration`` s among fixed random pairs of the
        group, then wait up to ``drain`` s for every ack, push and receipt."""
        pairs = self._pairs(group)
        if not pairs:
            return {"error": f"group {group!r} has fewer than 2 users"}
        prefix = f"{name}{self.index}"
        run = Run(prefix)
        self.runs[prefix] = run
        body = BODY
        loop = self.loop
        rng = self.rng
        started = loop.time()
        end = started + duration
        sent = 0
        while True:
            now = loop.time()
            if now >= end:
                break
            due = int(rate * (now - started)) - sent
            for _ in range(due):
                a, b = pairs[rng.randrange(len(pairs))]
                sender, recipient = (a, b) if rng.random() < 0.5 else (b, a)
                sent += 1
                client = sender.client
                if client is None or not client.is_welcomed or not recipient.is_live:
                    run.skipped += 1  # a pair with a side still (re)connecting
                    continue
                message_id = f"{prefix}-{sent}"
                run.records[message_id] = Record(now)
                client.send(Send(id=message_id, to=recipient.name, body=body))
            await asyncio.sleep(TICK)
        sending_s = loop.time() - started
        drain_end = loop.time() + drain
        while run.pending() and loop.time() < drain_end:
            await asyncio.sleep(POLL * 5)
        del self.runs[prefix]
        summary = run.summary()
        summary["sending_s"] = sending_s
        return summary

    # --- storm -----------------------------------------------------------------------

    async def cmd_mark(self, group: str, timeout: float) -> dict[str, Any]:
        """Give every user of the group one pushed but unconfirmed message (sent by its
        pair partner), so that its next connection must catch up on it."""
        users = self.groups.get(group, [])
        prefix = f"mark{self.index}"
        run = Run(prefix)
        self.runs[prefix] = run
        awaited: dict[str, User] = {}
        for user in users:
            user.withhold = True
        for index, user in enumerate(users):
            partner = users[index - 1] if index % 2 else users[(index + 1) % len(users)]
            if partner.client is None or not partner.client.is_welcomed:
                continue
            message_id = f"{prefix}-{index}"
            run.records[message_id] = Record(self.loop.time())
            awaited[message_id] = user
            partner.client.send(Send(id=message_id, to=user.name, body="mark"))
            if index % 200 == 199:
                await asyncio.sleep(0)  # let acks and pushes flow
        deadline = self.loop.time() + timeout
        while self.loop.time() < deadline:
            if all(run.records[i].pushed_at for i in awaited):
                break
            await asyncio.sleep(POLL)
        marked = 0
        for message_id, user in awaited.items():
            record = run.records[message_id]
            if record.pushed_at:
                user.awaited_seq = record.push_seq
                user.caught_up_at = 0.0
                marked += 1
        del self.runs[prefix]
        return {"marked": marked, "users": len(users)}

    async def cmd_storm(self, group: str, timeout: float) -> dict[str, Any]:
        """Drop every connection of the group at once; each user reconnects with
        libchat's backoff. Reports when each was welcomed and caught up again."""
        users = self.groups.get(group, [])
        loop = self.loop
        dropped_at = loop.time()
        for user in users:
            user.withhold = False
            if user.client is not None:
                user.client.abort()
                user.client = None
                user.welcomed.clear()
            user.backoff.disconnected(dropped_at)
        deadline = dropped_at + timeout
        welcome_s: list[float] = []
        attempts = 0

        async def back(user: User) -> None:
            nonlocal attempts
            while loop.time() < deadline:
                await asyncio.sleep(min(user.backoff.next_delay(), deadline - loop.time()))
                attempts += 1
                if await self._connect_once(user, min(CONNECT_TIMEOUT, deadline - loop.time())):
                    welcome_s.append(user.welcomed_at - dropped_at)
                    return
                user.backoff.disconnected(loop.time())

        await asyncio.gather(*(back(user) for user in users))
        while loop.time() < deadline:
            if all(user.caught_up_at or user.awaited_seq < 0 for user in users):
                break
            await asyncio.sleep(POLL)
        caught = [user.caught_up_at - dropped_at for user in users if user.caught_up_at]
        return {
            "users": len(users),
            "welcomed": len(welcome_s),
            "caught_up": len(caught),
            "awaited": sum(1 for user in users if user.awaited_seq >= 0),
            "attempts": attempts,
            "welcome_s": welcome_s,
            "caught_up_s": caught,
        }

    # --- backlog ---------------------------------------------------------------------

    async def cmd_backlog(
        self, name: str, token: str, expected: int, timeout: float
    ) -> dict[str, Any]:
        """Connect one user with ``expected`` queued messages; time until all arrive."""
        loop = self.loop
        user = User(name, token, random.Random(1))
        arrived: list[float] = []
        user.on_push = lambda _user, _message, now: arrived.append(now)
        started = loop.time()
        if not await self._connect_once(user, timeout):
            return {"error": "the backlog user could not connect"}
        welcomed = loop.time()
        deadline = started + timeout
        while len(arrived) < expected and loop.time() < deadline:
            await asyncio.sleep(POLL / 4)
        done = arrived[-1] if arrived else loop.time()
        if user.client is not None:
            user.client.abort()
        return {
            "received": len(arrived),
            "expected": expected,
            "welcome_s": welcomed - started,
            "all_s": done - started,
            "first_s": (arrived[0] - started) if arrived else None,
        }

    # --- logins ----------------------------------------------------------------------

    async def _login(self, username: str, password: str, timeout: float) -> int:
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

    async def cmd_logins(
        self, usernames: list[str], password: str, rate: float, duration: float
    ) -> dict[str, Any]:
        """``rate`` logins/s for ``duration`` s, each on its own connection."""
        loop = self.loop
        started = loop.time()
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        tasks: list[asyncio.Task[None]] = []

        async def one(username: str) -> None:
            begun = loop.time()
            status = await self._login(username, password, 30.0)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append((loop.time() - begun) * 1000)

        count = 0
        while loop.time() - started < duration:
            due = int(rate * (loop.time() - started)) - count
            for _ in range(due):
                tasks.append(loop.create_task(one(usernames[count % len(usernames)])))
                count += 1
            await asyncio.sleep(TICK * 4)
        await asyncio.gather(*tasks)
        return {
            "attempted": count,
            "statuses": {str(code): n for code, n in statuses.items()},
            "login_ms": latencies,
            "seconds": loop.time() - started,
        }


def worker_main(index: int, host: str, pipe: Connection, seed: int) -> None:
    """A worker process's entry point (``multiprocessing`` target)."""
    import uvloop

    raise_nofile_limit()

    async def main() -> None:
        worker = Worker(index, host, pipe, seed)
        await worker.serve()

    uvloop.run(main())
    pipe.close()
