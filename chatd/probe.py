"""``chatd health``: ask a running server how it is, monitoring-plugin style.

One line on stdout and an exit status a monitor understands::

    CHATD OK - status=ok connections=3 uptime=12s db=ok disk=41%              (exit 0)
    CHATD DEGRADED - status=degraded connections=3 uptime=12s db=ok disk=93%  (exit 1)
    CHATD DOWN - connection refused                                           (exit 2)

A 503 from ``/healthz`` (the store is unusable) counts as down.

With ``--canary`` the probe also does what a user does, over the public API only, so it
can run from any machine that reaches the server: it logs in two dedicated accounts,
``canary-a`` and ``canary-b`` (registering them the first time), opens a WebSocket for
each with libchat's client engine, sends one message from a to b and times the send ->
push round trip; b confirms delivery (also of any canary message an earlier, failed run
left behind) so nothing piles up. The two passwords are random and kept in a JSON file
(``--canary-file``, default ``./data/canary.json``, mode 0600). If that file is lost,
reset the accounts' passwords with ``chatd user passwd`` or give the file back.

A canary must never lock its own address out: when a canary login is refused (the
account disabled, or its password changed), the probe says which, if it can see the
database (``--data-dir``/``--db``, as on the server's own machine), and then makes no
more login attempts for :data:`REFUSED_PAUSE` seconds, so at most three of its failures
fall in the login limit's 15-minute window of five. The pause is kept in the canary file
(``"refused": {"user": ..., "at": ...}``); deleting that entry ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import os
import random
import secrets
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Final
from urllib.parse import SplitResult, urlsplit

import orjson

from chatd.files import make_private_dir
from chatd.store import StoreError
from chatd.store.factory import open_store
from chatd.store.sqlite import SqliteStore
from libchat import limits
from libchat.client import ClientConfig, ClientConnection, ClientEvent
from libchat.events import ConnectionClosed, HttpResponse, Upgraded
from libchat.protocol import (
    Credentials,
    Delivered,
    Error,
    ErrorBody,
    Health,
    Hello,
    Message,
    ProtocolViolation,
    Send,
    TokenGrant,
    Welcome,
    decode_response_body,
)

__all__ = ["CANARY_USERS", "check_health"]

EXIT_OK: Final = 0
EXIT_DEGRADED: Final = 1
EXIT_DOWN: Final = 2
CANARY_USERS: Final = ("canary-a", "canary-b")
DEFAULT_CANARY_FILE: Final = Path("data") / "canary.json"
HELLO_PROTOCOL: Final = "1.0"
REFUSED_PAUSE: Final = 300.0  # seconds without canary logins after one was refused
READ_CHUNK: Final = 65536  # bytes per socket read


class ProbeFailed(Exception):
    """The server cannot be reached, or the canary did not make it: a DOWN line."""


def check_health(args: argparse.Namespace) -> int:
    """Run ``chatd health``: print the summary line, return 0 ok, 1 degraded, 2 down."""
    base = args.url.rstrip("/")
    timeout: float = args.timeout
    try:
        http_status, health = _get_health(base, timeout)
    except ProbeFailed as exc:
        return _report("DOWN", str(exc), EXIT_DOWN)
    summary = (
        f"status={health.status} connections={health.connections}"
        f" uptime={health.uptime_s:.0f}s db={health.db} disk={health.disk_used_pct:.0f}%"
    )
    if http_status != 200:
        return _report("DOWN", f"HTTP {http_status} {summary}", EXIT_DOWN)
    if args.canary:
        path = args.canary_file if args.canary_file is not None else DEFAULT_CANARY_FILE
        try:
            rtt = asyncio.run(_canary(base, path, timeout, _db_url(args)))
        except ProbeFailed as exc:
            return _report("DOWN", f"canary failed: {exc}; {summary}", EXIT_DOWN)
        summary += f" canary_rtt={rtt * 1000:.1f}ms"
    if health.status == "ok":
        return _report("OK", summary, EXIT_OK)
    return _report("DEGRADED", summary, EXIT_DEGRADED)


def _db_url(args: argparse.Namespace) -> str | None:
    """The database the canary may look its accounts up in: only one named by
    ``--db`` or ``--data-dir`` (a monitor elsewhere has none)."""
    db: str | None = getattr(args, "db", None)
    data_dir: Path | None = getattr(args, "data_dir", None)
    if db is not None:
        return db
    return None if data_dir is None else str(data_dir / "chatd.db")


def _report(state: str, text: str, status: int) -> int:
    print(f"CHATD {state} - {text}", flush=True)
    return status


def _ssl_context(url: SplitResult) -> ssl.SSLContext | None:
    return ssl.create_default_context() if url.scheme == "https" else None


def _get_health(base: str, timeout: float) -> tuple[int, Health]:
    url = urlsplit(base)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ProbeFailed(f"bad --url {base!r}: use http://host:port or https://host:port")
    request = urllib.request.Request(base + "/healthz", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=_ssl_context(url)) as reply:
            status, data = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, data = exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise ProbeFailed(_describe(exc.reason)) from None
    except (OSError, TimeoutError) as exc:
        raise ProbeFailed(_describe(exc)) from None
    try:
        return status, decode_response_body(data, Health)
    except ProtocolViolation:
        raise ProbeFailed(f"HTTP {status} without a health answer from {base}/healthz") from None


def _describe(reason: object) -> str:
    """``connection refused``, ``timed out``...: the cause, lower case, no errno."""
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ssl.SSLError):
        return f"TLS handshake failed: {reason.reason or reason}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)


# --- the canary --------------------------------------------------------------------------


class _CanaryFile:
    """The canary file: the two passwords and, after a refused login, whose and when.

    Loading a missing file makes up the passwords and saves them (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fresh = False  # the passwords were just made up: register the accounts
        self.refused: tuple[str, float] | None = None
        try:
            stored = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            self.passwords = {name: secrets.token_urlsafe(24) for name in CANARY_USERS}
            self.fresh = True
            self._save()
            return
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ProbeFailed(f"cannot read {path}: {exc}") from None
        if not isinstance(stored, dict) or not all(
            isinstance(stored.get(name), str) for name in CANARY_USERS
        ):
            raise ProbeFailed(f"{path} does not hold the canary passwords")
        self.passwords = {name: stored[name] for name in CANARY_USERS}
        refused = stored.get("refused")
        if isinstance(refused, dict) and isinstance(refused.get("at"), int | float):
            self.refused = (str(refused.get("user", "?")), float(refused["at"]))

    def check_pause(self, now: float) -> None:
        """Raise ProbeFailed while the pause after a refused login lasts."""
        if self.refused is None:
            return
        user, at = self.refused
        if now < at + REFUSED_PAUSE:
            raise ProbeFailed(
                f"paused: {user}'s login was refused at {_clock(at)}; no canary logins"
                f" until {_clock(at + REFUSED_PAUSE)} (or until the \"refused\" entry"
                f" of {self.path} is deleted), so they never trip the login limit"
            )

    def record_refusal(self, user: str, now: float) -> None:
        self.refused = (user, now)
        self._save()

    def clear_refusal(self) -> None:
        if self.refused is not None:
            self.refused = None
            self._save()

    def _save(self) -> None:
        stored: dict[str, object] = dict(self.passwords)
        if self.refused is not None:
            stored["refused"] = {"user": self.refused[0], "at": round(self.refused[1], 3)}
        path = self.path
        try:
            make_private_dir(path.parent)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(orjson.dumps(stored))
            os.replace(tmp, path)
        except OSError as exc:
            raise ProbeFailed(f"cannot write {path}: {exc}") from None


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))


class _Link:
    """One libchat :class:`ClientConnection` over an asyncio stream; a pump task feeds
    its events into :attr:`inbox` (the last one is always ``ConnectionClosed``)."""

    def __init__(
        self, name: str, conn: ClientConnection, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.name = name
        self.conn = conn
        self._reader = reader
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self.inbox: asyncio.Queue[ClientEvent] = asyncio.Queue()
        self.upgraded = False
        self._pump = self._loop.create_task(self._run())

    @classmethod
    async def open(cls, name: str, url: SplitResult) -> _Link:
        host = url.hostname or "127.0.0.1"
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=_ssl_context(url))
        except OSError as exc:
            raise ProbeFailed(f"{name}: {_describe(exc)}") from None
        conn = ClientConnection(ClientConfig(host=url.netloc), random.Random())
        return cls(name, conn, reader, writer)

    def now(self) -> float:
        return self._loop.time()

    def call(self, action: Callable[[ClientConnection, float], None]) -> None:
        """Let ``action(conn, now)`` queue output, then write it."""
        action(self.conn, self.now())
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)

    async def _run(self) -> None:
        conn = self.conn
        while True:
            deadline = conn.next_deadline()
            wait = None if deadline is None else max(0.0, deadline - self.now())
            try:
                data = await asyncio.wait_for(self._reader.read(READ_CHUNK), wait)
            except TimeoutError:
                events = conn.handle_timer(self.now())
            except OSError as exc:
                events = [ConnectionClosed(code=None, reason=_describe(exc))]
            else:
                if data:
                    events = conn.receive_data(data, self.now())
                else:
                    events = conn.receive_eof(self.now())
            self._flush()
            for event in events:
                self.upgraded = self.upgraded or isinstance(event, Upgraded)
                self.inbox.put_nowait(event)
                if isinstance(event, ConnectionClosed):
                    self._writer.close()
                    return

    async def expect(self, wanted: type[object], what: str) -> ClientEvent:
        """The next event of type ``wanted``; other frames in between are dropped.
        Raises ProbeFailed on an error frame or the end of the connection."""
        while True:
            event = await self.inbox.get()
            if isinstance(event, wanted):
                return event
            if isinstance(event, Error):
                raise ProbeFailed(f"{self.name}: error {event.code} waiting for {what}")
            if isinstance(event, ConnectionClosed):
                raise ProbeFailed(
                    f"{self.name}: connection closed ({event.code} {event.reason})"
                    f" waiting for {what}".replace(" None ", " ")
                )

    async def close(self) -> None:
        """Close a WebSocket with the handshake (a moment for the server's answer);
        just drop a plain HTTP connection."""
        if self.upgraded and not self.conn.is_closed:
            self.call(lambda conn, now: conn.close(limits.CLOSE_NORMAL, "canary done", now=now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pump), 1.0)
        self._pump.cancel()
        self._writer.close()


async def _http(
    url: SplitResult, name: str, action: Callable[[ClientConnection, float], None]
) -> HttpResponse:
    link = await _Link.open(name, url)
    try:
        link.call(action)
        response = await link.expect(HttpResponse, "an HTTP answer")
        assert isinstance(response, HttpResponse)
        return response
    finally:
        await link.close()


def _error_code(response: HttpResponse) -> str:
    body = response.body
    return body.error.code if isinstance(body, ErrorBody) else f"HTTP {response.status}"


async def _login(url: SplitResult, name: str, password: str) -> str | None:
    """A token, or None when the server says ``invalid_credentials``."""
    credentials = Credentials(username=name, password=password)
    response = await _http(url, name, lambda conn, now: conn.login(credentials, now))
    if response.status == 200 and isinstance(response.body, TokenGrant):
        return response.body.token
    if response.status == 401:
        return None
    raise ProbeFailed(f"{name}: login answered {_error_code(response)}")


async def _account_state(db_url: str | None, name: str) -> str | None:
    """``disabled``, ``enabled`` or ``missing`` as the database says; None when there is
    no database to ask (no ``--db``/``--data-dir``) or it cannot be read."""
    if db_url is None:
        return None
    try:
        store = open_store(db_url)
    except ValueError:
        return None
    if isinstance(store, SqliteStore) and not store.path.is_file():
        return None  # never create one
    try:
        await store.open()
        try:
            user = await store.user_by_name(name)
        finally:
            await store.close()
    except (StoreError, OSError):
        return None
    if user is None:
        return "missing"
    return "disabled" if user.disabled else "enabled"


async def _canary_token(url: SplitResult, name: str, canary: _CanaryFile,
                        db_url: str | None) -> str:
    """Log in; register first when the account does not exist yet. A disabled account
    is not tried at all when the database says so; a refused login starts the pause."""
    state = await _account_state(db_url, name)
    if state == "disabled":
        raise ProbeFailed(f"{name} is disabled: `chatd user enable {name}`")
    password = canary.passwords[name]
    if not canary.fresh and state != "missing":
        token = await _login(url, name, password)
        if token is not None:
            canary.clear_refusal()
            return token
    credentials = Credentials(username=name, password=password)
    response = await _http(url, name, lambda conn, now: conn.register(credentials, now))
    if response.status == 409:
        canary.record_refusal(name, time.time())
        if state == "enabled":
            why = f"{name}'s password is not the one in {canary.path}"
        else:
            why = (f"{name}'s login was refused: the account is disabled or its password"
                   f" is not the one in {canary.path} (`chatd user show {name}` tells which)")
        raise ProbeFailed(
            f"{why}: `chatd user enable {name}` or `chatd user passwd {name}`;"
            f" no canary logins for {REFUSED_PAUSE / 60:g} minutes"
        )
    if response.status != 201:
        raise ProbeFailed(f"{name}: register answered {_error_code(response)}")
    token = await _login(url, name, password)
    if token is None:
        raise ProbeFailed(f"{name}: login refused right after registering")
    canary.clear_refusal()
    return token


async def _websocket(url: SplitResult, name: str, token: str) -> _Link:
    link = await _Link.open(name, url)
    try:
        link.call(lambda conn, now: conn.upgrade(now))
        event = await link.expect((Upgraded, HttpResponse), "the upgrade")  # type: ignore[arg-type]
        if isinstance(event, HttpResponse):
            raise ProbeFailed(f"{name}: upgrade refused with {_error_code(event)}")
        link.call(lambda conn, now: conn.send(Hello(protocol=HELLO_PROTOCOL, token=token), now))
        await link.expect(Welcome, "the welcome")
    except BaseException:
        await link.close()
        raise
    return link


async def _round_trip(a: _Link, b: _Link) -> float:
    """Send a -> b; seconds from the send until b has the push. b confirms every canary
    message it receives, including leftovers of earlier runs."""
    message_id = f"canary-{int(time.time() * 1000)}-{secrets.token_hex(4)}"
    body = f"canary probe {message_id}"
    sent = time.perf_counter()
    a.call(lambda conn, now: conn.send(Send(id=message_id, to=b.name, body=body), now))
    seqs: list[int] = []
    rtt: float | None = None
    try:
        while rtt is None:
            frame = await b.expect(Message, "the canary message")
            assert isinstance(frame, Message)
            if frame.recipient == b.name:
                seqs.append(frame.seq)
            if frame.id == message_id and frame.sender == a.name:
                rtt = time.perf_counter() - sent
    finally:
        for start in range(0, len(seqs), limits.MAX_SEQS_PER_DELIVERED):
            confirm = Delivered(seqs=seqs[start : start + limits.MAX_SEQS_PER_DELIVERED])
            b.call(functools.partial(_send, confirm))
    return rtt


def _send(frame: Delivered, conn: ClientConnection, now: float) -> None:
    conn.send(frame, now)


def _sender_problem(a: _Link) -> str:
    """Why the push did not come, if the sender's connection says so."""
    while not a.inbox.empty():
        event = a.inbox.get_nowait()
        if isinstance(event, Error):
            return f"; {a.name} got error {event.code}"
        if isinstance(event, ConnectionClosed):
            return f"; {a.name}'s connection closed ({event.code})"
    return ""


async def _canary(base: str, path: Path, timeout: float, db_url: str | None) -> float:
    url = urlsplit(base)
    canary = _CanaryFile(path)
    canary.check_pause(time.time())
    links: collections.deque[_Link] = collections.deque()
    phase = "logging in"

    async def steps() -> float:
        nonlocal phase
        tokens = [
            await _canary_token(url, name, canary, db_url) for name in CANARY_USERS
        ]
        phase = "opening the WebSockets"
        for name, token in zip(CANARY_USERS, tokens, strict=True):
            links.append(await _websocket(url, name, token))
        phase = "waiting for the push"
        return await _round_trip(links[0], links[1])

    try:
        return await asyncio.wait_for(steps(), timeout)
    except TimeoutError:
        why = _sender_problem(links[0]) if len(links) == 2 else ""
        raise ProbeFailed(f"timed out after {timeout:g}s {phase}{why}") from None
    finally:
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
