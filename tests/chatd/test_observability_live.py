"""Metrics, log rotation and SIGHUP, seen from outside a real chatd process."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.chatd.clients import ahttp, anew_user, http, unique_name, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.support.poll import poll


def scrape(server: ChatdProcess) -> dict[str, float]:
    """``/metrics`` parsed by prometheus_client's own parser: sample name with its
    labels (``name{label="value"}``) -> value."""
    answer = http(server, "GET", "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(answer.raw.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def log_events(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [orjson.loads(line)["event"] for line in path.read_text().splitlines() if line]


@run_async
async def test_metrics_move_by_what_was_exchanged(server: ChatdProcess) -> None:
    before = scrape(server)
    alice, alice_token = await anew_user(server)
    bob, bob_token = await anew_user(server)
    a = await ws_connect(server, alice_token)
    b = await ws_connect(server, bob_token)
    for n in range(3):
        await a.send({"type": "send", "id": f"metric-{n}", "to": bob, "body": "counted"})
        await a.recv("ack", where=lambda f, n=n: f["id"] == f"metric-{n}")
        pushed = await b.recv("message", where=lambda f, n=n: f["id"] == f"metric-{n}")
        await b.send({"type": "delivered", "seqs": [pushed["seq"]]})
        await a.recv("receipt", where=lambda f, seq=pushed["seq"]: f.get("seq") == seq)
    await a.send({"type": "send", "id": "to-myself", "to": alice, "body": "no"})
    await a.recv("error", where=lambda f: f.get("ref") == "to-myself")
    assert (await ahttp(server, "POST", "/v1/login",
                        {"username": alice, "password": "not the password"})).status == 401
    assert (await ahttp(server, "GET", "/no/such/path")).status == 404
    after = scrape(server)
    await a.close()
    await b.close()

    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert moved("chatd_messages_accepted_total") == 3
    assert moved("chatd_messages_pushed_total") == 3
    assert moved("chatd_messages_delivered_total") == 3
    assert moved("chatd_push_latency_seconds_count") == 3
    assert moved("chatd_delivery_latency_seconds_count") == 3
    assert moved('chatd_push_latency_seconds_bucket{le="+Inf"}') == 3
    assert moved("chatd_store_batch_size_sum") >= 3  # the three messages, and marks
    assert moved("chatd_store_commit_seconds_count") >= 3
    assert moved('chatd_logins_total{result="ok"}') == 2
    assert moved('chatd_logins_total{result="failed"}') == 1
    assert moved('chatd_errors_total{code="invalid_recipient"}') == 1
    assert moved('chatd_errors_total{code="invalid_credentials"}') == 1
    assert after["chatd_connections"] >= 2
    assert after["chatd_users_online"] >= 2
    # every HTTP request, by route template and status (issue 12: never incremented)
    assert moved('chatd_http_requests_total{route="/v1/register",status="201"}') == 2
    assert moved('chatd_http_requests_total{route="/v1/login",status="200"}') == 2
    assert moved('chatd_http_requests_total{route="/v1/login",status="401"}') == 1
    assert moved('chatd_http_requests_total{route="/v1/ws",status="101"}') == 2
    assert moved('chatd_http_requests_total{route="/metrics",status="200"}') == 1  # before's
    assert moved('chatd_http_requests_total{route="other",status="404"}') == 1


def test_sighup_reopens_the_log_after_an_external_rotation(tmp_path: Path) -> None:
    """What logrotate does: rename the file, then SIGHUP; chatd writes a new file."""
    logs = tmp_path / "logs"
    with ChatdProcess(tmp_path / "data", logs) as server:
        current = logs / "chatd.log"
        poll(lambda: "server.start" in log_events(current), "the start line")
        rotated = logs / "chatd.log.1"
        current.rename(rotated)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        # SIGHUP is handled on the event loop: poll until a request's line lands anew.
        name = unique_name("hup")
        http(server, "POST", "/v1/register", {"username": name, "password": "password1"})
        poll(lambda: current.exists(), "a new chatd.log")
        attempts = itertools.count()

        def registered_anew() -> bool:
            if "register.ok" in log_events(current):
                return True
            http(server, "POST", "/v1/register",
                 {"username": f"{name}x{next(attempts)}", "password": "password1"})
            return False

        poll(registered_anew, "a register line in the new chatd.log", interval=0.05)
        assert "server.start" in log_events(rotated)
        assert "server.start" not in log_events(current)


def test_the_log_is_rotated_daily_and_old_files_are_pruned(tmp_path: Path) -> None:
    """A chatd.log from two days ago is rotated on the first line of a new day, named
    after its day, and only --log-keep-days rotated files are kept."""
    logs = tmp_path / "logs"
    logs.mkdir()
    current = logs / "chatd.log"
    current.write_text('{"ts":"old","level":"info","event":"yesterday"}\n')
    two_days_ago = time.time() - 2 * 86400
    os.utime(current, (two_days_ago, two_days_ago))
    for day in ("2020-01-01", "2020-01-02", "2020-01-03"):
        (logs / f"chatd.log.{day}").write_text("{}\n")
    with ChatdProcess(tmp_path / "data", logs, "--log-keep-days", "2"):
        poll(lambda: "server.start" in log_events(current), "the start line")
        day = time.strftime("%Y-%m-%d", time.gmtime(two_days_ago))
        rotated = logs / f"chatd.log.{day}"
        assert log_events(rotated) == ["yesterday"]
        kept = sorted(path.name for path in logs.glob("chatd.log.*"))
        assert kept == sorted(["chatd.log.2020-01-03", rotated.name])
