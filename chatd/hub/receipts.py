"""Delivered and read marks, and the receipts they send.

A client confirms pushes with ``delivered``: every connection's marks of one loop turn
are recorded in one store job, then the senders get their delivered receipts. A ``read``
is its own store job (rate-limited per connection: over its rate it gets
``rate_limited`` with ``retry_after_ms``) and sends a read receipt to the peer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable

from chatd import bus as busmod
from chatd.hub.catchup import PushFailures
from chatd.hub.common import Common, log_store_error
from chatd.hub.online import Online
from chatd.observe.logs import EventLogger
from chatd.ratelimit import TokenBucket
from chatd.turn import LoopTurn
from libchat.protocol import DeliveredReceipt, Error, Message, Read, ReadReceipt

log = EventLogger(logging.getLogger(__name__))

READ_RATE = 5.0  # read frames per second per connection: one per message seen, at most
READ_BURST = 30  # after a reconnect a client sends one per conversation read offline

_Marks = list[tuple[Online, list[int]]]  # delivered seqs, each with its connection


class Receipts:
    """Records delivered and read marks and tells the senders."""

    def __init__(self, common: Common, turn: LoopTurn, failures: PushFailures) -> None:
        self._store = common.store
        self._users = common.users
        self._metrics = common.metrics
        self._by_user = common.roster.by_user
        self._spawn = common.tasks.spawn
        self._publish = common.publish
        self._clock = common.clock
        self._loop = common.loop
        self._failures = failures
        # Every connection's delivered marks of one loop turn go to the store in one job
        # (made after the sends' batch: a turn keeps each connection's frame order).
        self._turn_delivered = turn.batch(self._record_delivered)

    # --- delivered --------------------------------------------------------------------

    def delivered(self, online: Online, seqs: list[int]) -> None:
        """A connection's delivered marks of one read: recorded at the turn's end."""
        self._turn_delivered.add((online, seqs))

    def _record_delivered(self, marks: _Marks) -> None:
        self._spawn(self._delivered(marks))

    async def _delivered(self, marks: _Marks) -> None:
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
            log_store_error(log, "mark_delivered", count=len(marks))
            marked = None
        if marked is None:
            if len(marks) == 1:  # its own job failed: nobody else's to save
                self._not_recorded(marks[0][0], "delivered")
                return
            marks, marked = await self._delivered_one_by_one(marks, now_ms)
        for online, seqs in marks:
            for device in self._by_user.get(online.user.username, ()):
                device.confirmed(seqs)
            self._failures.confirmed(seqs)
        self.send_delivered_receipts(itertools.chain.from_iterable(marked), now_ms)

    async def _delivered_one_by_one(
        self, marks: _Marks, now_ms: int
    ) -> tuple[_Marks, list[list[Message]]]:
        """Each connection's marks as a store job of its own (the SQLite writer still
        commits them together); returns the marks that landed and what they marked."""
        outcomes = await asyncio.gather(
            *(self._store.mark_delivered(online.user.id, seqs, now_ms) for online, seqs in marks),
            return_exceptions=True,
        )
        landed: _Marks = []
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

    def _not_recorded(self, online: Online, kind: str) -> None:
        """Tell a connection that its ``delivered`` or ``read`` was not recorded."""
        self._metrics.errors_total.labels(code="internal_error").inc()
        online.session.send_frame(Error(
            code="internal_error", message=f"the {kind} mark could not be recorded; send it again",
        ))

    def send_delivered_receipts(
        self, marked: Iterable[Message], now_ms: int, *, local_only: bool = False
    ) -> None:
        """Delivered receipts to the senders' connections. ``local_only`` for marks made
        on another node (already counted, logged and published there)."""
        by_sender: dict[str, list[int]] = {}
        delivered = 0
        for message in marked:
            receipt = DeliveredReceipt.trusted(
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

    # --- read -------------------------------------------------------------------------

    def read(self, online: Online, frame: Read) -> None:
        """A read mark: over the connection's rate it is refused, else recorded."""
        if self._read_allowed(online):
            self._spawn(self._read(online, frame))

    def _read_allowed(self, online: Online) -> bool:
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

    async def _read(self, online: Online, frame: Read) -> None:
        """One read mark, a store job of its own: a failure gets ``internal_error``."""
        now_ms = self._now_ms()
        try:
            peer = await self._users.by_name(frame.peer)
            if peer is None or peer.id == online.user.id:
                return
            result = await self._store.mark_read(online.user.id, peer.id, frame.up_to, now_ms)
        except Exception:
            log_store_error(log, "mark_read")
            self._not_recorded(online, "read")
            return
        self.send_delivered_receipts(result.newly_delivered, now_ms)
        if result.up_to is None:
            return
        self.read_receipt(online.user.username, peer.username, result.up_to, now_ms)
        self._publish(busmod.ReadUpTo(
            reader=online.user.username, peer=peer.username, up_to=result.up_to, ts=now_ms))

    def read_receipt(self, reader: str, peer: str, up_to: int, ts: int) -> None:
        """Tell ``peer``'s connections here that ``reader`` read up to ``up_to``."""
        receipt = ReadReceipt(peer=reader, up_to=up_to, ts=ts)
        for other in self._by_user.get(peer, ()):
            other.session.send_frame(receipt)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)
