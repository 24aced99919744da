"""A reader that never reads, among live traffic (issue 12).

One signed-in user's socket reads nothing after its welcome (a small receive buffer, so
the server's output backs up at once) while a heavy stream is sent to it and other pairs
exchange steady traffic. The others' pushes must still arrive within 1 s of their acks;
the stalled connection is closed by the slow-reader timeout; once it reconnects and
reads, it receives every acked message (0 lost, 0 duplicated); every send is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from tests.chatd.clients import TIMEOUT, anew_user, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.server import ChatdProcess
from tests.faults.senders import Receiver, SteadySender
from tests.faults.tally import Tally

FAST = ("--send-rate", "1000", "--send-burst", "1000")
LATE = 1.0  # seconds: no push to a reading recipient may come later than this after its ack
SWEEP = 1.0  # seconds between chatd's looks for slow readers (SWEEP_INTERVAL)
SLACK = 3.0  # seconds a timer may fire late on a busy 2-core machine


@attrs.frozen
class Load:
    slow_reader_timeout: float  # seconds (chatd's setting)
    pairs: int  # other users, each sending steadily to a partner who reads
    interval: float  # seconds between a pair's sends
    heavy_body: str  # what is streamed to the reader that never reads
    heavy_window: int  # the heavy stream's sends in flight
    heavy_interval: float  # seconds between the heavy stream's sends
    after: float  # seconds of traffic after the stalled connection was closed


SHORT = Load(1.0, 2, 0.05, "😀" * 2500, 8, 0.0, 0.3)  # within `make test`
LONG = Load(5.0, 8, 0.02, "😀" * 5000, 16, 0.0, 3.0)  # `make faults` only


def stalled_session(server: ChatdProcess, token: str) -> socket.socket:
    """A WebSocket through hello and welcome on a socket with a tiny receive buffer;
    nothing reads from it afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", server.port))
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host=server.host, target="/v1/ws")))
    welcomed = accepted = False
    while not welcomed:
        data = sock.recv(4096)
        assert data, "closed before the welcome"
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                accepted = True
                hello = {"type": "hello", "protocol": "1.0", "token": token}
                sock.sendall(ws.send(TextMessage(orjson.dumps(hello).decode())))
            elif isinstance(event, TextMessage):
                welcomed = accepted and orjson.loads(event.data)["type"] == "welcome"
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Read what is left: True once the server reset or closed the connection."""
    sock.settimeout(TIMEOUT)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def slow_reader_closes(log: Path, peer: str, why: str = "") -> int:
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for line in lines
               if "connection.slow_reader" in line and peer in line and why in line)


@pytest.mark.parametrize("load", [
    pytest.param(SHORT, id="short"),
    pytest.param(LONG, id="long", marks=pytest.mark.long_fault),
])
@run_async
async def test_a_reader_that_never_reads_holds_back_nobody(
    make_server: Any, tmp_path: Path, load: Load
) -> None:
    config = tmp_path / "chatd.toml"
    config.write_text(f"slow_reader_timeout = {load.slow_reader_timeout}\n")
    server: ChatdProcess = make_server("--config", str(config), *FAST)
    tally = Tally(f"slow reader ({'long' if load is LONG else 'short'})")
    loop = asyncio.get_running_loop()

    stalled_name, stalled_token = await anew_user(server, "stall")
    _, heavy_token = await anew_user(server, "heavy")
    heavy = SteadySender(await ws_connect(server, heavy_token), stalled_name, "heavy", tally,
                         window=load.heavy_window, interval=load.heavy_interval,
                         body=load.heavy_body)
    senders: list[SteadySender] = []
    receivers: list[Receiver] = []
    for pair in range(load.pairs):
        _, sender_token = await anew_user(server, "pa")
        partner, partner_token = await anew_user(server, "pb")
        receivers.append(Receiver(await ws_connect(server, partner_token), tally))
        senders.append(SteadySender(await ws_connect(server, sender_token), partner,
                                    f"p{pair}", tally, interval=load.interval))
    stalled = await asyncio.to_thread(stalled_session, server, stalled_token)
    peer = f"127.0.0.1:{stalled.getsockname()[1]}"

    tasks = [loop.create_task(r.run()) for r in receivers]
    tasks += [loop.create_task(s.run()) for s in [*senders, heavy]]
    started = time.monotonic()
    log = server.log_dir / "chatd.log"
    while slow_reader_closes(log, peer) == 0:
        took = time.monotonic() - started
        assert took < load.slow_reader_timeout + SWEEP + SLACK + 5, "never closed as slow"
        assert not any(task.done() for task in tasks), "a client's run ended early"
        await asyncio.sleep(0.1)  # polling the log with a deadline
    closed_after = time.monotonic() - started
    if slow_reader_closes(log, peer, why="paused too long"):
        assert closed_after >= load.slow_reader_timeout
    assert await asyncio.to_thread(closed_by_server, stalled)
    stalled.close()
    await asyncio.sleep(load.after)  # live traffic goes on after the close

    for sender in [*senders, heavy]:
        sender.stop()
    await asyncio.wait_for(asyncio.gather(*tasks[len(receivers):]), 30)
    pair_acked = {cid for s in senders for cid in s.acked_at}
    deadline = time.monotonic() + 30
    while not pair_acked <= tally.arrived:
        assert time.monotonic() < deadline, "pushes to the reading partners missing"
        await asyncio.sleep(0.05)
    for receiver in receivers:
        receiver.stop()
    await asyncio.gather(*tasks[:len(receivers)])
    arrived_at = {cid: t for r in receivers for cid, t in r.arrived_at.items()}
    acked_at = {cid: t for s in senders for cid, t in s.acked_at.items()}
    late = sorted((round(arrived_at[cid] - acked_at[cid], 3), cid) for cid in pair_acked
                  if arrived_at[cid] - acked_at[cid] > LATE)
    assert late == [], f"pushed more than {LATE} s after their ack: {late[-5:]}"

    # The stalled user comes back and reads: every acked message of the heavy stream.
    back = Receiver(await ws_connect(server, stalled_token), tally)
    reading = loop.create_task(back.run())
    heavy_acked = set(heavy.acked_at)
    deadline = time.monotonic() + 60
    while not heavy_acked <= set(back.arrived_at):
        assert time.monotonic() < deadline, len(heavy_acked - set(back.arrived_at))
        assert not reading.done(), "the reconnected reader was closed"
        await asyncio.sleep(0.05)
    back.stop()
    await reading
    assert len(heavy_acked) > 0
    tally.check()
    for client in [back.peer, heavy.peer, *(s.peer for s in senders),
                   *(r.peer for r in receivers)]:
        with contextlib.suppress(Exception):
            await client.close()


@run_async
async def test_output_piling_up_drops_the_reader_before_its_timeout(
    make_server: Any, tmp_path: Path
) -> None:
    """However long the slow-reader timeout, a connection's unsent output stays under
    chatd's cap (8 MiB): past it the connection is dropped at once, and its user still
    gets every acked message on the next connection."""
    config = tmp_path / "chatd.toml"
    config.write_text("slow_reader_timeout = 600\n")
    server: ChatdProcess = make_server("--config", str(config), *FAST)
    tally = Tally("output cap")
    loop = asyncio.get_running_loop()
    stalled_name, stalled_token = await anew_user(server, "stall")
    heavy = []
    for index in range(4):
        _, token = await anew_user(server, "heavy")
        heavy.append(SteadySender(await ws_connect(server, token), stalled_name, f"h{index}",
                                  tally, window=16, interval=0.0, body="😀" * 5000))
    stalled = await asyncio.to_thread(stalled_session, server, stalled_token)
    peer = f"127.0.0.1:{stalled.getsockname()[1]}"
    tasks = [loop.create_task(sender.run()) for sender in heavy]
    log = server.log_dir / "chatd.log"
    deadline = time.monotonic() + 60
    while not slow_reader_closes(log, peer, why="MiB unsent"):
        assert time.monotonic() < deadline, "never dropped for its unsent output"
        assert not any(task.done() for task in tasks), "a sender's run ended early"
        await asyncio.sleep(0.1)  # polling the log with a deadline
    assert await asyncio.to_thread(closed_by_server, stalled)
    stalled.close()
    for sender in heavy:
        sender.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)

    back = Receiver(await ws_connect(server, stalled_token), tally)
    reading = loop.create_task(back.run())
    acked = {cid for sender in heavy for cid in sender.acked_at}
    deadline = time.monotonic() + 60
    while not acked <= set(back.arrived_at):
        assert time.monotonic() < deadline, len(acked - set(back.arrived_at))
        assert not reading.done(), "the reconnected reader was closed"
        await asyncio.sleep(0.05)
    back.stop()
    await reading
    tally.check()
    for client in [back.peer, *(sender.peer for sender in heavy)]:
        with contextlib.suppress(Exception):
            await client.close()
