"""Prometheus metrics: own registry, names, and values seen through a scrape."""

from __future__ import annotations

import math
import timeit
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from chatd.observe.metrics import (
    BATCH_BUCKETS,
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    LoopCounter,
    LoopHistogram,
    Metrics,
)


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (sample name, sorted labels)."""
    text = metrics.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return scrape(metrics)[(name, tuple(sorted(labels.items())))]


def test_content_type_is_the_prometheus_text_format() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=")


def test_every_metric_is_exported_before_use() -> None:
    samples = scrape(Metrics())
    names = {name for name, _ in samples}
    for name in (
        "chatd_connections",
        "chatd_users_online",
        "chatd_messages_accepted_total",
        "chatd_messages_pushed_total",
        "chatd_messages_delivered_total",
        "chatd_push_latency_seconds_count",
        "chatd_delivery_latency_seconds_count",
        "chatd_store_commit_seconds_count",
        "chatd_store_batch_size_count",
        "chatd_queue_depth",
        "chatd_disk_used_ratio",
    ):
        assert name in names, name
    for result in ("ok", "failed", "rate_limited"):
        assert samples[("chatd_logins_total", (("result", result),))] == 0


def test_instances_do_not_share_state() -> None:
    first, second = Metrics(), Metrics()
    first.messages_accepted_total.inc()
    assert value(first, "chatd_messages_accepted_total") == 1
    assert value(second, "chatd_messages_accepted_total") == 0


def test_counters_and_gauges_move_by_the_right_amounts() -> None:
    metrics = Metrics()
    metrics.connections.inc()
    metrics.connections.inc()
    metrics.connections.dec()
    metrics.users_online.set(7)
    metrics.messages_accepted_total.inc(3)
    metrics.messages_pushed_total.inc(2)
    metrics.messages_delivered_total.inc()
    metrics.errors_total.labels("rate_limited").inc()
    metrics.errors_total.labels(code="rate_limited").inc()
    metrics.errors_total.labels("unknown_user").inc()
    metrics.logins_total.labels("failed").inc()
    metrics.http_requests_total.labels(route="/v1/login", status="200").inc()
    metrics.queue_depth.set(42)
    metrics.disk_used_ratio.set(0.25)

    assert value(metrics, "chatd_connections") == 1
    assert value(metrics, "chatd_users_online") == 7
    assert value(metrics, "chatd_messages_accepted_total") == 3
    assert value(metrics, "chatd_messages_pushed_total") == 2
    assert value(metrics, "chatd_messages_delivered_total") == 1
    assert value(metrics, "chatd_errors_total", code="rate_limited") == 2
    assert value(metrics, "chatd_errors_total", code="unknown_user") == 1
    assert value(metrics, "chatd_logins_total", result="failed") == 1
    assert value(metrics, "chatd_logins_total", result="ok") == 0
    assert value(metrics, "chatd_http_requests_total", route="/v1/login", status="200") == 1
    assert value(metrics, "chatd_queue_depth") == 42
    assert value(metrics, "chatd_disk_used_ratio") == 0.25


def test_latency_histograms_use_chat_buckets() -> None:
    metrics = Metrics()
    metrics.push_latency_seconds.observe(0.0003)
    metrics.push_latency_seconds.observe(0.004)
    metrics.push_latency_seconds.observe(30.0)
    metrics.delivery_latency_seconds.observe(0.2)
    metrics.store_commit_seconds.observe(0.002)

    samples = scrape(metrics)

    def bucket(name: str, le: str) -> float:
        return samples[(f"{name}_bucket", (("le", le),))]

    push = "chatd_push_latency_seconds"
    assert bucket(push, "0.0005") == 1
    assert bucket(push, "0.005") == 2
    assert bucket(push, "10.0") == 2
    assert bucket(push, "+Inf") == 3
    assert samples[(f"{push}_count", ())] == 3
    assert samples[(f"{push}_sum", ())] == pytest.approx(30.0043)
    assert samples[("chatd_delivery_latency_seconds_count", ())] == 1
    assert bucket("chatd_store_commit_seconds", "0.0025") == 1
    assert LATENCY_BUCKETS[0] == 0.0005
    assert LATENCY_BUCKETS[-1] == 10.0


def test_batch_size_histogram_buckets() -> None:
    metrics = Metrics()
    for size in (1, 3, 1000, 1001):
        metrics.store_batch_size.observe(size)
    samples = scrape(metrics)
    les = [
        le
        for (name, labels), _ in samples.items()
        if name.endswith("batch_size_bucket")
        for _, le in labels
    ]
    assert les == [*(f"{float(b)}" for b in BATCH_BUCKETS), "+Inf"]
    assert samples[("chatd_store_batch_size_bucket", (("le", "1.0"),))] == 1
    assert samples[("chatd_store_batch_size_bucket", (("le", "5.0"),))] == 2
    assert samples[("chatd_store_batch_size_bucket", (("le", "1000.0"),))] == 3
    assert samples[("chatd_store_batch_size_bucket", (("le", "+Inf"),))] == 4


def test_hot_path_costs_microseconds() -> None:
    """Loose bound (a busy 2-core machine): about 1 µs each, allow 50 µs."""
    metrics = Metrics()
    number = 2000
    inc = min(timeit.repeat(metrics.messages_accepted_total.inc, number=number, repeat=3))
    observe = min(
        timeit.repeat(lambda: metrics.push_latency_seconds.observe(0.003), number=number, repeat=3)
    )
    assert inc / number < 50e-6
    assert observe / number < 50e-6


def expositions(registry: CollectorRegistry) -> tuple[bytes, bytes]:
    return generate_latest(registry), generate_openmetrics(registry)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("buckets", "observations"),
    [
        (LATENCY_BUCKETS, []),
        (LATENCY_BUCKETS, [0, 0.0, *LATENCY_BUCKETS, *LATENCY_BUCKETS[:3], 0.00049, 0.0005001,
                           10.000001, 1e300, math.inf, -0.5]),
        (BATCH_BUCKETS, [1, 1, 2, 3, 1000, 1001, 10**9, 0, 7.5]),
    ],
    ids=["none", "latency", "batch"],
)
def test_loop_histogram_exports_what_histogram_does(
    buckets: Sequence[float], observations: list[float]
) -> None:
    """Same text, both formats (Prometheus and OpenMetrics), same sample values."""
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("chatd_x_seconds", "Help with \\ and\nnewline.", buckets=buckets,
                          registry=theirs)
    loop = LoopHistogram("chatd_x_seconds", "Help with \\ and\nnewline.", buckets,
                         registry=ours)
    for value in observations:
        histogram.observe(value)
        loop.observe(value)
    assert expositions(ours) == expositions(theirs)
    assert b"_created" not in generate_latest(ours)
    for le in ("+Inf", "0.0005", "1.0"):
        labels = {"le": le}
        assert ours.get_sample_value("chatd_x_seconds_bucket", labels) == theirs.get_sample_value(
            "chatd_x_seconds_bucket", labels
        )
    assert ours.get_sample_value("chatd_x_seconds_count") == len(observations)


def test_loop_counter_exports_what_counter_does() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("chatd_things", "Things.", registry=theirs)
    loop = LoopCounter("chatd_things", "Things.", registry=ours)
    assert expositions(ours) == expositions(theirs)
    for amount in (1, 3, 0, 0.5):
        counter.inc(amount)
        loop.inc(amount)
    loop.inc()
    counter.inc()
    assert expositions(ours) == expositions(theirs)
    assert ours.get_sample_value("chatd_things_total") == 5.5
    with pytest.raises(ValueError):
        loop.inc(-1)


def test_loop_metrics_names_are_checked_at_register() -> None:
    registry = CollectorRegistry()
    LoopHistogram("chatd_x_seconds", "X.", LATENCY_BUCKETS, registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("chatd_x_seconds_count", "Clash.", registry=registry)
