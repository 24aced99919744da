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

:class:`Session` is the public face; three parts do the work, each in a module of its
own: the transport table (``_session_transports``: opening, draining and ending the
transports, one engine on each), sign-in and the token's life (``_session_tokens``),
and the message side (``_session_messages``: the WebSocket, the outbox, dedupe,
receipts, reconnects). Their shared vocabulary (configuration, actions, events) is in
``_session_types`` and exported from here.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from libchat import protocol
from libchat._session_messages import Messages
from libchat._session_tokens import Tokens
from libchat._session_transports import HttpCall, Request, Transport, Transports
from libchat._session_types import (
    HELLO_PROTOCOL,
    Acked,
    CallResult,
    CloseTransport,
    Connected,
    Disconnected,
    OpenTransport,
    SessionAction,
    SessionConfig,
    SessionEvent,
    SessionState,
    SignedIn,
    SignedOut,
    SignInFailed,
    TokenRefreshed,
    TransportKind,
    WriteTransport,
)
from libchat.backoff import Backoff
from libchat.events import HttpResponse
from libchat.outbox import MemoryOutboxStorage, Outbox, OutboxEntry, OutboxStorage

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
        self._events: list[SessionEvent] = []
        emit = self._events.append
        backoff = Backoff(rng=rng, base=config.backoff_base, cap=config.backoff_cap)
        self._outbox = Outbox(storage if storage is not None else MemoryOutboxStorage(), rng)
        self._transports = Transports(config, rng)
        self._messages = Messages(
            config, self._transports, self._outbox, backoff, emit, self._token_refused
        )
        self._tokens = Tokens(config, self._transports, self._messages, backoff, emit)

    def _token_refused(self, now: float) -> bool:
        """The message side's WebSocket was refused its token: the sign-in side decides."""
        return self._tokens.token_refused(now)

    # --- what the host reads ---------------------------------------------------------------

    def actions(self) -> list[SessionAction]:
        """What the host must do with its transports now, in order; empties the list."""
        return self._transports.take_actions()

    def events(self) -> list[SessionEvent]:
        """What happened since the last call, in order; empties the list."""
        taken = self._events[:]
        self._events.clear()
        return taken

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` should next be called, or ``None``."""
        times = [
            self._tokens.next_deadline(),
            self._messages.retry_at,
            self._outbox.next_retry_at(),
            self._transports.next_deadline(),
        ]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    @property
    def state(self) -> SessionState:
        return self._tokens.state

    @property
    def is_connected(self) -> bool:
        """True while the WebSocket is welcomed: sends go out at once."""
        return self._messages.is_connected

    @property
    def is_finished(self) -> bool:
        """True once signed out or closed and every transport is gone: the host may stop."""
        done = self._tokens.state in (SessionState.SIGNED_OUT, SessionState.CLOSED)
        return done and self._transports.is_empty

    @property
    def username(self) -> str | None:
        """The signed-in user's name, once the server said it (sign-in or welcome)."""
        return self._messages.username

    def pending(self) -> list[OutboxEntry]:
        """Messages not acked yet, oldest first."""
        return self._outbox.pending()

    # --- what the host reports ---------------------------------------------------------------

    def transport_opened(self, transport_id: int, now: float) -> None:
        """The transport asked for by :class:`OpenTransport` is ready. Drain afterwards."""
        self._transports.opened(transport_id, now)

    def receive_data(self, transport_id: int, data: bytes, now: float) -> None:
        """Bytes read from a transport. Drain afterwards."""
        self._transports.received(transport_id, data, now)

    def transport_closed(self, transport_id: int, now: float, reason: str = "") -> None:
        """The transport ended (end of stream, an error), or could not be opened.
        Drain afterwards."""
        self._transports.closed(transport_id, now, reason)

    def handle_timer(self, now: float) -> None:
        """Do what is due at ``now``. Drain afterwards."""
        self._transports.handle_timer(now)
        self._messages.reconnect_if_due(now)
        self._tokens.handle_timer(now)  # sign in again, refresh the token
        self._messages.send_due(now)

    # --- what the application asks ------------------------------------------------------------

    def sign_in(
        self, credentials: protocol.Credentials, now: float, *, register: bool = False
    ) -> None:
        """Log in (with ``register``, create the account first), then connect. Answered
        with :class:`SignedIn` or :class:`SignInFailed`. The session keeps the
        credentials in memory to sign in again if the server ever refuses its token."""
        self._tokens.sign_in(credentials, now, register=register)

    def resume(self, token: str, expires_in: float, now: float) -> None:
        """Use a token saved earlier (``expires_in``: seconds it has left) and connect.
        If the server refuses it, the session ends with :class:`SignedOut`."""
        self._tokens.resume(token, expires_in, now)

    def send_message(self, to: str, body: str, now: float) -> OutboxEntry:
        """Queue a message: stored in the outbox at once and sent whenever connected,
        until acked (:class:`Acked`) or refused for good (:class:`SendFailed`).
        May be called before signing in. Raises ``ProtocolViolation`` for a body the
        protocol refuses."""
        return self._messages.send_message(to, body, now)

    def mark_read(self, peer: str, up_to: int, now: float) -> None:
        """Tell the server the user has read ``peer``'s messages up to seq ``up_to``
        (sent at once, or when next connected)."""
        self._messages.mark_read(peer, up_to, now)

    def confirm(self, seqs: Iterable[int], now: float) -> None:
        """Confirm delivery of pushed messages (only with ``auto_confirm`` off). Lost
        while disconnected: the server pushes them again and the session confirms the
        repeats itself."""
        self._messages.confirm(seqs, now)

    def typing(self, to: str, now: float) -> bool:
        """Tell ``to`` the user is typing (at most every 3 s); False when not connected."""
        return self._messages.typing(to, now)

    def search_users(self, prefix: str, now: float) -> int:
        """``GET /v1/users``: returns the call number its :class:`CallResult` carries."""
        token = self._tokens.token_for_calls()
        return self._call(lambda conn, t: conn.search_users(token, prefix, t), token, now)

    def conversations(self, now: float) -> int:
        """``GET /v1/conversations``: returns the call number its :class:`CallResult`
        carries."""
        token = self._tokens.token_for_calls()
        return self._call(lambda conn, t: conn.conversations(token, t), token, now)

    def history(
        self, peer: str, now: float, *, before: int | None = None, limit: int | None = None
    ) -> int:
        """``GET /v1/conversations/<peer>/messages``: returns the call number its
        :class:`CallResult` carries."""
        token = self._tokens.token_for_calls()
        return self._call(
            lambda conn, t: conn.history(token, peer, t, before=before, limit=limit), token, now
        )

    def reconnect(self, now: float) -> None:
        """Connect now if disconnected, starting the backoff over (a user's "retry")."""
        self._messages.reconnect(now)

    def sign_out(self, now: float) -> None:
        """Revoke the token (``POST /v1/logout``, in the background), close the WebSocket
        and end the session with :class:`SignedOut`. Keep draining until
        :attr:`is_finished`."""
        self._tokens.sign_out(now)

    def close(self, now: float) -> None:
        """Stop without signing out (the token stays valid): close the WebSocket, drop
        every other transport. Keep draining until :attr:`is_finished`."""
        self._tokens.close(now)

    # --- the application's HTTP calls -------------------------------------------------------

    def _call(self, request: Request, token: str, now: float) -> int:
        return self._transports.open_http(HttpCall(request, self._answered), token, now)

    def _answered(
        self, call: Transport, response: HttpResponse | None, reason: str, _now: float
    ) -> None:
        self._events.append(CallResult(call=call.id, response=response, reason=reason))
