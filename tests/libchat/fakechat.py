"""A tiny in-memory chat server on libchat's server engine, and a fake network that
hosts a :class:`~libchat.session.Session` against it with a fake clock.

:class:`FakeChat` answers what a session asks (register, login, refresh with rotation,
logout, history, the upgrade, hello, send, delivered, read, reauth) closely enough to the
contract for the session's tests; knobs make it misbehave (down, silent, refusing).
:class:`Net` carries the session's actions to it and its bytes back, and steps the clock
firing every timer on both sides. Nothing sleeps; time is a float.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import attrs

from libchat import events as ev
from libchat import protocol
from libchat.server import ServerConfig, ServerConnection
from libchat.session import (
    CloseTransport,
    OpenTransport,
    Session,
    SessionConfig,
    WriteTransport,
)

PASSWORD = "correct horse battery"
TOKEN_TTL = 1000  # seconds
GRACE = 60.0  # seconds a rotated token keeps working


@attrs.define
class FakeChat:
    """The server side: accounts, tokens, stored messages, and one engine per transport."""

    passwords: dict[str, str] = attrs.field(factory=lambda: {"alice": PASSWORD, "bob": PASSWORD})
    token_ttl: int = TOKEN_TTL
    down: bool = False  # refuse new transports
    silent: bool = False  # accept transports, never answer anything
    hold_hello: bool = False  # leave hellos unanswered (see release_hellos)
    hold_sends: bool = False  # leave sends unanswered
    hold_logins: bool = False  # leave logins unanswered
    login_answer: tuple[int, str, tuple[tuple[str, str], ...]] | None = None  # forced error
    refresh_answer: tuple[int, str] | None = None  # forced error for refreshes
    upgrade_answer: tuple[int, str, tuple[tuple[str, str], ...]] | None = None
    send_error: protocol.Error | None = None  # answer the next send with this
    conns: dict[int, ServerConnection] = attrs.field(factory=dict)
    ws_user: dict[int, str] = attrs.field(factory=dict)  # welcomed transports
    tokens: dict[str, str] = attrs.field(factory=dict)  # token -> user
    retired: dict[str, float] = attrs.field(factory=dict)  # token -> end of its grace
    undelivered: dict[int, protocol.Message] = attrs.field(factory=dict)
    acks: dict[tuple[str, str], protocol.Ack] = attrs.field(factory=dict)
    seen: list[Any] = attrs.field(factory=list)  # every request and frame, in order
    held_hellos: list[tuple[int, protocol.Hello]] = attrs.field(factory=list)
    seq: int = 100
    issued: int = 0

    def frames(self, kind: type[Any]) -> list[Any]:
        return [item for item in self.seen if type(item) is kind]

    # --- tokens ------------------------------------------------------------------------

    def grant(self, user: str) -> protocol.TokenGrant:
        self.issued += 1
        token = f"tok-{user}-{self.issued}"
        self.tokens[token] = user
        return protocol.TokenGrant(
            token=token, expires_in=self.token_ttl, user_id=len(user), username=user
        )

    def user_of(self, token: str | None, now: float) -> str | None:
        if token is None or token not in self.tokens:
            return None
        end = self.retired.get(token)
        if end is not None and now >= end:
            return None
        return self.tokens[token]

    def revoke(self, token: str) -> None:
        self.tokens.pop(token, None)

    # --- transports ---------------------------------------------------------------------

    def open(self, transport_id: int, now: float) -> None:
        self.conns[transport_id] = ServerConnection(ServerConfig(), random.Random(7), now)

    def receive(self, transport_id: int, data: bytes, now: float) -> None:
        conn = self.conns.get(transport_id)
        if conn is not None:
            self.handle_all(transport_id, conn.receive_data(data, now), now)

    def eof(self, transport_id: int, now: float) -> None:
        conn = self.conns.pop(transport_id, None)
        self.ws_user.pop(transport_id, None)
        if conn is not None:
            conn.receive_eof(now)

    def handle_all(self, transport_id: int, events: list[Any], now: float) -> None:
        conn = self.conns[transport_id]
        for event in events:
            self.seen.append(event)
            if isinstance(event, ev.ConnectionClosed):
                self.ws_user.pop(transport_id, None)
            elif not self.silent:
                self.handle_all(transport_id, self.handle(transport_id, conn, event, now), now)

    def handle(self, tid: int, conn: ServerConnection, event: Any, now: float) -> list[Any]:
        if isinstance(event, ev.RegisterRequest):
            name = event.credentials.username
            if name in self.passwords:
                return conn.respond_error(409, "username_taken", "taken", now=now)
            self.passwords[name] = event.credentials.password
            body = protocol.Registered(user_id=len(name), username=name)
            return conn.respond(201, body, now=now)
        if isinstance(event, ev.LoginRequest):
            if self.hold_logins:
                return []
            if self.login_answer is not None:
                status, code, headers = self.login_answer
                if not code:  # a proxy's page, not the contract's error body
                    return conn.respond(status, b"<h1>oops</h1>", now=now, content_type="text/html")
                return conn.respond_error(status, code, "no", now=now, headers=headers)
            name = event.credentials.username
            if self.passwords.get(name) != event.credentials.password:
                return conn.respond_error(401, "invalid_credentials", "wrong", now=now)
            return conn.respond(200, self.grant(name), now=now)
        if isinstance(event, ev.RefreshRequest):
            if self.refresh_answer is not None:
                status, code = self.refresh_answer
                return conn.respond_error(status, code, "no", now=now)
            user = self.user_of(event.token, now)
            if user is None or event.token in self.retired:
                return conn.respond_error(401, "unauthorized", "bad token", now=now)
            if event.rotate:
                self.retired[event.token] = now + GRACE
            return conn.respond(200, self.grant(user), now=now)
        if isinstance(event, ev.LogoutRequest):
            self.revoke(event.token)
            return conn.respond(204, now=now)
        if isinstance(event, ev.HistoryRequest):
            if self.user_of(event.token, now) is None:
                return conn.respond_error(401, "unauthorized", "bad token", now=now)
            return conn.respond(200, protocol.MessagePage(messages=[], has_more=False), now=now)
        if isinstance(event, ev.ConversationsRequest):
            return conn.respond(200, protocol.ConversationList(conversations=[]), now=now)
        if isinstance(event, ev.UserSearchRequest):
            users = [protocol.UserEntry(username="bob")]
            return conn.respond(200, protocol.UserList(users=users), now=now)
        if isinstance(event, ev.UpgradeRequest):
            if self.upgrade_answer is not None:
                status, code, headers = self.upgrade_answer
                return conn.respond_error(status, code, "no", now=now, headers=headers)
            return conn.accept_upgrade(now)
        if isinstance(event, protocol.Hello):
            if self.hold_hello:
                self.held_hellos.append((tid, event))
            else:
                self.answer_hello(tid, conn, event, now)
            return []
        user = self.ws_user.get(tid)
        assert user is not None, event
        if isinstance(event, protocol.Send):
            self.on_send(tid, conn, user, event, now)
        elif isinstance(event, protocol.Delivered):
            for seq in event.seqs:
                message = self.undelivered.get(seq)
                if message is not None and message.recipient == user:
                    del self.undelivered[seq]
        elif isinstance(event, protocol.Reauth):
            if self.user_of(event.token, now) == user:
                conn.send(protocol.Reauthed(expires_in=self.token_ttl), now)
            else:
                conn.send(protocol.Error(code="unauthorized"), now)
        return []

    def answer_hello(
        self, tid: int, conn: ServerConnection, hello: protocol.Hello, now: float
    ) -> None:
        user = self.user_of(hello.token, now)
        if user is None:
            conn.fail("unauthorized", 4001, now=now)
            return
        self.ws_user[tid] = user
        conn.send(protocol.Welcome(user_id=len(user), username=user, server_time=1), now)
        for seq in sorted(self.undelivered):
            message = self.undelivered[seq]
            if message.recipient == user:
                conn.send(message, now)

    def release_hellos(self, now: float) -> None:
        held, self.held_hellos = self.held_hellos, []
        for tid, hello in held:
            conn = self.conns.get(tid)
            if conn is not None:
                self.answer_hello(tid, conn, hello, now)

    def on_send(
        self, tid: int, conn: ServerConnection, user: str, send: protocol.Send, now: float
    ) -> None:
        if self.hold_sends:
            return
        if self.send_error is not None:
            error, self.send_error = self.send_error, None
            conn.send(attrs.evolve(error, ref=send.id), now)
            return
        key = (user, send.id)
        if key not in self.acks:
            self.seq += 1
            self.acks[key] = protocol.Ack(id=send.id, seq=self.seq, ts=1000 + self.seq)
            message = protocol.Message(
                id=send.id, seq=self.seq, sender=user, recipient=send.to, body=send.body, ts=1
            )
            self.push(message, now)
        conn.send(self.acks[key], now)

    def push(self, message: protocol.Message, now: float) -> None:
        """Store a message for its recipient and push it to its open connections."""
        self.undelivered[message.seq] = message
        for tid, user in self.ws_user.items():
            if user == message.recipient:
                self.conns[tid].send(message, now)

    def close_ws(self, code: int, now: float, reason: str = "") -> None:
        """Close every WebSocket with ``code`` (a server restart: 1001)."""
        for tid in list(self.ws_user):
            self.conns[tid].close(code, reason, now=now)

    def drop_all(self, now: float) -> list[int]:
        """Break every transport without a close frame; returns their ids."""
        ids = list(self.conns)
        for tid in ids:
            self.eof(tid, now)
        return ids


@attrs.define
class Net:
    """A session hosted on a fake network against a :class:`FakeChat`."""

    chat: FakeChat = attrs.field(factory=FakeChat)
    config: SessionConfig = attrs.field(factory=lambda: SessionConfig(host="chat.test"))
    now: float = 0.0
    session: Session = attrs.field(init=False)
    events: list[Any] = attrs.field(factory=list)
    actions: list[Any] = attrs.field(factory=list)  # every action the session asked for
    open_ids: set[int] = attrs.field(factory=set)  # transports the host holds open
    rng_seed: int = 1

    def __attrs_post_init__(self) -> None:
        self.session = Session(self.config, rng=random.Random(self.rng_seed))

    def do(self, call: Callable[[Session, float], Any]) -> Any:
        """Call ``call(session, now)``, then let everything settle."""
        result = call(self.session, self.now)
        self.pump()
        return result

    def pump(self) -> None:
        session, chat = self.session, self.chat
        for _ in range(1000):
            actions = session.actions()
            moved = bool(actions)
            for action in actions:
                self.actions.append(action)
                if isinstance(action, OpenTransport):
                    if chat.down:
                        session.transport_closed(action.id, self.now, "connection refused")
                    else:
                        chat.open(action.id, self.now)
                        self.open_ids.add(action.id)
                        session.transport_opened(action.id, self.now)
                elif isinstance(action, WriteTransport):
                    assert action.id in self.open_ids, action
                    chat.receive(action.id, action.data, self.now)
                elif isinstance(action, CloseTransport):
                    self.open_ids.discard(action.id)
                    chat.eof(action.id, self.now)
            for tid, conn in list(chat.conns.items()):
                data = conn.data_to_send()
                if data and tid in self.open_ids:
                    moved = True
                    session.receive_data(tid, data, self.now)
                if conn.is_closed and tid in self.open_ids:
                    moved = True
                    self.open_ids.discard(tid)
                    chat.eof(tid, self.now)
                    session.transport_closed(tid, self.now)
            self.events.extend(session.events())
            if not moved:
                return
        raise AssertionError("the session and the server never went quiet")

    def break_transports(self) -> None:
        """Every transport breaks (no close frame either way)."""
        for tid in self.chat.drop_all(self.now):
            if tid in self.open_ids:
                self.open_ids.discard(tid)
                self.session.transport_closed(tid, self.now, "connection reset")
        self.pump()

    def advance(self, seconds: float) -> None:
        """Step the clock, firing every timer that falls due on the way."""
        end = self.now + seconds
        for _ in range(10000):
            deadlines = [self.session.next_deadline()]
            deadlines += [conn.next_deadline() for conn in self.chat.conns.values()]
            due = [d for d in deadlines if d is not None and d <= end]
            if not due:
                break
            self.now = max(self.now, min(due))
            self.session.handle_timer(self.now)
            for tid, conn in list(self.chat.conns.items()):
                deadline = conn.next_deadline()
                if deadline is not None and deadline <= self.now:
                    self.chat.handle_all(tid, conn.handle_timer(self.now), self.now)
            self.pump()
        else:
            raise AssertionError("timers kept firing")
        self.now = end

    def take(self, kind: type[Any] | None = None) -> list[Any]:
        """The events so far (of ``kind``), forgetting all of them."""
        taken, self.events = self.events, []
        return [e for e in taken if kind is None or isinstance(e, kind)]

    def sign_in(self, name: str = "alice") -> None:
        self.do(
            lambda s, now: s.sign_in(protocol.Credentials(username=name, password=PASSWORD), now)
        )
