"""The hub: who is online on which connections, and everything that moves between them.

A user may be connected from several devices; every connection of a user gets every
push. The hub authenticates hellos, accepts sends (rate limit, recipient, store commit,
then ack and push), streams catch-up, records delivered and read marks and sends their
receipts, forwards typing, and pushes presence. It never touches sockets: it talks to
:class:`Session` objects (one per WebSocket, implemented by ``chatd.net``).

Typing goes only to users the sender shares a conversation with: the hub keeps, per user
online on this node, the set of its conversation peers, loaded from the store once and
grown by every message pushed (local sends and other nodes' alike). Typing and read
frames are rate-limited per connection: typing over its rate is dropped silently (it is
ephemeral), a read over its rate gets ``rate_limited`` with ``retry_after_ms``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from chatd import bus as busmod
from chatd.accounts import Accounts, Identity, Unauthorized
from chatd.config import Config
from chatd.observe.logs import EventLogger
from chatd.observe.metrics import Metrics
from chatd.observe.refusals import LogThrottle
from chatd.ratelimit import KeyedBuckets, TokenBucket
from chatd.store import NewMessage, Retirement, Store, StoreError, User
from chatd.turn import LoopTurn, TurnBatch
from chatd.users import UserDirectory
from libchat import limits, protocol
from libchat.events import SendRefused
from libchat.protocol import (
    Ack,
    Delivered,
    DeliveredReceipt,
    Error,
    Hello,
    Message,
    PeerTyping,
    Presence,
    Read,
    ReadReceipt,
    Reauth,
    Reauthed,
    Send,
    Typing,
    Welcome,
)

log = EventLogger(logging.getLogger(__name__))
T = TypeVar("T")

# Seconds a send waits for its commit before it is answered internal_error anyway: the
# contract's "every request is answered within a bound", even while the store is down.
SUBMIT_BOUND = 2.0
CATCH_UP_BATCH = 500  # undelivered messages read and written per step of a catch-up
MAX_TRACKED_PUSHES = 10_000  # unconfirmed seqs remembered per connection
# why the last push of a message went unconfirmed, for the log line of its next push:
# kept per node for this many messages (a few MB at most), the oldest forgotten first
MAX_REMEMBERED_FAILURES = 100_000
PRESENCE_FRAMES_CACHED = 65_536  # encoded presence frames kept (two per user)
TYPING_RATE = 1.0  # typing frames per second per connection: clients send one every 3 s
TYPING_BURST = 5  # typing into a few conversations one after the other
READ_RATE = 5.0  # read frames per second per connection: one per message seen, at most
READ_BURST = 30  # after a reconnect a client sends one per conversation read offline


class Session(Protocol):
    """One WebSocket connection as the hub sees it."""

    conn_id: int
    peer_ip: str
    upgrade_token: str | None  # the token of the upgrade's Authorization header, if any
    identity: Identity | None  # set by the hub once the hello is accepted

    def signed_in(self, identity: Identity) -> None:
        """Its hello was accepted: set ``identity`` (it is no longer anonymous)."""

    def send_frame(self, frame: protocol.ServerFrame) -> None: ...

    def send_text(self, text: str) -> None: ...

    def fail(self, code: str, close_code: int, message: str | None = None) -> None: ...

    async def drained(self) -> None:
        """Return once the socket can take more output (backpressure)."""


@functools.lru_cache(maxsize=PRESENCE_FRAMES_CACHED)
def _presence_frame(user: str, online: bool) -> str:
    """A presence frame, encoded once for all who get it: a user coming online or going
    offline is told to each of its peers' connections (hundreds of frames for a user
    with many conversations, millions in a reconnect storm)."""
    return protocol.encode_frame(Presence(user=user, online=online))


class _Online:
    """Hub-side state of one authenticated session."""

    __slots__ = (
        "catching_up", "deferred", "expiry", "jti", "presence_sent", "read_bucket", "session",
        "typing_bucket", "unconfirmed", "user",
    )

    def __init__(self, session: Session, user: User, jti: str) -> None:
        self.session = session
        self.user = user
        self.jti = jti
        self.catching_up = True
        # live pushes held back during catch-up: (seq, frame, addressed to this user)
        self.deferred: list[tuple[int, str, bool]] = []
        self.expiry: asyncio.TimerHandle | None = None
        self.presence_sent: dict[str, bool] = {}  # the last presence told, per peer
        # seqs pushed to this connection as the recipient and not yet confirmed: a
        # repeated send pushes again only where its first push never went
        self.unconfirmed: set[int] = set()
        # per-connection limits on typing and read frames, made at the first of each
        self.typing_bucket: TokenBucket | None = None
        self.read_bucket: TokenBucket | None = None

    def pushed(self, seq: int) -> None:
        if len(self.unconfirmed) >= MAX_TRACKED_PUSHES:
            self.unconfirmed.clear()  # forget, at worst a later repeat is pushed again
        self.unconfirmed.add(seq)

    def tell_presence(self, user: str, online: bool) -> None:
        """Push a peer's presence unless this connection already has that state: a
        newcomer's snapshot of who is online can overlap the peer's own announcement."""
        if self.presence_sent.get(user) is not online:
            self.presence_sent[user] = online
            self.session.send_text(_presence_frame(user, online))

    def push(self, seq: int, text: str, *, to_me: bool) -> bool:
        """Write a push now (True), or hold it back until the catch-up is done (False)."""
        if self.catching_up:
            self.deferred.append((seq, text, to_me))
            return False
        self.session.send_text(text)
        return True


class _Peers:
    """The usernames one online user shares a conversation with. Conversations are never
    deleted, so the set only grows: what the store said, plus every message pushed since
    the load began (``loaded`` is done once the store answered)."""

    __slots__ = ("loaded", "names")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.names: set[str] = set()
        self.loaded: asyncio.Future[None] = loop.create_future()


class Hub:
    def __init__(
        self,
        config: Config,
        store: Store,
        users: UserDirectory,
        accounts: Accounts,
        metrics: Metrics,
        *,
        turn: LoopTurn,
        bus: busmod.Bus | None = None,
        on_store_changed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._bus: busmod.Bus = bus or busmod.LocalBus()
        self._multi_node = not isinstance(self._bus, busmod.LocalBus)
        # Every connection's sends of one loop turn go to the store in one submit, then
        # their delivered marks in one job (sends first: a turn keeps frame order).
        self._turn = turn
        self._turn_sends: TurnBatch[tuple[_Online, NewMessage]] = turn.batch(self._commit_turn)
        self._turn_delivered: TurnBatch[tuple[_Online, list[int]]] = turn.batch(
            self._record_delivered)
        self._remote_seqs: list[int] = []  # MessageStored seqs from other nodes, to fetch
        # per recipient id: sends accepted under --max-queue and not yet committed
        self._queue_in_flight: dict[int, int] = {}
        self._store = store
        self._users = users
        self._accounts = accounts
        self._metrics = metrics
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._by_session: dict[int, _Online] = {}
        self._by_user: dict[str, list[_Online]] = {}
        self._by_jti: dict[str, list[_Online]] = {}
        # per user, across its connections; idle ones are dropped when there are many
        self._send_buckets = KeyedBuckets(config.send_rate, config.send_burst)
        self._peers: dict[str, _Peers] = {}  # per user online here: its conversation peers
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[int, list[object]] = {}  # frames that arrived while a hello was checked
        self._stopping = False  # shutting down: sends are refused, not accepted
        # a store outage fails every turn's job: a few lines a minute say so, not thousands
        self._store_log = LogThrottle(lines=3, window=60.0)
        # sends handed to the store and not yet answered, by (connection, client id)
        self._committing: dict[tuple[int, str], _Online] = {}
        # seq -> why its last push went unconfirmed (see MAX_REMEMBERED_FAILURES)
        self._push_failures: dict[int, str] = {}
        # per user id: the store job counting its failed pushes, which a catch-up awaits
        self._counting_failures: dict[int, asyncio.Task[None]] = {}
        # the store was changed by another process (chatd.bus.StoreChanged), or such
        # notices may have been lost (a bus resync): the server polls for the changes
        self._on_store_changed = on_store_changed
        accounts.on_revoked = self._logged_out
        accounts.on_retired = self._retired_here
        accounts.on_family_revoked = self._family_revoked_here

    # --- bookkeeping ------------------------------------------------------------------

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = self._loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.logger.error("hub.task_failed", exc_info=task.exception())

    def stop_accepting(self) -> None:
        """Shutdown begins: every send from now on gets ``internal_error`` (send it again,
        to another node or after the restart) instead of being accepted."""
        self._stopping = True

    def refuse_uncommitted(self) -> None:
        """Shutdown, once the grace for commits is over: every send still waiting for its
        commit gets its error now, before the connections close. (If the commit lands
        after all, a resend gets the original ack.)"""
        waiting, self._committing = self._committing, {}
        for (_, client_id), online in waiting.items():
            self._refuse_for_shutdown(online, client_id)

    def _refuse_for_shutdown(self, online: _Online, client_id: str) -> None:
        self._metrics.errors_total.labels(code="internal_error").inc()
        online.session.send_frame(Error(
            code="internal_error", ref=client_id,
            message="the server is shutting down; send it again",
        ))

    async def wait_idle(self) -> None:
        """Wait for every in-flight operation (sends awaiting their commit, receipts)."""
        while self._tasks or self._turn.pending:
            await asyncio.sleep(0)  # let this turn's sends reach the store
            if self._tasks:
                # asyncio.wait, not gather: a caller's timeout must not cancel them (the
                # sends among them are answered by refuse_uncommitted)
                await asyncio.wait(list(self._tasks))

    # --- frames -----------------------------------------------------------------------

    def receive(self, session: Session, frames: list[object]) -> None:
        """Handle the frames one read produced, in order. Sends and delivered marks are
        grouped: every connection's of one loop turn go to the store together."""
        pending = self._pending.get(session.conn_id)
        if pending is not None:  # a hello is being checked: keep order
            pending.extend(frames)
            return
        online = self._by_session.get(session.conn_id)
        sends: list[Send] = []
        seqs: list[int] = []
        for index, frame in enumerate(frames):
            if isinstance(frame, Hello):
                if online is None:
                    self._hello(session, frame, frames[index + 1 :])
                    return
                session.send_frame(Error(code="invalid_frame", message="hello was already said"))
            elif online is None:
                continue  # the engine only hands frames over after a hello
            elif isinstance(frame, Send):
                if self._stopping:
                    self._refuse_for_shutdown(online, frame.id)
                else:
                    sends.append(frame)
            elif isinstance(frame, Delivered):
                seqs.extend(frame.seqs)
            elif isinstance(frame, Read):
                if self._read_allowed(online):
                    self._spawn(self._read(online, frame))
            elif isinstance(frame, Typing):
                self._typing(online, frame)
            elif isinstance(frame, Reauth):
                self._reauth(online, frame)
            elif isinstance(frame, SendRefused):
                self._reject(online, frame.id, frame.code, frame.message)
        if online is not None:
            if sends:
                self._accept_sends(online, sends)
            if seqs:
                self._turn_delivered.add((online, seqs))

    # --- hello, catch-up, presence ---------------------------------------------------

    def _hello(self, session: Session, hello: Hello, rest: list[object]) -> None:
        token = hello.token or session.upgrade_token
        if token is None or (
            hello.token and session.upgrade_token and hello.token != session.upgrade_token
            and not self._same_user(hello.token, session.upgrade_token)
        ):
            self._refuse_hello(session, "no valid token")
            return
        try:
            identity = self._accounts.check_cached(token)
        except Unauthorized:
            self._refuse_hello(session, "invalid or expired token")
            return
        version = protocol.negotiated_version(hello.protocol)
        if identity is not None:
            if self._welcome(session, identity, version) and rest:
                self.receive(session, rest)
            return
        self._pending[session.conn_id] = list(rest)
        self._spawn(self._hello_slow(session, token, version))

    def _refuse_hello(self, session: Session, message: str) -> None:
        self._metrics.refusals.record(log, "token.refused", key=session.peer_ip,
                                      level=logging.INFO, ip=session.peer_ip,
                                      conn_id=session.conn_id, op="hello")
        session.fail("unauthorized", limits.CLOSE_UNAUTHORIZED, message)

    def _same_user(self, first: str, second: str) -> bool:
        try:
            one = self._accounts.check_cached(first)
            two = self._accounts.check_cached(second)
        except Unauthorized:
            return False
        return one is not None and two is not None and one.user.id == two.user.id

    async def _hello_slow(self, session: Session, token: str, version: str) -> None:
        try:
            identity = await asyncio.wait_for(self._accounts.authenticate(token), SUBMIT_BOUND)
        except Unauthorized:
            self._pending.pop(session.conn_id, None)
            self._refuse_hello(session, "invalid or expired token")
            return
        except (TimeoutError, StoreError):
            # the store cannot tell who this is now: say so, and to come back later
            self._pending.pop(session.conn_id, None)
            session.fail("internal_error", limits.CLOSE_TRY_AGAIN_LATER,
                         "the server cannot check tokens right now; reconnect later")
            return
        rest = self._pending.pop(session.conn_id, [])
        if self._welcome(session, identity, version) and rest:
            self.receive(session, rest)

    def _welcome(self, session: Session, identity: Identity, version: str) -> bool:
        """Welcome a session whose token checked out, in the negotiated protocol
        ``version``; False when the user already has as many connections as allowed
        (the new one is refused, 4004)."""
        user = identity.user
        devices = self._by_user.get(user.username, ())
        if len(devices) >= self._config.max_connections_per_user:
            self._metrics.refusals.record(log, "connection.too_many", key=session.peer_ip,
                                          ip=session.peer_ip, user=user.username)
            session.fail(
                "too_many_connections", limits.CLOSE_TOO_MANY_CONNECTIONS,
                f"at most {self._config.max_connections_per_user} connections per user",
            )
            return False
        session.signed_in(identity)
        session.send_frame(
            Welcome(user_id=user.id, username=user.username, protocol=version,
                    server_time=self._now_ms())
        )
        online = _Online(session, user, identity.claims.jti)
        self._by_session[session.conn_id] = online
        first_device = user.username not in self._by_user
        self._by_user.setdefault(user.username, []).append(online)
        self._by_jti.setdefault(online.jti, []).append(online)
        self._arm_expiry(online, self._accounts.usable_until(identity.claims))
        self._metrics.users_online.set(len(self._by_user))
        self._spawn(self._catch_up(online, first_device))
        return True

    async def _catch_up(self, online: _Online, first_device: bool) -> None:
        session = online.session
        after = 0
        counting = self._counting_failures.get(online.user.id)
        if counting is not None:  # its last connection's failed pushes: counted first
            await asyncio.wait([counting])
        try:
            while True:
                batch = await self._store.queued(online.user.id, after, CATCH_UP_BATCH)
                now_ms = self._now_ms()
                redelivered = 0
                for queued in batch:
                    message = queued.message
                    online.pushed(message.seq)
                    session.send_text(protocol.encode_frame(message))
                    # from the store, on a new connection: queued while offline, or
                    # pushed before and never confirmed (then attempt > 1)
                    attempt = queued.failed_pushes + 1
                    redelivered += attempt > 1
                    error = self._push_failures.get(message.seq)
                    log.info(
                        "message.redelivered", seq=message.seq, client_id=message.id,
                        sender=message.sender, recipient=message.recipient,
                        conn_id=session.conn_id, age_ms=now_ms - message.ts, attempt=attempt,
                        **({} if error is None else {"last_error": error}),
                    )
                if batch:
                    after = batch[-1].message.seq
                    self._metrics.messages_pushed_total.inc(len(batch))
                    self._metrics.messages_redelivered_total.inc(redelivered)
                if len(batch) < CATCH_UP_BATCH:
                    break
                await session.drained()
        except StoreError:
            log.exception("catch_up.failed", user=online.user.username)
        online.catching_up = False
        held_back = 0
        for seq, text, to_me in online.deferred:
            # The catch-up covered messages to this user up to `after`; copies of its
            # own messages (from its other devices) are never in it.
            if seq > after or not to_me:
                session.send_text(text)
                held_back += 1 if to_me else 0
        online.deferred.clear()
        if held_back:  # counted now that they are written, once (not if the catch-up had them)
            self._metrics.messages_pushed_total.inc(held_back)
        if self._config.presence and self._by_session.get(session.conn_id) is online:
            await self._announce(online, first_device)
            if first_device:
                self._publish(busmod.Presence(user=online.user.username, online=True))

    async def _announce(self, online: _Online, first_device: bool) -> None:
        cache = self._peers_of(online.user)
        await cache.loaded
        if self._by_session.get(online.session.conn_id) is not online:
            return
        for peer in sorted(cache.names):
            peer_sessions = self._by_user.get(peer)
            if not peer_sessions:
                continue
            online.tell_presence(peer, True)
            if first_device:
                for other in peer_sessions:
                    other.tell_presence(online.user.username, True)

    def disconnected(self, session: Session, cause: str = "closed") -> None:
        """A session's connection is gone; ``cause`` says why (for the log)."""
        self._pending.pop(session.conn_id, None)
        online = self._by_session.pop(session.conn_id, None)
        if online is None:
            return
        if online.expiry is not None:
            online.expiry.cancel()
        if online.unconfirmed:
            self._push_unconfirmed(online, cause)
        _remove(self._by_jti, online.jti, online)
        last_device = _remove(self._by_user, online.user.username, online)
        self._metrics.users_online.set(len(self._by_user))
        if last_device:
            self._peers.pop(online.user.username, None)
            if self._config.presence:
                self._spawn(self._announce_offline(online.user))

    def _push_unconfirmed(self, online: _Online, cause: str) -> None:
        """A connection closed with pushes its user never confirmed: they are pushed
        again from the store on a later connection. Remember why (that push's log line
        says so) and count the failed attempts in the store, off the live path."""
        seqs = sorted(online.unconfirmed)
        log.info("message.push_unconfirmed", user=online.user.username,
                 conn_id=online.session.conn_id, count=len(seqs), reason=cause)
        failures = self._push_failures
        for seq in seqs:
            failures.pop(seq, None)  # the newest at the end: the oldest go first
            failures[seq] = cause
        while len(failures) > MAX_REMEMBERED_FAILURES:
            del failures[next(iter(failures))]
        user_id = online.user.id
        task = self._spawn(
            self._count_failed_pushes(user_id, seqs, self._counting_failures.get(user_id))
        )
        self._counting_failures[user_id] = task
        task.add_done_callback(functools.partial(self._counted, user_id))

    async def _count_failed_pushes(
        self, user_id: int, seqs: list[int], previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:  # done before this one: the latest covers them all
            await asyncio.wait([previous])
        try:
            await self._store.count_failed_pushes(user_id, seqs)
        except StoreError:
            if self._store_log.allow(log, "store.error", "count_failed_pushes"):
                log.exception("store.error", op="count_failed_pushes", count=len(seqs))

    def _counted(self, user_id: int, task: asyncio.Task[None]) -> None:
        if self._counting_failures.get(user_id) is task:
            del self._counting_failures[user_id]

    async def _announce_offline(self, user: User) -> None:
        if user.username in self._by_user:  # came back meanwhile
            return
        self._publish(busmod.Presence(user=user.username, online=False))
        for peer in await self._store.peers(user.id):
            for other in self._by_user.get(peer, ()):
                other.tell_presence(user.username, False)

    # --- tokens -----------------------------------------------------------------------

    def _arm_expiry(self, online: _Online, expires_at: float) -> None:
        if online.expiry is not None:
            online.expiry.cancel()
        delay = max(0.0, expires_at - self._clock())
        online.expiry = self._loop.call_later(delay, self._expire, online)

    def _expire(self, online: _Online) -> None:
        online.expiry = None
        online.session.fail("unauthorized", limits.CLOSE_UNAUTHORIZED, "token expired")

    def revoke_token(self, jti: str) -> None:
        """Close every connection that authenticated with this token (logout)."""
        for online in list(self._by_jti.get(jti, ())):
            online.session.fail("unauthorized", limits.CLOSE_UNAUTHORIZED, "token revoked")

    def revoke_user(self, user: User) -> None:
        """Close every connection of a user whose tokens died (password, disable)."""
        self._users.remember(user)
        for online in list(self._by_user.get(user.username, ())):
            claims = online.session.identity.claims if online.session.identity else None
            if user.disabled or claims is None or claims.generation != user.token_generation:
                online.session.fail("unauthorized", limits.CLOSE_UNAUTHORIZED, "token revoked")

    def retire_token(self, retirement: Retirement) -> None:
        """A rotating refresh retired this token: its connections that do not ``reauth``
        with a newer token close (4001) when the grace ends."""
        for online in self._by_jti.get(retirement.jti, ()):
            identity = online.session.identity
            if identity is not None:
                self._arm_expiry(online, self._accounts.usable_until(identity.claims))

    def revoke_family(self, family: str) -> None:
        """Close every connection whose token belongs to ``family`` (a reused token)."""
        for online in list(self._by_session.values()):
            identity = online.session.identity
            if identity is not None and identity.claims.family == family:
                online.session.fail("unauthorized", limits.CLOSE_UNAUTHORIZED, "token revoked")

    def _reauth(self, online: _Online, frame: Reauth) -> None:
        try:
            identity = self._accounts.check_cached(frame.token)
        except Unauthorized:
            self._refuse_reauth(online)
            return
        if identity is None:  # a key not loaded yet, or a reuse to record: the slow path
            self._spawn(self._reauth_slow(online, frame.token))
            return
        self._reauthed(online, identity)

    async def _reauth_slow(self, online: _Online, token: str) -> None:
        try:
            identity = await self._accounts.authenticate(token)
        except Unauthorized:
            self._refuse_reauth(online)
            return
        if self._by_session.get(online.session.conn_id) is online:
            self._reauthed(online, identity)

    def _refuse_reauth(self, online: _Online) -> None:
        session = online.session
        self._metrics.refusals.record(log, "token.refused", key=session.peer_ip,
                                      level=logging.INFO, ip=session.peer_ip,
                                      conn_id=session.conn_id, op="reauth")
        session.send_frame(
            Error(code="unauthorized", message="reauth needs a valid token of this user")
        )

    def _reauthed(self, online: _Online, identity: Identity) -> None:
        if identity.user.id != online.user.id:
            self._refuse_reauth(online)
            return
        _remove(self._by_jti, online.jti, online)
        online.jti = identity.claims.jti
        self._by_jti.setdefault(online.jti, []).append(online)
        online.session.identity = identity
        self._arm_expiry(online, self._accounts.usable_until(identity.claims))
        expires_in = max(0, int(identity.claims.expires_at - self._clock()))
        online.session.send_frame(Reauthed(expires_in=expires_in))

    # --- messages ---------------------------------------------------------------------

    def _accept_sends(self, online: _Online, sends: list[Send]) -> None:
        now = self._loop.time()
        user_id = online.user.id
        accepted: list[Send] = []
        for send in sends:
            if send.to == online.user.username:
                self._reject(online, send.id, "invalid_recipient", "you cannot message yourself")
                continue
            wait_ms = self._send_buckets.take(user_id, now)
            if wait_ms:
                self._metrics.errors_total.labels(code="rate_limited").inc()
                online.session.send_frame(
                    Error(code="rate_limited", ref=send.id, retry_after_ms=wait_ms,
                          message="sending too fast")
                )
                continue
            accepted.append(send)
        if not accepted:
            return
        slow: list[Send] = []
        for send in accepted:
            recipient = self._users.cached(send.to)
            if recipient is None or self._config.max_queue is not None:
                slow.append(send)  # needs the store before it can be accepted
            else:
                self._turn_sends.add((online, self._new_message(online, send, recipient)))
        if slow:
            self._spawn(self._submit(online, slow))

    def _new_message(self, online: _Online, send: Send, recipient: User) -> NewMessage:
        sender = online.user
        return NewMessage(
            sender_id=sender.id, sender=sender.username, recipient_id=recipient.id,
            recipient=recipient.username, client_id=send.id, body=send.body,
            ts=self._now_ms(),
        )

    def _commit_turn(self, sends: list[tuple[_Online, NewMessage]]) -> None:
        self._spawn(self._commit(sends))

    def _record_delivered(self, marks: list[tuple[_Online, list[int]]]) -> None:
        self._spawn(self._delivered(marks))

    def _reject(self, online: _Online, client_id: str, code: str, message: str) -> None:
        """Refuse a send, unless its id was already used: then it is a repeat, and a
        repeat gets its original ack whatever its content (the contract's rule)."""
        self._spawn(self._reject_unless_repeat(online, client_id, code, message))

    async def _reject_unless_repeat(
        self, online: _Online, client_id: str, code: str, message: str
    ) -> None:
        try:
            original = await self._store.sent_message(online.user.id, client_id)
        except StoreError:
            original = None
        if original is not None:
            online.session.send_frame(Ack(id=original.id, seq=original.seq, ts=original.ts))
            return
        self._metrics.errors_total.labels(code=code).inc()
        log.info("message.rejected", code=code, client_id=client_id, sender=online.user.username)
        online.session.send_frame(Error(code=code, ref=client_id, message=message))

    async def _submit(self, online: _Online, sends: list[Send]) -> None:
        """The slow path: recipients not in the directory yet, or a queue cap to check."""
        batch: list[tuple[_Online, NewMessage]] = []
        reserved: list[int] = []
        cap = self._config.max_queue
        try:
            for send in sends:
                recipient = await self._users.by_name(send.to)
                if recipient is None:
                    self._reject(online, send.id, "unknown_user", f"no user {send.to!r}")
                    continue
                if cap is not None:
                    # The store cannot count sends still on their way to it (this
                    # batch's, other connections'): count them here, or a burst
                    # would all pass the cap together.
                    depth = await self._store.queue_depth(recipient.id)
                    in_flight = self._queue_in_flight.get(recipient.id, 0)
                    if depth + in_flight >= cap:
                        self._reject(online, send.id, "queue_full", "the recipient's queue is full")
                        continue
                    self._queue_in_flight[recipient.id] = in_flight + 1
                    reserved.append(recipient.id)
                batch.append((online, self._new_message(online, send, recipient)))
            if batch:
                await self._commit(batch)
        finally:
            for recipient_id in reserved:
                left = self._queue_in_flight[recipient_id] - 1
                if left:
                    self._queue_in_flight[recipient_id] = left
                else:
                    del self._queue_in_flight[recipient_id]

    async def _commit(self, batch: list[tuple[_Online, NewMessage]], *, split: bool = True) -> None:
        """Store the messages; then, and only then, ack each and push it.

        The batch is one store job for every connection of a loop turn. When it fails,
        each connection's messages are submitted again on their own (``split``), so a
        failure caused by one connection's messages costs only that connection: its
        sends get ``internal_error``, the others their acks. Any exception counts: a
        store bug on one connection's values must not drop the others' messages.
        """
        keys = [(online.session.conn_id, new.client_id) for online, new in batch]
        for key, (online, _) in zip(keys, batch, strict=True):
            self._committing[key] = online
        timed_out = False
        try:
            stored = await _bounded(self._store.submit([new for _, new in batch]), SUBMIT_BOUND)
        except TimeoutError:
            # The store is down or stuck: answer now (a resend gets the original ack if
            # the commit lands after all), and do not queue per-connection retries.
            if self._store_log.allow(log, "store.slow", "submit"):
                log.error("store.slow", op="submit", count=len(batch), bound_s=SUBMIT_BOUND)
            stored, timed_out = None, True
        except Exception:
            if self._store_log.allow(log, "store.error", "submit"):
                log.exception("store.error", op="submit", count=len(batch))
            stored = None
        finally:
            for key in keys:
                self._committing.pop(key, None)
        if stored is None:
            parts = _by_connection(batch)
            if split and not timed_out and len(parts) > 1:
                await asyncio.gather(*(self._commit(part, split=False) for part in parts))
                return
            for online, new in batch:
                self._metrics.errors_total.labels(code="internal_error").inc()
                online.session.send_frame(Error(
                    code="internal_error", ref=new.client_id,
                    message="the message could not be stored; send it again",
                ))
            return
        pushed: set[int] = set()
        accepted = 0
        for (online, new), message in zip(batch, stored, strict=True):
            online.session.send_frame(Ack(id=message.id, seq=message.seq, ts=message.ts))
            if message.seq in pushed:
                continue
            pushed.add(message.seq)
            fresh = _is_fresh(new, message)
            if fresh:
                accepted += 1
                log.info(
                    "message.accepted", seq=message.seq, client_id=message.id,
                    sender=message.sender, recipient=message.recipient,
                )
            elif message.delivered_at is not None:
                continue  # a repeat of a delivered message: the original ack, nothing more
            # else a repeat nobody confirmed yet: its first push may have died with a
            # node, so push it to the recipient's connections that never got it.
            self.push(message, exclude=online.session.conn_id, repeat=not fresh)
            self._publish(busmod.MessageStored(
                recipient=message.recipient, seq=message.seq, sender=message.sender))
        if accepted:
            self._metrics.messages_accepted_total.inc(accepted)

    def push(self, message: Message, *, exclude: int | None = None, repeat: bool = False) -> None:
        """Send a stored message to the recipient's connections that do not have it
        yet, and (unless it is a ``repeat``) to the sender's other connections (its
        other devices)."""
        self._learn_peers(message.sender, message.recipient)
        text = protocol.encode_frame(message)
        seq = message.seq
        pushed = 0
        for online in self._by_user.get(message.recipient, ()):
            if seq not in online.unconfirmed:
                online.pushed(seq)
                pushed += online.push(seq, text, to_me=True)
        if pushed:
            self._metrics.messages_pushed_total.inc(pushed)
            self._metrics.push_latency_seconds.observe(
                max(0.0, self._clock() - message.ts / 1000)
            )
        if repeat:
            return
        for online in self._by_user.get(message.sender, ()):
            if online.session.conn_id != exclude:
                online.push(message.seq, text, to_me=False)

    async def _delivered(self, marks: list[tuple[_Online, list[int]]]) -> None:
        """Record the delivered marks of every connection of a loop turn in one store
        job, then send their receipts.

        When that job fails, each connection's marks are recorded on their own, so the
        others land; a connection whose own marks fail gets ``internal_error`` (its
        messages stay undelivered: confirmed again, or pushed on its next connection).
        """
        now_ms = self._now_ms()
        try:
            marked = await self._store.mark_delivered_many(
                [(online.user.id, seqs) for online, seqs in marks], now_ms
            )
        except Exception:
            log.exception("store.error", op="mark_delivered", count=len(marks))
            marked = None
        if marked is None:
            if len(marks) == 1:  # its own job failed: nobody else's to save
                self._not_recorded(marks[0][0], "delivered")
                return
            marks, marked = await self._delivered_one_by_one(marks, now_ms)
        failures = self._push_failures
        for online, seqs in marks:
            for device in self._by_user.get(online.user.username, ()):
                device.unconfirmed.difference_update(seqs)
            if failures:
                for seq in seqs:
                    failures.pop(seq, None)
        self._send_delivered_receipts(itertools.chain.from_iterable(marked), now_ms)

    async def _delivered_one_by_one(
        self, marks: list[tuple[_Online, list[int]]], now_ms: int
    ) -> tuple[list[tuple[_Online, list[int]]], list[list[Message]]]:
        """Each connection's marks as a store job of its own (the SQLite writer still
        commits them together); returns the marks that landed and what they marked."""
        outcomes = await asyncio.gather(
            *(self._store.mark_delivered(online.user.id, seqs, now_ms) for online, seqs in marks),
            return_exceptions=True,
        )
        landed: list[tuple[_Online, list[int]]] = []
        marked: list[list[Message]] = []
        for mark, outcome in zip(marks, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.error("store.error", op="mark_delivered", conn_id=mark[0].session.conn_id,
                          error=repr(outcome))
                self._not_recorded(mark[0], "delivered")
            else:
                landed.append(mark)
                marked.append(outcome)
        return landed, marked

    def _not_recorded(self, online: _Online, kind: str) -> None:
        """Tell a connection that its ``delivered`` or ``read`` was not recorded."""
        self._metrics.errors_total.labels(code="internal_error").inc()
        online.session.send_frame(Error(
            code="internal_error", message=f"the {kind} mark could not be recorded; send it again",
        ))

    def _send_delivered_receipts(
        self, marked: Iterable[Message], now_ms: int, *, local_only: bool = False
    ) -> None:
        """Delivered receipts to the senders' connections. ``local_only`` for marks made
        on another node (already counted, logged and published there)."""
        by_sender: dict[str, list[int]] = {}
        delivered = 0
        for message in marked:
            receipt = DeliveredReceipt(
                id=message.id, seq=message.seq, ts=message.delivered_at or now_ms
            )
            for other in self._by_user.get(message.sender, ()):
                other.session.send_frame(receipt)
            if local_only:
                continue
            by_sender.setdefault(message.sender, []).append(message.seq)
            delivered += 1
            self._metrics.delivery_latency_seconds.observe(max(0.0, (now_ms - message.ts) / 1000))
            log.info(
                "message.delivered", seq=message.seq, client_id=message.id,
                sender=message.sender, recipient=message.recipient,
                latency_ms=now_ms - message.ts,
            )
        if delivered:
            self._metrics.messages_delivered_total.inc(delivered)
        for sender, seqs in by_sender.items():
            self._publish(busmod.Delivered(sender=sender, seqs=seqs))

    async def _read(self, online: _Online, frame: Read) -> None:
        """One read mark, a store job of its own: a failure gets ``internal_error``."""
        now_ms = self._now_ms()
        try:
            peer = await self._users.by_name(frame.peer)
            if peer is None or peer.id == online.user.id:
                return
            result = await self._store.mark_read(online.user.id, peer.id, frame.up_to, now_ms)
        except Exception:
            log.exception("store.error", op="mark_read")
            self._not_recorded(online, "read")
            return
        self._send_delivered_receipts(result.newly_delivered, now_ms)
        if result.up_to is None:
            return
        receipt = ReadReceipt(peer=online.user.username, up_to=result.up_to, ts=now_ms)
        for other in self._by_user.get(peer.username, ()):
            other.session.send_frame(receipt)
        self._publish(busmod.ReadUpTo(
            reader=online.user.username, peer=peer.username, up_to=result.up_to, ts=now_ms))

    def _read_allowed(self, online: _Online) -> bool:
        """Take one token from the connection's read bucket; over the rate, answer
        ``rate_limited`` (without ``ref``: a read has no id) and say no."""
        now = self._loop.time()
        bucket = online.read_bucket
        if bucket is None:
            bucket = online.read_bucket = TokenBucket(READ_RATE, READ_BURST, now)
        wait_ms = bucket.take(now)
        if not wait_ms:
            return True
        self._metrics.errors_total.labels(code="rate_limited").inc()
        online.session.send_frame(
            Error(code="rate_limited", retry_after_ms=wait_ms, message="read marks too fast")
        )
        return False

    def _typing(self, online: _Online, frame: Typing) -> None:
        """Forward typing to a conversation peer. Dropped silently, as ephemeral signals
        are: typing to oneself, to anyone else, and over the connection's rate."""
        sender = online.user
        to = frame.to
        if to == sender.username:
            return
        now = self._loop.time()
        bucket = online.typing_bucket
        if bucket is None:
            bucket = online.typing_bucket = TokenBucket(TYPING_RATE, TYPING_BURST, now)
        if bucket.take(now):
            return
        peers = self._peers_of(sender)
        if peers.loaded.done():
            if to in peers.names:
                self._forward_typing(sender.username, to)
        else:
            self._spawn(self._typing_when_loaded(sender.username, to, peers))

    async def _typing_when_loaded(self, sender: str, to: str, peers: _Peers) -> None:
        await peers.loaded
        if to in peers.names:
            self._forward_typing(sender, to)

    def _forward_typing(self, sender: str, to: str) -> None:
        targets = self._by_user.get(to)
        if targets:
            signal = PeerTyping(sender=sender)
            for other in targets:
                other.session.send_frame(signal)
        self._publish(busmod.Typing(sender=sender, to=to))

    # --- the peer cache ---------------------------------------------------------------

    def _peers_of(self, user: User) -> _Peers:
        """The conversation peers of a user online here; the first call loads them."""
        peers = self._peers.get(user.username)
        if peers is None:
            peers = self._peers[user.username] = _Peers(self._loop)
            self._spawn(self._load_peers(user, peers))
        return peers

    async def _load_peers(self, user: User, peers: _Peers) -> None:
        try:
            peers.names.update(await self._store.peers(user.id))
        except StoreError:
            log.exception("store.error", op="peers", user=user.username)
            if self._peers.get(user.username) is peers:
                del self._peers[user.username]  # the next call loads again
        finally:
            peers.loaded.set_result(None)

    def _learn_peers(self, sender: str, recipient: str) -> None:
        """A message between two users was stored: they are conversation peers now."""
        peers = self._peers.get(sender)
        if peers is not None:
            peers.names.add(recipient)
        peers = self._peers.get(recipient)
        if peers is not None:
            peers.names.add(sender)

    # --- other nodes ------------------------------------------------------------------

    def _publish(self, event: busmod.BusEvent) -> None:
        if self._multi_node:
            self._spawn(self._bus.publish(event))

    async def start_bus(self) -> None:
        await self._bus.start(self.on_bus_event, on_resync=self._resynced)

    async def close_bus(self) -> None:
        await self._bus.close()

    def on_bus_event(self, event: busmod.BusEvent) -> None:
        """Something happened on another node: act for this node's connections."""
        match event:
            case busmod.MessageStored(recipient=recipient, sender=sender, seq=seq):
                self._learn_peers(sender, recipient)
                if recipient in self._by_user or sender in self._by_user:
                    if not self._remote_seqs:
                        self._spawn(self._push_remote())
                    self._remote_seqs.append(seq)
            case busmod.Delivered(sender=sender, seqs=seqs):
                if sender in self._by_user:
                    self._spawn(self._remote_receipts(seqs))
            case busmod.ReadUpTo(reader=reader, peer=peer, up_to=up_to, ts=ts):
                receipt = ReadReceipt(peer=reader, up_to=up_to, ts=ts)
                for other in self._by_user.get(peer, ()):
                    other.session.send_frame(receipt)
            case busmod.Typing(sender=sender, to=to):
                for other in self._by_user.get(to, ()):
                    other.session.send_frame(PeerTyping(sender=sender))
            case busmod.Presence(user=user, online=is_online):
                if self._config.presence:
                    self._spawn(self._remote_presence(user, is_online))
            case busmod.TokenRevoked(jti=jti, expires_at=expires_at):
                self._accounts.revocations.add(jti, expires_at)
                self.revoke_token(jti)
            case busmod.TokenRetired():
                retirement = event.retirement()
                if self._accounts.revocations.retire(retirement):
                    self.retire_token(retirement)
            case busmod.FamilyRevoked(family=family, expires_at=expires_at):
                if self._accounts.revocations.revoke_family(family, expires_at):
                    self.revoke_family(family)
            case busmod.UserRevoked(username=username):
                self._spawn(self._remote_user_change(username))
            case busmod.StoreChanged():
                self._on_store_changed()

    async def _push_remote(self) -> None:
        await asyncio.sleep(0)  # gather every seq announced in this loop turn
        seqs, self._remote_seqs = self._remote_seqs, []
        try:
            messages = await self._store.messages_by_seq(seqs)
        except StoreError:
            # Announced but unreadable (a connection to the database died): catch the
            # local connections up instead, or these pushes wait for a reconnect.
            log.warning("bus.push_failed", count=len(seqs))
            self.resync()
            return
        for message in messages:
            self.push(message)

    async def _remote_receipts(self, seqs: tuple[int, ...]) -> None:
        marked = [m for m in await self._store.messages_by_seq(seqs) if m.delivered_at]
        self._send_delivered_receipts(marked, 0, local_only=True)

    async def _remote_presence(self, username: str, is_online: bool) -> None:
        user = await self._users.by_name(username)
        if user is None:
            return
        for peer in await self._store.peers(user.id):
            for other in self._by_user.get(peer, ()):
                other.tell_presence(username, is_online)

    async def _remote_user_change(self, username: str) -> None:
        user = await self._store.user_by_name(username)
        if user is not None:
            self.revoke_user(user)

    def _resynced(self) -> None:
        """The bus listener reconnected: the events and change notices of the gap are
        lost, so push again what local users may have missed and look for changes."""
        self.resync()
        self._on_store_changed()

    def resync(self) -> None:
        """The bus lost events: send every local connection its undelivered messages
        again (clients drop repeats by seq)."""
        for online in list(self._by_session.values()):
            if not online.catching_up:
                online.catching_up = True
                self._spawn(self._catch_up(online, first_device=False))

    def _logged_out(self, jti: str, expires_at: int) -> None:
        self.revoke_token(jti)
        self._publish(busmod.TokenRevoked(jti=jti, expires_at=expires_at))

    def _retired_here(self, retirement: Retirement) -> None:
        self.retire_token(retirement)
        self._publish(busmod.TokenRetired.of(retirement))

    def _family_revoked_here(self, family: str, expires_at: int) -> None:
        self.revoke_family(family)
        self._publish(busmod.FamilyRevoked(family=family, expires_at=expires_at))

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _is_fresh(new: NewMessage, stored: Message) -> bool:
    """Whether the store just inserted ``new`` (rather than returning the original of a
    repeated client id)."""
    return (
        stored.ts == new.ts
        and stored.recipient == new.recipient
        and stored.body == new.body
        and stored.delivered_at is None
    )


def _by_connection(
    batch: list[tuple[_Online, NewMessage]],
) -> list[list[tuple[_Online, NewMessage]]]:
    """A batch of sends split by connection, keeping each connection's order."""
    parts: dict[int, list[tuple[_Online, NewMessage]]] = {}
    for entry in batch:
        parts.setdefault(entry[0].session.conn_id, []).append(entry)
    return list(parts.values())


async def _bounded(job: Awaitable[T], seconds: float) -> T:
    """``job``'s result, or TimeoutError after ``seconds``; the job itself goes on (a
    store job cannot be taken back), and its late outcome is dropped."""
    task = asyncio.ensure_future(job)
    try:
        return await asyncio.wait_for(asyncio.shield(task), seconds)
    except TimeoutError:
        task.add_done_callback(_drop_outcome)
        raise


def _drop_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "never retrieved" warning


def _remove(index: dict[str, list[_Online]], key: str, online: _Online) -> bool:
    """Remove ``online`` from ``index[key]``; True when that emptied the key."""
    entries = index.get(key)
    if entries is None:
        return False
    if online in entries:
        entries.remove(online)
    if not entries:
        del index[key]
        return True
    return False
