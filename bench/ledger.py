"""The load generator's accounting: what each stream sent and what came back for it.

A :class:`Ledger` holds the open runs of one worker, keyed by message id prefix, and
files every ack, push, receipt and error against the message it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from libchat.outbox import SeenSeqs
    from libchat.protocol import Ack, DeliveredReceipt, Error, Message


class PushedUser(Protocol):
    """What the ledger reads and marks of a simulated user that got a push
    (:class:`bench.population.User`, which imports this module)."""

    seen: SeenSeqs
    withhold: bool
    awaited_seq: int
    caught_up_at: float
    pushes: int

    @property
    def on_push(self) -> Callable[[Any, Message, float], None] | None: ...


class PushedClient(Protocol):
    """The connection that got it: its user, and the seqs it will confirm."""

    to_confirm: list[int]

    @property
    def user(self) -> PushedUser: ...


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


class Ledger:
    """The open runs of one worker; files what comes back on any connection."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}  # message id prefix -> the run that sent it

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

    def on_message(self, client: PushedClient, message: Message, now: float) -> None:
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
