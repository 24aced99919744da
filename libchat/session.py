"""A chat client session, sans-IO: what every client does, with no sockets of its own.

One :class:`Session` is one user signed in on one device. It owns what every client does
besides moving bytes: sign-in, refreshing the token before it expires (rotating it), the
WebSocket with its hello and the catch-up after the welcome, the outbox (sends resent
until acked, backing off on refusals), dropping repeated pushes by seq, confirming
delivery, read marks, and reconnecting with backoff. It runs the libchat client engine
(:class:`~libchat.client.ClientConnection`), one per transport.

The host does the I/O. Like the engines, the session never reads a clock: every call
takes ``now``, a float in seconds from any monotonic clock. After **any** call, the host
drains two lists:

* :meth:`Session.actions` -- what to do with transports (byte streams to the server,
  plain TCP or TLS): :class:`OpenTransport`, :class:`WriteTransport`,
  :class:`CloseTransport`. It answers with :meth:`~Session.transport_opened`,
  :meth:`~Session.receive_data` and :meth:`~Session.transport_closed`.
* :meth:`Session.events` -- what happened, for the application: :class:`SignedIn`,
  :class:`Connected`, the server's :class:`~libchat.protocol.Message` pushes (each seq
  once), :class:`Acked`, receipts... (:data:`SessionEvent` lists them all).

Then it calls :meth:`~Session.handle_timer` at :meth:`~Session.next_deadline`::

    session = Session(SessionConfig(host="chat.example:8765"), rng=random.SystemRandom())
    session.sign_in(Credentials(username="echo", password=secret), now=clock())
    while True:
        for action in session.actions():    # open sockets, write bytes, close sockets
            ...
        for event in session.events():      # the application's business
            ...
        wait for a socket or session.next_deadline(), then call receive_data(),
        transport_opened(), transport_closed() or handle_timer()

The WebSocket lives on one transport; each HTTP call (sign-in, refresh, history...)
gets a transport of its own, closed once answered, so a slow page never holds up a
message. :mod:`libchat.aio` is a ready host for asyncio; ``examples/echo_selectors.py``
hosts a session on plain sockets.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable, Iterable
from typing import Final, Literal

import attrs

from libchat import limits, protocol
from libchat.backoff import Backoff
from libchat.client import ClientConfig, ClientConnection, ClientEvent
from libchat.events import ConnectionClosed, HttpResponse, Upgraded
from libchat.outbox import (
    MemoryOutboxStorage,
    Outbox,
    OutboxEntry,
    OutboxStorage,
    SendDeferred,
    SendFailed,
)
from libchat.states import LocalProtocolError

__all__ = [
    "HELLO_PROTOCOL",
    "Acked",
    "CallResult",
    "CloseTransport",
    "Connected",
    "Disconnected",
    "OpenTransport",
    "Session",
    "SessionAction",
    "SessionConfig",
    "SessionEvent",
    "SessionState",
    "SignInFailed",
    "SignedIn",
    "SignedOut",
    "TokenRefreshed",
    "TransportKind",
    "WriteTransport",
]

_log = logging.getLogger(__name__)

# The version a session announces in its hello: MAJOR.MINOR of this libchat.
HELLO_PROTOCOL: Final = ".".join(limits.PROTOCOL_VERSION.split(".")[:2])
REFRESH_SHARE = 0.75  # refresh once this share of a token's lifetime has passed
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
    """

    status: int | None
    code: str
    message: str
    retry_after: float | None = None


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


# --- internals -------------------------------------------------------------------------------


class _Purpose(enum.Enum):
    REGISTER = "register"
    LOGIN = "login"
    REFRESH = "refresh"
    LOGOUT = "logout"
    APP = "app"  # the application's call: answered with CallResult


_Request = Callable[[ClientConnection, float], None]


@attrs.define(eq=False)
class _Transport:
    """One transport the session asked for, and the engine on it once it is open."""

    id: int
    kind: TransportKind
    deadline: float | None  # give up unless answered (HTTP) or welcomed (WebSocket)
    token: str | None = None  # the token it authenticates with
    purpose: _Purpose = _Purpose.APP  # HTTP: what the answer is for
    request: _Request | None = None  # HTTP: queues the request on the engine
    conn: ClientConnection | None = None
    host_closed: bool = False  # the host reported it closed: no CloseTransport


class Session:
    """One user's chat session on one device; see the module docstring.

    Args:
        config: what to connect to and how to behave.
        rng: randomness for WebSocket keys, message ids and backoff jitter
            (``random.SystemRandom()`` in a real client; seeded in tests).
        storage: where the outbox and the seen seqs live (default: in memory). A client
            that must not lose queued messages across restarts passes a durable one.

    Methods raise :class:`~libchat.states.LocalProtocolError` when called in a state
    that does not allow them (e.g. :meth:`history` before signing in), and
    :class:`~libchat.protocol.ProtocolViolation` for a message the protocol refuses
    (empty, too long). Nothing the server or the transports do raises.
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        rng: random.Random,
        storage: OutboxStorage | None = None,
    ) -> None:
        self._config = config
        self._engine_config = ClientConfig(host=config.host, user_agent=config.user_agent)
        self._rng = rng
        self._outbox = Outbox(storage if storage is not None else MemoryOutboxStorage(), rng)
        self._backoff = Backoff(rng=rng, base=config.backoff_base, cap=config.backoff_cap)
        self._state = SessionState.NEW
        self._actions: list[SessionAction] = []
        self._events: list[SessionEvent] = []
        self._transports: dict[int, _Transport] = {}
        self._next_id = 1
        self._credentials: protocol.Credentials | None = None  # to sign in again
        self._had_token = False  # a refused token makes a later login a sign-in *again*
        self._token: str | None = None
        self._username: str | None = None
        self._user_id: int | None = None
        self._refresh_at: float | None = None
        self._retry_at: float | None = None  # next WebSocket attempt, or next sign-in
        self._ws: _Transport | None = None
        self._welcomed = False
        self._pending_reads: dict[str, int] = {}  # peer -> up_to, sent once connected

    # --- what the host reads ---------------------------------------------------------------

    def actions(self) -> list[SessionAction]:
        """What the host must do with its transports now, in order; empties the list."""
        taken, self._actions = self._actions, []
        return taken

    def events(self) -> list[SessionEvent]:
        """What happened since the last call, in order; empties the list."""
        taken, self._events = self._events, []
        return taken

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` should next be called, or ``None``."""
        times = [self._refresh_at, self._retry_at, self._outbox.next_retry_at()]
        for transport in self._transports.values():
            times.append(transport.deadline)
            if transport.conn is not None:
                times.append(transport.conn.next_deadline())
        due = [t for t in times if t is not None]
        return min(due) if due else None

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def is_connected(self) -> bool:
        """True while the WebSocket is welcomed: sends go out at once."""
        return self._welcomed

    @property
    def is_finished(self) -> bool:
        """True once signed out or closed and every transport is gone: the host may stop."""
        done = self._state in (SessionState.SIGNED_OUT, SessionState.CLOSED)
        return done and not self._transports

    @property
    def username(self) -> str | None:
        """The signed-in user's name, once the server said it (sign-in or welcome)."""
        return self._username

    def pending(self) -> list[OutboxEntry]:
        """Messages not acked yet, oldest first."""
        return self._outbox.pending()

    # --- what the host reports ---------------------------------------------------------------

    def transport_opened(self, transport_id: int, now: float) -> None:
        """The transport asked for by :class:`OpenTransport` is ready. Drain afterwards."""
        transport = self._transports.get(transport_id)
        if transport is None or transport.conn is not None:
            return
        conn = transport.conn = ClientConnection(self._engine_config, self._rng)
        if transport.request is not None:
            transport.request(conn, now)
        else:
            conn.upgrade(now)
        self._drain(transport, now)

    def receive_data(self, transport_id: int, data: bytes, now: float) -> None:
        """Bytes read from a transport. Drain afterwards."""
        transport = self._transports.get(transport_id)
        if transport is None or transport.conn is None:
            return
        self._feed(transport, transport.conn.receive_data(data, now), now)

    def transport_closed(self, transport_id: int, now: float, reason: str = "") -> None:
        """The transport ended (end of stream, an error), or could not be opened.
        Drain afterwards."""
        transport = self._transports.get(transport_id)
        if transport is None:
            return
        transport.host_closed = True
        if transport.conn is not None:
            self._feed(transport, transport.conn.receive_eof(now), now)
        if transport.id in self._transports:
            self._lose(transport, now, None, reason or "connection failed")

    def handle_timer(self, now: float) -> None:
        """Do what is due at ``now``. Drain afterwards."""
        for transport in list(self._transports.values()):
            if transport.id not in self._transports:
                continue  # ended by what an earlier one did
            if transport.deadline is not None and now >= transport.deadline:
                self._lose(transport, now, None, "timed out")
                continue
            conn = transport.conn
            due = conn.next_deadline() if conn is not None else None
            if conn is not None and due is not None and now >= due:
                self._feed(transport, conn.handle_timer(now), now)
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            if self._state is SessionState.SIGNING_IN:
                self._login(now)
            else:
                self._connect(now)
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._refresh(now)
        self._send_due(now)

    # --- what the application asks ------------------------------------------------------------

    def sign_in(
        self, credentials: protocol.Credentials, now: float, *, register: bool = False
    ) -> None:
        """Log in (with ``register``, create the account first), then connect. Answered
        with :class:`SignedIn` or :class:`SignInFailed`. The session keeps the
        credentials in memory to sign in again if the server ever refuses its token."""
        self._expect(SessionState.NEW, "sign_in")
        self._credentials = credentials
        self._state = SessionState.SIGNING_IN
        if register:
            self._http(
                _Purpose.REGISTER, lambda conn, t: conn.register(credentials, t), now, token=None
            )
        else:
            self._login(now)

    def resume(self, token: str, expires_in: float, now: float) -> None:
        """Use a token saved earlier (``expires_in``: seconds it has left) and connect.
        If the server refuses it, the session ends with :class:`SignedOut`."""
        self._expect(SessionState.NEW, "resume")
        self._state = SessionState.SIGNED_IN
        self._use_token(token, expires_in, now)
        self._connect(now)

    def send_message(self, to: str, body: str, now: float) -> OutboxEntry:
        """Queue a message: stored in the outbox at once and sent whenever connected,
        until acked (:class:`Acked`) or refused for good (:class:`SendFailed`).
        May be called before signing in. Raises ``ProtocolViolation`` for a body the
        protocol refuses."""
        entry = self._outbox.submit(to=to, body=body, now=now)
        self._send_due(now)
        return entry

    def mark_read(self, peer: str, up_to: int, now: float) -> None:
        """Tell the server the user has read ``peer``'s messages up to seq ``up_to``
        (sent at once, or when next connected)."""
        frame = protocol.Read(peer=peer, up_to=up_to)
        if self._welcomed:
            self._send(frame, now)
        else:
            self._pending_reads[frame.peer] = max(up_to, self._pending_reads.get(frame.peer, 0))

    def confirm(self, seqs: Iterable[int], now: float) -> None:
        """Confirm delivery of pushed messages (only with ``auto_confirm`` off). Lost
        while disconnected: the server pushes them again and the session confirms the
        repeats itself."""
        self._confirm(list(seqs), now)

    def typing(self, to: str, now: float) -> bool:
        """Tell ``to`` the user is typing (at most every 3 s); False when not connected."""
        if not self._welcomed:
            return False
        self._send(protocol.Typing(to=to), now)
        return True

    def search_users(self, prefix: str, now: float) -> int:
        """``GET /v1/users``: returns the call number its :class:`CallResult` carries."""
        token = self._token_for_calls()
        return self._http(
            _Purpose.APP, lambda conn, t: conn.search_users(token, prefix, t), now, token
        )

    def conversations(self, now: float) -> int:
        """``GET /v1/conversations``: returns the call number its :class:`CallResult`
        carries."""
        token = self._token_for_calls()
        return self._http(_Purpose.APP, lambda conn, t: conn.conversations(token, t), now, token)

    def history(
        self, peer: str, now: float, *, before: int | None = None, limit: int | None = None
    ) -> int:
        """``GET /v1/conversations/<peer>/messages``: returns the call number its
        :class:`CallResult` carries."""
        token = self._token_for_calls()
        return self._http(
            _Purpose.APP,
            lambda conn, t: conn.history(token, peer, t, before=before, limit=limit),
            now,
            token,
        )

    def reconnect(self, now: float) -> None:
        """Connect now if disconnected, starting the backoff over (a user's "retry")."""
        if self._state is SessionState.SIGNED_IN and self._ws is None:
            self._backoff.reset()
            self._connect(now)

    def sign_out(self, now: float) -> None:
        """Revoke the token (``POST /v1/logout``, in the background), close the WebSocket
        and end the session with :class:`SignedOut`. Keep draining until
        :attr:`is_finished`."""
        if self._state in (SessionState.SIGNED_OUT, SessionState.CLOSED):
            return
        token = self._token
        if self._state is SessionState.SIGNED_IN and token is not None:
            self._http(_Purpose.LOGOUT, lambda conn, t: conn.logout(token, t), now, token)
        self._finish(SessionState.SIGNED_OUT, now)
        self._events.append(SignedOut(reason="signed out"))

    def close(self, now: float) -> None:
        """Stop without signing out (the token stays valid): close the WebSocket, drop
        every other transport. Keep draining until :attr:`is_finished`."""
        if self._state is SessionState.CLOSED:
            return
        self._finish(SessionState.CLOSED, now)
        for transport in list(self._transports.values()):
            if transport.kind == "http":
                self._lose(transport, now, None, "session closed")

    # --- sign-in and tokens ---------------------------------------------------------------------

    def _expect(self, state: SessionState, what: str) -> None:
        if self._state is not state:
            raise LocalProtocolError(f"cannot {what} in state {self._state.value}")

    def _token_for_calls(self) -> str:
        if self._state is not SessionState.SIGNED_IN or self._token is None:
            raise LocalProtocolError(f"not signed in (state {self._state.value})")
        return self._token

    def _login(self, now: float) -> None:
        credentials = self._credentials
        assert credentials is not None
        self._http(_Purpose.LOGIN, lambda conn, t: conn.login(credentials, t), now, token=None)

    def _on_registered(self, response: HttpResponse | None, reason: str, now: float) -> None:
        if self._state is not SessionState.SIGNING_IN:
            return  # signed out or closed meanwhile
        if response is not None and response.status == 201:
            self._login(now)
        else:
            self._sign_in_failed(response, reason)

    def _on_login(self, response: HttpResponse | None, reason: str, now: float) -> None:
        if self._state is not SessionState.SIGNING_IN:
            return  # signed out or closed meanwhile
        grant = response.body if response is not None else None
        if (
            response is not None
            and response.status == 200
            and isinstance(grant, protocol.TokenGrant)
        ):
            self._state = SessionState.SIGNED_IN
            self._username, self._user_id = grant.username, grant.user_id
            self._events.append(
                SignedIn(
                    username=grant.username,
                    user_id=grant.user_id,
                    token=grant.token,
                    expires_in=grant.expires_in,
                )
            )
            self._use_token(grant.token, grant.expires_in, now)
            self._connect(now)
        elif not self._had_token:
            self._sign_in_failed(response, reason)  # the first sign-in
        elif response is None or response.status == 429 or response.status >= 500:
            # Signing in again after the token was refused: keep trying, as reconnects do.
            wait = max(self._backoff.next_delay(), _retry_after(response) or 0.0)
            self._retry_at = now + wait
        else:
            self._end(SignedOut(reason=f"cannot sign in again: {_error_code(response)}"), now)

    def _sign_in_failed(self, response: HttpResponse | None, reason: str) -> None:
        self._state = SessionState.NEW
        self._credentials = None
        if response is None:
            failure = SignInFailed(status=None, code="unreachable", message=reason)
        else:
            body = response.body
            if isinstance(body, protocol.ErrorBody):
                code, message = body.error.code, body.error.message
            else:
                code, message = f"http_{response.status}", f"the server answered {response.status}"
            failure = SignInFailed(
                status=response.status,
                code=code,
                message=message,
                retry_after=_retry_after(response),
            )
        self._events.append(failure)

    def _use_token(self, token: str, expires_in: float, now: float) -> None:
        self._token = token
        self._had_token = True
        self._refresh_at = now + max(0.0, expires_in) * self._config.refresh_share

    def _refresh(self, now: float) -> None:
        token = self._token
        if self._state is not SessionState.SIGNED_IN or token is None:
            return
        rotate = self._config.rotate_tokens
        self._http(
            _Purpose.REFRESH, lambda conn, t: conn.refresh(token, t, rotate=rotate), now, token
        )

    def _on_refreshed(
        self, transport: _Transport, response: HttpResponse | None, now: float
    ) -> None:
        if self._state is not SessionState.SIGNED_IN or transport.token != self._token:
            return  # signed out, or signed in again, meanwhile
        grant = response.body if response is not None else None
        if (
            response is not None
            and response.status == 200
            and isinstance(grant, protocol.TokenGrant)
        ):
            self._use_token(grant.token, grant.expires_in, now)
            self._events.append(TokenRefreshed(token=grant.token, expires_in=grant.expires_in))
            ws = self._ws
            if ws is not None and self._welcomed:
                self._send(protocol.Reauth(token=grant.token), now)
                ws.token = grant.token
        elif response is not None and response.status == 401:
            self._token_refused(now)
        else:
            _log.debug("token refresh failed; retrying in %.0f s", self._config.refresh_retry)
            self._refresh_at = now + self._config.refresh_retry

    def _token_refused(self, now: float) -> None:
        """The server no longer takes the token: sign in again, or end the session."""
        self._token = None
        self._refresh_at = None
        self._close_ws(limits.CLOSE_NORMAL, "token refused", now)
        if self._credentials is None:
            self._end(SignedOut(reason="the server refused the token"), now)
            return
        self._state = SessionState.SIGNING_IN
        self._login(now)

    def _end(self, event: SignedOut, now: float) -> None:
        self._finish(SessionState.SIGNED_OUT, now)
        self._events.append(event)

    def _finish(self, state: SessionState, now: float) -> None:
        self._state = state
        self._credentials = None
        self._token = None
        self._refresh_at = self._retry_at = None
        if state is SessionState.SIGNED_OUT:
            self._close_ws(limits.CLOSE_NORMAL, "signed out", now)
        else:
            self._close_ws(limits.CLOSE_GOING_AWAY, "client closing", now)

    # --- HTTP calls ----------------------------------------------------------------------------

    def _http(self, purpose: _Purpose, request: _Request, now: float, token: str | None) -> int:
        transport = self._open("http", now + self._config.http_timeout, token)
        transport.purpose = purpose
        transport.request = request
        return transport.id

    def _answer(
        self, transport: _Transport, response: HttpResponse | None, reason: str, now: float
    ) -> None:
        purpose = transport.purpose
        if purpose is _Purpose.APP:
            self._events.append(CallResult(call=transport.id, response=response, reason=reason))
        elif purpose is _Purpose.LOGIN:
            self._on_login(response, reason, now)
        elif purpose is _Purpose.REGISTER:
            self._on_registered(response, reason, now)
        elif purpose is _Purpose.REFRESH:
            self._on_refreshed(transport, response, now)
        # LOGOUT: nothing to do either way

    # --- the WebSocket ------------------------------------------------------------------------

    def _connect(self, now: float) -> None:
        if self._state is not SessionState.SIGNED_IN or self._ws is not None:
            return
        self._retry_at = None
        self._ws = self._open("websocket", now + self._config.connect_timeout, self._token)

    def _close_ws(self, code: int, reason: str, now: float) -> None:
        """Leave the WebSocket (it finishes its close handshake on its own)."""
        ws = self._ws
        if ws is None:
            return
        self._detach_ws(now)
        if ws.conn is None:
            self._lose(ws, now, None, reason)
        else:  # a WebSocket does the close handshake; anything earlier ends at once
            ws.conn.close(code, reason, now=now)
            self._drain(ws, now)

    def _detach_ws(self, now: float) -> None:
        if self._welcomed:
            self._backoff.disconnected(now)
        self._ws = None
        self._welcomed = False
        self._outbox.on_disconnected()

    def _on_ws_event(self, ws: _Transport, event: ClientEvent, now: float) -> list[int]:
        """Handle one event of the WebSocket; returns seqs to confirm."""
        if isinstance(event, protocol.Message):
            fresh = self._outbox.accept_push(event)
            if fresh:
                self._events.append(event)
            if event.recipient == self._username and (not fresh or self._config.auto_confirm):
                return [event.seq]
        elif isinstance(event, protocol.Ack):
            entry = self._outbox.on_ack(event)
            if entry is not None:
                self._events.append(Acked(entry=entry, ack=event))
        elif isinstance(event, protocol.Error):
            if not self._welcomed:  # refuses the hello: the close that follows says it
                _log.debug("hello refused: %s", event.code)
                return []
            outcome = self._outbox.on_error(event, now)
            self._events.append(outcome if outcome is not None else event)
        elif isinstance(event, protocol.Welcome):
            self._welcome(ws, event, now)
        elif isinstance(event, Upgraded):
            assert ws.conn is not None and ws.token is not None
            ws.conn.send(protocol.Hello(protocol=self._config.hello_protocol, token=ws.token), now)
        elif isinstance(event, HttpResponse):
            self._lose(ws, now, None, f"upgrade refused: {_error_code(event)}", event)
        elif isinstance(event, ConnectionClosed):
            self._lose(ws, now, event.code, event.reason)
        elif not isinstance(event, protocol.Reauthed):  # receipts, typing, presence
            self._events.append(event)
        return []

    def _welcome(self, ws: _Transport, welcome: protocol.Welcome, now: float) -> None:
        ws.deadline = None
        self._welcomed = True
        self._username, self._user_id = welcome.username, welcome.user_id
        self._backoff.connected(now)
        self._events.append(
            Connected(
                username=welcome.username,
                user_id=welcome.user_id,
                protocol=welcome.protocol,
                server_time=welcome.server_time,
            )
        )
        if self._token is not None and ws.token != self._token:
            self._send(protocol.Reauth(token=self._token), now)  # refreshed during the hello
            ws.token = self._token
        reads, self._pending_reads = self._pending_reads, {}
        for peer, up_to in reads.items():
            self._send(protocol.Read(peer=peer, up_to=up_to), now)
        for frame in self._outbox.on_connected(now):
            self._send(frame, now)

    def _ws_lost(
        self,
        ws: _Transport,
        code: int | None,
        reason: str,
        refusal: HttpResponse | None,
        now: float,
    ) -> None:
        if ws is not self._ws:
            return  # one the session had left already
        self._detach_ws(now)
        refused = code == limits.CLOSE_UNAUTHORIZED or (
            refusal is not None and refusal.status == 401
        )
        if refused and ws.token == self._token:
            self._token_refused(now)  # sign in again, or SignedOut
            if self._state is SessionState.SIGNING_IN:
                self._events.append(Disconnected(code=code, reason=reason, retry_at=now))
            return
        retry_at: float | None = None
        if code != limits.CLOSE_UNSUPPORTED_PROTOCOL:
            wait = 0.0 if refused else self._backoff.next_delay()  # refused: a newer token
            retry_at = now + max(wait, _retry_after(refusal) or 0.0)
        self._retry_at = retry_at
        self._events.append(Disconnected(code=code, reason=reason, retry_at=retry_at))

    # --- sending -------------------------------------------------------------------------------

    def _send(self, frame: protocol.ClientFrame, now: float) -> None:
        ws = self._ws
        if ws is None or ws.conn is None or not self._welcomed:
            return
        ws.conn.send(frame, now)
        self._drain(ws, now)

    def _send_due(self, now: float) -> None:
        if self._welcomed:
            for frame in self._outbox.frames_due(now):
                self._send(frame, now)

    def _confirm(self, seqs: list[int], now: float) -> None:
        step = limits.MAX_SEQS_PER_DELIVERED
        for start in range(0, len(seqs), step):
            self._send(protocol.Delivered(seqs=seqs[start : start + step]), now)

    # --- transports ----------------------------------------------------------------------------

    def _open(self, kind: TransportKind, deadline: float, token: str | None) -> _Transport:
        transport = _Transport(id=self._next_id, kind=kind, deadline=deadline, token=token)
        self._next_id += 1
        self._transports[transport.id] = transport
        self._actions.append(OpenTransport(id=transport.id, kind=kind))
        return transport

    def _feed(self, transport: _Transport, events: list[ClientEvent], now: float) -> None:
        """Handle what one engine call returned, then write and maybe close."""
        if transport.kind == "http":
            for event in events:
                if transport.id not in self._transports:
                    break
                if isinstance(event, HttpResponse):
                    self._lose(transport, now, None, "answered", event)
                elif isinstance(event, ConnectionClosed):
                    self._lose(transport, now, event.code, event.reason)
        else:
            confirm: list[int] = []
            for event in events:
                if transport.id not in self._transports:
                    break
                confirm += self._on_ws_event(transport, event, now)
            if transport is self._ws:
                self._confirm(confirm, now)
                self._send_due(now)
        self._drain(transport, now)

    def _drain(self, transport: _Transport, now: float) -> None:
        """Hand the engine's output to the host; end the transport if the engine did."""
        conn = transport.conn
        if conn is None or transport.id not in self._transports:
            return
        data = conn.data_to_send()
        if data and not transport.host_closed:
            self._actions.append(WriteTransport(id=transport.id, data=data))
        if conn.is_closed:
            self._lose(transport, now, conn.close_code, conn.close_reason)

    def _lose(
        self,
        transport: _Transport,
        now: float,
        code: int | None,
        reason: str,
        response: HttpResponse | None = None,
    ) -> None:
        """The transport is over: tell the host (unless it told us), then its owner."""
        if self._transports.pop(transport.id, None) is None:
            return
        conn = transport.conn
        if not transport.host_closed:
            data = conn.data_to_send() if conn is not None else b""
            if data:
                self._actions.append(WriteTransport(id=transport.id, data=data))
            self._actions.append(CloseTransport(id=transport.id))
        if transport.kind == "http":
            self._answer(transport, response, "" if response is not None else reason, now)
        else:
            self._ws_lost(transport, code, reason, response, now)


def _retry_after(response: HttpResponse | None) -> float | None:
    """Seconds a 429 or 503 asks to wait (its ``Retry-After``), else None."""
    if response is None or response.status not in (429, 503):
        return None
    value = response.header("retry-after")
    if value is not None and value.strip().isdigit():
        return float(value.strip())
    return DEFAULT_RETRY_AFTER


def _error_code(response: HttpResponse) -> str:
    body = response.body
    if isinstance(body, protocol.ErrorBody):
        return f"{response.status} {body.error.code}"
    return str(response.status)
