"""What the UI thread and the network thread say to each other, through two queues.

Commands go UI -> network, results network -> UI. All frozen attrs values: nothing
mutable crosses the thread boundary.
"""

from __future__ import annotations

import attrs

from chatpad.items import ChatItem, Hit, Summary

# --- commands (UI -> network) -----------------------------------------------------------


@attrs.frozen(kw_only=True)
class SignIn:
    server: str
    username: str
    password: str = attrs.field(repr=False)
    create: bool = False  # register first, then sign in


@attrs.frozen(kw_only=True)
class SignOut:
    """``remove_local_data``: then delete the profile's database (history, outbox,
    search index) and session; queued messages are lost."""

    remove_local_data: bool = False


@attrs.frozen(kw_only=True)
class Open:
    """The conversation on screen (None: the list). Its newest page comes back."""

    peer: str | None


@attrs.frozen(kw_only=True)
class LoadOlder:
    peer: str
    before: int


@attrs.frozen(kw_only=True)
class Post:
    peer: str
    body: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class MarkRead:
    peer: str
    up_to: int


@attrs.frozen(kw_only=True)
class Search:
    prefix: str


@attrs.frozen(kw_only=True)
class SearchMessages:
    """Search the cached messages (all conversations, or ``peer``'s); works offline."""

    text: str
    peer: str | None = None


@attrs.frozen(kw_only=True)
class LoadAround:
    """Load from the cache the messages from a little before seq ``seq`` to the newest,
    to show a search result in place (after :class:`Open` of the same peer)."""

    peer: str
    seq: int


@attrs.frozen(kw_only=True)
class Typing:
    """The user is writing to ``peer`` (an ephemeral signal, sent only when connected)."""

    peer: str


@attrs.frozen(kw_only=True)
class Reconnect:
    """Try now instead of waiting out the backoff."""


@attrs.frozen(kw_only=True)
class Shutdown:
    pass


Command = (
    SignIn | SignOut | Open | LoadOlder | Post | MarkRead | Search | Typing | Reconnect
    | Shutdown | SearchMessages | LoadAround
)

# --- results (network -> UI) ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Status:
    """``state``: signed_out, connecting, connected, reconnecting (at ``retry_at``, a
    ``time.monotonic()`` value), offline. ``outbox``: messages waiting for their ack."""

    state: str
    retry_at: float | None
    outbox: int


@attrs.frozen(kw_only=True)
class SignedIn:
    server: str
    username: str


@attrs.frozen(kw_only=True)
class AuthFailed:
    """``code``: a contract error code, or ``unreachable`` / ``bad_address``."""

    code: str
    message: str
    retry_at: float | None = None  # rate_limited: monotonic time the limit lifts


@attrs.frozen(kw_only=True)
class SignedOut:
    reason: str


@attrs.frozen(kw_only=True)
class Conversations:
    items: tuple[Summary, ...]


@attrs.frozen(kw_only=True)
class Page:
    """Messages of one conversation to merge. ``older``: a page before what is shown."""

    peer: str
    items: tuple[ChatItem, ...]
    has_more: bool
    older: bool


@attrs.frozen(kw_only=True)
class Changed:
    """New or updated messages (a push, a queued send, an ack, a receipt)."""

    items: tuple[ChatItem, ...]


@attrs.frozen(kw_only=True)
class UsersFound:
    prefix: str
    users: tuple[str, ...]


@attrs.frozen(kw_only=True)
class PeerActivity:
    """``peer`` is typing (``typing``), or came online or went offline (``online``)."""

    peer: str
    typing: bool = False
    online: bool | None = None


@attrs.frozen(kw_only=True)
class MessagesFound:
    """The answer to :class:`SearchMessages` with the same ``text`` and ``peer``."""

    text: str
    peer: str | None
    hits: tuple[Hit, ...]


@attrs.frozen(kw_only=True)
class Notice:
    text: str


Result = (
    Status | SignedIn | AuthFailed | SignedOut | Conversations | Page | Changed | UsersFound
    | PeerActivity | Notice | MessagesFound
)
