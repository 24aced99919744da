"""An echo bot that hosts a libchat :class:`~libchat.Session` itself, on plain
non-blocking sockets and :mod:`selectors`: no asyncio, no threads.

    CHAT_PASSWORD=... python examples/echo_selectors.py --url http://127.0.0.1:8765 \\
        --username echo [--register] [--count N]

The session decides everything (sign-in, hello, resends, reconnects); this file only
does what it asks: open a socket, write bytes, close a socket, and tells it what the
sockets and the clock did. For TLS, use ``echo_asyncio.py`` (or wrap the sockets with
``ssl.SSLContext.wrap_socket`` and finish each handshake before ``transport_opened``).
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import selectors
import socket
import sys
import time
from urllib.parse import urlsplit

from libchat import (
    Acked,
    CloseTransport,
    Connected,
    Credentials,
    Disconnected,
    Message,
    OpenTransport,
    Session,
    SessionConfig,
    SignedOut,
    SignInFailed,
    WriteTransport,
)


class SocketHost:
    """Carries out a session's transport actions on non-blocking sockets."""

    def __init__(self, session: Session, address: tuple[str, int]) -> None:
        self.session = session
        self.address = address
        self.selector = selectors.DefaultSelector()
        self.sockets: dict[int, socket.socket] = {}
        self.outgoing: dict[int, bytearray] = {}
        self.connecting: set[int] = set()

    def act(self) -> None:
        """Do what the session asks (until it asks nothing more)."""
        while actions := self.session.actions():
            for action in actions:
                if isinstance(action, OpenTransport):
                    self.open(action.id)
                elif isinstance(action, WriteTransport):
                    self.outgoing[action.id] += action.data
                    self.watch(action.id)
                elif isinstance(action, CloseTransport):
                    self.forget(action.id)

    def open(self, tid: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.session.transport_closed(tid, time.monotonic(), os.strerror(code))
            return
        self.sockets[tid] = sock
        self.outgoing[tid] = bytearray()
        self.connecting.add(tid)
        self.selector.register(sock, selectors.EVENT_WRITE, tid)

    def watch(self, tid: int) -> None:
        """Wait for reads always, for writability while there is something to write."""
        if tid in self.sockets and tid not in self.connecting:
            events = selectors.EVENT_READ
            if self.outgoing[tid]:
                events |= selectors.EVENT_WRITE
            self.selector.modify(self.sockets[tid], events, tid)

    def forget(self, tid: int) -> None:
        sock = self.sockets.pop(tid, None)
        if sock is not None:
            self.selector.unregister(sock)
            sock.close()
        self.outgoing.pop(tid, None)
        self.connecting.discard(tid)

    def broken(self, tid: int, reason: str) -> None:
        self.forget(tid)
        self.session.transport_closed(tid, time.monotonic(), reason)

    def ready(self, tid: int, events: int) -> None:
        sock = self.sockets[tid]
        if tid in self.connecting:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.broken(tid, os.strerror(code))
                return
            self.connecting.discard(tid)
            self.session.transport_opened(tid, time.monotonic())
            self.watch(tid)
            return
        if events & selectors.EVENT_READ:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                data = None
            except OSError as exc:
                self.broken(tid, exc.strerror or "read failed")
                return
            if data == b"":
                self.broken(tid, "connection closed by the server")
                return
            if data:
                self.session.receive_data(tid, data, time.monotonic())
        if events & selectors.EVENT_WRITE and tid in self.outgoing:
            try:
                sent = sock.send(self.outgoing[tid])
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.broken(tid, exc.strerror or "write failed")
                return
            del self.outgoing[tid][:sent]
            self.watch(tid)

    def wait(self) -> None:
        """Block until a socket is ready or the session's next deadline, then report."""
        deadline = self.session.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        for key, events in self.selector.select(timeout):
            if key.data in self.sockets:
                self.ready(key.data, events)
                self.act()
        deadline = self.session.next_deadline()
        if deadline is not None and time.monotonic() >= deadline:
            self.session.handle_timer(time.monotonic())


def echo(url: str, credentials: Credentials, *, register: bool, count: int) -> int:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        print("echo_selectors speaks plain http:// only (see echo_asyncio.py for https)",
              file=sys.stderr)
        return 2
    address = (socket.gethostbyname(parts.hostname), parts.port or 80)
    host = parts.hostname if address[1] == 80 else f"{parts.hostname}:{address[1]}"
    session = Session(SessionConfig(host=host), rng=random.SystemRandom())
    sockets = SocketHost(session, address)
    session.sign_in(credentials, time.monotonic(), register=register)
    echoed = 0
    while True:
        sockets.act()
        for event in session.events():
            if isinstance(event, Message):
                if event.sender != session.username:
                    session.send_message(event.sender, event.body, time.monotonic())
            elif isinstance(event, Acked):
                echoed += 1
                if echoed == count:
                    session.close(time.monotonic())
            elif isinstance(event, Connected):
                print(f"connected as {event.username}", flush=True)
            elif isinstance(event, Disconnected):
                print(f"disconnected ({event.reason}); reconnecting", flush=True)
            elif isinstance(event, SignInFailed | SignedOut):
                print(f"signed out: {event}", file=sys.stderr, flush=True)
                return 1
        sockets.act()
        if session.is_finished:
            return 0
        sockets.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--username", required=True)
    parser.add_argument("--register", action="store_true", help="create the account first")
    parser.add_argument("--count", type=int, default=0, help="stop after this many echoes")
    args = parser.parse_args()
    password = os.environ.get("CHAT_PASSWORD")
    if not password:
        parser.error("set CHAT_PASSWORD")
    credentials = Credentials(username=args.username, password=password)
    try:
        return echo(args.url, credentials, register=args.register, count=args.count)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
