"""PostgreSQL backends terminated under load (issue 12).

Two chatd nodes share a database: devices on node A send steadily through libchat's
Outbox to partners on node B, who read and confirm; so every message crosses the bus.
Meanwhile every connection either node holds to PostgreSQL (the store's pool, the bus's
listener and publisher) is terminated with ``pg_terminate_backend``, again and again.
Every send must be answered (an error is resent by the outbox, under the same client
id), and no acked message lost or duplicated.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

from tests.chatd.clients import anew_user, http, whole_history, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.pg import PG_DSN, Nodes, running_nodes
from tests.chatd.server import ChatdProcess
from tests.faults.senders import AnsweredSender, OutboxSender, Receiver
from tests.faults.tally import Tally

pytestmark = pytest.mark.pg
BACKENDS = ("postgres",)  # for make_server (see tests/chatd/conftest.py)
FAST = ("--send-rate", "1000", "--send-burst", "1000")

DRAIN = 30.0  # seconds for the outboxes to empty once the kills stop


@attrs.frozen
class Load:
    devices: int  # senders on node A, each with a partner on node B
    interval: float  # seconds between one device's messages
    kills: int  # rounds of pg_terminate_backend
    every: float  # seconds between rounds


SHORT = Load(2, 0.02, 3, 0.5)  # within `make test`
LONG = Load(6, 0.01, 40, 0.5)  # `make faults` only


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    with running_nodes(tmp_path) as pair:
        yield pair


def local_ports(server: ChatdProcess) -> list[int]:
    """The local TCP ports of ``server``'s sockets (from /proc): the ``client_port`` of
    its connections in pg_stat_activity."""
    assert server.proc is not None
    pid = server.proc.pid
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = []
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def terminate_backends(servers: Nodes) -> list[str]:
    """Terminate every PostgreSQL backend of ``servers``: the application_names hit."""
    ports = [port for server in servers for port in local_ports(server)]
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'chatd-%%' AND client_port = ANY(%s)",
            (ports,),
        ).fetchall()
    return [str(name) for name, _ in rows]


async def write(device: OutboxSender, server: ChatdProcess, to: str, interval: float,
                stop: asyncio.Event) -> None:
    """Submit a message every ``interval`` until ``stop``, then until all are acked."""
    await device.connect(server)
    index = 0
    while not stop.is_set() or device.outbox.pending():
        if not stop.is_set():
            device.submit(to, f"{to} {index}")
            index += 1
        assert device.connected, "chatd closed a sender's connection"
        await device.pump()
        await asyncio.sleep(interval)  # pacing a rate, not waiting for a state


@pytest.mark.parametrize("load", [
    pytest.param(SHORT, id="short"),
    pytest.param(LONG, id="long", marks=pytest.mark.long_fault),
])
@run_async
async def test_terminated_backends_lose_nothing_and_leave_nothing_unanswered(
    nodes: Nodes, load: Load
) -> None:
    a, b = nodes
    tally = Tally(f"postgres backends terminated ({'long' if load is LONG else 'short'})")
    loop = asyncio.get_running_loop()
    pairs: list[tuple[OutboxSender, str, str, str]] = []  # device, its user, partner, token
    receivers: list[Receiver] = []
    for seed in range(load.devices):
        name, token = await anew_user(a, "td")
        partner, partner_token = await anew_user(b, "tp")
        pairs.append((OutboxSender(token, tally, seed=seed), name, partner, partner_token))
        receivers.append(Receiver(await ws_connect(b, partner_token), tally))
    writing = asyncio.Event()
    reading = [loop.create_task(r.run()) for r in receivers]
    writers = [loop.create_task(write(device, a, partner, load.interval, writing))
               for device, _, partner, _ in pairs]

    killed: list[str] = []
    for _ in range(load.kills):
        await asyncio.sleep(load.every)  # steady load between the rounds
        assert not any(task.done() for task in writers + reading), "a client's run ended"
        killed += await asyncio.to_thread(terminate_backends, (a, b))
    writing.set()
    try:
        await asyncio.wait_for(asyncio.gather(*writers), DRAIN)
    except TimeoutError:
        raise AssertionError(f"{tally.line()}: sends left without an ack") from None
    deadline = time.monotonic() + DRAIN
    while not tally.acks.keys() <= tally.arrived:
        assert time.monotonic() < deadline, f"{tally.line()}: pushes missing on node B"
        await asyncio.sleep(0.05)
    for receiver in receivers:
        receiver.stop()
    await asyncio.gather(*reading)
    for device, name, _, partner_token in pairs:
        history = await whole_history(b, partner_token, name)
        tally.store(history)
        assert {m["id"] for m in history} == set(device.acks)
    assert any(n.startswith("chatd-store-") for n in killed), killed
    assert any(n.startswith("chatd-bus-listen-") for n in killed), killed
    tally.check()
    for client in [*(d.peer for d, *_ in pairs), *(r.peer for r in receivers)]:
        if client is not None:
            await client.close()


def store_backends(server: ChatdProcess) -> int:
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name LIKE 'chatd-store-%%' AND client_port = ANY(%s)",
            (local_ports(server),),
        ).fetchone()
    return 0 if row is None else int(row[0])


@run_async
async def test_a_pool_of_terminated_backends_costs_no_send(make_server: Any) -> None:
    """Every pooled connection terminated at once (as a PostgreSQL restart does): the
    next send is acked within the 2 s bound, not answered internal_error.

    The bug: the pool checked its idle connections one by one, backing off 1 s, 2 s,
    4 s... after each dead one, so with three or more dead a send waited past the bound
    (internal_error) and with four or more a read gave up after 5 s (a failed catch-up).
    """
    a: ChatdProcess = make_server(*FAST)
    _, token = await anew_user(a, "pool")
    bob, _ = await anew_user(a, "pool")
    peer = await ws_connect(a, token)
    # Concurrent reads grow the pool: 16 at once on threads of their own (the default
    # executor has only cores + 4 threads, and quick reads then rarely overlap 6 deep).
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(16) as threads:
        for _ in range(200):  # a few seconds at most: it grows within the first 20 mostly
            await asyncio.gather(*(
                loop.run_in_executor(
                    threads, functools.partial(http, a, "GET", "/v1/conversations", token=token)
                )
                for _ in range(16)
            ))
            if await asyncio.to_thread(store_backends, a) >= 6:
                break
    grown = await asyncio.to_thread(store_backends, a)
    assert grown >= 6, f"the pool did not grow: {grown} connections"
    killed = await asyncio.to_thread(terminate_backends, (a,))
    assert sum(n.startswith("chatd-store-") for n in killed) == grown
    tally = Tally("every pooled backend terminated")
    sender = AnsweredSender(peer, bob, tally=tally)
    answer, took = await sender.send()
    assert answer == "ack" and took < 2.0, (answer, took)
    assert (await sender.send())[0] == "ack"
    tally.receive_all(await whole_history(a, token, bob))
    tally.check()
    await peer.close()
