"""``chatd serve``: check what the operator must fix, build a Server, run it until a
signal, and shut it down gracefully (the Server itself is in :mod:`chatd.server`)."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import ssl
import sys
from pathlib import Path

from chatd.auth import KEY_FILE, KeyFileError, key_source
from chatd.config import Config
from chatd.datalock import DatabaseInUse, DataLock
from chatd.files import PRIVATE_FILE, make_private_dir, open_to_others, tighten
from chatd.observe import errors
from chatd.observe.health import HealthMonitor
from chatd.observe.logs import (
    LOG_FILE_NAME,
    EventLogger,
    LogHandle,
    Trusted,
    configure_logging,
)
from chatd.observe.metrics import Metrics
from chatd.server import ListenError, Server
from chatd.store import SchemaMismatch, Store, StoreError
from chatd.store.factory import open_store
from chatd.store.sqlite import SqliteStore
from libchat import __version__

log = EventLogger(logging.getLogger(__name__))

# A full (generation 2) collection walks every connection's objects: ~150-200 ms with
# 10,000 connected, and CPython's default (700, 10, 10) ran one every second or two under
# load, for almost nothing to free. Full collections at most every 1,000 generation-1 runs.
# A young collection every 10,000 objects kept rather than 700: under load the young
# generation holds a loop turn's batches, walked again on every collection (at 4,000
# msg/s with 1,000 users, 480 young collections took 0.35-0.39 s of a 20 s run; with
# 10,000, 8 took 0.03-0.04 s; server CPU per message 233-236 against 244-245 us).
GC_THRESHOLDS = (10_000, 10, 1000)
# The SQLite writer and readers give up the GIL around every SQLite call and must win it
# back from a busy event loop, which by default keeps it up to 5 ms. At 6,100 msg/s with
# 10,000 users (--sync full) 1 ms kept the whole exchange's p99 at 71-197 ms in four runs
# where 5 ms gave 164-978 ms (bench/RESULTS.md).
GIL_SWITCH_INTERVAL = 0.001  # seconds


async def serve(config: Config) -> int:
    """Run chatd until SIGTERM or SIGINT; returns the exit status.

    What can fail for a reason the operator must fix is tried before anything is
    created: the port is bound (not served yet) and the directories are checked first,
    so a port in use or a bad directory leaves nothing behind. Each such failure is one
    ``chatd:`` line on stderr and status 2.
    """
    loop = asyncio.get_running_loop()
    servers: list[Server] = []  # the one Server, once built: the listener's protocols need it
    try:
        tracker = errors.load(config.sentry_dsn, release=f"chatd@{__version__}")
    except errors.SentryMissing as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return exc.status
    try:
        tls = _tls_context(config)
    except (OSError, ssl.SSLError) as exc:
        print(f"chatd: cannot load --tls-cert {config.tls_cert} and --tls-key"
              f" {config.tls_key}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    try:
        # TLS is started per connection by the server's gate (chatd.tlsgate), which
        # first answers a plain-HTTP client with a 400 instead of a TLS alert.
        listener = await loop.create_server(
            lambda: servers[0].new_protocol(),
            config.host,
            config.port,
            backlog=config.backlog,
            reuse_port=config.reuse_port or None,
            start_serving=False,
        )
    except OSError as exc:
        print(f"chatd: {ListenError(f'{config.host}:{config.port}', exc)}", file=sys.stderr)
        return 2
    try:
        for flag, directory in (("--data-dir", config.data_dir), ("--log-dir", config.log_dir)):
            _check_dir(flag, directory)
        logs = configure_logging(config.log_dir, keep_days=config.log_keep_days,
                                 stderr=config.log_stderr)
    except (OSError, ValueError) as exc:
        listener.close()
        print(f"chatd: {exc}", file=sys.stderr)
        return 2
    try:
        if tracker is not None:
            tracker.install()
    except errors.ErrorTrackingUnavailable as exc:
        listener.close()
        logs.close()
        print(f"chatd: {exc}", file=sys.stderr)
        return 2
    try:
        return await _serve(config, listener, servers, logs, tls)
    finally:
        listener.close()
        if tracker is not None:
            tracker.close()
        logs.close()


async def _serve(
    config: Config, listener: asyncio.base_events.Server, servers: list[Server], logs: LogHandle,
    tls: ssl.SSLContext | None,
) -> int:
    make_private_dir(config.data_dir)
    metrics = Metrics()
    health = HealthMonitor(config.data_dir, alert_pct=config.disk_alert_pct)
    store = open_store(config.db_url, sync=config.sync, serving=True,
                       on_commit=functools.partial(_commit_seen, metrics, health))
    lock = None
    if isinstance(store, SqliteStore):  # one process at a time on a SQLite file
        try:
            lock = DataLock.acquire(store.path)
        except (DatabaseInUse, OSError) as exc:
            print(f"chatd: {exc}", file=sys.stderr)
            log.error("server.refused", reason=Trusted(str(exc)))
            return 2
    try:
        return await _serve_store(config, listener, servers, logs, store, metrics, health, tls)
    finally:
        if lock is not None:
            lock.release()


async def _serve_store(
    config: Config,
    listener: asyncio.base_events.Server,
    servers: list[Server],
    logs: LogHandle,
    store: Store,
    metrics: Metrics,
    health: HealthMonitor,
    tls: ssl.SSLContext | None,
) -> int:
    _secure_files(config, store)
    try:
        await store.open()
    except SchemaMismatch as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        log.error("server.refused", reason=Trusted(str(exc)))
        return 2
    except StoreError as exc:
        print(f"chatd: cannot open the database: {exc}", file=sys.stderr)
        log.error("server.refused", reason=Trusted(str(exc)))
        return 2
    try:
        await store.continue_seqs()
    except (StoreError, OSError, ValueError) as exc:
        print(f"chatd: cannot keep seqs moving forward: {exc}", file=sys.stderr)
        log.error("server.refused", reason=Trusted(str(exc)))
        await store.close()
        return 2
    keys = key_source(store, config.data_dir, config.token_key_file)
    try:
        keyring = await keys.load()
    except (KeyFileError, StoreError) as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        log.error("server.refused", reason=str(exc))
        await store.close()
        return 2
    server = Server(config, store, keyring, keys.load, metrics=metrics, health=health, tls=tls)
    servers.append(server)
    try:
        port = await server.start(listener)
    except ListenError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        await server.stop()
        return 2
    # Handlers first: whoever sees the "listening" line may send SIGTERM at once.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, logs.reopen)
    scheme = "https" if config.tls else "http"
    print(f"chatd {__version__} listening on {scheme}://{config.host}:{port}", flush=True)
    log.info("server.start", version=__version__, host=config.host, port=port, tls=config.tls,
             db=Trusted(config.db_url if config.db is None else config.db.split("@")[-1]))
    await stopping.wait()
    log.info("server.stopping", connections=len(server.net.open))
    await server.stop()
    log.info("server.stop")
    return 0


def _commit_seen(metrics: Metrics, health: HealthMonitor, batch_size: int,
                 seconds: float) -> None:
    metrics.store_commit_seconds.observe(seconds)
    metrics.store_batch_size.observe(batch_size)
    health.commit_seen(seconds)


def _tls_context(config: Config) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def _check_dir(flag: str, directory: Path) -> None:
    """Raise ValueError unless ``directory`` is one, or can be made, and chatd may write
    in it: checked before anything is created."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == directory else f" ({existing} is a file)"
        raise ValueError(f"{flag} {directory} is not a directory{where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {directory}: {existing} is not writable")


def _secure_files(config: Config, store: Store) -> None:
    """Make the data files chatd owns by name private if an older chatd or an operator
    left them open; only warn about directories and the log file (see chatd.files)."""
    owned = [config.data_dir / KEY_FILE]
    if isinstance(store, SqliteStore):
        owned += [store.path, *(store.path.with_name(store.path.name + suffix)
                                for suffix in ("-wal", "-shm"))]
    for path, old_mode in tighten(owned):
        log.warning("file.mode_tightened", path=path, old_mode=oct(old_mode),
                    mode=oct(PRIVATE_FILE))
    shared = [config.data_dir, config.log_dir, config.log_dir / LOG_FILE_NAME]
    for path, mode in open_to_others(shared):
        log.warning("file.mode_open", path=path, mode=oct(mode),
                    hint="others may read or enter it: chmod go-rwx it")


def run(config: Config) -> int:
    gc.freeze()  # what startup built (modules, classes) lives as long as the process
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows has no uvloop
        return asyncio.run(serve(config))
    return uvloop.run(serve(config))
