"""The local copy of one account's conversations: message pages (from the server or, when
offline, from the cache) and the conversation list with its previews and unread counts.
Network thread only; every change it makes is also posted to the UI as a result."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from chatpad import messages as m
from chatpad.items import ChatItem, Summary, item_from_message
from chatpad.storage import LocalStore
from libchat import ConversationList, MessagePage

__all__ = ["PAGE_SIZE", "History"]

PAGE_SIZE = 50  # messages per history page: one screen and a bit
PREVIEW_CHARS = 120  # characters of the last message kept for the conversation list

Post = Callable[[m.Result], None]


class History:
    """Pages and summaries of ``me``'s conversations in ``store``; results go to ``post``."""

    def __init__(self, store: LocalStore, me: str, post: Post) -> None:
        self.store = store
        self.me = me
        self.post = post
        self.open_peer: str | None = None  # the conversation on screen: its pushes are read

    # --- the conversation list ---------------------------------------------------------

    def post_conversations(self) -> None:
        self.post(m.Conversations(items=tuple(self.store.summaries())))

    def touch(self, item: ChatItem, *, unread: bool) -> None:
        """The conversation list learns of a new last message."""
        old = self.store.summary(item.peer)
        seq = -1 if item.seq is None else item.seq
        if old is not None and old.seq > seq >= 0:
            return  # an older message arrived late
        # counted in the open conversation too: only its read mark says it was seen
        count = (old.unread if old is not None else 0) + (1 if unread else 0)
        self.store.put_summary(Summary(peer=item.peer, preview=_preview(item.body),
                                       ts=item.ts, seq=seq, unread=count, mine=item.mine))

    def merge_conversations(self, listing: ConversationList) -> None:
        """The server's conversation list (with its unread counts) replaces ours."""
        for conv in listing.conversations:
            last = conv.last_message
            old = self.store.summary(conv.peer)
            if old is not None and old.seq == -1 and old.ts > last.ts:
                continue  # a queued message of mine is newer
            self.store.put_summary(Summary(
                peer=conv.peer, preview=_preview(last.body), ts=last.ts, seq=last.seq,
                unread=0 if conv.peer == self.open_peer else conv.unread,
                mine=last.sender == self.me))
        self.post_conversations()

    def mark_read(self, peer: str, up_to: int) -> None:
        """Read up to seq ``up_to``: what came after it stays unread."""
        old = self.store.summary(peer)
        if old is None or not old.unread:
            return
        left = 0 if up_to >= old.seq else min(old.unread,
                                                self.store.unread_after(self.me, peer, up_to))
        if left != old.unread:
            self.store.put_summary(attrs.evolve(old, unread=left))
            self.post_conversations()

    # --- pages ---------------------------------------------------------------------------

    def open(self, peer: str | None) -> None:
        """The conversation on screen changes; its cached newest page is shown at once."""
        self.open_peer = peer
        if peer is None:
            return
        cached = self.store.page(peer, None, PAGE_SIZE)
        stored = [i for i in cached if i.seq is not None]
        self.post(m.Page(peer=peer, items=tuple(cached),
                         has_more=len(stored) >= PAGE_SIZE, older=False))

    def cached_page(self, peer: str, before: int | None) -> None:
        """Answer from the cache (offline, or the server did not answer), so the UI stops
        waiting: the page before ``before``, or nothing new for the newest page."""
        items = self.store.page(peer, before, PAGE_SIZE) if before is not None else []
        self.post(m.Page(peer=peer, items=tuple(items), has_more=len(items) >= PAGE_SIZE,
                         older=before is not None))

    def page_around(self, peer: str, seq: int) -> None:
        """From the cache: the messages from half a page before ``seq`` to the newest, as
        a page to merge (``Open`` set how many more there are)."""
        items = self.store.page_around(peer, seq, PAGE_SIZE // 2)
        self.post(m.Page(peer=peer, items=tuple(items), has_more=True, older=False))

    def search(self, text: str, peer: str | None) -> None:
        hits = self.store.search(text, peer)
        self.post(m.MessagesFound(text=text, peer=peer, hits=tuple(hits)))

    def server_page(self, peer: str, before: int | None, page: MessagePage) -> None:
        """A page from the server: cached, and the newest pages trim the cache."""
        with self.store.db:
            items = [self.store.upsert(item_from_message(msg, self.me))
                     for msg in page.messages]
        if before is None:
            self.store.trim(peer)
        self.post(m.Page(peer=peer, items=tuple(items), has_more=page.has_more,
                         older=before is not None))


def _preview(body: str) -> str:
    line = " ".join(body.split())
    return line[:PREVIEW_CHARS]
