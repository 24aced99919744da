"""chatpad's socket host carries libchat sessions on non-blocking sockets: against a real
chatd over TLS (the handshake done without blocking), with writes larger than a socket
takes at once, and with a server whose connects hang, which must not hold up the loop."""

from __future__ import annotations

import os
import random
import selectors
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from chatpad.sockets import Server, SocketHost
from libchat import (
    Acked,
    Connected,
    Credentials,
    Message,
    Session,
    SessionConfig,
    SessionEvent,
    SignInFailed,
)
from tests.chatd.server import ChatdProcess
from tests.support.tls import make_certificate

DEADLINE = 30.0  # seconds: generous, the machine is shared and busy
PASSWORD = "correct-horse-9"

E = TypeVar("E")


class Loop:
    """The network thread's loop in small: sessions on one selector, events collected."""

    def __init__(self, server: Server, tls: ssl.SSLContext | None = None) -> None:
        self.server = server
        self.tls = tls
        self.selector = selectors.DefaultSelector()
        self.hosts: list[SocketHost] = []
        self.events: dict[Session, list[SessionEvent]] = {}

    def session(self, **config: float) -> Session:
        settings = SessionConfig(host=self.server.host_header, **config)  # type: ignore[arg-type]
        session = Session(settings, rng=random.Random(len(self.hosts)))
        self.hosts.append(SocketHost(session, self.selector, self.server, self.tls))
        self.events[session] = []
        return session

    def turn(self) -> None:
        for host in self.hosts:
            host.act()
            self.events[host.session] += host.session.events()
        deadlines = [d for h in self.hosts if (d := h.session.next_deadline()) is not None]
        timeout = min([0.2] + [max(0.0, d - time.monotonic()) for d in deadlines])
        for key, ready in self.selector.select(timeout):
            host, tid = key.data
            host.ready(tid, ready)
        now = time.monotonic()
        for host in self.hosts:
            deadline = host.session.next_deadline()
            if deadline is not None and now >= deadline:
                host.session.handle_timer(now)

    def until(self, condition: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.turn()

    def seen(self, session: Session, kind: type[E]) -> list[E]:
        return [e for e in self.events[session] if isinstance(e, kind)]

    def close(self) -> None:
        for host in self.hosts:
            host.close()
        self.selector.close()


@pytest.fixture
def tls_chatd(tmp_path: Path) -> Iterator[tuple[ChatdProcess, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    cert, key = make_certificate(tmp_path)
    server = ChatdProcess(tmp_path / "data", tmp_path / "logs", "--tls-cert", str(cert),
                          "--tls-key", str(key)).start()
    try:
        yield server, cert
    finally:
        server.stop()


def test_sessions_speak_tls_to_chatd(tls_chatd: tuple[ChatdProcess, Path]) -> None:
    chatd, cert = tls_chatd
    loop = Loop(Server(scheme="https", host="127.0.0.1", port=chatd.port),
                ssl.create_default_context(cafile=str(cert)))
    try:
        alice, bob = loop.session(), loop.session()
        alice.sign_in(Credentials(username="alice", password=PASSWORD), time.monotonic(),
                      register=True)
        bob.sign_in(Credentials(username="bob", password=PASSWORD), time.monotonic(),
                    register=True)
        loop.until(lambda: loop.seen(alice, Connected) and loop.seen(bob, Connected),
                   "both connected over wss")
        alice.send_message("bob", "over TLS 🔒", time.monotonic())
        loop.until(lambda: loop.seen(bob, Message), "bob gets the message")
        assert [e.body for e in loop.seen(bob, Message)] == ["over TLS 🔒"]
        assert loop.seen(alice, Acked)
    finally:
        loop.close()


def test_a_certificate_not_trusted_fails_the_sign_in(tls_chatd: tuple[ChatdProcess, Path]) -> None:
    chatd, _ = tls_chatd
    loop = Loop(Server(scheme="https", host="127.0.0.1", port=chatd.port),
                ssl.create_default_context())  # the system's CAs do not know chatd's
    try:
        carol = loop.session()
        carol.sign_in(Credentials(username="carol", password=PASSWORD), time.monotonic())
        loop.until(lambda: loop.seen(carol, SignInFailed), "the sign-in fails")
        failure = loop.seen(carol, SignInFailed)[0]
        assert failure.code == "unreachable"
        assert "TLS handshake failed" in failure.message
    finally:
        loop.close()


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="stops chatd with SIGSTOP")
def test_writes_to_a_stalled_server_wait_without_holding_up_the_loop(
    chatd: ChatdProcess,
) -> None:
    """Five megabytes written while chatd is stopped: far more than the sockets take, so
    the rest waits for writability while the loop goes on; all arrive, once each."""
    loop = Loop(Server(scheme="http", host="127.0.0.1", port=chatd.port))
    assert chatd.proc is not None
    try:
        dave, erin = loop.session(), loop.session()
        for session, name in ((dave, "dave"), (erin, "erin")):
            session.sign_in(Credentials(username=name, password=PASSWORD), time.monotonic(),
                            register=True)
        loop.until(lambda: loop.seen(dave, Connected) and loop.seen(erin, Connected),
                   "both connected")
        bodies = [f"{n:04d} " + "x" * 4990 for n in range(1000)]
        os.kill(chatd.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            for body in bodies:
                dave.send_message("erin", body, time.monotonic())
            for _ in range(5):
                loop.turn()
            assert time.monotonic() - started < 5.0  # no write waited for chatd
            assert not loop.seen(dave, Acked)
        finally:
            os.kill(chatd.proc.pid, signal.SIGCONT)
        loop.until(lambda: len(loop.seen(dave, Acked)) == len(bodies), "every message acked")
        loop.until(lambda: len(loop.seen(erin, Message)) == len(bodies), "erin has them all")
        got = sorted(e.body for e in loop.seen(erin, Message))
        assert got == bodies
    finally:
        loop.close()


def test_a_connect_that_hangs_does_not_hold_up_the_loop() -> None:
    """A listener whose accept queue is full drops new connects: they hang. Opening one
    returns at once; the session gives up when its HTTP timeout passes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # fills the queue
    loop = Loop(Server(scheme="http", host="127.0.0.1", port=port))
    try:
        frank = loop.session(http_timeout=2.0)
        frank.sign_in(Credentials(username="frank", password=PASSWORD), time.monotonic())
        started = time.monotonic()
        loop.turn()
        assert time.monotonic() - started < 1.0  # the connect goes on without the loop
        loop.until(lambda: loop.seen(frank, SignInFailed), "the sign-in gives up")
        assert loop.seen(frank, SignInFailed)[0].code == "unreachable"
    finally:
        loop.close()
        filler.close()
        listener.close()
