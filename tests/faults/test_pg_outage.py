"""PostgreSQL refusing connections for 10 s: every request is answered within a bound,
and acks resume within 5 s of its return (issue 12).

The bug: with the database refusing connections, most sends got neither an ack nor an
error until it came back (each batch waited up to 5 s for a connection, one batch at a
time), a hello hung until the client gave up, and /healthz took 5 s to say 503.

The outage is a TCP proxy in front of PostgreSQL that, on demand, cuts every connection
and refuses new ones.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.chatd.clients import ahttp, anew_user, whole_history, ws_connect
from tests.chatd.conftest import run_async
from tests.chatd.pg import FAST, PG_DSN, pg_schema
from tests.chatd.server import ChatdProcess
from tests.faults.pgproxy import Outage
from tests.faults.senders import AnsweredSender
from tests.faults.tally import Tally

OUTAGE = 10.0  # seconds
SEND_BOUND = 2.0 + 0.5  # the bound, and room for a busy machine
HEALTH_BOUND = 1.0 + 0.5
RECOVERY = 5.0


@run_async
async def test_every_request_is_answered_while_postgres_is_down(tmp_path: Any) -> None:
    outage = await Outage.to(PG_DSN)
    with pg_schema() as url:
        proxied = outage.route(url)
        server = ChatdProcess(tmp_path / "data", tmp_path / "logs", *FAST, db=proxied)
        await asyncio.to_thread(server.start)
        try:
            _, token = await anew_user(server)
            bob, _ = await anew_user(server)
            peer = await ws_connect(server, token)
            tally = Tally("postgres cut off for 10 s")
            send = AnsweredSender(peer, bob, tally=tally).send
            assert (await send())[0] == "ack"
            outage.down()
            down_at = time.monotonic()
            # a hello now is answered too: a welcome (the token and user are cached) or
            # an error with close 1013, never silence
            newcomer = await ws_connect(server, hello=False)
            await newcomer.send({"type": "hello", "protocol": "1.0", "token": token})
            answer = await newcomer.recv(("welcome", "error"), timeout=SEND_BOUND)
            assert answer["type"] == "welcome" or await newcomer.wait_closed() == 1013
            slow: list[float] = []
            while time.monotonic() - down_at < OUTAGE:
                _, took = await send()
                if took > SEND_BOUND:
                    slow.append(took)
                started = time.monotonic()
                health = await ahttp(server, "GET", "/healthz", timeout=5)
                if time.monotonic() - started > HEALTH_BOUND or health.status == 200:
                    slow.append(-(time.monotonic() - started))
                await asyncio.sleep(0.3)  # a paced stream
            assert slow == [], f"answers slower than the bound (s; negative: /healthz): {slow}"
            outage.up()
            up_at = time.monotonic()
            while (await send())[0] != "ack":
                assert time.monotonic() - up_at < RECOVERY, "no ack within 5 s of the return"
            assert time.monotonic() - up_at < RECOVERY
            tally.receive_all(await whole_history(server, token, bob))
            tally.check()
        finally:
            outage.close()
            await asyncio.to_thread(server.stop)
