"""The network thread's loop: libchat sessions hosted on non-blocking sockets.

One :class:`~libchat.Session` per sign-in. While signing in, a session with no storage of
its own gets the token; the account then runs on a new session resumed with that token
and backed by the profile's database (the outbox and seen seqs), once the database has
been claimed for that account (:meth:`LocalStore.claim`). A session that ends (signed
out, or replaced) stays in the loop until its last transport is done (the logout call).

The loop waits in ``selectors`` until a socket is ready, a command arrives (the
:class:`Waker` wakes it) or the earliest session deadline passes; then it carries out
what the sessions ask and hands their events on, until all are quiet.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import selectors
import socket
import time
from http import HTTPStatus

import attrs

from chatpad import __version__
from chatpad import messages as m
from chatpad.account import Account
from chatpad.profile import Profile, parse_server
from chatpad.profile import Session as SavedSession
from chatpad.sockets import Server, SocketHost
from chatpad.storage import LocalStore, SqliteOutboxStorage
from libchat import (
    Credentials,
    OutboxStorage,
    Session,
    SessionConfig,
    SessionEvent,
    SignedIn,
    SignInFailed,
)
from libchat.protocol import normalize_username

__all__ = ["NetConfig", "Waker", "Worker"]

log = logging.getLogger(__name__)

MAX_FAILURES = 50  # unexpected errors the network thread survives before it gives up
SHUTDOWN_GRACE = 1.0  # seconds to finish the WebSocket's close handshake when quitting


@attrs.frozen(kw_only=True)
class NetConfig:
    """How the sessions behave; tests shorten the backoff."""

    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    connect_timeout: float = 15.0  # seconds from opening the WebSocket to its welcome
    http_timeout: float = 30.0  # seconds for a whole HTTP call (sign-in), connecting included


class Waker:
    """A socketpair that wakes the loop from another thread."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fileno(self) -> int:
        return self._reader.fileno()

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # closed, or already full of wake-ups
            self._writer.send(b"x")

    def clear(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class Worker:
    """Everything that runs on the network thread. Only that thread touches it."""

    def __init__(self, profile: Profile, config: NetConfig, commands: queue.Queue[m.Command],
                 results: queue.Queue[m.Result], waker: Waker) -> None:
        self.profile = profile
        self.config = config
        self.commands = commands
        self.results = results
        self.waker = waker
        self.rng = random.SystemRandom()
        self.selector = selectors.DefaultSelector()
        self.hosts: list[SocketHost] = []  # every session still running
        self.store: LocalStore | None = None
        self.account: Account | None = None
        self.signing_in: tuple[SocketHost, str] | None = None  # and the server as typed
        self.running = True
        self.last_status: m.Status | None = None
        self.remove_after_sign_out = False  # a sign-out asked to delete the local data

    def run(self) -> None:
        try:
            self.store = LocalStore(self.profile.database)
            self.selector.register(self.waker, selectors.EVENT_READ, None)
            saved = self.profile.load_session()
            if saved is not None:
                self._start_account(saved, time.monotonic())
            self._settle()
            failures = 0
            while self.running:
                try:
                    self._turn(None)
                except Exception:  # a bug: log it, keep the connection and the UI going
                    failures += 1
                    log.exception("network thread: unexpected error")
                    if failures >= MAX_FAILURES:
                        raise
            self._linger()
        except Exception:
            log.exception("network thread failed")
            self.results.put(m.Notice(text="chatpad's network thread stopped; restart it"))
        finally:
            for host in self.hosts:
                host.close()
            self.selector.close()
            if self.store is not None:
                self.store.close()

    # --- the loop ----------------------------------------------------------------------------

    def _turn(self, until: float | None) -> None:
        """Wait for a socket, a command, a deadline (or ``until``), then handle it all."""
        times = [host.session.next_deadline() for host in self.hosts] + [until]
        due = [t for t in times if t is not None]
        timeout = max(0.0, min(due) - time.monotonic()) if due else None
        for key, events in self.selector.select(timeout):
            if key.data is None:
                self.waker.clear()
                self._commands()
            else:
                host, tid = key.data
                host.ready(tid, events)
        now = time.monotonic()
        for host in list(self.hosts):
            deadline = host.session.next_deadline()
            if deadline is not None and now >= deadline:
                host.session.handle_timer(now)
        self._settle()

    def _settle(self) -> None:
        """Carry out every session's actions and hand on its events until all are quiet;
        drop the sessions that are finished; tell the UI if the status moved."""
        busy = True
        while busy:
            busy = False
            for host in list(self.hosts):
                events = host.session.events()  # first: they may make actions moot
                if events:
                    busy = True
                    self._route(host, events, time.monotonic())
                busy |= host.act()
        for host in [h for h in self.hosts if h.session.is_finished]:
            host.close()
            self.hosts.remove(host)
        self._status()

    def _route(self, host: SocketHost, events: list[SessionEvent], now: float) -> None:
        account = self.account
        if account is not None and host.session is account.session:
            account.handle(events, now)
            if account.is_over:
                self.account = None
                if self.remove_after_sign_out:
                    self._remove_local_data()
        elif self.signing_in is not None and host is self.signing_in[0]:
            self._sign_in_events(events, now)
        # else: a session on its way out (closed or signed out): nothing to tell

    def _linger(self) -> None:
        """Close every session (the token stays saved) and give the WebSockets a moment
        to finish their close handshakes."""
        now = time.monotonic()
        for host in self.hosts:
            host.session.close(now)
        self._settle()
        end = now + SHUTDOWN_GRACE
        while self.hosts and time.monotonic() < end:
            self._turn(end)

    def _status(self) -> None:
        if self.account is None:
            status = m.Status(state="signed_out", retry_at=None, outbox=0)
        else:
            status = self.account.status(time.monotonic())
        if status != self.last_status:
            if status.retry_at is not None:
                log.debug("status %s (retry in %.1f s), %d in the outbox", status.state,
                          max(0.0, status.retry_at - time.monotonic()), status.outbox)
            else:
                log.debug("status %s, %d in the outbox", status.state, status.outbox)
            self.last_status = status
            self.results.put(status)

    # --- commands ------------------------------------------------------------------------------

    def _commands(self) -> None:
        while self.running:
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return
            self._command(command, time.monotonic())

    def _command(self, command: m.Command, now: float) -> None:
        account = self.account
        if isinstance(command, m.Shutdown):
            self.running = False
        elif isinstance(command, m.SignIn):
            self._sign_in(command, now)
        elif account is None:
            if isinstance(command, m.Post):
                self.results.put(m.Notice(text="Sign in to send messages."))
            elif isinstance(command, m.Search):
                self.results.put(m.UsersFound(prefix=command.prefix, users=()))
            elif isinstance(command, m.SearchMessages):
                self.results.put(m.MessagesFound(text=command.text, peer=command.peer,
                                                 hits=()))
            elif isinstance(command, m.SignOut) and command.remove_local_data:
                self._remove_local_data()
        elif isinstance(command, m.SignOut):
            self.remove_after_sign_out = command.remove_local_data
            account.sign_out(now)
        elif isinstance(command, m.Open):
            account.open(command.peer, now)
        elif isinstance(command, m.LoadOlder):
            account.load_older(command.peer, command.before, now)
        elif isinstance(command, m.Post):
            account.post_message(command.peer, command.body, now)
        elif isinstance(command, m.MarkRead):
            account.mark_read(command.peer, command.up_to, now)
        elif isinstance(command, m.Search):
            account.search(command.prefix, now)
        elif isinstance(command, m.Typing):
            account.typing(command.peer, now)
        elif isinstance(command, m.Reconnect):
            account.reconnect(now)
        elif isinstance(command, m.SearchMessages):
            account.history.search(command.text, command.peer)
        elif isinstance(command, m.LoadAround):
            account.history.page_around(command.peer, command.seq)

    def _remove_local_data(self) -> None:
        """Close the database and delete the profile's files (the account is over: its
        session, still finishing its logout call, no longer touches the outbox). The
        next sign-in starts a new database."""
        self.remove_after_sign_out = False
        if self.store is not None:
            self.store.close()
            self.store = None
        left = self.profile.remove_local_data()
        if left:
            log.warning("local data: %d file(s) could not be deleted", len(left))
            names = ", ".join(path.name for path in left)
            self.results.put(m.Notice(text=f"Could not delete {names} in "
                                           f"{self.profile.folder}."))
        else:
            log.info("local data removed")
            self.results.put(m.Notice(text="Local data removed from this computer."))

    # --- signing in ----------------------------------------------------------------------------

    def _sign_in(self, command: m.SignIn, now: float) -> None:
        if self.account is not None:
            log.info("sign-in ignored: already signed in")
            return
        try:
            server = _server(command.server)
        except ValueError as exc:
            self.results.put(m.AuthFailed(code="bad_address", message=str(exc)))
            return
        if self.signing_in is not None:  # a new attempt replaces the one under way
            self.signing_in[0].session.close(now)
        host = self._host(server, None)
        self.signing_in = (host, command.server.strip())
        log.debug("%s %s at %s://%s:%d", "registering" if command.create else "signing in",
                  command.username.strip(), server.scheme, server.host, server.port)
        credentials = Credentials(username=normalize_username(command.username.strip()),
                                  password=command.password)
        host.session.sign_in(credentials, now, register=command.create)

    def _sign_in_events(self, events: list[SessionEvent], now: float) -> None:
        assert self.signing_in is not None
        host, server_url = self.signing_in
        for event in events:
            if isinstance(event, SignedIn):
                log.debug("signed in as %s (token valid %d s)", event.username,
                          event.expires_in)
                saved = SavedSession(server=server_url, username=event.username,
                                     token=event.token, expires_at=time.time() + event.expires_in)
                self.profile.save_session(saved)
                self._start_account(saved, now)
            elif isinstance(event, SignInFailed):
                log.debug("%s failed: HTTP %s, %s (%s)", event.step, event.status, event.code,
                          event.message)
                retry_at = None
                if event.status == 429 and event.retry_after is not None:
                    retry_at = time.monotonic() + event.retry_after
                message = event.message
                if event.status is None:
                    message = "The server cannot be reached. Check the address."
                elif event.code.startswith("http_"):  # no chatd error body
                    message = _not_chatd(event.status)
                self.results.put(m.AuthFailed(code=event.code, message=message,
                                              retry_at=retry_at))
            else:
                continue
            host.session.close(now)  # its token, if any, lives on in the account's session
            self.signing_in = None
            return

    def _start_account(self, saved: SavedSession, now: float) -> None:
        if self.store is None:  # the local data was removed: a new database
            self.store = LocalStore(self.profile.database)
        try:
            server = _server(saved.server)
        except ValueError:
            self.profile.clear_session()
            self.results.put(m.SignedOut(reason="The saved server address is not valid."))
            return
        self.store.claim(saved.owner)  # before the outbox is read: it must be this account's
        log.debug("account %s at %s: resuming with the saved token", saved.username,
                  saved.server)
        host = self._host(server, SqliteOutboxStorage(self.store))
        self.account = Account(host.session, saved, self.store, self.profile, self.results.put)
        self.account.start(now)

    def _host(self, server: Server, storage: OutboxStorage | None) -> SocketHost:
        config = SessionConfig(
            host=server.host_header,
            auto_confirm=False,  # confirmed once written to the database
            connect_timeout=self.config.connect_timeout,
            http_timeout=self.config.http_timeout,
            backoff_base=self.config.backoff_base,
            backoff_cap=self.config.backoff_cap,
            user_agent=f"chatpad/{__version__}",
        )
        host = SocketHost(Session(config, rng=self.rng, storage=storage), self.selector, server)
        self.hosts.append(host)
        return host


def _not_chatd(status: int) -> str:
    """What to say when the server answered without a chatd error body."""
    try:
        answer = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        answer = str(status)
    if status >= 500 and status != HTTPStatus.NOT_IMPLEMENTED:
        return f"The server has a problem (it answered {answer}). Try again later."
    return f"That address does not look like a chatd server (it answered {answer})."


def _server(url: str) -> Server:
    scheme, host, port = parse_server(url)
    return Server(scheme=scheme, host=host, port=port)

