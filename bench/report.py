"""Render load-generator JSON files as Markdown, each figure beside its issue-5 target.

``python -m bench.report bench/results-full.json [bench/results-full-normal.json]``
prints the tables that go into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, bool | None]  # figure, value, target, met


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _num(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.1f}{unit}" if value < 100 else f"{value:,.0f}{unit}"


def _below(value: float | None, limit: float) -> bool | None:
    return None if value is None else value < limit


def _stream_rows(r: dict[str, Any], p99_limit: float | None) -> list[Row]:
    lat = r["latency_ms"]
    rows: list[Row] = [
        (
            "sent / acked / pushed / receipts",
            f"{r['sent']:,} / {r['acked']:,} / {r['delivered']:,} / {r.get('receipts', 0):,}",
            "all",
            r["acked"] == r["sent"] == r["delivered"],
        ),
        (
            "lost / duplicated",
            f"{r['lost']} / {r['duplicates']}",
            "0 / 0",
            r["lost"] == 0 and r["duplicates"] == 0,
        ),
        ("throughput", _num(r["throughput_msg_s"], " msg/s"), "", None),
    ]
    for name in ("ack", "push", "receipt"):
        if name not in lat:
            continue
        v = lat[name]
        target = f"p99 < {p99_limit:,.0f} ms" if p99_limit and name != "receipt" else ""
        met = _below(v["p99"], p99_limit) if p99_limit and name != "receipt" else None
        rows.append(
            (
                f"send -> {name} p50 / p95 / p99 / max",
                " / ".join(_ms(v[k]) for k in ("p50", "p95", "p99", "max")),
                target,
                met,
            )
        )
    return rows


def _server_rows(r: dict[str, Any]) -> list[Row]:
    cpu = r["server_cpu"]
    return [
        ("server RSS", _num(r["server_rss_mib"], " MiB"), "", None),
        (
            "server CPU",
            f"{_num(cpu['pct_of_one_core'], '%')} of one core "
            f"({_num(cpu['seconds'], ' s')} over {_num(cpu['wall_s'], ' s')})",
            "",
            None,
        ),
        ("load generator CPU", _num(r.get("loadgen_cpu_s"), " s"), "", None),
    ]


def capacity(r: dict[str, Any]) -> list[Row]:
    cpu = r["server_cpu"]["pct_of_one_core"]
    return [
        ("authenticated connections", f"{r['connected']:,}", "10,000", r["connected"] >= 10000),
        ("time to connect them all", _num(r["connect_s"], " s"), "", None),
        ("server CPU spent connecting", _num(r.get("connect_server_cpu_s"), " s"), "", None),
        (
            "server RSS, idle",
            _num(r["server_rss_mib"], " MiB"),
            "< 300 MiB",
            _below(r["server_rss_mib"], 300),
        ),
        ("server CPU, idle", _num(cpu, "%"), "< 5% of one core", _below(cpu, 5)),
    ]


def steady(r: dict[str, Any]) -> list[Row]:
    return _stream_rows(r, 50.0) + _warmup_rows(r.get("warmup")) + _server_rows(r)


def _warmup_rows(warm: dict[str, Any] | None) -> list[Row]:
    """The warm-up stream before the window: its own line, its losses count too."""
    if not warm:
        return []
    push = warm["latency_ms"]["push"]
    return [
        (
            "warm-up: sent / acked, lost / duplicated, push p50 / p99 / max",
            f"{warm['sent']:,} / {warm['acked']:,}, {warm['lost']} / {warm['duplicates']}, "
            + " / ".join(_ms(push[k]) for k in ("p50", "p99", "max")),
            "0 / 0 lost",
            warm["lost"] == 0 and warm["duplicates"] == 0,
        )
    ]


def saturation(r: dict[str, Any]) -> list[Row]:
    sync = r["parameters"]["sync"]
    goal = 10000 if sync == "normal" else 6000
    best = r["best_sustained_rate"]
    rows: list[Row] = [
        (
            f"highest sustained rate, --sync {sync} (p99 of the whole exchange < 1 s)",
            _num(best, " msg/s"),
            f">= {goal:,} msg/s",
            None if best is None else best >= goal,
        ),
        (
            "server efficiency at that rate",
            _num(r["msgs_per_server_cpu_s"], " msg per CPU s"),
            ">= 15,000",
            None if r["msgs_per_server_cpu_s"] is None else r["msgs_per_server_cpu_s"] >= 15000,
        ),
    ]
    for step in r["steps"]:
        lat = step["latency_ms"]
        rows.append(
            (
                f"step {step['rate']:,.0f} msg/s",
                f"acked {step['throughput_msg_s']:,.0f}/s, p99 ack {_ms(lat['ack']['p99'])}, "
                f"push {_ms(lat['push']['p99'])}, receipt {_ms(lat['receipt']['p99'])}; "
                f"server {_num(step['server_cpu']['pct_of_one_core'], '%')}, "
                f"{_num(step['msgs_per_server_cpu_s'])} msg/CPU s, "
                f"loadgen {_num(step['loadgen_cpu_s'], ' CPU s')}",
                "",
                step["sustained"],
            )
        )
    return rows


def backlog(r: dict[str, Any]) -> list[Row]:
    queued = r["parameters"]["queued"]
    return [
        (
            "queued messages received",
            f"{r['delivered']:,} of {queued:,}",
            "all",
            r["delivered"] == queued,
        ),
        ("connect -> welcome", _num(r["welcome_s"], " s"), "", None),
        (
            "connect -> last message (stricter than from hello)",
            _num(r["all_received_s"], " s"),
            "< 2 s",
            _below(r["all_received_s"], 2.0),
        ),
        ("rate", _num(r["throughput_msg_s"], " msg/s"), "", None),
    ]


def storm(r: dict[str, Any]) -> list[Row]:
    users = r["parameters"]["users"]
    side_p99 = r["latency_ms"]["push"]["p99"]
    return [
        ("clients dropped at once", f"{users:,}", "10,000", users >= 10000),
        (
            "welcomed again / caught up",
            f"{r['welcomed']:,} / {r['caught_up']:,}",
            "all",
            r["welcomed"] == users and r["caught_up"] == r["marked"],
        ),
        ("all welcomed", _num(r["all_welcomed_s"], " s"), "", None),
        (
            "all caught up",
            _num(r["all_caught_up_s"], " s"),
            "< 15 s",
            _below(r["all_caught_up_s"], 15.0),
        ),
        (
            "welcome after drop p50 / p99",
            f"{_num(r['welcome_s']['p50'], ' s')} / {_num(r['welcome_s']['p99'], ' s')}",
            "",
            None,
        ),
        ("side stream send -> push p99", _ms(side_p99), "< 500 ms", _below(side_p99, 500)),
        (
            "side stream lost / duplicated",
            f"{r['lost']} / {r['duplicates']}",
            "0 / 0",
            r["lost"] == 0 and r["duplicates"] == 0,
        ),
        *_server_rows(r),
    ]


def logins(r: dict[str, Any]) -> list[Row]:
    p99 = r["latency_ms"]["push"]["p99"]
    return [
        (
            "logins per second (argon2id, OWASP floor)",
            _num(r["logins_per_s"], "/s"),
            "20/s",
            r["logins_per_s"] >= 19.0,
        ),
        (
            "login latency p50 / p99",
            f"{_ms(r['login_ms']['p50'])} / {_ms(r['login_ms']['p99'])}",
            "",
            None,
        ),
        ("stream send -> push p99 meanwhile", _ms(p99), "< 100 ms", _below(p99, 100)),
        (
            "stream send -> ack p99 meanwhile",
            _ms(r["latency_ms"]["ack"]["p99"]),
            "< 100 ms",
            _below(r["latency_ms"]["ack"]["p99"], 100),
        ),
        (
            "stream lost / duplicated",
            f"{r['lost']} / {r['duplicates']}",
            "0 / 0",
            r["lost"] == 0 and r["duplicates"] == 0,
        ),
        *_server_rows(r),
    ]


RENDER: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "capacity": capacity,
    "steady": steady,
    "saturation": saturation,
    "backlog": backlog,
    "storm": storm,
    "logins": logins,
}


def render(documents: Sequence[dict[str, Any]]) -> str:
    out: list[str] = []
    machine = documents[0]["machine"]
    out.append(
        f"Machine: {machine['cpu']}, {machine['cores']} cores; Python "
        f"{machine['python']}; {machine['platform']}; chatd {machine['chatd']}.\n"
    )
    for document in documents:
        for result in document["results"]:
            name = result["scenario"]
            params = ", ".join(f"{k} {v}" for k, v in result["parameters"].items())
            out.append(f"### {name} ({params})\n")
            out.append("| figure | measured | target | met |")
            out.append("|---|---|---|---|")
            for figure, value, target, met in RENDER[name](result):
                mark = "" if met is None else ("yes" if met else "**no**")
                out.append(f"| {figure} | {value} | {target} | {mark} |")
            out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    paths = list(argv if argv is not None else sys.argv[1:])
    if not paths:
        print("usage: python -m bench.report RESULTS.json...", file=sys.stderr)
        return 2
    print(render([json.loads(Path(path).read_text()) for path in paths]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
