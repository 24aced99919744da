"""``chatd health --canary``: do what a user does and time it.

Over the public API only, so it can run from any machine that reaches the server, the
canary logs in two dedicated accounts, ``canary-a`` and ``canary-b`` (registering them
the first time), each with libchat's asyncio client (:class:`~libchat.aio.AsyncClient`,
a session), which opens its WebSocket; then sends one message from a to b and times the
send -> push round trip; b confirms delivery (also of any canary message an earlier,
failed run left behind) so nothing piles up. The two passwords are random and kept in a
JSON file (``--canary-file``, default ``./data/canary.json``, mode 0600). If that file
is lost, reset the accounts' passwords with ``chatd user passwd`` or give the file back.

A canary must never lock its own address out: when a canary login is refused (the
account disabled, or its password changed), the probe says which, if it can see the
database (``--data-dir``/``--db``, as on the server's own machine), and then makes no
more login attempts for :data:`REFUSED_PAUSE` seconds, so at most three of its failures
fall in the login limit's 15-minute window of five. The pause is kept in the canary file
(``"refused": {"user": ..., "at": ...}``); deleting that entry ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import ssl
import time
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
from libchat.protocol import Credentials, Error, Message
from libchat.session import (
    Connected,
    Disconnected,
    SessionConfig,
    SignedIn,
    SignedOut,
    SignInFailed,
)

__all__ = ["CANARY_USERS", "DEFAULT_CANARY_FILE", "CanaryFailed", "run_canary"]

CANARY_USERS: Final = ("canary-a", "canary-b")
DEFAULT_CANARY_FILE: Final = Path("data") / "canary.json"
HELLO_PROTOCOL: Final = "1.0"
REFUSED_PAUSE: Final = 300.0  # seconds without canary logins after one was refused
CLOSE_WAIT: Final = 1.0  # seconds a canary waits for the server's answer to its close

T = TypeVar("T")


class CanaryFailed(Exception):
    """The canary did not make it (or may not try yet): why, in one line."""


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
            raise CanaryFailed(f"cannot read {path}: {exc}") from None
        if not isinstance(stored, dict) or not all(
            isinstance(stored.get(name), str) for name in CANARY_USERS
        ):
            raise CanaryFailed(f"{path} does not hold the canary passwords")
        self.passwords = {name: stored[name] for name in CANARY_USERS}
        refused = stored.get("refused")
        if isinstance(refused, dict) and isinstance(refused.get("at"), int | float):
            self.refused = (str(refused.get("user", "?")), float(refused["at"]))

    def check_pause(self, now: float) -> None:
        """Raise CanaryFailed while the pause after a refused login lasts."""
        if self.refused is None:
            return
        user, at = self.refused
        if now < at + REFUSED_PAUSE:
            raise CanaryFailed(
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
            raise CanaryFailed(f"cannot write {path}: {exc}") from None


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))


class _User:
    """One canary account: libchat's asyncio client (a session) signed in as ``name``."""

    def __init__(self, name: str, url: SplitResult, tls: ssl.SSLContext | None) -> None:
        self.name = name
        port = url.port or (443 if url.scheme == "https" else 80)
        config = SessionConfig(host=url.netloc, hello_protocol=HELLO_PROTOCOL)
        self.client = AsyncClient(url.hostname or "127.0.0.1", port, ssl=tls, config=config)

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
        Raises CanaryFailed on an error frame or when the connection or session ends."""
        while True:
            try:
                event = await self.client.next_event()
            except EOFError:
                raise CanaryFailed(f"{self.name}: session over waiting for {what}") from None
            if isinstance(event, wanted):
                return event
            if isinstance(event, Error):
                raise CanaryFailed(f"{self.name}: error {event.code} waiting for {what}")
            if isinstance(event, Disconnected):
                raise CanaryFailed(
                    f"{self.name}: connection closed ({event.code} {event.reason})"
                    f" waiting for {what}".replace("(None ", "(")
                )
            if isinstance(event, SignedOut):
                raise CanaryFailed(f"{self.name}: {event.reason} waiting for {what}")

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


def _failure(name: str, request: str, failed: SignInFailed) -> CanaryFailed:
    """``canary-a: login answered rate_limited``, or ``canary-a: connection refused``."""
    if failed.status is None:
        return CanaryFailed(f"{name}: {failed.message}")
    code = f"HTTP {failed.status}" if failed.code == f"http_{failed.status}" else failed.code
    return CanaryFailed(f"{name}: {request} answered {code}")


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
    url: SplitResult, tls: ssl.SSLContext | None, name: str, canary: _CanaryFile,
    db_url: str | None,
) -> _User:
    """Sign in; register first when the account does not exist yet. A disabled account
    is not tried at all when the database says so; a refused login starts the pause."""
    state = await _account_state(db_url, name)
    if state == "disabled":
        raise CanaryFailed(f"{name} is disabled: `chatd user enable {name}`")
    credentials = Credentials(username=name, password=canary.passwords[name])
    user = _User(name, url, tls)
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
) -> CanaryFailed:
    """Why registering (or the login right after it) failed; a taken name means the
    account exists and refused its password: that starts the pause."""
    if failed.step == "login":
        if failed.status == 401:
            return CanaryFailed(f"{name}: login refused right after registering")
        return _failure(name, "login", failed)
    if failed.status != 409:
        return _failure(name, "register", failed)
    canary.record_refusal(name, time.time())
    if state == "enabled":
        why = f"{name}'s password is not the one in {canary.path}"
    else:
        why = (f"{name}'s login was refused: the account is disabled or its password"
               f" is not the one in {canary.path} (`chatd user show {name}` tells which)")
    return CanaryFailed(
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


async def run_canary(
    base: str, path: Path, timeout: float, db_url: str | None,
    tls: ssl.SSLContext | None = None,
) -> float:
    """Sign in both canary accounts on ``base``, send a -> b: seconds from send to push.
    ``tls`` verifies an ``https://`` server (default: the system's trust store).

    Raises:
        CanaryFailed: it did not make it within ``timeout`` seconds, or is paused.
    """
    url = urlsplit(base)
    if url.scheme == "https" and tls is None:
        tls = ssl.create_default_context()
    canary = _CanaryFile(path)
    canary.check_pause(time.time())
    users: list[_User] = []
    phase = "logging in"

    async def steps() -> float:
        nonlocal phase
        for name in CANARY_USERS:
            users.append(await _canary_user(url, tls, name, canary, db_url))
        phase = "opening the WebSockets"
        for user in users:
            await user.expect(Connected, "the welcome")
        phase = "waiting for the push"
        return await _round_trip(users[0], users[1])

    try:
        return await asyncio.wait_for(steps(), timeout)
    except TimeoutError:
        why = await users[0].problem() if len(users) == 2 else ""
        raise CanaryFailed(f"timed out after {timeout:g}s {phase}{why}") from None
    finally:
        await asyncio.gather(*(user.close() for user in users), return_exceptions=True)
