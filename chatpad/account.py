"""One signed-in account on the network thread: the UI's commands become calls on its
libchat :class:`~libchat.Session`, and the session's events become writes to the local
database and results for the UI.

The session owns the protocol (token refresh, reconnects and backoff, the outbox and its
resends, read marks kept while offline); this module owns what chatpad keeps: messages
as the UI shows them, the conversation list, the saved token. Pushes are confirmed to the
server (``delivered``) only once they are written here, so a crash never loses a message
the server was told we have.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable

import attrs

from chatpad import messages as m
from chatpad.history import PAGE_SIZE, History, Post
from chatpad.items import STATUS_RANK, ChatItem, item_from_message
from chatpad.profile import Profile
from chatpad.profile import Session as SavedSession
from chatpad.storage import LocalStore
from libchat import (
    Acked,
    CallResult,
    Connected,
    ConversationList,
    DeliveredReceipt,
    Disconnected,
    Message,
    MessagePage,
    PeerTyping,
    Presence,
    ProtocolViolation,
    ReadReceipt,
    SendDeferred,
    SendFailed,
    Session,
    SessionEvent,
    SessionState,
    SignedOut,
    TokenRefreshed,
    UserList,
)

__all__ = ["SESSION_ENDED", "SIGNED_OUT", "Account"]

log = logging.getLogger(__name__)

SESSION_ENDED = "Your session has ended. Please sign in again."
SIGNED_OUT = "Signed out."

_Answer = Callable[[CallResult], None]


class Account:
    """The account of ``saved`` (server, user, token) on a session made for it.

    The session must be new: :meth:`start` resumes it with the saved token. The account
    is over once :attr:`is_over`; the session may still be finishing (a sign-out's
    logout call), which is the host's business.
    """

    def __init__(self, session: Session, saved: SavedSession, store: LocalStore,
                 profile: Profile, post: Post) -> None:
        self.session = session
        self.saved = saved
        self.store = store
        self.profile = profile
        self.post = post
        self.history = History(store, saved.username, post)
        self.is_over = False
        # HTTP calls made, by the session's number: what they were (for the log), the answer
        self._calls: dict[int, tuple[str, _Answer]] = {}
        self._retry_at: float | None = None  # when the session reconnects (None: soon)
        self._offline = False  # the server will not take this client: no retries
        self._signing_out = False

    @property
    def me(self) -> str:
        return self.saved.username

    def start(self, now: float) -> None:
        self.post(m.SignedIn(server=self.saved.server, username=self.me))
        self.history.post_conversations()
        self.session.resume(self.saved.token, self.saved.expires_at - time.time(), now)

    def status(self, now: float) -> m.Status:
        """The connection as the status bar shows it."""
        retry_at: float | None = None
        if self.session.is_connected:
            state = "connected"
        elif self._offline:
            state = "offline"
        elif self._retry_at is not None and now < self._retry_at:
            state, retry_at = "reconnecting", self._retry_at
        else:
            state = "connecting"
        return m.Status(state=state, retry_at=retry_at, outbox=len(self.session.pending()))

    # --- commands from the UI ---------------------------------------------------------------

    def open(self, peer: str | None, now: float) -> None:
        self.history.open(peer)
        if peer is not None and self.session.is_connected:
            self._fetch_page(peer, None, now)

    def load_older(self, peer: str, before: int, now: float) -> None:
        if self.session.is_connected:
            self._fetch_page(peer, before, now)
        else:
            self.history.cached_page(peer, before)

    def post_message(self, peer: str, body: str, now: float) -> None:
        try:
            entry = self.session.send_message(peer, body, now)  # on disk when it returns
        except ProtocolViolation as exc:
            self.post(m.Notice(text=f"Not sent: {exc.message}."))
            return
        log.debug("queued %s to %s (%d characters); %s", entry.client_id, entry.to, len(body),
                  "sending now" if self.session.is_connected else "sent once connected")
        item = self.store.upsert(ChatItem(
            peer=entry.to, sender=self.me, id=entry.client_id, seq=None, body=body,
            ts=int(time.time() * 1000), status="queued", mine=True))
        self.history.touch(item, unread=False)
        self.post(m.Changed(items=(item,)))
        self.history.post_conversations()

    def mark_read(self, peer: str, up_to: int, now: float) -> None:
        self.history.mark_read(peer, up_to)
        self.session.mark_read(peer, up_to, now)  # kept until connected

    def search(self, prefix: str, now: float) -> None:
        if not prefix or not self._signed_in:
            self.post(m.UsersFound(prefix=prefix, users=()))
            return

        def answer(result: CallResult) -> None:
            body = result.response.body if result.response is not None else None
            users = tuple(u.username for u in body.users) if isinstance(body, UserList) else ()
            self.post(m.UsersFound(prefix=prefix, users=users))

        self._calls[self.session.search_users(prefix, now)] = ("GET /v1/users", answer)

    def typing(self, peer: str, now: float) -> None:
        self.session.typing(peer, now)  # dropped when offline

    def reconnect(self, now: float) -> None:
        if self._signed_in and not self.session.is_connected:
            log.debug("reconnecting now, at the user's request")
            self._retry_at = None
            self.session.reconnect(now)

    def sign_out(self, now: float) -> None:
        """Revoke the token and forget it here; the session reports SignedOut."""
        self._signing_out = True
        self.session.sign_out(now)

    # --- what the session reports -----------------------------------------------------------

    def handle(self, events: list[SessionEvent], now: float) -> None:
        """Apply the session's events, in order; runs of pushes share one transaction."""
        for is_push, run in itertools.groupby(events, lambda e: isinstance(e, Message)):
            if is_push:
                self._on_pushes([e for e in run if isinstance(e, Message)], now)
            else:
                for event in run:
                    self._on_event(event, now)

    def _on_event(self, event: SessionEvent, now: float) -> None:
        if isinstance(event, Connected):
            log.debug("connected as %s (protocol %s); %d in the outbox to send",
                      event.username, event.protocol, len(self.session.pending()))
            self._retry_at, self._offline = None, False
            self._fetch_conversations(now)
            if self.history.open_peer is not None:
                self._fetch_page(self.history.open_peer, None, now)
        elif isinstance(event, Disconnected):
            if event.retry_at is None:
                log.debug("disconnected (%s, close code %s); not retrying", event.reason,
                          event.code)
            else:
                log.debug("disconnected (%s, close code %s); reconnecting in %.1f s",
                          event.reason, event.code, max(0.0, event.retry_at - now))
            self._retry_at = event.retry_at
            self._offline = event.retry_at is None
        elif isinstance(event, Acked):
            self._on_acked(event)
        elif isinstance(event, SendFailed):
            log.debug("send %s refused for good: %s", event.entry.client_id, event.code)
            self._set_status(event.entry.client_id, "failed")
            self.history.post_conversations()  # its row no longer says queued
            self.post(m.Notice(text=f"A message to {event.entry.to} could not be sent "
                                    f"({event.code})."))
        elif isinstance(event, DeliveredReceipt):
            self._set_status(event.id, "delivered", seq=event.seq)
        elif isinstance(event, ReadReceipt):
            changed = self.store.mark_read_up_to(self.me, event.peer, event.up_to)
            if changed:
                self.post(m.Changed(items=tuple(changed)))
        elif isinstance(event, PeerTyping):
            self.post(m.PeerActivity(peer=event.sender, typing=True))
        elif isinstance(event, Presence):
            self.post(m.PeerActivity(peer=event.user, online=event.online))
        elif isinstance(event, CallResult):
            call = self._calls.pop(event.call, None)
            if call is not None:
                what, answer = call
                if event.response is None:
                    log.debug("HTTP %s: no answer (%s)", what, event.reason)
                else:
                    log.debug("HTTP %s -> %d", what, event.response.status)
                answer(event)
        elif isinstance(event, TokenRefreshed):
            log.debug("token refreshed (valid %d s more)", event.expires_in)
            self.saved = attrs.evolve(self.saved, token=event.token,
                                      expires_at=time.time() + event.expires_in)
            self.profile.save_session(self.saved)
        elif isinstance(event, SignedOut):
            self._on_signed_out()
        elif isinstance(event, SendDeferred):
            log.debug("send %s deferred (%s); again in %.1f s", event.entry.client_id,
                      event.code, max(0.0, event.retry_at - now))
        else:  # a server error frame
            log.info("session event: %s", type(event).__name__)

    def _on_pushes(self, pushes: list[Message], now: float) -> None:
        """Store the messages, then confirm the ones addressed to me (never before)."""
        log.debug("received %d message(s), seq %s", len(pushes),
                  ", ".join(str(p.seq) for p in pushes))
        with self.store.db:
            changed = [self.store.upsert(item_from_message(push, self.me)) for push in pushes]
            for item in changed:
                self.history.touch(item, unread=not item.mine)
        self.session.confirm([p.seq for p in pushes if p.recipient == self.me], now)
        self.post(m.Changed(items=tuple(changed)))
        self.history.post_conversations()

    def _on_acked(self, event: Acked) -> None:
        item = self.store.find(self.me, event.ack.id)
        if item is None:
            return
        # the bubble keeps the time it was written at, not the time the server took it
        item = self.store.upsert(attrs.evolve(
            item, seq=event.ack.seq, status=_later(item.status, "sent")))
        log.debug("acked %s as seq %d", event.ack.id, event.ack.seq)
        self.history.touch(item, unread=False)
        self.post(m.Changed(items=(item,)))
        self.history.post_conversations()

    def _set_status(self, client_id: str, status: str, seq: int | None = None) -> None:
        item = self.store.find(self.me, client_id)
        if item is None:
            return
        later = status if status == "failed" else _later(item.status, status)
        item = self.store.upsert(attrs.evolve(item, status=later,
                                                  seq=item.seq if seq is None else seq))
        self.post(m.Changed(items=(item,)))

    def _on_signed_out(self) -> None:
        self.is_over = True
        self.profile.clear_session()
        self.post(m.SignedOut(reason=SIGNED_OUT if self._signing_out else SESSION_ENDED))

    # --- HTTP calls ---------------------------------------------------------------------------

    @property
    def _signed_in(self) -> bool:
        return self.session.state is SessionState.SIGNED_IN

    def _fetch_conversations(self, now: float) -> None:
        def answer(result: CallResult) -> None:
            body = result.response.body if result.response is not None else None
            if isinstance(body, ConversationList):
                self.history.merge_conversations(body)

        self._call("GET /v1/conversations", lambda: self.session.conversations(now), answer)

    def _fetch_page(self, peer: str, before: int | None, now: float) -> None:
        def answer(result: CallResult) -> None:
            body = result.response.body if result.response is not None else None
            if isinstance(body, MessagePage):
                self.history.server_page(peer, before, body)
            else:  # offline or refused: the cache answers
                self.history.cached_page(peer, before)

        if not self._call(f"GET /v1/conversations/{peer}/messages",
                          lambda: self.session.history(peer, now, before=before,
                                                       limit=PAGE_SIZE), answer):
            self.history.cached_page(peer, before)

    def _call(self, what: str, call: Callable[[], int], answer: _Answer) -> bool:
        if not self._signed_in:
            return False
        self._calls[call()] = (what, answer)
        return True


def _later(old: str, new: str) -> str:
    """Statuses only move forwards (queued, sent, delivered, read)."""
    return max(old, new, key=lambda status: STATUS_RANK.get(status, 0))
