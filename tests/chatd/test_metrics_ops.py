"""The operators' series in ``/metrics`` of real chatd processes: no ``*_created`` noise,
refused upgrades by reason, and with PostgreSQL the store's pool and the bus."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
import websockets

from chatd.observe.metrics import UPGRADE_REFUSALS, Metrics
from tests.chatd.clients import TIMEOUT, anew_user, exchange, ws_connect
from tests.chatd.conftest import _shut, run_async
from tests.chatd.pg import pg_schema, running_nodes
from tests.chatd.server import ChatdProcess
from tests.chatd.test_observability_live import scrape
from tests.support.poll import apoll


def test_no_created_series_in_a_fresh_registry() -> None:
    text = Metrics().render().decode()
    assert "_created" not in text
    assert "chatd_pg_" not in text and "chatd_bus_" not in text  # SQLite: no pool, no bus


@run_async
async def test_refused_upgrades_are_counted_by_reason(tmp_path: Path) -> None:
    server = ChatdProcess(tmp_path / "data", tmp_path / "logs")
    with server:
        before = scrape(server)
        assert not [name for name in before if "_created" in name]
        for reason in UPGRADE_REFUSALS:
            assert before[f'chatd_upgrades_refused_total{{reason="{reason}"}}'] == 0
        with pytest.raises(websockets.InvalidStatus):
            await ws_connect(server, origin="https://evil.example", hello=False)
        for _ in range(2):
            with pytest.raises(websockets.InvalidStatus):
                await ws_connect(server, header_token="not.a.token", hello=False)
        after = scrape(server)
    assert after['chatd_upgrades_refused_total{reason="origin_not_allowed"}'] == 1
    assert after['chatd_upgrades_refused_total{reason="unauthorized"}'] == 2
    assert after['chatd_refusals_total{reason="origin.refused"}'] == 1
    assert not [name for name in after if name.startswith(("chatd_pg_", "chatd_bus_"))]


def _get(server: ChatdProcess, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.pg
@run_async
async def test_pool_and_bus_series_with_postgresql(tmp_path: Path) -> None:
    """Two nodes on one schema: A's pool serves requests, a message from alice on A to
    bob on B crosses the bus (published by A, received by B)."""
    with running_nodes(tmp_path) as (a, b):
        first = scrape(a)
        assert not [name for name in first if "_created" in name]
        assert first["chatd_pg_pool_max"] == 8
        assert first["chatd_pg_pool_min"] == 1
        assert 1 <= first["chatd_pg_pool_size"] <= 8
        assert 0 <= first["chatd_pg_pool_idle"] <= first["chatd_pg_pool_size"]
        assert first["chatd_pg_pool_waiting"] == 0
        assert first["chatd_pg_pool_checkout_errors_total"] == 0
        assert first["chatd_bus_listener_connected"] == 1
        assert first["chatd_bus_reconnects_total"] == 0
        b_first = scrape(b)

        _, alice_token = await anew_user(a, "pm")
        bob_name, bob_token = await anew_user(b, "pm")
        alice = await ws_connect(a, alice_token)
        bob = await ws_connect(b, bob_token)
        try:
            await exchange(alice, bob, bob_name)
        finally:
            await alice.close()
            await bob.close()
        assert _get(a, "/healthz") == 200

        async def moved() -> dict[str, float] | None:
            a_now, b_now = scrape(a), scrape(b)
            ok = (a_now["chatd_bus_events_published_total"]
                  > first["chatd_bus_events_published_total"]
                  and b_now["chatd_bus_events_received_total"]
                  > b_first["chatd_bus_events_received_total"])
            return a_now if ok else None

        after = await apoll(moved, "A's bus publishing and B's receiving counted")
    assert after["chatd_pg_pool_checkouts_total"] > first["chatd_pg_pool_checkouts_total"]
    assert after["chatd_pg_pool_connections_total"] >= 1
    assert after["chatd_bus_publish_failures_total"] == 0
    assert after["chatd_bus_events_invalid_total"] == 0


@pytest.mark.pg
@run_async
async def test_a_node_alone_publishes_nothing_until_another_starts(tmp_path: Path) -> None:
    """A single node on PostgreSQL would tell nobody: its messages make no NOTIFY. A
    node started beside it is heard at once, and messages cross from then on."""
    with pg_schema() as url:
        a = ChatdProcess(tmp_path / "a", tmp_path / "a-logs", db=url).start()
        try:
            await apoll(lambda: scrape(a)["chatd_bus_other_nodes"] == 0, "A alone")
            published = scrape(a)["chatd_bus_events_published_total"]
            alice_name, alice_token = await anew_user(a, "solo")
            bob_name, bob_token = await anew_user(a, "solo")
            alice = await ws_connect(a, alice_token)
            bob = await ws_connect(a, bob_token)
            try:
                await exchange(alice, bob, bob_name)
                await exchange(bob, alice, alice_name)
            finally:
                await bob.close()
            assert scrape(a)["chatd_bus_events_published_total"] == published

            b = ChatdProcess(tmp_path / "b", tmp_path / "b-logs", db=url).start()
            try:
                await apoll(lambda: scrape(a)["chatd_bus_other_nodes"] == 1, "A to hear B")
                bob = await ws_connect(b, bob_token)
                try:
                    await exchange(alice, bob, bob_name)
                finally:
                    await bob.close()
            finally:
                _shut(b)
            await apoll(lambda: scrape(a)["chatd_bus_other_nodes"] == 0, "A alone again")
            await alice.close()
        finally:
            _shut(a)
