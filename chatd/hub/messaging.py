"""Messages: accept a send, commit it, then ack it and push it.

A send is checked (not to oneself, the sender's rate, a known recipient, the
recipient's queue under ``--max-queue``), then goes to the store with every other send
of the loop turn in one submit (:class:`chatd.turn.LoopTurn`). Only once the store has
committed it is the sender acked and the message pushed to the recipient's connections
and the sender's other devices (:meth:`Messaging._acknowledge`, the one place that does
it). A send that cannot be stored within :data:`SUBMIT_BOUND` gets ``internal_error``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from chatd import bus as busmod
from chatd.hub.common import Common
from chatd.hub.online import Online
from chatd.observe.logs import EventLogger
from chatd.observe.refusals import LogThrottle
from chatd.ratelimit import KeyedBuckets
from chatd.store import NewMessage, StoreError, StoreUnavailable, User
from chatd.turn import LoopTurn
from libchat import protocol
from libchat.protocol import Ack, Error, Message, Send

log = EventLogger(logging.getLogger(__name__))
T = TypeVar("T")

# Seconds a send waits for its commit before it is answered internal_error anyway: the
# contract's "every request is answered within a bound", even while the store is down.
SUBMIT_BOUND = 2.0

_Batch = list[tuple[Online, NewMessage]]  # sends to commit, each with its connection


class Messaging:
    """Sends in, acks and pushes out."""

    def __init__(
        self, common: Common, turn: LoopTurn, *, learn_peers: Callable[[str, str], None]
    ) -> None:
        self._config = common.config
        self._store = common.store
        self._users = common.users
        self._metrics = common.metrics
        self._by_user = common.roster.by_user
        self._spawn = common.tasks.spawn
        self._publish = common.publish
        self._clock = common.clock
        self._loop = common.loop
        self._learn_peers = learn_peers  # tell the presence part who talks to whom
        # Every connection's sends of one loop turn go to the store in one submit.
        self._turn_sends = turn.batch(self._commit_turn)
        # per user, across its connections; idle ones are dropped when there are many
        self._send_buckets = KeyedBuckets(self._config.send_rate, self._config.send_burst)
        # per recipient id: sends accepted under --max-queue and not yet committed (a key
        # lives while its sends do: see _submit's finally)
        self._queue_in_flight: dict[int, int] = {}
        # sends handed to the store and not yet answered, by (connection, client id)
        self._committing: dict[tuple[int, str], Online] = {}
        # a store outage fails every turn's job: a few lines a minute say so, not thousands
        self._store_log = LogThrottle(lines=3, window=60.0)

    # --- accept -----------------------------------------------------------------------

    def accept(self, online: Online, sends: list[Send]) -> None:
        """The sends of one read of one connection, in order."""
        now = self._loop.time()
        user_id = online.user.id
        accepted: list[Send] = []
        for send in sends:
            if send.to == online.user.username:
                self.reject(online, send.id, "invalid_recipient", "you cannot message yourself")
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

    def _new_message(self, online: Online, send: Send, recipient: User) -> NewMessage:
        sender = online.user
        return NewMessage(
            sender_id=sender.id, sender=sender.username, recipient_id=recipient.id,
            recipient=recipient.username, client_id=send.id, body=send.body,
            ts=int(self._clock() * 1000),
        )

    def reject(self, online: Online, client_id: str, code: str, message: str) -> None:
        """Refuse a send, unless its id was already used: then it is a repeat, and a
        repeat gets its original ack whatever its content (the contract's rule)."""
        self._spawn(self._reject_unless_repeat(online, client_id, code, message))

    async def _reject_unless_repeat(
        self, online: Online, client_id: str, code: str, message: str
    ) -> None:
        try:
            original = await self._store.sent_message(online.user.id, client_id)
        except StoreError:
            original = None
        if original is not None:
            online.session.send_frame(Ack.trusted(id=original.id, seq=original.seq, ts=original.ts))
            return
        self._metrics.errors_total.labels(code=code).inc()
        log.info("message.rejected", code=code, client_id=client_id, sender=online.user.username)
        online.session.send_frame(Error(code=code, ref=client_id, message=message))

    async def _submit(self, online: Online, sends: list[Send]) -> None:
        """The slow path: recipients not in the directory yet, or a queue cap to check."""
        batch: _Batch = []
        reserved: list[int] = []
        cap = self._config.max_queue
        try:
            for send in sends:
                recipient = await self._users.by_name(send.to)
                if recipient is None:
                    self.reject(online, send.id, "unknown_user", f"no user {send.to!r}")
                    continue
                if cap is not None:
                    # The store cannot count sends still on their way to it (this
                    # batch's, other connections'): count them here, or a burst
                    # would all pass the cap together.
                    depth = await self._store.queue_depth(recipient.id)
                    in_flight = self._queue_in_flight.get(recipient.id, 0)
                    if depth + in_flight >= cap:
                        self.reject(online, send.id, "queue_full", "the recipient's queue is full")
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

    # --- commit -----------------------------------------------------------------------

    def _commit_turn(self, batch: _Batch) -> None:
        self._spawn(self._commit(batch))

    async def _commit(self, batch: _Batch, *, split: bool = True) -> None:
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
        except StoreUnavailable:  # down: the store logs the outage once; no retries
            stored, timed_out = None, True
        except Exception:
            if self._store_log.allow(log, "store.error", "submit"):
                log.exception("store.error", op="submit", count=len(batch))
            stored = None
        finally:
            for key in keys:
                self._committing.pop(key, None)
        if stored is not None:
            self._acknowledge(batch, stored)
            return
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

    def _acknowledge(self, batch: _Batch, stored: list[Message]) -> None:
        """THE INVARIANT: ``stored`` is what the store returned once it had committed
        ``batch``; acks and pushes are sent here and nowhere else, so no one is told of
        a message that a crash could still lose."""
        pushed: set[int] = set()
        accepted = 0
        for (online, new), message in zip(batch, stored, strict=True):
            online.session.send_frame(Ack.trusted(id=message.id, seq=message.seq, ts=message.ts))
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
            # (Other nodes learn of the conversation from the bus, chatd.hub.bridge.)
            self._learn_peers(message.sender, message.recipient)
            self.push(message, exclude=online.session.conn_id, repeat=not fresh)
            self._publish(busmod.MessageStored(
                recipient=message.recipient, seq=message.seq, sender=message.sender))
        if accepted:
            self._metrics.messages_accepted_total.inc(accepted)

    # --- push -------------------------------------------------------------------------

    def push(self, message: Message, *, exclude: int | None = None, repeat: bool = False) -> None:
        """Send a stored message to the recipient's connections that do not have it
        yet, and (unless it is a ``repeat``) to the sender's other connections (its
        other devices)."""
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

    # --- shutdown ---------------------------------------------------------------------

    def refuse_for_shutdown(self, online: Online, client_id: str) -> None:
        self._metrics.errors_total.labels(code="internal_error").inc()
        online.session.send_frame(Error(
            code="internal_error", ref=client_id,
            message="the server is shutting down; send it again",
        ))

    def refuse_uncommitted(self) -> None:
        """Every send still waiting for its commit gets its error now."""
        waiting, self._committing = self._committing, {}
        for (_, client_id), online in waiting.items():
            self.refuse_for_shutdown(online, client_id)


def _is_fresh(new: NewMessage, stored: Message) -> bool:
    """Whether the store just inserted ``new`` (rather than returning the original of a
    repeated client id)."""
    return (
        stored.ts == new.ts
        and stored.recipient == new.recipient
        and stored.body == new.body
        and stored.delivered_at is None
    )


def _by_connection(batch: _Batch) -> list[_Batch]:
    """A batch of sends split by connection, keeping each connection's order."""
    parts: dict[int, _Batch] = {}
    for entry in batch:
        parts.setdefault(entry[0].session.conn_id, []).append(entry)
    return list(parts.values())


async def _bounded(job: Awaitable[T], seconds: float) -> T:
    """``job``'s result, or TimeoutError after ``seconds``. ``job`` runs inline, not as
    a task of its own: a send reaches the store's queue in this step instead of a loop
    iteration later. On a timeout its wait is cancelled, not the store job, which
    cannot be taken back: it goes on, and its late outcome is dropped by the store."""
    async with asyncio.timeout(seconds):
        return await job
