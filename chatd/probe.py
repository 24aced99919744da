"""``chatd health``: ask a running server how it is, monitoring-plugin style.

One line on stdout and an exit status a monitor understands::

    CHATD OK - status=ok connections=3 uptime=12s db=ok disk=41%              (exit 0)
    CHATD DEGRADED - status=degraded connections=3 uptime=12s db=ok disk=93%  (exit 1)
    CHATD DOWN - connection refused                                           (exit 2)

A 503 from ``/healthz`` (the store is unusable) counts as down.

With ``--canary`` the probe also does what a user does, over the public API only, so it
can run from any machine that reaches the server: it logs in two dedicated accounts,
``canary-a`` and ``canary-b`` (registering them the first time), each with libchat's
asyncio client (:class:`~libchat.aio.AsyncClient`, a session), which opens its WebSocket;
then sends one message from a to b and times the send -> push round trip; b confirms
delivery (also of any canary message an earlier, failed run left behind) so nothing
piles up. The two passwords are random and kept in a JSON file
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
import contextlib
import os
import secrets
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import SplitResult, urlsplit

import orjson

from chatd.files import make_private_dir
from chatd.store import StoreError
from chatd.store.factory import open_store
from chatd.store.sqlite import SqliteStore
from libchat.aio import AsyncClient
from libchat.outbox import SendDeferred, SendFailed
from libchat.protocol import (
    Credentials,
    Error,
    Health,
    Message,
    ProtocolViolation,
    decode_response_body,
)
from libchat.session import (
    Connected,
    Disconnected,
    SessionConfig,
    SignedIn,
    SignedOut,
    SignInFailed,
)

__all__ = ["CANARY_USERS", "check_health"]

EXIT_OK: Final = 0
EXIT_DEGRADED: Final = 1
EXIT_DOWN: Final = 2
CANARY_USERS: Final = ("canary-a", "canary-b")
DEFAULT_CANARY_FILE: Final = Path("data") / "canary.json"
HELLO_PROTOCOL: Final = "1.0"
REFUSED_PAUSE: Final = 300.0  # seconds without canary logins after one was refused
CLOSE_WAIT: Final = 1.0  # seconds a canary waits for the server's answer to its close

T = TypeVar("T")


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


class _User:
    """One canary account: libchat's asyncio client (a session) signed in as ``name``."""

    def __init__(self, name: str, url: SplitResult) -> None:
        self.name = name
        port = url.port or (443 if url.scheme == "https" else 80)
        config = SessionConfig(host=url.netloc, hello_protocol=HELLO_PROTOCOL)
        self.client = AsyncClient(
            url.hostname or "127.0.0.1", port, ssl=_ssl_context(url), config=config
        )

    async def sign_in(self, credentials: Credentials, *, register: bool) -> SignInFailed | None:
        """Log in (registering first with ``register``): None once signed in, else why
        not. The session opens the WebSocket by itself once signed in."""
        self.client.sign_in(credentials, register=register)
        while True:
            event = await self.client.next_event()
            if isinstance(event, SignedIn):
                return None
            if isinstance(event, SignInFailed):
                return event

    async def expect(self, wanted: type[T], what: str) -> T:
        """The next event of type ``wanted``; other events in between are dropped.
        Raises ProbeFailed on an error frame or when the connection or session ends."""
        while True:
            try:
                event = await self.client.next_event()
            except EOFError:
                raise ProbeFailed(f"{self.name}: session over waiting for {what}") from None
            if isinstance(event, wanted):
                return event
            if isinstance(event, Error):
                raise ProbeFailed(f"{self.name}: error {event.code} waiting for {what}")
            if isinstance(event, Disconnected):
                raise ProbeFailed(
                    f"{self.name}: connection closed ({event.code} {event.reason})"
                    f" waiting for {what}".replace("(None ", "(")
                )
            if isinstance(event, SignedOut):
                raise ProbeFailed(f"{self.name}: {event.reason} waiting for {what}")

    async def problem(self) -> str:
        """Why this user's message did not arrive, if its events so far say so."""
        with contextlib.suppress(TimeoutError, EOFError):
            while True:
                event = await self.client.next_event(timeout=0)
                if isinstance(event, Error | SendFailed | SendDeferred):
                    return f"; {self.name} got error {event.code}"
                if isinstance(event, Disconnected):
                    return f"; {self.name}'s connection closed ({event.code})"
        return ""

    async def close(self) -> None:
        """Close the WebSocket with the handshake, allowing a moment for the answer."""
        await self.client.aclose(timeout=CLOSE_WAIT)


def _failure(name: str, request: str, failed: SignInFailed) -> ProbeFailed:
    """``canary-a: login answered rate_limited``, or ``canary-a: connection refused``."""
    if failed.status is None:
        return ProbeFailed(f"{name}: {failed.message}")
    code = f"HTTP {failed.status}" if failed.code == f"http_{failed.status}" else failed.code
    return ProbeFailed(f"{name}: {request} answered {code}")


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


async def _canary_user(
    url: SplitResult, name: str, canary: _CanaryFile, db_url: str | None
) -> _User:
    """Sign in; register first when the account does not exist yet. A disabled account
    is not tried at all when the database says so; a refused login starts the pause."""
    state = await _account_state(db_url, name)
    if state == "disabled":
        raise ProbeFailed(f"{name} is disabled: `chatd user enable {name}`")
    credentials = Credentials(username=name, password=canary.passwords[name])
    user = _User(name, url)
    try:
        if not canary.fresh and state != "missing":
            failed = await user.sign_in(credentials, register=False)
            if failed is None:
                canary.clear_refusal()
                return user
            if failed.status != 401:
                raise _failure(name, "login", failed)
        failed = await user.sign_in(credentials, register=True)
        if failed is not None:
            raise _registration_failed(name, canary, state, failed)
        canary.clear_refusal()
        return user
    except BaseException:
        await user.close()
        raise


def _registration_failed(
    name: str, canary: _CanaryFile, state: str | None, failed: SignInFailed
) -> ProbeFailed:
    """Why registering (or the login right after it) failed; a taken name means the
    account exists and refused its password: that starts the pause."""
    if failed.step == "login":
        if failed.status == 401:
            return ProbeFailed(f"{name}: login refused right after registering")
        return _failure(name, "login", failed)
    if failed.status != 409:
        return _failure(name, "register", failed)
    canary.record_refusal(name, time.time())
    if state == "enabled":
        why = f"{name}'s password is not the one in {canary.path}"
    else:
        why = (f"{name}'s login was refused: the account is disabled or its password"
               f" is not the one in {canary.path} (`chatd user show {name}` tells which)")
    return ProbeFailed(
        f"{why}: `chatd user enable {name}` or `chatd user passwd {name}`;"
        f" no canary logins for {REFUSED_PAUSE / 60:g} minutes"
    )


async def _round_trip(a: _User, b: _User) -> float:
    """Send a -> b; seconds from the send until b has the push. b's session confirms
    delivery of every message pushed to it as it arrives, including canary messages
    an earlier, failed run left behind, so nothing piles up."""
    marker = f"canary-{int(time.time() * 1000)}-{secrets.token_hex(4)}"
    sent = time.perf_counter()
    entry = a.client.send_message(b.name, f"canary probe {marker}")
    while True:
        message = await b.expect(Message, "the canary message")
        if message.id == entry.client_id and message.sender == a.name:
            return time.perf_counter() - sent


async def _canary(base: str, path: Path, timeout: float, db_url: str | None) -> float:
    url = urlsplit(base)
    canary = _CanaryFile(path)
    canary.check_pause(time.time())
    users: list[_User] = []
    phase = "logging in"

    async def steps() -> float:
        nonlocal phase
        for name in CANARY_USERS:
            users.append(await _canary_user(url, name, canary, db_url))
        phase = "opening the WebSockets"
        for user in users:
            await user.expect(Connected, "the welcome")
        phase = "waiting for the push"
        return await _round_trip(users[0], users[1])

    try:
        return await asyncio.wait_for(steps(), timeout)
    except TimeoutError:
        why = await users[0].problem() if len(users) == 2 else ""
        raise ProbeFailed(f"timed out after {timeout:g}s {phase}{why}") from None
    finally:
        await asyncio.gather(*(user.close() for user in users), return_exceptions=True)
