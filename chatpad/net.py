"""The network thread: owns every socket, the libchat client connections, the outbox and
the local database. The UI talks to it only through :class:`Network`'s two queues.

One WebSocket connection carries the chat; each HTTP call (sign-in, history, search...)
gets its own short-lived connection, so a slow page never holds up a message. The thread
waits in ``selectors`` until a socket is readable, a command arrives (a socketpair wakes
it) or the earliest deadline passes: the engines' timers, the reconnect backoff, the
outbox's retry time, and the token refresh.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from chatpad import messages as m
from chatpad.items import STATUS_RANK, ChatItem, Summary, item_from_message
from chatpad.profile import Profile, Session, parse_server
from chatpad.storage import LocalStore, SqliteOutboxStorage
from libchat import limits, protocol
from libchat.backoff import Backoff
from libchat.client import ClientConfig, ClientConnection
from libchat.events import ConnectionClosed, HttpResponse, Upgraded
from libchat.outbox import Outbox, SendFailed

__all__ = ["NetConfig", "Network"]

log = logging.getLogger(__name__)

PAGE_SIZE = 50  # messages per history page: one screen and a bit
CONNECT_TIMEOUT = 5.0  # seconds for a TCP connect on the network thread
HTTP_TIMEOUT = 15.0  # seconds for a whole HTTP call
REFRESH_AT = 0.75  # refresh the token when this share of its lifetime has passed
REFRESH_RETRY = 30.0  # seconds before retrying a failed token refresh
PREVIEW_CHARS = 120  # characters of the last message kept for the conversation list
MAX_FAILURES = 50  # unexpected errors the network thread survives before it gives up


@attrs.frozen(kw_only=True)
class NetConfig:
    """How the network thread behaves; tests shorten the backoff."""

    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    connect_timeout: float = CONNECT_TIMEOUT


class Network:
    """The UI's handle on the network thread: ``submit`` commands, ``poll`` results."""

    def __init__(self, profile: Profile, config: NetConfig | None = None) -> None:
        self.commands: queue.Queue[m.Command] = queue.Queue()
        self.results: queue.Queue[m.Result] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._worker = _Worker(profile, config or NetConfig(), self)
        self._thread = threading.Thread(target=self._worker.run, name="chatpad-net", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, command: m.Command) -> None:
        self.commands.put(command)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def poll(self) -> list[m.Result]:
        """Every result waiting now; never blocks."""
        out: list[m.Result] = []
        while True:
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                return out

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self.submit(m.Shutdown())
            self._thread.join(timeout)
        self._wake_r.close()
        self._wake_w.close()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()


class _Channel:
    """One socket and the engine on it."""

    def __init__(self, sock: socket.socket, conn: ClientConnection,
                 on_event: Callable[[_Channel, Any], None]) -> None:
        self.sock = sock
        self.conn = conn
        self.on_event = on_event
        self.deadline: float | None = None  # HTTP calls: give up after this
        self.done = False
        self.answered = False


class _Worker:
    """Everything that runs on the network thread. Only that thread touches it."""

    def __init__(self, profile: Profile, config: NetConfig, network: Network) -> None:
        self.profile = profile
        self.config = config
        self.net = network
        self.rng = random.SystemRandom()
        self.backoff = Backoff(rng=self.rng, base=config.backoff_base, cap=config.backoff_cap)
        self.selector = selectors.DefaultSelector()
        self.channels: dict[int, _Channel] = {}
        self.running = True
        self.store: LocalStore | None = None
        self.outbox: Outbox | None = None
        self.session: Session | None = None
        self.ws: _Channel | None = None
        self.ws_open = False
        self.retry_at: float | None = None
        self.refresh_at: float | None = None
        self.open_peer: str | None = None
        self.pending_reads: dict[str, int] = {}
        self.last_status: m.Status | None = None
        self.server: tuple[str, str, int] | None = None  # (scheme, host, port)

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.store = LocalStore(self.profile.database)
            self.selector.register(self.net._wake_r, selectors.EVENT_READ, None)
            session = self.profile.load_session()
            if session is not None:
                self._start_session(session, time.monotonic())
            else:
                self._status()
            failures = 0
            while self.running:
                try:
                    self._turn()
                except Exception:  # a bug: log it, keep the connection and the UI going
                    failures += 1
                    log.exception("network thread: unexpected error")
                    if failures >= MAX_FAILURES:
                        raise
        except Exception:
            log.exception("network thread failed")
            self.net.results.put(m.Notice(text="chatpad's network thread stopped; restart it"))
        finally:
            self._shutdown()

    def _turn(self) -> None:
        now = time.monotonic()
        deadline = self._next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - now)
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    self.net._wake_r.recv(4096)
                self._commands()
            else:
                self._readable(key.data)
            if not self.running:
                return
        self._timers(time.monotonic())

    def _next_deadline(self) -> float | None:
        times: list[float] = []
        for channel in self.channels.values():
            for when in (channel.conn.next_deadline(), channel.deadline):
                if when is not None:
                    times.append(when)
        for when in (self.retry_at, self.refresh_at):
            if when is not None:
                times.append(when)
        if self.outbox is not None:
            when = self.outbox.next_retry_at()
            if when is not None:
                times.append(when)
        return min(times) if times else None

    def _timers(self, now: float) -> None:
        for channel in list(self.channels.values()):
            if channel.done:
                continue
            due = channel.conn.next_deadline()
            if due is not None and now >= due:
                self._dispatch(channel, channel.conn.handle_timer(now))
            if channel.deadline is not None and now >= channel.deadline and not channel.done:
                self._finish(channel)
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            self._connect_ws(now)
        if self.refresh_at is not None and now >= self.refresh_at:
            self.refresh_at = None
            self._refresh_token(now)
        self._flush_outbox(now)

    def _commands(self) -> None:
        while True:
            try:
                command = self.net.commands.get_nowait()
            except queue.Empty:
                return
            self._command(command, time.monotonic())
            if not self.running:
                return

    # --- sockets ---------------------------------------------------------------------------

    def _open(self, on_event: Callable[[_Channel, Any], None]) -> _Channel | None:
        """A new connection to the session's (or sign-in's) server, or None."""
        assert self.server is not None
        scheme, host, port = self.server
        try:
            sock = socket.create_connection((host, port), timeout=self.config.connect_timeout)
            if scheme == "https":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        except OSError as exc:
            log.info("cannot connect to %s:%d: %s", host, port, exc)
            return None
        sock.settimeout(self.config.connect_timeout)  # sends block at most this long
        host_header = host if port in (80, 443) else f"{host}:{port}"
        conn = ClientConnection(ClientConfig(host=host_header), self.rng)
        channel = _Channel(sock, conn, on_event)
        self.channels[sock.fileno()] = channel
        self.selector.register(sock, selectors.EVENT_READ, channel)
        return channel

    def _readable(self, channel: _Channel) -> None:
        now = time.monotonic()
        try:
            data = channel.sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except OSError:
            data = b""
        # TLS may hold decrypted bytes that select() cannot see: take them now
        while data and isinstance(channel.sock, ssl.SSLSocket) and channel.sock.pending():
            try:
                data += channel.sock.recv(channel.sock.pending())
            except (ssl.SSLWantReadError, OSError):
                break
        events = channel.conn.receive_data(data, now) if data else channel.conn.receive_eof(now)
        self._dispatch(channel, events)

    def _dispatch(self, channel: _Channel, events: list[Any]) -> None:
        self._write(channel)
        for event in events:
            if channel.done:
                break
            if type(event) is ConnectionClosed:
                channel.on_event(channel, event)
                self._finish(channel)
            else:
                channel.on_event(channel, event)
        if not channel.done and channel.conn.is_closed:
            self._finish(channel)

    def _write(self, channel: _Channel) -> None:
        data = channel.conn.data_to_send()
        if data and not channel.done:
            try:
                channel.sock.sendall(data)
            except OSError:
                self._dispatch(channel, channel.conn.receive_eof(time.monotonic()))

    def _send(self, frame: protocol.ClientFrame, now: float) -> None:
        if self.ws is None or not self.ws_open:
            return
        self.ws.conn.send(frame, now)
        self._write(self.ws)

    def _finish(self, channel: _Channel) -> None:
        """Close the socket; an HTTP call that got no answer is answered with None."""
        if channel.done:
            return
        channel.done = True
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(channel.sock)
        self.channels = {k: v for k, v in self.channels.items() if v is not channel}
        channel.sock.close()
        if not channel.answered:
            channel.answered = True
            channel.on_event(channel, None)

    # --- HTTP calls ------------------------------------------------------------------------

    def _http(self, call: Callable[[ClientConnection, float], None],
              done: Callable[[HttpResponse | None], None]) -> None:
        """Run one HTTP call on its own connection; ``done`` gets the response, or None
        when the server could not be reached or did not answer."""
        now = time.monotonic()

        def on_event(channel: _Channel, event: Any) -> None:
            if channel.answered:
                return
            if event is None or type(event) is HttpResponse:
                channel.answered = True
                done(event)
                if event is not None:
                    self._finish(channel)

        channel = self._open(on_event)
        if channel is None:
            done(None)
            return
        channel.deadline = now + HTTP_TIMEOUT
        call(channel.conn, now)
        self._write(channel)

    # --- commands --------------------------------------------------------------------------

    def _command(self, command: m.Command, now: float) -> None:
        kind = type(command)
        if kind is m.SignIn:
            assert isinstance(command, m.SignIn)
            self._sign_in(command)
        elif kind is m.SignOut:
            self._sign_out("Signed out.", revoke=True)
        elif kind is m.Open:
            assert isinstance(command, m.Open)
            self._open_conversation(command.peer)
        elif kind is m.LoadOlder:
            assert isinstance(command, m.LoadOlder)
            self._load_older(command.peer, command.before)
        elif kind is m.Post:
            assert isinstance(command, m.Post)
            self._post(command.peer, command.body, now)
        elif kind is m.MarkRead:
            assert isinstance(command, m.MarkRead)
            self._mark_read(command.peer, command.up_to, now)
        elif kind is m.Search:
            assert isinstance(command, m.Search)
            self._search(command.prefix)
        elif kind is m.Typing:
            assert isinstance(command, m.Typing)
            self._send(protocol.Typing(to=command.peer), now)
        elif kind is m.Reconnect:
            if self.session is not None and self.ws is None:
                self.backoff.reset()
                self.retry_at = None
                self._connect_ws(now)
        elif kind is m.Shutdown:
            self.running = False

    def _sign_in(self, command: m.SignIn) -> None:
        try:
            self.server = parse_server(command.server)
        except ValueError as exc:
            self._result(m.AuthFailed(code="bad_address", message=str(exc)))
            return
        name = protocol.normalize_username(command.username.strip())
        credentials = protocol.Credentials(username=name, password=command.password)
        server_url = command.server.strip()

        def logged_in(response: HttpResponse | None) -> None:
            if response is None:
                self._auth_failed_unreachable()
            elif response.status == 200 and isinstance(response.body, protocol.TokenGrant):
                grant = response.body
                session = Session(server=server_url, username=grant.username, token=grant.token,
                                  expires_at=time.time() + grant.expires_in)
                self.profile.save_session(session)
                self._start_session(session, time.monotonic())
            else:
                self._auth_failed(response)

        def registered(response: HttpResponse | None) -> None:
            if response is None:
                self._auth_failed_unreachable()
            elif response.status == 201:
                self._http(lambda c, t: c.login(credentials, t), logged_in)
            else:
                self._auth_failed(response)

        if command.create:
            self._http(lambda c, t: c.register(credentials, t), registered)
        else:
            self._http(lambda c, t: c.login(credentials, t), logged_in)

    def _auth_failed_unreachable(self) -> None:
        self._result(m.AuthFailed(code="unreachable",
                                  message="The server cannot be reached. Check the address."))

    def _auth_failed(self, response: HttpResponse) -> None:
        code, message = _error_of(response)
        retry_at = None
        if response.status == 429:
            after = response.header("retry-after")
            seconds = float(after) if after and after.isdigit() else 60.0
            retry_at = time.monotonic() + seconds
        self._result(m.AuthFailed(code=code, message=message, retry_at=retry_at))

    def _start_session(self, session: Session, now: float) -> None:
        assert self.store is not None
        try:
            self.server = parse_server(session.server)
        except ValueError:
            self.profile.clear_session()
            self._result(m.SignedOut(reason="The saved server address is not valid."))
            return
        self.session = session
        self.store.claim(session.owner)
        self.outbox = Outbox(SqliteOutboxStorage(self.store), self.rng)
        self.backoff.reset()
        remaining = session.expires_at - time.time()
        self.refresh_at = now + max(0.0, remaining * REFRESH_AT) if remaining > 0 else None
        self._result(m.SignedIn(server=session.server, username=session.username))
        self._result(m.Conversations(items=tuple(self.store.summaries())))
        self._connect_ws(now)

    def _sign_out(self, reason: str, *, revoke: bool) -> None:
        session = self.session
        if session is not None and revoke:
            token = session.token
            self._http(lambda c, t: c.logout(token, t), lambda _r: None)
        self.profile.clear_session()
        self.session = None
        self.outbox = None
        self.retry_at = self.refresh_at = None
        self.open_peer = None
        self.pending_reads.clear()
        if self.ws is not None:
            ws, self.ws = self.ws, None
            self.ws_open = False
            ws.conn.close(limits.CLOSE_NORMAL, "signed out", now=time.monotonic())
            self._write(ws)
            self._finish(ws)
        self._result(m.SignedOut(reason=reason))
        self._status()

    # --- the WebSocket -----------------------------------------------------------------------

    def _connect_ws(self, now: float) -> None:
        if self.session is None or self.ws is not None:
            return
        self._status(connecting=True)
        channel = self._open(self._on_ws_event)
        if channel is None:
            self._schedule_reconnect(now)
            return
        self.ws = channel
        channel.conn.upgrade(now)
        self._write(channel)

    def _schedule_reconnect(self, now: float) -> None:
        self.retry_at = now + self.backoff.next_delay()
        self._status()

    def _on_ws_event(self, channel: _Channel, event: Any) -> None:
        if channel is not self.ws:
            return
        now = time.monotonic()
        kind = type(event)
        if kind is Upgraded:
            assert self.session is not None
            channel.conn.send(protocol.Hello(protocol="1.0", token=self.session.token), now)
            self._write(channel)
        elif kind is protocol.Welcome:
            self._welcomed(now)
        elif kind is protocol.Message:
            self._on_messages([event], now)
        elif kind is protocol.Ack:
            self._on_ack(event)
        elif kind is protocol.Error:
            self._on_error(event, now)
        elif kind is protocol.DeliveredReceipt:
            self._on_delivered(event)
        elif kind is protocol.ReadReceipt:
            self._on_read(event)
        elif kind is protocol.PeerTyping:
            self._result(m.PeerActivity(peer=event.sender, typing=True))
        elif kind is protocol.Presence:
            self._result(m.PeerActivity(peer=event.user, online=event.online))
        elif kind is HttpResponse:
            if event.status == 401:
                self._sign_out("Your session has ended. Please sign in again.", revoke=False)
        elif event is None or kind is ConnectionClosed:
            self._ws_closed(event, now)

    def _welcomed(self, now: float) -> None:
        assert self.outbox is not None
        self.ws_open = True
        self.backoff.connected(now)
        for frame in self.outbox.on_connected(now):
            self._send(frame, now)
        for peer, up_to in list(self.pending_reads.items()):
            self._send(protocol.Read(peer=peer, up_to=up_to), now)
        self.pending_reads.clear()
        self._status()
        self._fetch_conversations()
        if self.open_peer is not None:
            self._fetch_newest(self.open_peer)

    def _ws_closed(self, event: ConnectionClosed | None, now: float) -> None:
        self.ws = None
        was_open, self.ws_open = self.ws_open, False
        if self.outbox is not None:
            self.outbox.on_disconnected()
        if was_open:
            self.backoff.disconnected(now)
        if self.session is None:
            return
        if event is not None and event.code == limits.CLOSE_UNAUTHORIZED:
            self._sign_out("Your session has ended. Please sign in again.", revoke=False)
            return
        self._schedule_reconnect(now)

    def _flush_outbox(self, now: float) -> None:
        if self.outbox is not None and self.ws_open:
            for frame in self.outbox.frames_due(now):
                self._send(frame, now)

    # --- frames from the server -------------------------------------------------------------

    @property
    def me(self) -> str:
        assert self.session is not None
        return self.session.username

    def _on_messages(self, pushes: list[protocol.Message], now: float) -> None:
        assert self.store is not None and self.outbox is not None
        changed: list[ChatItem] = []
        confirm: list[int] = []
        for message in pushes:
            if message.recipient == self.me:
                confirm.append(message.seq)
            if not self.outbox.accept_push(message):
                continue
            item = self.store.upsert(item_from_message(message, self.me))
            changed.append(item)
            self._touch_summary(item, unread=not item.mine)
        if confirm:
            self._send(protocol.Delivered(seqs=tuple(confirm)), now)
        if changed:
            self._result(m.Changed(items=tuple(changed)))
            self._conversations()

    def _on_ack(self, ack: protocol.Ack) -> None:
        assert self.store is not None and self.outbox is not None
        self.outbox.on_ack(ack)
        item = self.store.find(self.me, ack.id)
        if item is not None:
            item = self.store.upsert(attrs.evolve(
                item, seq=ack.seq, ts=ack.ts, status=max(item.status, "sent", key=_rank)))
            self._touch_summary(item, unread=False)
            self._result(m.Changed(items=(item,)))
            self._conversations()
        self._status()

    def _on_error(self, error: protocol.Error, now: float) -> None:
        assert self.store is not None and self.outbox is not None
        outcome = self.outbox.on_error(error, now)
        if isinstance(outcome, SendFailed):
            item = self.store.find(self.me, outcome.entry.client_id)
            if item is not None:
                item = self.store.upsert(attrs.evolve(item, status="failed"))
                self._result(m.Changed(items=(item,)))
            self._result(m.Notice(text=f"A message to {outcome.entry.to} could not be sent "
                                       f"({outcome.code})."))
            self._status()
        elif outcome is None and error.code not in ("unauthorized",):
            log.info("server error frame: %s", error.code)

    def _on_delivered(self, receipt: protocol.DeliveredReceipt) -> None:
        assert self.store is not None
        item = self.store.find(self.me, receipt.id)
        if item is None:
            return
        item = self.store.upsert(attrs.evolve(
            item, seq=receipt.seq, status=max(item.status, "delivered", key=_rank)))
        self._result(m.Changed(items=(item,)))

    def _on_read(self, receipt: protocol.ReadReceipt) -> None:
        assert self.store is not None
        changed = self.store.mark_read_up_to(self.me, receipt.peer, receipt.up_to)
        if changed:
            self._result(m.Changed(items=tuple(changed)))

    # --- conversations and history ------------------------------------------------------------

    def _touch_summary(self, item: ChatItem, *, unread: bool) -> None:
        """The conversation list learns of a new last message."""
        assert self.store is not None
        old = self.store.summary(item.peer)
        seq = -1 if item.seq is None else item.seq
        if old is not None and old.seq > seq >= 0:
            return  # an older message arrived late
        count = (old.unread if old is not None else 0) + (1 if unread else 0)
        if unread and item.peer == self.open_peer:
            count = old.unread if old is not None else 0  # the UI marks it read
        self.store.put_summary(Summary(peer=item.peer, preview=_preview(item.body),
                                       ts=item.ts, seq=seq, unread=count, mine=item.mine))

    def _conversations(self) -> None:
        assert self.store is not None
        self._result(m.Conversations(items=tuple(self.store.summaries())))

    def _fetch_conversations(self) -> None:
        session = self.session
        if session is None:
            return

        def done(response: HttpResponse | None) -> None:
            if self.session is not session or response is None:
                return
            if response.status == 401:
                self._sign_out("Your session has ended. Please sign in again.", revoke=False)
                return
            if not isinstance(response.body, protocol.ConversationList):
                return
            assert self.store is not None
            for conv in response.body.conversations:
                last = conv.last_message
                old = self.store.summary(conv.peer)
                if old is not None and old.seq == -1 and old.ts > last.ts:
                    continue  # a queued message of mine is newer
                self.store.put_summary(Summary(
                    peer=conv.peer, preview=_preview(last.body), ts=last.ts, seq=last.seq,
                    unread=0 if conv.peer == self.open_peer else conv.unread,
                    mine=last.sender == session.username))
            self._conversations()

        token = session.token
        self._http(lambda c, t: c.conversations(token, t), done)

    def _open_conversation(self, peer: str | None) -> None:
        self.open_peer = peer
        if peer is None or self.store is None:
            return
        cached = self.store.page(peer, None, PAGE_SIZE)
        stored = [i for i in cached if i.seq is not None]
        self._result(m.Page(peer=peer, items=tuple(cached),
                            has_more=len(stored) >= PAGE_SIZE, older=False))
        if self.ws_open:
            self._fetch_newest(peer)

    def _fetch_newest(self, peer: str) -> None:
        self._fetch_page(peer, None)

    def _load_older(self, peer: str, before: int) -> None:
        if self.store is None:
            return
        if not self.ws_open:
            items = self.store.page(peer, before, PAGE_SIZE)
            self._result(m.Page(peer=peer, items=tuple(items),
                                has_more=len(items) >= PAGE_SIZE, older=True))
            return
        self._fetch_page(peer, before)

    def _fetch_page(self, peer: str, before: int | None) -> None:
        session = self.session
        if session is None:
            return
        token = session.token

        def done(response: HttpResponse | None) -> None:
            if self.session is not session:
                return
            assert self.store is not None
            if response is None or not isinstance(response.body, protocol.MessagePage):
                if response is not None and response.status == 401:
                    self._sign_out("Your session has ended. Please sign in again.",
                                   revoke=False)
                    return
                # Offline or refused: answer from the cache so the UI stops waiting.
                items = self.store.page(peer, before, PAGE_SIZE) if before is not None else []
                self._result(m.Page(peer=peer, items=tuple(items),
                                    has_more=len(items) >= PAGE_SIZE, older=before is not None))
                return
            page = response.body
            with self.store.db:
                items = [self.store.upsert(item_from_message(msg, session.username))
                         for msg in page.messages]
            if before is None:
                self.store.trim(peer)
            self._result(m.Page(peer=peer, items=tuple(items), has_more=page.has_more,
                                older=before is not None))

        self._http(lambda c, t: c.history(token, peer, t, before=before, limit=PAGE_SIZE), done)

    # --- the user's actions -------------------------------------------------------------------

    def _post(self, peer: str, body: str, now: float) -> None:
        if self.outbox is None or self.store is None:
            self._result(m.Notice(text="Sign in to send messages."))
            return
        try:
            entry = self.outbox.submit(to=peer, body=body, now=now)
        except protocol.ProtocolViolation as exc:
            self._result(m.Notice(text=f"Not sent: {exc.message}."))
            return
        item = self.store.upsert(ChatItem(
            peer=entry.to, sender=self.me, id=entry.client_id, seq=None, body=body,
            ts=int(time.time() * 1000), status="queued", mine=True))
        self._touch_summary(item, unread=False)
        self._result(m.Changed(items=(item,)))
        self._conversations()
        self._flush_outbox(now)
        self._status()

    def _mark_read(self, peer: str, up_to: int, now: float) -> None:
        if self.store is None:
            return
        old = self.store.summary(peer)
        if old is not None and old.unread:
            self.store.put_summary(attrs.evolve(old, unread=0))
            self._conversations()
        if self.ws_open:
            self._send(protocol.Read(peer=peer, up_to=up_to), now)
        else:
            self.pending_reads[peer] = max(up_to, self.pending_reads.get(peer, 0))

    def _search(self, prefix: str) -> None:
        session = self.session
        if session is None or not prefix:
            self._result(m.UsersFound(prefix=prefix, users=()))
            return

        def done(response: HttpResponse | None) -> None:
            users: tuple[str, ...] = ()
            if response is not None and isinstance(response.body, protocol.UserList):
                users = tuple(u.username for u in response.body.users)
            self._result(m.UsersFound(prefix=prefix, users=users))

        token = session.token
        self._http(lambda c, t: c.search_users(token, prefix, t), done)

    def _refresh_token(self, now: float) -> None:
        session = self.session
        if session is None:
            return

        def done(response: HttpResponse | None) -> None:
            if self.session is not session:
                return
            if response is not None and isinstance(response.body, protocol.TokenGrant):
                grant = response.body
                fresh = attrs.evolve(session, token=grant.token,
                                     expires_at=time.time() + grant.expires_in)
                self.session = fresh
                self.profile.save_session(fresh)
                self.refresh_at = time.monotonic() + grant.expires_in * REFRESH_AT
                self._send(protocol.Reauth(token=grant.token), time.monotonic())
            elif response is not None and response.status == 401:
                self._sign_out("Your session has ended. Please sign in again.", revoke=False)
            else:
                self.refresh_at = time.monotonic() + REFRESH_RETRY

        token = session.token  # rotated: the server retires it after a short grace
        self._http(lambda c, t: c.refresh(token, t, rotate=True), done)

    # --- results ------------------------------------------------------------------------------

    def _result(self, result: m.Result) -> None:
        self.net.results.put(result)

    def _status(self, *, connecting: bool = False) -> None:
        if self.session is None:
            state = "signed_out"
        elif self.ws_open:
            state = "connected"
        elif connecting:
            state = "connecting"
        elif self.retry_at is not None:
            state = "reconnecting"
        else:
            state = "offline"
        count = len(self.outbox.pending()) if self.outbox is not None else 0
        status = m.Status(state=state, retry_at=self.retry_at if state == "reconnecting"
                          else None, outbox=count)
        if status != self.last_status:
            self.last_status = status
            self._result(status)

    def _shutdown(self) -> None:
        now = time.monotonic()
        for channel in list(self.channels.values()):
            if channel is self.ws and self.ws_open:
                with contextlib.suppress(Exception):
                    channel.conn.close(limits.CLOSE_GOING_AWAY, "client closing", now=now)
                    self._write(channel)
            channel.answered = True
            self._finish(channel)
        self.selector.close()
        if self.store is not None:
            self.store.close()


def _rank(status: str) -> int:
    return STATUS_RANK.get(status, 0)


def _error_of(response: HttpResponse) -> tuple[str, str]:
    body = response.body
    if isinstance(body, protocol.ErrorBody):
        return body.error.code, body.error.message
    return f"http_{response.status}", f"The server answered {response.status}."


def _preview(body: str) -> str:
    line = " ".join(body.split())
    return line[:PREVIEW_CHARS]
