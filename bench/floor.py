"""What a message costs at low load, beside what the round trip alone costs.

``python -m bench.floor [--sync full|normal] [--count N]`` starts a chatd on a fresh data
dir, connects two users with the ``websockets`` client in one event loop, and takes turns,
40 times a second in all:

- a WebSocket ping from the sender and its pong: client -> chatd's engine -> client, the
  floor every exchange pays on this machine (its clients, its loopback, its scheduler);
- a message from the sender, timed until the recipient has its push: the engine, the hub,
  the commit (with ``--sync full``, one ``fdatasync``) and two connections.

The gap between the two is the server's message path (issue 16's low-load target is
p99 send -> push <= 2 ms with ``--sync full``). Nothing is asserted; it prints the
percentiles, and writes them as JSON with ``--json PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import websockets

from bench.load import Chatd, make_users, percentiles

PAUSE_S = 0.025  # between one measurement and the next: 20 of each kind a second


async def _connect(host: str, token: str) -> Any:
    ws = await websockets.connect(f"ws://{host}/v1/ws", compression=None, ping_interval=None)
    await ws.send(json.dumps({"type": "hello", "protocol": "1.0", "token": token}))
    while json.loads(await ws.recv())["type"] != "welcome":
        pass
    return ws


async def measure(host: str, sender_token: str, recipient: str, recipient_token: str,
                  count: int) -> dict[str, list[float]]:
    """``count`` ping round trips and ``count`` send -> push times, in milliseconds."""
    sender = await _connect(host, sender_token)
    receiver = await _connect(host, recipient_token)

    async def drain() -> None:  # the sender's acks and receipts, so its pongs get read
        async for _ in sender:
            pass

    draining = asyncio.create_task(drain())
    pings: list[float] = []
    pushes: list[float] = []
    try:
        for i in range(count):
            started = time.perf_counter()
            await (await sender.ping())
            pings.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(PAUSE_S)
            started = time.perf_counter()
            await sender.send(json.dumps(
                {"type": "send", "id": f"floor-{time.time_ns()}-{i}", "to": recipient,
                 "body": "x" * 40}))
            while (frame := json.loads(await receiver.recv()))["type"] != "message":
                pass
            pushes.append((time.perf_counter() - started) * 1000)
            await receiver.send(json.dumps({"type": "delivered", "seqs": [frame["seq"]]}))
            await asyncio.sleep(PAUSE_S)
    finally:
        draining.cancel()
        await sender.close()
        await receiver.close()
    return {"ping_rtt": pings, "send_push": pushes}


def run(sync: str, count: int, data_dir: Path) -> dict[str, Any]:
    """Start chatd on ``data_dir``, measure, stop it; the percentiles of each kind."""
    log_dir = data_dir / "logs"
    db_url = str(data_dir / "chatd.db")  # as bench.load gives a SQLite store
    sender, recipient = make_users(data_dir, db_url, ["floor_a", "floor_b"], sync)
    server = Chatd(data_dir, log_dir, sync)
    server.start()
    try:
        times = asyncio.run(
            measure(server.host, sender.token, recipient.name, recipient.token, count))
    finally:
        server.stop()
    return {"sync": sync, "count": count,
            "latency_ms": {name: percentiles(values) for name, values in times.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.floor",
        description="A message's latency at low load, beside a ping's round trip.")
    parser.add_argument("--sync", choices=["full", "normal"], default="full")
    parser.add_argument("--count", type=int, default=600, help="measurements of each kind")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chatd-floor-") as tmp:
        result = run(args.sync, args.count, Path(tmp))
    print(f"sync {result['sync']}, {result['count']} of each, ms:")
    for name, values in result["latency_ms"].items():
        print(f"  {name:10} " + "  ".join(f"{key} {value:.2f}" for key, value in values.items()))
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
