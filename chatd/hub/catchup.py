"""Redelivery: what a connection missed, and why earlier pushes went unconfirmed.

A new connection (or every connection, after the bus lost events) is first sent its
user's undelivered messages from the store (:class:`CatchUp`); live pushes meanwhile are
held back and written after it. A connection that closes with pushes its user never
confirmed leaves them to a later catch-up: :class:`PushFailures` remembers why (for that
push's log line) and counts the failed attempts in the store, off the live path.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable

from chatd.hub.common import Common
from chatd.hub.online import Online
from chatd.observe.logs import EventLogger
from chatd.observe.refusals import LogThrottle
from chatd.store import StoreError, StoreUnavailable
from libchat import limits, protocol

log = EventLogger(logging.getLogger(__name__))

CATCH_UP_BATCH = 500  # undelivered messages read and written per step of a catch-up
# why the last push of a message went unconfirmed, for the log line of its next push:
# kept per node for this many messages (a few MB at most), the oldest forgotten first
MAX_REMEMBERED_FAILURES = 100_000


class PushFailures:
    """Pushes that ended unconfirmed: why (per seq, bounded), and their count in the
    store (one job per user at a time, which that user's next catch-up awaits)."""

    def __init__(self, common: Common) -> None:
        self._store = common.store
        self._spawn = common.tasks.spawn
        self.reasons: dict[int, str] = {}  # seq -> why (see MAX_REMEMBERED_FAILURES)
        # per user id: the store job counting its failed pushes (gone once done)
        self._counting: dict[int, asyncio.Task[None]] = {}
        self._store_log = LogThrottle(lines=3, window=60.0)

    def closed_with_unconfirmed(self, online: Online, cause: str) -> None:
        """A connection closed (``cause``) with pushes its user never confirmed."""
        seqs = sorted(online.unconfirmed)
        log.info("message.push_unconfirmed", user=online.user.username,
                 conn_id=online.session.conn_id, count=len(seqs), reason=cause)
        reasons = self.reasons
        for seq in seqs:
            reasons.pop(seq, None)  # the newest at the end: the oldest go first
            reasons[seq] = cause
        while len(reasons) > MAX_REMEMBERED_FAILURES:
            del reasons[next(iter(reasons))]
        user_id = online.user.id
        task = self._spawn(self._count(user_id, seqs, self._counting.get(user_id)))
        self._counting[user_id] = task
        task.add_done_callback(functools.partial(self._counted, user_id))

    def confirmed(self, seqs: Iterable[int]) -> None:
        """These were delivered: nothing to say about their next push."""
        reasons = self.reasons
        if reasons:
            for seq in seqs:
                reasons.pop(seq, None)

    async def counted(self, user_id: int) -> None:
        """Return once the user's failed pushes known so far are counted in the store."""
        counting = self._counting.get(user_id)
        if counting is not None:
            await asyncio.wait([counting])

    async def _count(
        self, user_id: int, seqs: list[int], previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:  # done before this one: the latest covers them all
            await asyncio.wait([previous])
        try:
            await self._store.count_failed_pushes(user_id, seqs)
        except StoreUnavailable:
            pass  # the store logs the outage once; the counts are advisory
        except StoreError:
            if self._store_log.allow(log, "store.error", "count_failed_pushes"):
                log.exception("store.error", op="count_failed_pushes", count=len(seqs))

    def _counted(self, user_id: int, task: asyncio.Task[None]) -> None:
        if self._counting.get(user_id) is task:
            del self._counting[user_id]


class CatchUp:
    """Streams a connection's undelivered messages, then its held-back pushes."""

    def __init__(self, common: Common, failures: PushFailures) -> None:
        self._store = common.store
        self._metrics = common.metrics
        self._clock = common.clock
        self._failures = failures

    async def run(self, online: Online) -> None:
        session = online.session
        after = 0
        await self._failures.counted(online.user.id)  # its last connection's, first
        try:
            while True:
                batch = await self._store.queued(online.user.id, after, CATCH_UP_BATCH)
                now_ms = int(self._clock() * 1000)
                redelivered = 0
                for queued in batch:
                    message = queued.message
                    online.pushed(message.seq)
                    session.send_text(protocol.encode_frame(message))
                    # from the store, on a new connection: queued while offline, or
                    # pushed before and never confirmed (then attempt > 1)
                    attempt = queued.failed_pushes + 1
                    redelivered += attempt > 1
                    error = self._failures.reasons.get(message.seq)
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
        except StoreError as exc:
            # What it missed is still queued, but a connection that went on without it
            # would show a gap until its next one: end it, and its client comes back
            # (with backoff) to a catch-up that starts over.
            log.warning("catch_up.failed", user=online.user.username, conn_id=session.conn_id,
                        error=str(exc)[:200])
            online.deferred = None
            session.fail("internal_error", limits.CLOSE_TRY_AGAIN_LATER,
                         "your undelivered messages cannot be read now; reconnect later")
            return
        online.catching_up = False
        held_back = 0
        for seq, text, to_me in online.deferred or ():
            # The catch-up covered messages to this user up to `after`; copies of its
            # own messages (from its other devices) are never in it.
            if seq > after or not to_me:
                session.send_text(text)
                held_back += 1 if to_me else 0
        online.deferred = None
        if held_back:  # counted now that they are written, once (not if the catch-up had them)
            self._metrics.messages_pushed_total.inc(held_back)
