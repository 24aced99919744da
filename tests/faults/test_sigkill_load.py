"""SIGKILL under steady load on SQLite, in both sync modes (issue 12).

Several devices send steadily through libchat's Outbox, each to a partner who reads and
confirms, when chatd is killed with SIGKILL. A new chatd starts on the same data dir and
port; the devices reconnect and resend what was never acked (same client id, so a
message already stored keeps its seq), the partners reconnect and catch up. Nothing
acked may be lost or arrive under two seqs, and every send ends answered.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import attrs
import pytest
from websockets.exceptions import InvalidHandshake

from tests.chatd.clients import anew_user, whole_history, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.faults.senders import OutboxSender, Receiver
from tests.faults.tally import Tally

FAST = ("--send-rate", "1000", "--send-burst", "1000")
RETRY = 0.05  # seconds between a client's connection attempts while chatd is down
UNREACHABLE = (OSError, InvalidHandshake, TimeoutError, AssertionError)


@attrs.frozen
class Load:
    devices: int  # senders, each with a partner of its own
    interval: float  # seconds between one device's messages
    before: float  # seconds of load before the kill
    after: float  # seconds of load after the restart


SHORT = Load(3, 0.02, 1.0, 0.5)  # within `make test`
LONG = Load(8, 0.01, 8.0, 4.0)  # `make faults` only


async def write(device: OutboxSender, server: ChatdProcess, to: str, interval: float,
                stop: asyncio.Event) -> None:
    """Submit a message every ``interval`` until ``stop``, then until all are acked;
    reconnect whenever the connection is gone (the outbox resends what is unacked)."""
    index = 0
    while not stop.is_set() or device.outbox.pending():
        if not stop.is_set():
            device.submit(to, f"{to} {index}")
            index += 1
        if not device.connected:
            if device.peer is not None:
                device.disconnected()
            try:
                await device.connect(server)
            except UNREACHABLE:  # chatd is down: keep writing into the outbox
                await asyncio.sleep(RETRY)
                continue
        await device.pump()
        await asyncio.sleep(interval)  # pacing a rate, not waiting for a state


async def read(server: ChatdProcess, token: str, tally: Tally, stop: asyncio.Event) -> None:
    """A partner's device: read and confirm; reconnect whenever the connection is gone."""
    while not stop.is_set():
        try:
            peer = await ws_connect(server, token)
        except UNREACHABLE:
            await asyncio.sleep(RETRY)
            continue
        await Receiver(peer, tally, until=stop).run()
        if stop.is_set():
            await peer.close()


# `make test` runs the short one in sync normal (tests/chatd/test_crash.py kills a
# server in sync full there); `make faults` runs the long ones too, in both modes.
@pytest.mark.parametrize(("sync", "load"), [
    pytest.param("normal", SHORT, id="normal-short"),
    pytest.param("normal", LONG, id="normal-long", marks=pytest.mark.long_fault),
    pytest.param("full", LONG, id="full-long", marks=pytest.mark.long_fault),
])
@run_async
async def test_sigkill_under_steady_load(make_server: Any, sync: str, load: Load) -> None:
    server: ChatdProcess = make_server(*FAST, "--sync", sync)
    tally = Tally(f"sigkill under load (sync {sync}, {'long' if load is LONG else 'short'})")
    loop = asyncio.get_running_loop()
    # (device, its user, partner, partner's token)
    pairs: list[tuple[OutboxSender, str, str, str]] = []
    for seed in range(load.devices):
        name, token = await anew_user(server, "kd")
        partner, partner_token = await anew_user(server, "kp")
        pairs.append((OutboxSender(token, tally, seed=seed), name, partner, partner_token))
    writing, reading = asyncio.Event(), asyncio.Event()
    readers = [loop.create_task(read(server, token, tally, reading)) for *_, token in pairs]
    writers = [loop.create_task(write(device, server, partner, load.interval, writing))
               for device, _, partner, _ in pairs]

    await asyncio.sleep(load.before)  # steady load for a while
    assert not any(task.done() for task in writers + readers)
    await asyncio.to_thread(server.kill)
    acked_before = len(tally.acks)
    restarted = ChatdProcess(server.data_dir, server.log_dir, *server.args)
    await asyncio.to_thread(restarted.start, server.port)
    try:
        await asyncio.sleep(load.after)  # and on, after the restart
        writing.set()
        await asyncio.wait_for(asyncio.gather(*writers), 60)
        deadline = time.monotonic() + 30
        while not tally.acks.keys() <= tally.arrived:
            assert time.monotonic() < deadline, f"{tally.line()}: pushes missing"
            await asyncio.sleep(0.05)
        reading.set()
        await asyncio.wait_for(asyncio.gather(*readers), 30)
        # The server's history: each message stored once, under the seq of its ack.
        for device, name, _, partner_token in pairs:
            history = await whole_history(restarted, partner_token, name)
            tally.store(history)
            assert {m["id"] for m in history} == set(device.acks)
        assert acked_before > 0 and len(tally.acks) > acked_before, "not mid-stream"
        tally.check()
        for device, *_ in pairs:
            if device.peer is not None:
                await device.peer.close()
    finally:
        assert await asyncio.to_thread(restarted.stop) == 0

