"""The Server: one chatd process's parts, built from one Config and wired together,
with its lifecycle (start, graceful stop) and its background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from wsgiref.simple_server import WSGIServer

import prometheus_client

from chatd.accounts import Accounts
from chatd.admission import Admission, TrustedNetworks
from chatd.auth import (
    Keyring,
    KeyringLoader,
    LoginLimiter,
    Passwords,
    RevocationCache,
    Tokens,
)
from chatd.bus import Bus, channel_for
from chatd.config import Config
from chatd.http import HttpApi
from chatd.hub import Hub, Publisher, Sessions
from chatd.net import Connections
from chatd.observe.health import HealthMonitor
from chatd.observe.logs import EventLogger
from chatd.observe.metrics import Metrics
from chatd.store import Store, StoreError, StoreUnavailable
from chatd.store.factory import is_postgres, schema_from_url
from chatd.tlsgate import TlsGates
from chatd.turn import LoopTurn
from chatd.users import UserDirectory
from libchat import limits

__all__ = ["ListenError", "Server"]

log = EventLogger(logging.getLogger(__name__))

SHUTDOWN_GRACE = 3.0  # seconds for in-flight commits and close handshakes at shutdown
SWEEP_INTERVAL = 1.0  # seconds between looks for slow readers
# Admin changes (a disabled user, a revoked token) reach open connections within about
# this: the cheap "did another process commit?" look (one PRAGMA on SQLite's writer).
CHANGE_CHECK_INTERVAL = 0.15  # seconds
CHANGE_POLL_INTERVAL = 2.0  # seconds between full looks anyway (a lost NOTIFY, key files)
GAUGE_INTERVAL = 15.0  # seconds between queue-depth and disk gauge updates


class ListenError(Exception):
    """An address chatd was told to listen on cannot be bound."""

    def __init__(self, address: str, cause: OSError) -> None:
        super().__init__(f"cannot listen on {address}: {cause.strerror or cause}")


class Server:
    """Everything one chatd process runs, built from one Config."""

    def __init__(
        self, config: Config, store: Store, keys: bytes | Keyring,
        load_keys: KeyringLoader | None = None, *, metrics: Metrics, health: HealthMonitor,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.loop = asyncio.get_running_loop()
        self.turn = LoopTurn(self.loop)
        self.metrics = metrics
        self.trusted = TrustedNetworks(config.trusted_ips)
        self.admission = Admission(
            max_connections=config.max_connections,
            max_anonymous=config.anonymous_cap,
            max_anonymous_per_ip=config.max_anonymous_per_ip,
            trusted=self.trusted,
        )
        self.metrics.anonymous_connections.set_function(lambda: self.admission.anonymous)
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")
        self.users = UserDirectory(store)
        self.revocations = RevocationCache()
        # made before the accounts, which tell the sessions of each token that dies here
        bus = self._postgres_bus(store) if is_postgres(config.db_url) else None
        publisher = Publisher(bus)
        sessions = Sessions(self.revocations, self.users, self.metrics, publisher.publish)
        self.accounts = Accounts(
            store,
            self.users,
            Passwords(self.executor),
            Tokens(keys, config.token_ttl, loader=load_keys),
            LoginLimiter(store),
            self.revocations,
            self.metrics,
            news=sessions,
            trusted=self.trusted,
            registration_open=config.registration == "open",
            refresh_grace=config.refresh_grace,
        )
        self._changes_announced = asyncio.Event()
        self.hub = Hub(config, store, self.users, self.accounts, self.metrics,
                       sessions=sessions, publisher=publisher, turn=self.turn,
                       on_store_changed=self._changes_announced_now)
        self.health = health
        self.api = HttpApi(
            config, store, self.users, self.accounts, self.metrics, self.health,
            self._websocket_count,
        )
        self.net = Connections(self.loop, self.turn, self.hub, self.api, self.admission,
                               self.metrics, self.spawn)
        self.tls_gates = None if tls is None else TlsGates(tls, self.metrics)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.base_events.Server | None = None
        self._metrics_server: WSGIServer | None = None  # --metrics-listen's, in a thread

    def _postgres_bus(self, store: Store) -> Bus:
        """The bus of the nodes sharing this PostgreSQL database, with its figures and the
        pool's exported. psycopg is imported here, so a SQLite server never loads it."""
        from chatd.bus.postgres import PostgresBus
        from chatd.store.postgres import PostgresStore

        url = self.config.db_url
        bus = PostgresBus(url, channel=channel_for(schema_from_url(url)))
        self.metrics.watch_bus(bus)
        if isinstance(store, PostgresStore):
            self.metrics.watch_pool(store.pool_stats)
        return bus

    def _changes_announced_now(self) -> None:
        """Another process says it changed users, tokens or keys (or the bus lost such
        notices): poll at once."""
        self._changes_announced.set()

    def new_protocol(self) -> asyncio.Protocol:
        """The protocol factory of the listener: the chat protocol, behind the TLS
        gate with ``--tls-cert``."""
        if self.tls_gates is None:
            return self.net.new_protocol()
        return self.tls_gates.new_protocol(self.net.new_protocol)

    def _websocket_count(self) -> int:
        return self.net.websockets

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.exception("task.failed", exc_info=task.exception())

    # --- lifecycle --------------------------------------------------------------------

    async def start(self, listener: asyncio.base_events.Server) -> int:
        """Serve on ``listener`` (bound already, not serving yet: see :func:`serve`)."""
        for jti, expires_at in await self.store.revoked_since(0):
            self.revocations.add(jti, expires_at)
        for retirement in await self.store.retired_since(0):
            self.revocations.retire(retirement)
        for family, expires_at in await self.store.revoked_families_since(0):
            self.revocations.revoke_family(family, expires_at)
        self._listener = listener
        await self.hub.start_bus()  # first: a connection must not miss the other nodes
        await listener.start_serving()
        metrics_address = self.config.metrics_address
        if metrics_address is not None:
            host, metrics_port = metrics_address
            try:
                self._metrics_server, _ = prometheus_client.start_http_server(
                    metrics_port, host, registry=self.metrics.registry
                )
            except OSError as exc:
                raise ListenError(self.config.metrics_listen or "", exc) from exc
        port = int(self._listener.sockets[0].getsockname()[1])
        self.spawn(self._sweep_slow_readers())
        self.spawn(self._poll_changes())
        self.spawn(self._update_gauges())
        return port

    async def stop(self) -> None:
        """Stop accepting connections and sends, let in-flight commits finish (so every
        acked message is stored), answer the sends still waiting with an error, close
        WebSockets with 1001, then close the store: every send gets an answer."""
        if self._listener is not None:
            self._listener.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        self.hub.stop_accepting()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.hub.wait_idle(), SHUTDOWN_GRACE)
        self.hub.refuse_uncommitted()
        self.net.close_all(limits.CLOSE_GOING_AWAY, "server shutting down")
        deadline = self.loop.time() + 1.0
        while self.net.open and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        self.net.abort_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hub.close_bus()
        await self.store.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _sweep_slow_readers(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.net.abort_slow_readers(self.loop.time(), self.config.slow_reader_timeout)

    async def _poll_changes(self) -> None:
        """See token revocations and user changes made by other processes (another
        node, or ``chatd user disable`` on this machine) and close what they kill; and
        read the token keyring again (``chatd key rotate``).

        The look runs as soon as such a change is known: SQLite's writer connection
        tells cheaply whether another connection committed (asked every
        :data:`CHANGE_CHECK_INTERVAL`), and the PostgreSQL store announces each change
        on the bus (:class:`chatd.bus.StoreChanged`). It also runs every
        :data:`CHANGE_POLL_INTERVAL`, for a lost notice and the keyring file."""
        since_ms = int(time.time() * 1000)
        since_s = time.time()
        while True:
            await self._wait_for_changes()
            try:
                started = time.time()
                for user in await self.store.users_changed_since(since_ms - 5000):
                    self.hub.revoke_user(user)
                for jti, expires_at in await self.store.revoked_since(since_s - 5):
                    if not self.revocations.is_revoked(jti, started):
                        self.revocations.add(jti, expires_at)
                        self.hub.revoke_token(jti)
                for retirement in await self.store.retired_since(since_s - 5):
                    if self.revocations.retire(retirement):
                        self.hub.retire_token(retirement)
                for family, expires_at in await self.store.revoked_families_since(since_s - 5):
                    if self.revocations.revoke_family(family, expires_at):
                        self.hub.revoke_family(family)
                since_ms, since_s = int(started * 1000), started
            except StoreUnavailable:
                pass  # the store logs an outage once; the next poll looks again
            except StoreError:
                log.exception("store.error", op="poll_changes")
            await self.accounts.reload_keys()  # logs its own failures

    async def _wait_for_changes(self) -> None:
        """Return once another process changed the store, or after
        :data:`CHANGE_POLL_INTERVAL`."""
        announced = self._changes_announced
        deadline = self.loop.time() + CHANGE_POLL_INTERVAL
        while (left := deadline - self.loop.time()) > 0 and not announced.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(announced.wait(), min(left, CHANGE_CHECK_INTERVAL))
            try:
                if await self.store.changed_elsewhere():
                    break
            except StoreError:
                pass  # the look itself reports an unusable store, once per interval
        announced.clear()  # before the look: a notice during it brings another one

    async def _update_gauges(self) -> None:
        while True:
            try:
                self.metrics.queue_depth.set(await self.store.undelivered_total())
            except StoreUnavailable:
                pass  # the store logs an outage once
            except StoreError:
                log.exception("store.error", op="stats")
            self.metrics.disk_used_ratio.set(self.health.disk_pct() / 100)
            self.metrics.refusals.flush()  # the summaries of quiet clients' windows
            await asyncio.sleep(GAUGE_INTERVAL)
