"""The values the network thread hands the UI: messages as the UI shows them, and
conversation summaries. Plain frozen attrs classes, safe to pass between threads."""

from __future__ import annotations

import attrs

from libchat.protocol import Message

__all__ = ["STATUS_RANK", "ChatItem", "Hit", "Summary", "item_from_message"]

# Statuses of my messages, in the only order they may move.
STATUS_RANK = {"failed": -1, "queued": 0, "sent": 1, "delivered": 2, "read": 3}


@attrs.frozen(kw_only=True)
class ChatItem:
    """One message of a conversation. ``seq`` is None while it waits in the outbox.

    ``status`` is one of queued/sent/delivered/read/failed for my messages, "" for theirs.
    ``ts`` is Unix milliseconds: for a message written here the local time of writing,
    kept once the server has it; else the server's time.
    """

    peer: str
    sender: str
    id: str
    seq: int | None
    body: str
    ts: int
    status: str
    mine: bool

    @property
    def key(self) -> tuple[str, str]:
        """Unique per message: client ids are unique per sender."""
        return (self.sender, self.id)

    def sort_key(self) -> tuple[int, int, int]:
        # Stored messages by seq; queued ones after them, in writing order.
        if self.seq is None:
            return (1, self.ts, 0)
        return (0, self.seq, 0)


@attrs.frozen(kw_only=True)
class Summary:
    """One row of the conversation list."""

    peer: str
    preview: str
    ts: int
    seq: int
    unread: int
    mine: bool
    failed: bool = False  # the last message is mine and the server refused it for good


def status_of(message: Message) -> str:
    if message.read_at is not None:
        return "read"
    if message.delivered_at is not None:
        return "delivered"
    return "sent"


def item_from_message(message: Message, me: str) -> ChatItem:
    mine = message.sender == me
    return ChatItem(
        peer=message.recipient if mine else message.sender,
        sender=message.sender,
        id=message.id,
        seq=message.seq,
        body=message.body,
        ts=message.ts,
        status=status_of(message) if mine else "",
        mine=mine,
    )


@attrs.frozen(kw_only=True)
class Hit:
    """A message found by a search of the local cache. ``snippet``: the text around the
    match in runs of (text, is_match), so the UI can mark what matched."""

    item: ChatItem
    snippet: tuple[tuple[str, bool], ...]
