"""The client's outbox: messages the user wrote that the server has not acked yet, and
the seqs of pushes already shown, so nothing is lost and nothing is seen twice.

Sans-IO like the engines: the caller passes ``now`` and an injected ``random.Random``
(``random.SystemRandom()`` in a real client). Storage sits behind :class:`OutboxStorage`,
a small synchronous interface; :class:`MemoryOutboxStorage` serves tests and embedders,
chatpad backs it with SQLite.

How a host drives it::

    entry = outbox.submit(to="bob", body="hi", now=t)       # stored at once
    frames = outbox.on_connected(now=t)                     # after every (re)connect
    frames += outbox.frames_due(now=t)                      # after any call; send them
    outbox.on_ack(ack); outbox.on_error(err, now=t)         # server answers
    if outbox.accept_push(msg): show(msg)                   # drop repeats by seq
    outbox.on_disconnected()
    deadline = outbox.next_retry_at()                       # call frames_due then

Rules:

* Entries go out in the order they were submitted. Each entry is in flight at most once
  per connection: it is sent again only after a reconnect, or after the server answered
  it with a transient error (``rate_limited``, ``queue_full``, ``internal_error``).
  Resending is safe because the server answers a repeated client id with the original
  ack.
* ``rate_limited`` limits the sender, so it pauses the whole outbox until its
  ``retry_after_ms`` has passed. ``queue_full`` concerns one recipient, so it holds that
  entry and the later ones to the same recipient (keeping each conversation in order)
  while other conversations go on. ``internal_error`` (the server could not store it)
  holds the same way, for a shorter time.
* Any other error code that refers to an entry is permanent: the entry is removed and
  returned as failed so the UI can show it. Unknown codes count as permanent, since
  resending blindly could loop forever.
* A push is accepted once per seq. The seq of an acked entry counts as seen too, so if
  the server ever pushes this device's own message back, the application does not show
  it twice. Copies of my sends from my other devices follow the same seq rule.
"""

from __future__ import annotations

import base64
import heapq
import logging
import random
from typing import Final, Protocol

import attrs

from libchat.protocol import Ack, Error, Message, Send

__all__ = [
    "PERMANENT_ERRORS",
    "TRANSIENT_ERRORS",
    "MemoryOutboxStorage",
    "Outbox",
    "OutboxEntry",
    "OutboxStorage",
    "SeenSeqs",
    "SendDeferred",
    "SendFailed",
]

log = logging.getLogger(__name__)

CLIENT_ID_BYTES = 16  # 128 random bits: collisions between a user's ids are out of reach
SEEN_CAPACITY = 4096  # seqs remembered one by one; older ones fold into a floor
DEFAULT_RATE_LIMIT_DELAY = 1.0  # seconds, when a rate_limited error has no retry_after_ms
QUEUE_FULL_DELAY = 30.0  # seconds: a full queue drains only when its owner comes online
STORE_ERROR_DELAY = 2.0  # seconds: the server could not store it; its database may be back soon

PERMANENT_ERRORS: Final = frozenset(
    {"too_long", "empty_body", "unknown_user", "invalid_recipient", "invalid_frame"}
)
# Errors held for a while per entry (and the later ones to the same recipient).
HOLD_DELAYS: Final = {"queue_full": QUEUE_FULL_DELAY, "internal_error": STORE_ERROR_DELAY}
TRANSIENT_ERRORS: Final = frozenset({"rate_limited", *HOLD_DELAYS})


@attrs.frozen(kw_only=True)
class OutboxEntry:
    """One message waiting for its ack. ``attempts`` counts how often it was sent."""

    client_id: str
    to: str
    body: str
    created_at: float
    attempts: int = 0

    def frame(self) -> Send:
        return Send(id=self.client_id, to=self.to, body=self.body)


@attrs.frozen(kw_only=True)
class SendFailed:
    """The server refused an entry for good; it has left the outbox."""

    entry: OutboxEntry
    code: str
    message: str | None


@attrs.frozen(kw_only=True)
class SendDeferred:
    """The server refused an entry for now; it is sent again from ``retry_at`` on."""

    entry: OutboxEntry
    code: str
    retry_at: float


class OutboxStorage(Protocol):
    """Where the outbox keeps its state between runs. Synchronous and small.

    Entries keep their insertion order; ``update`` replaces an entry in place. Seen
    seqs: ``seen(seq)`` is True once ``mark_seen(seq)`` was called for it. A storage may
    bound its memory by forgetting the smallest seqs and answering True for every seq at
    or below the largest forgotten one (see :class:`SeenSeqs`).
    """

    def append(self, entry: OutboxEntry) -> None: ...

    def update(self, entry: OutboxEntry) -> None: ...

    def remove(self, client_id: str) -> None: ...

    def entries(self) -> list[OutboxEntry]: ...

    def seen(self, seq: int) -> bool: ...

    def mark_seen(self, seq: int) -> None: ...


class SeenSeqs:
    """A bounded set of seqs: the most recent ``capacity`` ones plus a floor.

    Every seq at or below ``floor`` counts as seen. When the set is over capacity, the
    smallest seq is dropped and the floor rises to it. Seqs grow in commit order, so a
    push older than thousands of newer ones this client has already seen is the only
    case this could wrongly drop.
    """

    def __init__(self, capacity: int = SEEN_CAPACITY, floor: int = -1) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.floor = floor
        self._seqs: set[int] = set()
        self._heap: list[int] = []

    def __contains__(self, seq: int) -> bool:
        return seq <= self.floor or seq in self._seqs

    def __len__(self) -> int:
        return len(self._seqs)

    def add(self, seq: int) -> None:
        if seq in self:
            return
        self._seqs.add(seq)
        heapq.heappush(self._heap, seq)
        while len(self._seqs) > self.capacity:
            oldest = heapq.heappop(self._heap)
            self._seqs.discard(oldest)
            self.floor = max(self.floor, oldest)

    def recent(self) -> list[int]:
        """The seqs held one by one, ascending (for a storage that saves them)."""
        return sorted(self._seqs)


class MemoryOutboxStorage:
    """An :class:`OutboxStorage` in memory: survives a new :class:`Outbox`, not the process."""

    def __init__(self, seen_capacity: int = SEEN_CAPACITY) -> None:
        self._entries: dict[str, OutboxEntry] = {}
        self._seen = SeenSeqs(seen_capacity)

    def append(self, entry: OutboxEntry) -> None:
        if entry.client_id in self._entries:
            raise ValueError(f"duplicate client id {entry.client_id!r}")
        self._entries[entry.client_id] = entry

    def update(self, entry: OutboxEntry) -> None:
        if entry.client_id not in self._entries:
            raise KeyError(entry.client_id)
        self._entries[entry.client_id] = entry

    def remove(self, client_id: str) -> None:
        self._entries.pop(client_id, None)

    def entries(self) -> list[OutboxEntry]:
        return list(self._entries.values())

    def seen(self, seq: int) -> bool:
        return seq in self._seen

    def mark_seen(self, seq: int) -> None:
        self._seen.add(seq)


class Outbox:
    """Pending sends and seen pushes of one user on one device.

    The outbox is the only writer of its storage while it lives: it reads the entries
    once, at construction, and writes every change through.
    """

    def __init__(self, storage: OutboxStorage, rng: random.Random) -> None:
        self._storage = storage
        self._rng = rng
        self._entries: dict[str, OutboxEntry] = {e.client_id: e for e in storage.entries()}
        self._connected = False
        self._in_flight: set[str] = set()  # sent on this connection, not answered yet
        self._retry_at: dict[str, float] = {}  # entry -> when a transient refusal ends
        self._paused_until: float | None = None  # rate_limited: the whole outbox waits

    # --- the user's side ---------------------------------------------------------------

    def submit(self, to: str, body: str, now: float) -> OutboxEntry:
        """Store a new message at once and return it with its client id.

        Raises :class:`libchat.protocol.ProtocolViolation` for a body or recipient the
        protocol refuses, before anything is stored. Drain :meth:`frames_due` afterwards.
        """
        frame = Send(id=self._new_id(), to=to, body=body)  # validates before storing
        entry = OutboxEntry(client_id=frame.id, to=frame.to, body=body, created_at=now)
        self._storage.append(entry)
        self._entries[entry.client_id] = entry
        return entry

    def pending(self) -> list[OutboxEntry]:
        """Entries without an ack, oldest first."""
        return list(self._entries.values())

    # --- the connection's side ---------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._connected

    def on_connected(self, now: float) -> list[Send]:
        """A new connection is ready (welcome received): the frames to send, in order."""
        self._connected = True
        self._in_flight.clear()
        return self.frames_due(now)

    def on_disconnected(self) -> None:
        """The connection is gone: whatever was in flight goes again on the next one."""
        self._connected = False
        self._in_flight.clear()

    def frames_due(self, now: float) -> list[Send]:
        """Frames to send now, in submission order; each is then in flight on this
        connection. Empty while disconnected or paused by a rate limit."""
        if not self._connected:
            return []
        if self._paused_until is not None:
            if now < self._paused_until:
                return []
            self._paused_until = None
        frames: list[Send] = []
        held: set[str] = set()  # recipients with an earlier entry still held back
        for entry in list(self._entries.values()):
            if entry.client_id in self._in_flight:
                continue
            retry_at = self._retry_at.get(entry.client_id)
            if retry_at is not None and now < retry_at:
                held.add(entry.to)
                continue
            if entry.to in held:
                continue
            self._retry_at.pop(entry.client_id, None)
            sent = attrs.evolve(entry, attempts=entry.attempts + 1)
            self._storage.update(sent)
            self._entries[entry.client_id] = sent
            self._in_flight.add(entry.client_id)
            frames.append(sent.frame())
        return frames

    def next_retry_at(self) -> float | None:
        """When :meth:`frames_due` will next have something held back, or None."""
        if not self._connected:
            return None
        waiting = [cid for cid in self._entries if cid not in self._in_flight]
        if not waiting:
            return None
        if self._paused_until is not None:
            return self._paused_until
        times = [self._retry_at[cid] for cid in waiting if cid in self._retry_at]
        return min(times) if times else None

    def on_ack(self, ack: Ack) -> OutboxEntry | None:
        """The server stored a message: it leaves the outbox. None for an unknown id
        (a repeat ack after a resend)."""
        self._storage.mark_seen(ack.seq)
        entry = self._forget(ack.id)
        if entry is None:
            log.debug("ack for unknown client id %s", ack.id)
        return entry

    def on_error(self, error: Error, now: float) -> SendFailed | SendDeferred | None:
        """An error frame. Only those whose ``ref`` names a pending entry concern the
        outbox; the others give None. Drain :meth:`frames_due` afterwards."""
        if error.ref is None or error.ref not in self._entries:
            return None
        entry = self._entries[error.ref]
        self._in_flight.discard(error.ref)
        if error.code == "rate_limited":
            if error.retry_after_ms is not None:
                delay = error.retry_after_ms / 1000
            else:
                delay = DEFAULT_RATE_LIMIT_DELAY
            retry_at = now + delay
            self._retry_at[error.ref] = retry_at
            if self._paused_until is None or self._paused_until < retry_at:
                self._paused_until = retry_at
            return SendDeferred(entry=entry, code=error.code, retry_at=retry_at)
        hold = HOLD_DELAYS.get(error.code)
        if hold is not None:
            retry_at = now + hold
            self._retry_at[error.ref] = retry_at
            return SendDeferred(entry=entry, code=error.code, retry_at=retry_at)
        self._forget(error.ref)
        log.debug("send %s failed: %s", error.ref, error.code)
        return SendFailed(entry=entry, code=error.code, message=error.message)

    def accept_push(self, message: Message) -> bool:
        """True the first time a seq arrives, False for every repeat."""
        if self._storage.seen(message.seq):
            return False
        self._storage.mark_seen(message.seq)
        return True

    # --- internals -----------------------------------------------------------------------

    def _new_id(self) -> str:
        while True:
            raw = self._rng.getrandbits(CLIENT_ID_BYTES * 8).to_bytes(CLIENT_ID_BYTES, "big")
            client_id = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
            if client_id not in self._entries:
                return client_id

    def _forget(self, client_id: str) -> OutboxEntry | None:
        entry = self._entries.pop(client_id, None)
        if entry is not None:
            self._storage.remove(client_id)
        self._in_flight.discard(client_id)
        self._retry_at.pop(client_id, None)
        return entry
