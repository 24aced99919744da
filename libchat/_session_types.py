"""The session's vocabulary: its configuration, the actions it asks of its host, the
events it reports, its states, and how it reads an HTTP error answer.

Everything here is public through :mod:`libchat.session` (and :mod:`libchat`); the
session's parts (``_session_*``) share it.
"""

from __future__ import annotations

import enum
from typing import Final, Literal

import attrs

from libchat import limits, protocol
from libchat.events import HttpResponse
from libchat.outbox import OutboxEntry, SendDeferred, SendFailed

HELLO_PROTOCOL: Final = ".".join(limits.PROTOCOL_VERSION.split(".")[:2])
REFRESH_SHARE = 0.75  # refresh once this share of a token's lifetime has passed
REFRESH_MARGIN = 1.0  # seconds a refresh keeps from the earliest end of a token
# A failed refresh is retried after this long. Longer than chatd's default 60 s rotation
# grace: if a rotating refresh was applied but its answer lost, the old token's
# WebSockets are closed with 4001 first, and the session logs in again (or signs out)
# instead of reusing the retired token (a reuse would revoke the whole login).
REFRESH_RETRY = 90.0
HTTP_TIMEOUT = 30.0  # seconds for a whole HTTP call; the protocol asks >= 30 s for logins
CONNECT_TIMEOUT = 15.0  # seconds from asking for the WebSocket's transport to the welcome
DEFAULT_RETRY_AFTER = 60.0  # seconds, for a 429 or 503 without a usable Retry-After

TransportKind = Literal["websocket", "http"]


# --- configuration ------------------------------------------------------------------------


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attr.name} must be positive")


def _share(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"{attr.name} must be in (0, 1]")


@attrs.frozen(kw_only=True)
class SessionConfig:
    """How a session behaves. Only ``host`` is required.

    Attributes:
        host: the ``Host`` header: ``"chat.example"`` for the scheme's default port,
            else ``"chat.example:8765"``.
        hello_protocol: the ``MAJOR.MINOR`` announced in ``hello``.
        refresh_share: refresh the token once this share of its lifetime has passed.
        refresh_retry: seconds before retrying a refresh that failed.
        rotate_tokens: refresh with ``{"rotate": true}`` (protocol 1.1): the old token is
            retired after the server's grace period.
        http_timeout: seconds an HTTP call may take, connecting included.
        connect_timeout: seconds from opening the WebSocket's transport to the welcome.
        auto_confirm: confirm every push addressed to this user (``delivered``) as it
            arrives, batched per read, before the application has seen it. Without it,
            confirm with :meth:`Session.confirm` once the message is safely stored
            (repeats of seqs already handed out are still confirmed by the session).
        backoff_base: ceiling of the first reconnect delay, in seconds.
        backoff_cap: largest reconnect delay, in seconds.
        user_agent: the ``User-Agent`` header.
    """

    host: str
    hello_protocol: str = HELLO_PROTOCOL
    refresh_share: float = attrs.field(default=REFRESH_SHARE, validator=_share)
    refresh_retry: float = attrs.field(default=REFRESH_RETRY, validator=_positive)
    rotate_tokens: bool = True
    http_timeout: float = attrs.field(default=HTTP_TIMEOUT, validator=_positive)
    connect_timeout: float = attrs.field(default=CONNECT_TIMEOUT, validator=_positive)
    auto_confirm: bool = True
    backoff_base: float = attrs.field(default=0.5, validator=_positive)
    backoff_cap: float = attrs.field(default=30.0, validator=_positive)
    user_agent: str = "libchat/0.1"


# --- what the host does (actions) -----------------------------------------------------------


@attrs.frozen(kw_only=True)
class OpenTransport:
    """Open a byte stream to the server (TCP, with TLS if the server uses it). Report
    :meth:`Session.transport_opened` once it is ready to carry bytes (after the TLS
    handshake), or :meth:`Session.transport_closed` if it cannot be opened."""

    id: int
    kind: TransportKind  # what it will carry; informative (e.g. for logs)


@attrs.frozen(kw_only=True)
class WriteTransport:
    """Write ``data`` to the transport, in order."""

    id: int
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")


@attrs.frozen(kw_only=True)
class CloseTransport:
    """Close the transport (after the writes queued before this). The session has
    forgotten its id: do not report anything more about it."""

    id: int


SessionAction = OpenTransport | WriteTransport | CloseTransport


# --- what happened (events) -----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SignedIn:
    """The server granted a token (after :meth:`Session.sign_in`, or a new sign-in after
    the old token was refused). The session connects by itself. Keep ``token`` only where
    a password would be kept; it never appears in the repr."""

    username: str
    user_id: int
    token: str = attrs.field(repr=False)
    expires_in: int  # seconds


@attrs.frozen(kw_only=True)
class SignInFailed:
    """:meth:`Session.sign_in` did not work; the session is back to ``NEW``.

    ``status`` is the HTTP status, ``None`` when the server could not be reached or did
    not answer in time (``code`` is then ``"unreachable"``). ``code`` and ``message`` come
    from the error body (``invalid_credentials``, ``username_taken``, ``rate_limited``...).
    ``retry_after`` (seconds) is set for 429 and 503: do not try again sooner.
    ``step`` says which request failed: ``"register"``, or ``"login"`` (with
    ``register=True``, a failed login means the account was created: sign in without
    ``register`` next time).
    """

    status: int | None
    code: str
    message: str
    retry_after: float | None = None
    step: Literal["register", "login"] = "login"


@attrs.frozen(kw_only=True)
class TokenRefreshed:
    """The token was refreshed; the session already uses the new one (and ``reauth``-ed
    its WebSocket with it). A client that saves its token saves this one now."""

    token: str = attrs.field(repr=False)
    expires_in: int  # seconds


@attrs.frozen(kw_only=True)
class SignedOut:
    """The session is over: signed out by :meth:`Session.sign_out`, or the server refused
    its token for good (expired, revoked, password changed) and it had no password to sign
    in again with. Pending sends stay in the outbox storage."""

    reason: str


@attrs.frozen(kw_only=True)
class Connected:
    """The WebSocket got its welcome: messages flow. The catch-up (messages pushed while
    offline, each seq once) follows; the outbox resends what was never acked."""

    username: str
    user_id: int
    protocol: str  # the version both sides speak, ``MAJOR.MINOR.BUILD``
    server_time: int  # ms since the epoch


@attrs.frozen(kw_only=True)
class Disconnected:
    """The WebSocket is down, or an attempt to open it failed. ``code`` is the close code
    (1006: the transport broke without one; ``None``: no WebSocket was reached, e.g. the
    server was unreachable or refused the upgrade), ``reason`` says what happened. The
    session tries again at ``retry_at`` (same clock as ``now``); ``None`` means it will not
    by itself (the server does not speak this protocol version: close 4002)."""

    code: int | None
    reason: str
    retry_at: float | None


@attrs.frozen(kw_only=True)
class Acked:
    """The server stored a message sent with :meth:`Session.send_message`; it has left
    the outbox."""

    entry: OutboxEntry
    ack: protocol.Ack


@attrs.frozen(kw_only=True)
class CallResult:
    """The answer to an HTTP call the application made (:meth:`Session.history`,
    :meth:`~Session.conversations`, :meth:`~Session.search_users`); ``call`` is the number
    the method returned. ``response`` is ``None`` when there was no answer (``reason``
    says why); else its ``body`` is the typed body or an ``ErrorBody``."""

    call: int
    response: HttpResponse | None
    reason: str = ""


SessionEvent = (
    SignedIn
    | SignInFailed
    | TokenRefreshed
    | SignedOut
    | Connected
    | Disconnected
    | Acked
    | SendFailed
    | SendDeferred
    | CallResult
    | protocol.Message
    | protocol.DeliveredReceipt
    | protocol.ReadReceipt
    | protocol.PeerTyping
    | protocol.Presence
    | protocol.Error
)


class SessionState(enum.Enum):
    NEW = "new"  # not signed in: call sign_in() or resume()
    SIGNING_IN = "signing_in"  # a login (or register) is on its way
    SIGNED_IN = "signed_in"  # has a token: connected, or connecting
    SIGNED_OUT = "signed_out"  # over (SignedOut was reported)
    CLOSED = "closed"  # close() was called


# --- reading HTTP answers ----------------------------------------------------------------


def retry_after(response: HttpResponse | None) -> float | None:
    """Seconds a 429 or 503 asks to wait (its ``Retry-After``), else None."""
    if response is None or response.status not in (429, 503):
        return None
    value = response.header("retry-after")
    if value is not None and value.strip().isdigit():
        return float(value.strip())
    return DEFAULT_RETRY_AFTER


def error_code(response: HttpResponse) -> str:
    body = response.body
    if isinstance(body, protocol.ErrorBody):
        return f"{response.status} {body.error.code}"
    return str(response.status)
