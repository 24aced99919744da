"""Prometheus metrics for chatd, served as ``GET /metrics``.

One :class:`Metrics` object per server, owning its own registry (never the process-wide
default one), so tests can run several servers in one process. The hot path touches the
metric attributes directly::

    metrics.messages_accepted_total.inc()
    metrics.push_latency_seconds.observe(loop.time() - accepted_at)

The per-message series (``messages_*_total``, the four histograms) are lock-free
:class:`LoopCounter` and :class:`LoopHistogram`, about 0.1 and 0.2 µs a call; the other
prometheus_client ones cost about 0.4 µs an ``inc()`` (CPython 3.11). Label lookups
(``errors_total.labels(code)``) add about 1 µs; keep label values to small fixed sets
(error codes, route templates, never raw paths or user names).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import accumulate
from math import inf
from typing import Final, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from chatd.observe.refusals import Refusals

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "LOGIN_RESULTS",
    "UPGRADE_REFUSALS",
    "BusStats",
    "LoopCounter",
    "LoopHistogram",
    "Metrics",
]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# No ``*_created`` series: one per counter and histogram (and per label set), the
# Unix time it was made, which nobody graphs. Process-wide in prometheus_client.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Seconds; a local push takes well under a millisecond, a commit a few, a slow disk or a
# paused reader seconds. Above 10 s only "+Inf" matters.
LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Messages per group commit: 1 when idle, hundreds under load.
BATCH_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
LOGIN_RESULTS: Final = ("ok", "failed", "rate_limited")
# Why a WebSocket upgrade was answered with an error (the error code of the answer).
UPGRADE_REFUSALS: Final = ("origin_not_allowed", "unauthorized", "server_busy", "internal_error")
# psycopg_pool's get_stats() keys exported, as (name, kind, help, key, scale).
_POOL_SERIES: Final = (
    ("pool_min", "gauge", "Connections the pool keeps open at least.", "pool_min", 1),
    ("pool_max", "gauge", "Connections the pool may open at most.", "pool_max", 1),
    ("pool_size", "gauge", "Connections open now, in use or idle.", "pool_size", 1),
    ("pool_idle", "gauge", "Open connections waiting in the pool.", "pool_available", 1),
    ("pool_waiting", "gauge", "Requests waiting for a connection now.", "requests_waiting", 1),
    ("pool_checkouts", "counter", "Connections handed out.", "requests_num", 1),
    ("pool_checkouts_queued", "counter", "Checkouts that had to wait for a connection.",
     "requests_queued", 1),
    ("pool_checkout_wait_seconds", "counter", "Time checkouts spent waiting.",
     "requests_wait_ms", 0.001),
    ("pool_checkout_errors", "counter",
     "Checkouts that failed (timeout, full queue).", "requests_errors", 1),
    ("pool_connections", "counter", "Connections the pool opened.", "connections_num", 1),
    ("pool_connection_errors", "counter", "Connection attempts that failed.",
     "connections_errors", 1),
    ("pool_connections_lost", "counter", "Connections found dead at a check.",
     "connections_lost", 1),
)  # fmt: skip

_PREFIX: Final = "chatd"


class BusStats(Protocol):
    """What the bus between nodes counts (:class:`chatd.bus.postgres.PostgresBus`)."""

    published: int  # notifications sent
    publish_failures: int  # events lost because publishing failed twice
    received: int  # notifications from the other nodes, handled
    invalid: int  # notifications that could not be decoded
    reconnects: int  # listener reconnects
    listening: bool  # the listening connection is up
    others_listening: bool  # another node listens (else nothing is published)


class _Sources(Collector):
    """Series read at scrape time from the PostgreSQL pool's and the bus's own
    counters (nothing to keep in step on their hot paths)."""

    def __init__(self) -> None:
        self.pool: Callable[[], Mapping[str, int]] | None = None
        self.bus: BusStats | None = None

    def collect(self) -> Iterator[Metric]:
        if self.pool is not None:
            stats = self.pool()
            for name, kind, text, key, scale in _POOL_SERIES:
                family = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
                yield family(f"{_PREFIX}_pg_{name}", f"PostgreSQL store: {text}",
                             value=stats.get(key, 0) * scale)
        bus = self.bus
        if bus is not None:
            yield GaugeMetricFamily(f"{_PREFIX}_bus_listener_connected",
                                    "1 while the bus listens for the other nodes' events.",
                                    value=1 if bus.listening else 0)
            yield GaugeMetricFamily(f"{_PREFIX}_bus_other_nodes",
                                    "1 while another node listens; 0: alone, nothing is"
                                    " published.",
                                    value=1 if bus.others_listening else 0)
            for name, text, count in (
                ("bus_events_published", "Bus notifications sent to the other nodes.",
                 bus.published),
                ("bus_publish_failures", "Bus events lost: publishing failed twice.",
                 bus.publish_failures),
                ("bus_events_received", "Bus notifications from the other nodes handled.",
                 bus.received),
                ("bus_events_invalid", "Bus notifications that could not be decoded.",
                 bus.invalid),
                ("bus_reconnects", "Reconnects of the bus listener (events may be lost).",
                 bus.reconnects),
            ):
                yield CounterMetricFamily(f"{_PREFIX}_{name}", text, value=count)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # series come and go with the sources: not checked at register


class LoopHistogram(Collector):
    """A histogram for the event loop's hot path, exported exactly as prometheus_client's
    ``Histogram`` (same names, buckets, ``_bucket``/``_count``/``_sum`` samples).

    Why: ``Histogram.observe`` takes a lock for the bucket and one for the sum, about
    0.8-1.0 µs; this is a ``bisect`` and a list increment, about 0.2 µs, and two are
    observed per message (py-spy put prometheus_client at 4-12% of the loop at 4,000-7,000
    messages/s). Not thread-safe: observe only on the event loop thread. A scrape may run
    on another thread (``--metrics-listen``): it copies the counts in one step (atomic
    under the GIL), so it never sees a bucket go down or a ``_count`` other than the
    ``+Inf`` bucket; ``_sum`` may be one observation apart, as with ``Histogram``.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = [*map(float, buckets), inf]  # upper bounds, "le"
        to_text: Callable[[float], str] = floatToGoString  # (untyped in the library)
        self._les = [to_text(bound) for bound in self._bounds]
        self._counts = [0.0] * len(self._bounds)  # per bucket, not cumulative
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        cumulative = accumulate(self._counts.copy())  # the copy: one step, see above
        yield HistogramMetricFamily(self._name, self._documentation,
                                    buckets=list(zip(self._les, cumulative, strict=True)),
                                    sum_value=self._sum)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation)


class LoopCounter(Collector):
    """A counter for the event loop's hot path, exported exactly as prometheus_client's
    ``Counter``: ``inc()`` is an addition (about 0.1 µs) instead of a locked one (about
    0.4 µs), for counters moved once per message. Event loop thread only."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._value = 0.0
        registry.register(self)

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self._value += amount

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._value)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation)


class Metrics:
    """Every chatd metric, registered in a registry of its own.

    Attributes (metric names carry a ``chatd_`` prefix):
        connections: open WebSocket connections (gauge).
        users_online: users with at least one authenticated connection (gauge).
        messages_accepted_total: messages committed and acked to their sender.
        messages_pushed_total: message frames written to a recipient's connection.
        messages_delivered_total: messages the recipient confirmed as delivered.
        messages_redelivered_total: messages pushed again (from the store, on the
            recipient's next connection) after an earlier push went unconfirmed.
        push_latency_seconds: accepted (commit done) -> pushed to the recipient's socket.
        delivery_latency_seconds: accepted -> confirmed delivered by the recipient.
        store_commit_seconds: duration of one store transaction (group commit).
        store_batch_size: messages per group commit.
        connections_refused_total{budget}: sockets answered 503 at accept, by the budget
            that was full (``connections``, ``anonymous``, ``anonymous_per_ip``).
        anonymous_connections: open sockets that have not said hello (gauge).
        errors_total{code}: error frames and error responses sent, by contract code.
        logins_total{result}: logins by result: ``ok``, ``failed``, ``rate_limited``.
        http_requests_total{route,status}: HTTP requests by route template and status.
        refusals_total{reason}: refused requests and connections by reason (the event
            name: ``login.rate_limited``, ``token.refused``...), fed by ``refusals``.
        upgrades_refused_total{reason}: WebSocket upgrades answered with an error, by
            its code (:data:`UPGRADE_REFUSALS`).
        refusals: counts into ``refusals_total`` and logs at a bounded rate
            (:class:`chatd.observe.refusals.Refusals`): ``metrics.refusals.record(log,
            "login.rate_limited", key=ip, ip=ip)``.
        queue_depth: stored messages not yet confirmed delivered (set periodically).
        disk_used_ratio: used fraction (0..1) of the data directory's filesystem.

    With PostgreSQL also ``chatd_pg_pool_*`` (the store's connection pool, see
    :meth:`watch_pool`) and ``chatd_bus_*`` (the bus between nodes, :meth:`watch_bus`).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.connections = Gauge(
            f"{_PREFIX}_connections", "Open WebSocket connections.", registry=registry
        )
        self.users_online = Gauge(
            f"{_PREFIX}_users_online",
            "Users with at least one authenticated connection.",
            registry=registry,
        )
        self.messages_accepted_total = LoopCounter(
            f"{_PREFIX}_messages_accepted",
            "Messages committed to the store and acked to their sender.",
            registry=registry,
        )
        self.messages_pushed_total = LoopCounter(
            f"{_PREFIX}_messages_pushed",
            "Message frames written to a recipient's connection.",
            registry=registry,
        )
        self.messages_delivered_total = LoopCounter(
            f"{_PREFIX}_messages_delivered",
            "Messages the recipient confirmed as delivered.",
            registry=registry,
        )
        self.messages_redelivered_total = LoopCounter(
            f"{_PREFIX}_messages_redelivered",
            "Messages pushed again after an earlier push to the recipient went unconfirmed.",
            registry=registry,
        )
        self.push_latency_seconds = LoopHistogram(
            f"{_PREFIX}_push_latency_seconds",
            "Time from a message's commit to its push onto the recipient's socket.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.delivery_latency_seconds = LoopHistogram(
            f"{_PREFIX}_delivery_latency_seconds",
            "Time from a message's commit to the recipient's delivered confirmation.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.store_commit_seconds = LoopHistogram(
            f"{_PREFIX}_store_commit_seconds",
            "Duration of one store transaction (a group commit).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.store_batch_size = LoopHistogram(
            f"{_PREFIX}_store_batch_size",
            "Messages written per group commit.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.errors_total = Counter(
            f"{_PREFIX}_errors",
            "Error frames and error responses sent, by contract error code.",
            ["code"],
            registry=registry,
        )
        self.connections_refused_total = Counter(
            f"{_PREFIX}_connections_refused",
            "Sockets answered 503 at accept, by the budget that was full.",
            ["budget"],
            registry=registry,
        )
        self.anonymous_connections = Gauge(
            f"{_PREFIX}_anonymous_connections",
            "Open sockets that have not said hello (HTTP ones included).",
            registry=registry,
        )
        self.logins_total = Counter(
            f"{_PREFIX}_logins", "Login attempts by result.", ["result"], registry=registry
        )
        for result in LOGIN_RESULTS:
            self.logins_total.labels(result)  # export zeros before the first login
        self.http_requests_total = Counter(
            f"{_PREFIX}_http_requests",
            "HTTP requests by route template (not raw path) and status code.",
            ["route", "status"],
            registry=registry,
        )
        self.refusals_total = Counter(
            f"{_PREFIX}_refusals",
            "Refused requests and connections by reason (429s, bad tokens, caps).",
            ["reason"],
            registry=registry,
        )
        self.refusals = Refusals(self.refusals_total)
        self.upgrades_refused_total = Counter(
            f"{_PREFIX}_upgrades_refused",
            "WebSocket upgrades answered with an error, by its code.",
            ["reason"],
            registry=registry,
        )
        for reason in UPGRADE_REFUSALS:
            self.upgrades_refused_total.labels(reason)
        self.queue_depth = Gauge(
            f"{_PREFIX}_queue_depth",
            "Stored messages not yet confirmed delivered.",
            registry=registry,
        )
        self.disk_used_ratio = Gauge(
            f"{_PREFIX}_disk_used_ratio",
            "Used fraction (0..1) of the filesystem holding the data directory.",
            registry=registry,
        )
        # process_* (memory, CPU, open fds) for this process; empty where /proc is absent.
        ProcessCollector(registry=registry)
        self._sources = _Sources()
        registry.register(self._sources)

    def watch_pool(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """Export the PostgreSQL pool's ``get_stats()`` as ``chatd_pg_pool_*``."""
        self._sources.pool = stats

    def watch_bus(self, bus: BusStats) -> None:
        """Export the bus's counters as ``chatd_bus_*``."""
        self._sources.bus = bus

    def render(self) -> bytes:
        """The whole registry in the Prometheus text format; serve it with
        ``Content-Type: CONTENT_TYPE``."""
        return generate_latest(self.registry)
