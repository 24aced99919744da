"""The load generator's arithmetic and its Markdown report, on made-up figures."""

from __future__ import annotations

from bench.load import Params, build_parser, merge_streams, params_from, percentiles, split
from bench.report import render


def test_percentiles_use_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentiles(reversed(values)) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}
    assert percentiles([7.0])["p99"] == 7.0


def _stream(sent: int, ack: list[float]) -> dict[str, object]:
    return {
        "sent": sent,
        "acked": sent,
        "delivered": sent,
        "receipts": sent,
        "lost": 0,
        "unacked": 0,
        "duplicates": 0,
        "skipped": 0,
        "errors": {"rate_limited": 1},
        "sending_s": 2.0,
        "ack_ms": ack,
        "push_ms": ack,
        "receipt_ms": ack,
    }


def test_merge_streams_adds_counts_and_pools_latencies() -> None:
    merged = merge_streams([_stream(10, [1.0] * 10), _stream(30, [3.0] * 30)])
    assert merged["sent"] == 40
    assert merged["errors"] == {"rate_limited": 2}
    assert merged["throughput_msg_s"] == 20.0
    assert merged["latency_ms"]["ack"]["p50"] == 3.0
    assert merged["latency_ms"]["ack"]["p95"] == 3.0


def test_split_deals_items_evenly() -> None:
    assert split(list(range(5)), 2) == [[0, 2, 4], [1, 3]]


def test_presets_and_flags_build_params() -> None:
    args = build_parser().parse_args(["steady", "--preset", "full", "--rate", "300"])
    params = params_from(args)
    assert params.users == 10000
    assert params.rate == 300.0
    assert Params().users == 1000


def test_report_puts_targets_beside_figures() -> None:
    stream = merge_streams([_stream(100, [10.0] * 100)])
    document = {
        "machine": {
            "cpu": "test cpu",
            "cores": 2,
            "python": "3.11",
            "platform": "linux",
            "chatd": "0.1.0",
        },
        "results": [
            {
                "scenario": "steady",
                "parameters": {"users": 10000},
                **stream,
                "server_rss_mib": 100.0,
                "server_cpu": {"seconds": 1.0, "wall_s": 2.0, "pct_of_one_core": 50.0},
                "loadgen_cpu_s": 1.0,
                "warmup": {
                    "sent": 30, "acked": 30, "lost": 0, "duplicates": 0,
                    "latency_ms": merge_streams([_stream(30, [900.0] * 30)])["latency_ms"],
                },
            },
            {
                "scenario": "backlog",
                "parameters": {"queued": 10000},
                "delivered": 10000,
                "welcome_s": 0.01,
                "all_received_s": 2.5,
                "throughput_msg_s": 4000.0,
            },
        ],
    }
    text = render([document])
    assert "test cpu" in text
    assert (
        "| send -> push p50 / p95 / p99 / max | 10 ms / 10 ms / 10 ms / 10 ms | p99 < 50 ms | yes |"
        in text
    )
    assert "| < 2 s | **no** |" in text
    assert (
        "| warm-up: sent / acked, lost / duplicated, push p50 / p99 / max "
        "| 30 / 30, 0 / 0, 900 ms / 900 ms / 900 ms | 0 / 0 lost | yes |" in text
    )
