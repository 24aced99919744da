"""What the UI knows, built only from the network thread's results. Main thread only."""

from __future__ import annotations

import time

from chatpad import messages as m
from chatpad.items import ChatItem, Hit, Summary

__all__ = ["Model", "Thread"]

TYPING_SHOWN = 5.0  # seconds "typing…" stays after the last signal


class Thread:
    """The messages of one conversation that the UI has, in display order."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._items: dict[tuple[str, str], ChatItem] = {}
        self._ordered: list[ChatItem] | None = []
        self.has_more = True
        self.loading_older = False
        self.loaded = False  # a first page arrived
        self.version = 0  # grows with every change: views re-layout when it moves

    def merge(self, items: tuple[ChatItem, ...] | list[ChatItem]) -> None:
        changed = False
        for item in items:
            if self._items.get(item.key) != item:
                self._items[item.key] = item
                changed = True
        if changed:
            self._ordered = None
            self.version += 1

    @property
    def items(self) -> list[ChatItem]:
        if self._ordered is None:
            self._ordered = sorted(self._items.values(), key=ChatItem.sort_key)
        return self._ordered

    def has(self, key: tuple[str, str]) -> bool:
        return key in self._items

    def oldest_seq(self) -> int | None:
        for item in self.items:
            if item.seq is not None:
                return item.seq
        return None

    def find(self, body: str) -> ChatItem | None:
        """The last message with this body (tests and screenshots use it)."""
        for item in reversed(self.items):
            if item.body == body:
                return item
        return None


class Model:
    def __init__(self, server: str) -> None:
        self.server = server
        self.me: str | None = None
        self.status = m.Status(state="signed_out", retry_at=None, outbox=0)
        self.conversations: list[Summary] = []
        self.threads: dict[str, Thread] = {}
        self.users_found: tuple[str, ...] = ()
        self.users_prefix = ""
        self.auth_error: m.AuthFailed | None = None
        self.signed_out_reason = ""
        self.notices: list[tuple[float, str]] = []
        self.version = 0  # grows with every change to the conversation list
        self.typing_at: dict[str, float] = {}  # peer -> when the last typing signal came
        self.online: dict[str, bool] = {}  # peer -> presence, as far as the server told
        self.found: tuple[str, str | None, tuple[Hit, ...]] | None = None  # text, peer, hits
        self.jump: tuple[str, int] | None = None  # (peer, seq) a search result opens at
        self.drafts: dict[str, str] = {}  # peer -> unsent text kept while searching

    def hits(self, text: str, peer: str | None) -> tuple[Hit, ...] | None:
        """The results of searching ``text`` (in ``peer``'s conversation), or None while
        that search has no answer yet."""
        found = self.found
        if found is None or found[:2] != (text, peer):
            return None
        return found[2]

    def take_jump(self, peer: str) -> int | None:
        """The seq a conversation just opened from a search result should show, once."""
        if self.jump is None or self.jump[0] != peer:
            return None
        seq = self.jump[1]
        self.jump = None
        return seq

    def forget_auth_error(self) -> None:
        """The sign-in screen has shown the last failure (or a new attempt began)."""
        self.auth_error = None

    def thread(self, peer: str) -> Thread:
        thread = self.threads.get(peer)
        if thread is None:
            thread = self.threads[peer] = Thread(peer)
        return thread

    def apply(self, result: m.Result) -> None:
        kind = type(result)
        if kind is m.Status:
            assert isinstance(result, m.Status)
            self.status = result
            if result.state != "connected":  # what the server told is stale: forget it
                self.online.clear()
        elif kind is m.SignedIn:
            assert isinstance(result, m.SignedIn)
            self.me, self.server = result.username, result.server
            self.auth_error = None
        elif kind is m.SignedOut:
            assert isinstance(result, m.SignedOut)
            self.me = None
            self.signed_out_reason = result.reason
            self.conversations = []
            self.threads.clear()
            self.found, self.jump = None, None
            self.drafts.clear()
        elif kind is m.AuthFailed:
            assert isinstance(result, m.AuthFailed)
            self.auth_error = result
        elif kind is m.Conversations:
            assert isinstance(result, m.Conversations)
            self.conversations = sorted(result.items, key=lambda s: s.ts, reverse=True)
            self.version += 1
        elif kind is m.Page:
            assert isinstance(result, m.Page)
            thread = self.thread(result.peer)
            thread.merge(result.items)
            if result.older or not thread.loaded:
                thread.has_more = result.has_more
            if result.older:
                thread.loading_older = False
            thread.loaded = True
        elif kind is m.Changed:
            assert isinstance(result, m.Changed)
            for item in result.items:
                if not item.mine:
                    self.typing_at.pop(item.peer, None)  # the message they typed is here
                known = self.threads.get(item.peer)
                if known is not None:
                    known.merge([item])
        elif kind is m.UsersFound:
            assert isinstance(result, m.UsersFound)
            self.users_prefix, self.users_found = result.prefix, result.users
        elif kind is m.PeerActivity:
            assert isinstance(result, m.PeerActivity)
            if result.typing:
                self.typing_at[result.peer] = time.monotonic()
            if result.online is not None:
                self.online[result.peer] = result.online
                if not result.online:
                    self.typing_at.pop(result.peer, None)
        elif kind is m.MessagesFound:
            assert isinstance(result, m.MessagesFound)
            self.found = (result.text, result.peer, result.hits)
        elif kind is m.Notice:
            assert isinstance(result, m.Notice)
            self.notices.append((time.monotonic(), result.text))
            del self.notices[:-3]

    def is_typing(self, peer: str) -> bool:
        at = self.typing_at.get(peer)
        return at is not None and time.monotonic() - at < TYPING_SHOWN

    def summary(self, peer: str) -> Summary | None:
        for summary in self.conversations:
            if summary.peer == peer:
                return summary
        return None
